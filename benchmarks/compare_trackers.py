"""The tracker dev suite table: every clip x detector input size x tracker, on equal detections.

Trackers: our greedy-IoU baseline and FlowTracker (our pipeline, detector keypoints as poses) and Ultralytics'
ByteTrack and BoT-SORT (their packaged defaults), all fed the same cached YOLO11n-pose detections
(benchmarks/tracker_suite.py explains the clips, the cache and the fairness rules). Sizes: numbers, or "auto" (the
size detector.input_size=auto picks for each clip's frame size).

    python benchmarks/compare_trackers.py --sizes 640 960 auto --out benchmarks/results/compare_trackers_suite.md
    python benchmarks/compare_trackers.py --clips pets09 --sizes 960 --set tracker.flow.max_lost_s=4   # one clip
    python benchmarks/compare_trackers.py --sizes auto 640 --noise-seeds 16 \
        --out benchmarks/results/compare_trackers_noise.md

Each clip and size also gets a "detector alone" row: every detection at detector.score_threshold, untracked
(precision and recall only), and the summary says where FlowTrack's fall more than a point under it.

--noise-seeds N also runs every row on N copies of the detections with int8-sized noise
(tracker_suite.perturbed) and reports each score's median and range over them: how far one run can be trusted. The
precision / recall check against the IoU tracker is repeated on the medians.

On a 2-core CPU the first run spends most of its time in the detector (cached in --cache-dir afterwards).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from posetrack_app.config import load_config, to_dict  # noqa: E402
from posetrack_app.input_size import auto_input_size  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402
from tracker_suite import (OURS, PEERS, cached_detections, detector_alone_scores, load_clips, perturbed,  # noqa: E402
                           run_tracker, score, suite_clips)

log = logging.getLogger("compare_trackers")
BOX_COLUMNS = ["MOTA", "IDF1", "IDSW", "FP", "FN", "Prec", "Rec"]
POSE_COLUMNS = ["pose mAP", "pose MOTA"]
NOISE_COLUMNS = ["MOTA", "IDF1", "IDSW", *POSE_COLUMNS]
# Kept over the noisy runs besides the table's columns: the summary checks FlowTrack's precision / recall medians too.
NOISE_KEPT = [*NOISE_COLUMNS, "Prec", "Rec"]
# The row of every detection at detector.score_threshold, untracked (precision and recall only; tracker_suite.py).
DETECTOR_ALONE = "detector alone"


def resolve_size(size: str, clip) -> int:
    return auto_input_size(clip.size_wh) if size == "auto" else int(size)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(value)
    return "-" if value != value else f"{value:.1f}"  # NaN: undefined (nothing reported)


def format_table(rows: List[dict]) -> str:
    header = ["clip", "fps", "size", "tracker", *BOX_COLUMNS, *POSE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([r["clip"], f"{r['fps']:g}", r["size_label"], r["tracker"]]
                                       + [_cell(r["scores"].get(c)) for c in BOX_COLUMNS + POSE_COLUMNS]) + " |")
    return "\n".join(lines)


def summary(rows: List[dict], trackers: List[str]) -> str:
    """Per size setting: each tracker's mean over clips, and where FlowTrack's precision / recall fall more than
    a point under the IoU tracker's and under the detector alone's (issue 12's 'never worse than the detector alone'
    check, as the issue words it and literally)."""
    lines = []
    for size in dict.fromkeys(r["size_label"] for r in rows):
        alone = {r["clip"]: r["scores"] for r in rows if r["size_label"] == size and r["tracker"] == DETECTOR_ALONE}
        sel = [r for r in rows if r["size_label"] == size and r["tracker"] != DETECTOR_ALONE]
        lines += [f"### size {size}: mean over clips", "",
                  "| tracker | MOTA | IDF1 | IDSW (sum) | Prec | Rec | pose mAP | pose MOTA | clips won (MOTA+IDF1) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        clips = list(dict.fromkeys(r["clip"] for r in sel))
        best = {}
        for clip in clips:
            here = {r["tracker"]: r["scores"] for r in sel if r["clip"] == clip}
            best[clip] = max(here, key=lambda t: here[t]["MOTA"] + here[t]["IDF1"])
        for tracker in trackers:
            mine = [r["scores"] for r in sel if r["tracker"] == tracker]
            pose = [s for s in mine if "pose mAP" in s]
            cells = [f"{np.mean([s[c] for s in mine]):.1f}" for c in ("MOTA", "IDF1")]
            cells.append(str(sum(s["IDSW"] for s in mine)))
            cells += [f"{np.nanmean([s[c] for s in mine]):.1f}" for c in ("Prec", "Rec")]
            cells += [f"{np.mean([s[c] for s in pose]):.1f}" if pose else "" for c in POSE_COLUMNS]
            cells.append(str(sum(b == tracker for b in best.values())))
            lines.append(f"| {tracker} | " + " | ".join(cells) + " |")
        by_tracker = {t: {r["clip"]: r["scores"] for r in sel if r["tracker"] == t} for t in trackers}
        if "flowtrack" in trackers and "iou" in trackers:
            lines += ["", _points_under(by_tracker["flowtrack"], by_tracker["iou"], "the IoU tracker's"), ""]
        if alone and "flowtrack" in trackers:
            lines += [_against_detector_alone(alone, by_tracker), ""]
    return "\n".join(lines)


def _points_under(flowtrack: Dict[str, dict], other: Dict[str, dict], whose: str) -> str:
    """The line naming each clip where FlowTrack's precision or recall is more than a point under `other`'s."""
    worse = []
    for clip, theirs in other.items():
        for column in ("Prec", "Rec"):
            gap = flowtrack[clip][column] - theirs[column]
            if gap < -1.0:  # False for NaN (a precision of nothing reported)
                worse.append(f"{clip} {column} {gap:+.1f}")
    return f"FlowTrack precision / recall more than 1 point under {whose}: " + (", ".join(worse) or "none")


def _against_detector_alone(alone: Dict[str, dict], by_tracker: Dict[str, Dict[str, dict]]) -> str:
    """Per clip, precision / recall of the detector alone and of each tracker, and where FlowTrack falls more than a
    point under the detector alone."""
    names = list(by_tracker)
    lines = [f"The {DETECTOR_ALONE} (every detection at detector.score_threshold, untracked) and the trackers, "
             "precision / recall:", "", "| clip | detector alone | " + " | ".join(names) + " |",
             "|" + "---|" * (2 + len(names))]
    for clip, theirs in alone.items():
        cells = [f"{_cell(by_tracker[t][clip]['Prec'])} / {_cell(by_tracker[t][clip]['Rec'])}" for t in names]
        lines.append(f"| {clip} | {_cell(theirs['Prec'])} / {_cell(theirs['Rec'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", _points_under(by_tracker["flowtrack"], alone, "the detector alone's")])


def noise_spread(scores: List[Dict[str, float]]) -> dict:
    """Median, min and max of each NOISE_KEPT score over the noisy runs (a precision is NaN in a run that reported
    nobody, and so is its median then)."""
    columns = [c for c in NOISE_KEPT if c in scores[0]]
    values = {c: np.array([s[c] for s in scores], float) for c in columns}
    return {"seeds": len(scores), **{name: {c: float(f(v)) for c, v in values.items()}
                                     for name, f in (("median", np.median), ("min", np.min), ("max", np.max))}}


def format_noise(rows: List[dict], trackers: List[str]) -> str:
    """The rows' medians [min, max] over the noise seeds, and per size each tracker's mean of the medians."""
    rows = [r for r in rows if "noise" in r]
    if not rows:
        return ""
    lines = [f"## Under int8-sized detector noise ({rows[0]['noise']['seeds']} seeds): median [min, max]", "",
             "| clip | size | tracker | unperturbed MOTA / IDF1 / IDSW | " + " | ".join(NOISE_COLUMNS) + " |",
             "|" + "---|" * (4 + len(NOISE_COLUMNS))]
    for r in rows:
        n, s = r["noise"], r["scores"]
        cells = [f"{n['median'][c]:.1f} [{n['min'][c]:.1f}, {n['max'][c]:.1f}]" if c in n["median"] else ""
                 for c in NOISE_COLUMNS]
        lines.append(f"| {r['clip']} | {r['size_label']} | {r['tracker']} | {s['MOTA']:.1f} / {s['IDF1']:.1f} / "
                     f"{s['IDSW']} | " + " | ".join(cells) + " |")
    for size in dict.fromkeys(r["size_label"] for r in rows):
        lines += ["", f"### size {size}: mean over clips of the medians", "",
                  "| tracker | " + " | ".join(NOISE_COLUMNS) + " |", "|" + "---|" * (1 + len(NOISE_COLUMNS))]
        for tracker in trackers:
            mine = [r["noise"]["median"] for r in rows if r["size_label"] == size and r["tracker"] == tracker]
            cells = []
            for c in NOISE_COLUMNS:
                values = [m[c] for m in mine if c in m]
                cells.append(f"{np.mean(values):.2f}" if values else "")
            lines.append(f"| {tracker} | " + " | ".join(cells) + " |")
        medians = {t: {r["clip"]: r["noise"]["median"] for r in rows if r["size_label"] == size and r["tracker"] == t}
                   for t in ("flowtrack", "iou")}
        if all(medians.values()) and all("Prec" in m for m in medians["iou"].values()):
            lines += ["", _points_under(medians["flowtrack"], medians["iou"], "the IoU tracker's, on the medians")]
    return "\n".join(lines) + "\n"


def _rows_from_json(path: Path) -> List[dict]:
    import json

    rows = json.loads(path.read_text())["rows"]
    for row in rows:
        s = row["scores"]
        if s["Prec"] is None or (s["FP"] == 0 and s["Rec"] == 0):  # nothing reported: precision undefined
            s["Prec"] = float("nan")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=suite_clips(),
                        help=f"pets09, mot17 (all seven), MOT17-xx-FRCNN, {', '.join(suite_clips()[2:])}")
    parser.add_argument("--sizes", nargs="+", default=["640", "960", "auto"])
    parser.add_argument("--trackers", nargs="+", default=[*OURS, *PEERS])
    parser.add_argument("--config", help="YAML preset for our pipeline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--cache-dir", default="/tmp/posetrack_suite")
    parser.add_argument("--out", help="write the table (.md) and the numbers (.json beside it)")
    parser.add_argument("--from-json", help="re-render the tables of an earlier run's .json instead of running")
    parser.add_argument("--noise-seeds", type=int, default=0,
                        help="also run each row on this many noisy copies of the detections (median and range)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("posetrack_app.build").setLevel(logging.ERROR)  # the no-HRNet notice, once per run

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config, args.overrides)
    rows: List[dict] = [] if not args.from_json else _rows_from_json(Path(args.from_json))
    for clip in ([] if args.from_json else load_clips(args.clips, cache)):
        results: Dict[int, Dict[str, dict]] = {}  # size -> row name -> scores (and noise)
        for size_label in args.sizes:
            size = resolve_size(size_label, clip)
            if size not in results:  # a label naming a size already run (auto = 960) reuses its rows
                detections, _ = cached_detections(clip, size, cache)
                here = results[size] = {DETECTOR_ALONE: {"scores": detector_alone_scores(base, clip, detections)}}
                for tracker in args.trackers:
                    here[tracker] = {"scores": score(clip, run_tracker(tracker, base, clip, detections))}
                    log.info("%s %d %s: %s", clip.name, size, tracker,
                             " ".join(f"{k} {_cell(v)}" for k, v in here[tracker]["scores"].items()))
                    if args.noise_seeds > 0:
                        noisy = [score(clip, run_tracker(tracker, base, clip, perturbed(detections, seed)))
                                 for seed in range(args.noise_seeds)]
                        here[tracker]["noise"] = noise_spread(noisy)
            for name in (DETECTOR_ALONE, *args.trackers):
                rows.append({"clip": clip.name, "fps": clip.fps, "size": size, "size_label": size_label,
                             "tracker": name, **results[size][name]})
    table = format_table(rows)
    text = table + "\n\n" + summary(rows, args.trackers)
    noise = format_noise(rows, args.trackers)
    if noise:
        text += "\n" + noise
    print(text)
    if args.out:
        out = Path(args.out)
        command = f"python benchmarks/compare_trackers.py {' '.join(argv if argv is not None else sys.argv[1:])}"
        if args.from_json:
            import json

            earlier = json.loads(Path(args.from_json).read_text()).get("command", "")
            command = f"{earlier or 'an earlier run'}`, tables re-rendered by `{command}"
        with atomic_write(out) as handle:
            handle.write(f"# Tracker dev suite\n\nCommand: `{command}`\n\n")
            handle.write("Rows: clip x detector input size x tracker, all trackers on the same cached YOLO11n-pose "
                         "detections (benchmarks/tracker_suite.py). Box metrics: CLEAR MOT at IoU >= 0.5. Pose "
                         "metrics (synthetic clips, exact pose truth): PoseTrack mAP and MOTA "
                         "(posetrack_app/evaluation/posetrack.py). auto = the size detector.input_size=auto picks "
                         "for the clip's frame size (the same numbers as the numbered row of that size).\n\n")
            handle.write(text + "\n")
        if not args.from_json:
            write_json_atomic(out.with_suffix(".json"), {"command": command, "config": to_dict(base), "rows": rows},
                              indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
