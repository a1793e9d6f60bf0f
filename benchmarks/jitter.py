"""Keypoint jitter with and without smoothing (tracker.smoothing), on real clips, on the same detections.

    python benchmarks/jitter.py --out benchmarks/results/jitter.md
    python benchmarks/jitter.py --clips pets09 --set tracker.smoothing.beta=10     # another setting

Clips: PETS09 S2.L1 (795 frames, 7 fps) and the seven MOT17 mini clips (4-8 frames each, 14-30 fps) from
../shared/data, loaded by tracker_suite.py, with its cached YOLO11n-pose detections (--cache-dir; computed on first
use) at the size detector.input_size=auto picks; poses are the detector's keypoints (pose.model=detector: there are
no HRNet weights here). The PoseTrack18 sample has one frame per sequence, so nothing to measure there.

One pipeline run per clip with smoothing on: Tracks.raw_keypoints are the unsmoothed keypoints (exactly what the run
with smoothing off reports: smoothing changes nothing the tracker matches on; tests/test_smoothing.py checks it), and
poses.keypoints the smoothed ones. Other filter settings are compared by replaying the recorded raw tracks through
SmoothedTracker (the `settings` table).

Still persons (the rule, on the unsmoothed boxes, so both series use the same segments): a track is still at frame t
when it is reported in every frame within +-window_s/2 of t (at least MIN_WINDOW_FRAMES frames; a clip shorter than
the window uses all its frames) and its box centre stays within still_fraction of its median box height of the
window's median centre. Jitter: the frame-to-frame motion of a still person's confident joints (score >= min_score in
both frames) between two consecutive still frames, in pixels and in % of the box height. Moving persons (neither
frame still): lag = the distance smoothed-to-raw of their confident joints, and the acceleration (second difference
|k[t+1] - 2 k[t] + k[t-1]| over three consecutive frames, % of height) raw and smoothed: smoothing that lags shows
as a distance, smoothing that removes noise as a smaller acceleration.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from posetrack_app.config import load_config, to_dict  # noqa: E402
from posetrack_app.input_size import auto_input_size  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402
from posetrack_app.structures import Detections, Frame, Poses, Tracks  # noqa: E402
from posetrack_app.tracking.smoothing import SmoothedTracker  # noqa: E402
from tracker_suite import cached_detections, load_clips, run_ours  # noqa: E402

log = logging.getLogger("jitter")
DEFAULT_CLIPS = ["pets09", "mot17"]
# Fewer frames than this in a window say nothing about standing still (3 frames of a 30-fps clip is 0.1 s).
MIN_WINDOW_FRAMES = 4
# Replayed filter settings (min_cutoff_hz, beta) besides the configured one.
SETTINGS = [(0.5, 5.0), (1.0, 0.0), (1.0, 5.0), (1.0, 20.0), (2.0, 5.0)]


class _Replay:
    """A 'tracker' that reports recorded Tracks frame by frame (their raw keypoints), for SmoothedTracker."""

    def __init__(self, tracks: List[Tracks]):
        self.tracks, self.index = tracks, 0

    def reset(self):
        self.index = 0

    def propose(self, frame):
        return Detections.empty()

    def update(self, frame, poses):
        t = self.tracks[self.index]
        self.index += 1
        keypoints = t.raw_keypoints if t.raw_keypoints is not None else t.poses.keypoints
        return Tracks(t.track_ids, Poses(keypoints, t.poses.keypoint_scores, t.poses.boxes_xyxy, t.poses.box_scores,
                                         t.poses.proposed_by))


def resmooth(tracks: List[Tracks], fps: float, min_cutoff_hz: float, beta: float) -> List[Tracks]:
    wrapper = SmoothedTracker(_Replay(tracks), min_cutoff_hz=min_cutoff_hz, beta=beta)
    return [wrapper.update(Frame(i, np.zeros((1, 1, 3), np.uint8), i / fps), None) for i in range(len(tracks))]


def _series(tracks: List[Tracks]) -> Dict[int, Dict[int, tuple]]:
    """track id -> frame -> (box [4], raw [K, 2], smoothed [K, 2], scores [K])."""
    out: Dict[int, Dict[int, tuple]] = defaultdict(dict)
    for f, t in enumerate(tracks):
        for i, tid in enumerate(t.track_ids.tolist()):
            out[tid][f] = (t.poses.boxes_xyxy[i], t.raw_keypoints[i], t.poses.keypoints[i], t.poses.keypoint_scores[i])
    return out


def still_frames(frames: Dict[int, tuple], fps: float, num_frames: int, window_s: float,
                 still_fraction: float) -> set:
    """The frames at which this track is still (module docstring's rule)."""
    half = max(1, int(round(window_s * fps / 2)))
    if num_frames < 2 * half + 1:  # a clip shorter than the window: the whole clip is the window
        lo_hi = lambda f: (0, num_frames - 1)  # noqa: E731
    else:
        lo_hi = lambda f: (f - half, f + half)  # noqa: E731
    still = set()
    for f in frames:
        lo, hi = lo_hi(f)
        if lo < 0 or hi >= num_frames or hi - lo + 1 < MIN_WINDOW_FRAMES:
            continue
        if any(g not in frames for g in range(lo, hi + 1)):
            continue
        boxes = np.stack([frames[g][0] for g in range(lo, hi + 1)]).astype(np.float64)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        height = np.median(boxes[:, 3] - boxes[:, 1])
        if np.linalg.norm(centres - np.median(centres, axis=0), axis=1).max() <= still_fraction * height:
            still.add(f)
    return still


def measure(tracks: List[Tracks], fps: float, window_s: float, still_fraction: float, min_score: float) -> dict:
    """Samples (per joint) of jitter on still persons and lag / acceleration on moving ones."""
    s = defaultdict(list)
    still_tracks = set()
    for tid, frames in _series(tracks).items():
        still = still_frames(frames, fps, len(tracks), window_s, still_fraction)
        for f, (box, raw, smooth, scores) in frames.items():
            height = float(box[3] - box[1])
            prev = frames.get(f - 1)
            if prev is None:
                continue
            confident = (scores >= min_score) & (prev[3] >= min_score)
            if f in still and f - 1 in still:
                still_tracks.add(tid)
                for name, now, before in (("raw", raw, prev[1]), ("smoothed", smooth, prev[2])):
                    step = np.linalg.norm(now - before, axis=-1)[confident]
                    s[f"still_{name}_px"] += step.tolist()
                    s[f"still_{name}_pct"] += (100 * step / height).tolist()
            elif f not in still and f - 1 not in still:
                lag = np.linalg.norm(smooth - raw, axis=-1)[confident]
                s["moving_lag_px"] += lag.tolist()
                s["moving_lag_pct"] += (100 * lag / height).tolist()
                after = frames.get(f + 1)
                if after is not None and f + 1 not in still:
                    ok = confident & (after[3] >= min_score)
                    for name, k in (("raw", 1), ("smoothed", 2)):
                        acc = np.linalg.norm(after[k] - 2 * (raw if k == 1 else smooth) + prev[k], axis=-1)[ok]
                        s[f"moving_accel_{name}_pct"] += (100 * acc / height).tolist()
    return {"samples": s, "still_tracks": len(still_tracks)}


def summarize(samples: Dict[str, list]) -> dict:
    out = {}
    for key, values in samples.items():
        v = np.asarray(values, np.float64)
        out[key] = {"n": int(v.size), "median": float(np.median(v)) if v.size else None,
                    "p90": float(np.percentile(v, 90)) if v.size else None, "mean": float(v.mean()) if v.size else None}
    return out


def _fmt(entry, field="median"):
    return "-" if entry is None or entry.get(field) is None else f"{entry[field]:.2f}"


def render(result: dict) -> str:
    cfg = result["smoothing"]
    lines = [
        "# Keypoint jitter with and without smoothing (tracker.smoothing)", "",
        f"Command: `{result['command']}`", "",
        f"Detector YOLO11n-pose (detector.input_size=auto), its keypoints as poses (pose.model=detector), FlowTrack "
        f"defaults; smoothing: One-Euro min_cutoff_hz={cfg['min_cutoff_hz']}, beta={cfg['beta']} (per box height per "
        f"second). Still: the box centre stays within {100 * result['still_fraction']:.0f}% of the box height over "
        f"{result['window_s']} s (+-half a window around the frame, every frame reported; clips shorter than that: "
        f"the whole clip, >= {MIN_WINDOW_FRAMES} frames); joints with score >= {result['min_score']} in both frames. "
        "benchmarks/jitter.py's docstring has the exact rules.", "",
        "## Still persons: frame-to-frame joint motion (jitter)", "",
        "| clip | fps | frames | still tracks | joint steps | off px median / p90 | on px median / p90 | "
        "off % height median / p90 | on % height median / p90 | p90 ratio on/off |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["clips"]:
        m = row["metrics"]
        off, on = m.get("still_raw_px"), m.get("still_smoothed_px")
        offp, onp = m.get("still_raw_pct"), m.get("still_smoothed_pct")
        ratio = "-" if not offp or not offp.get("p90") else f"{onp['p90'] / offp['p90']:.2f}"
        lines.append(f"| {row['clip']} | {row['fps']:g} | {row['frames']} | {row['still_tracks']} | "
                     f"{(off or {}).get('n', 0)} | {_fmt(off)} / {_fmt(off, 'p90')} | {_fmt(on)} / {_fmt(on, 'p90')} | "
                     f"{_fmt(offp)} / {_fmt(offp, 'p90')} | {_fmt(onp)} / {_fmt(onp, 'p90')} | {ratio} |")
    lines += ["", "## Moving persons: the cost (lag) and the acceleration (second difference)", "",
              "| clip | joints | lag px median / p90 | lag % height median / p90 | accel off % height median / p90 | "
              "accel on % height median / p90 |", "|---|---|---|---|---|---|"]
    for row in result["clips"]:
        m = row["metrics"]
        lag, lagp = m.get("moving_lag_px"), m.get("moving_lag_pct")
        a0, a1 = m.get("moving_accel_raw_pct"), m.get("moving_accel_smoothed_pct")
        lines.append(f"| {row['clip']} | {(lag or {}).get('n', 0)} | {_fmt(lag)} / {_fmt(lag, 'p90')} | "
                     f"{_fmt(lagp)} / {_fmt(lagp, 'p90')} | {_fmt(a0)} / {_fmt(a0, 'p90')} | "
                     f"{_fmt(a1)} / {_fmt(a1, 'p90')} |")
    if result.get("settings"):
        lines += ["", "## Other settings, replayed on the same raw tracks (PETS09 only: the MOT17 clips are too "
                  "short)", "",
                  "| min_cutoff_hz | beta | still jitter % height median / p90 | moving lag % height median / p90 | "
                  "moving accel % height median / p90 |", "|---|---|---|---|---|"]
        for row in result["settings"]:
            m = row["metrics"]
            lines.append(f"| {row['min_cutoff_hz']:g} | {row['beta']:g} | {_fmt(m.get('still_smoothed_pct'))} / "
                         f"{_fmt(m.get('still_smoothed_pct'), 'p90')} | {_fmt(m.get('moving_lag_pct'))} / "
                         f"{_fmt(m.get('moving_lag_pct'), 'p90')} | {_fmt(m.get('moving_accel_smoothed_pct'))} / "
                         f"{_fmt(m.get('moving_accel_smoothed_pct'), 'p90')} |")
        lines.append("")
        lines.append("Unsmoothed PETS09, for reference: still jitter and moving acceleration are the 'off' columns of "
                     "the pets09 rows above; the lag is 0.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS)
    parser.add_argument("--config", help="YAML preset for the pipeline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--cache-dir", default="/tmp/posetrack_suite")
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--still-fraction", type=float, default=0.05)
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--out", help="write the table (.md) and the numbers (.json beside it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    cfg = load_config(args.config, args.overrides + ["tracker.smoothing.enabled=true"])
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/jitter.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command.strip(), "window_s": args.window_s, "still_fraction": args.still_fraction,
              "min_score": args.min_score, "smoothing": to_dict(cfg.tracker.smoothing), "clips": [],
              "settings": []}
    for clip in load_clips(args.clips, cache):
        size = auto_input_size(clip.size_wh)
        detections, _ = cached_detections(clip, size, cache, cfg)
        run = run_ours(cfg, clip, detections)
        m = measure(run.tracks, clip.fps, args.window_s, args.still_fraction, args.min_score)
        result["clips"].append({"clip": clip.name, "fps": clip.fps, "frames": len(clip.frames), "input_size": size,
                                "still_tracks": m["still_tracks"], "metrics": summarize(m["samples"])})
        log.info("%s: %d still tracks", clip.name, m["still_tracks"])
        if clip.name == "pets09":
            for min_cutoff_hz, beta in SETTINGS:
                replayed = resmooth(run.tracks, clip.fps, min_cutoff_hz, beta)
                r = measure(replayed, clip.fps, args.window_s, args.still_fraction, args.min_score)
                result["settings"].append({"min_cutoff_hz": min_cutoff_hz, "beta": beta,
                                           "metrics": summarize(r["samples"])})
    text = render(result)
    print(text)
    if args.out:
        out = Path(args.out)
        with atomic_write(out) as handle:
            handle.write(text)
        write_json_atomic(out.with_suffix(".json"), result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
