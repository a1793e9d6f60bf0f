"""Resident memory (RSS) of a real `posetrack track` run over many frames: does memory stay flat on an endless stream?

    python benchmarks/memory_soak.py --frames 10000 --out benchmarks/results/memory_soak_cpu

A long video is made by looping a real clip (default: PETS09 vtest.avi, 795 frames, people walking, so tracks
start, get lost and end all the time), then `python -m posetrack_app track LONG.mp4 --out-json ... --no-progress`
runs in a child process while this script samples the child's VmRSS (/proc/PID/status) every --interval-s, together
with the number of frames written so far (lines of the JSON Lines output, read while it is being written). Writes
NAME.json (the samples and the fitted growth per frame) and NAME.png (RSS against frames).

--variant LABEL=DIR runs the code of another checkout instead (repeatable: e.g. the commits before and after a fix,
each unpacked with `git archive COMMIT | tar -x -C DIR`), one variant after the other, so the curves can be compared;
unpacked commits also keep a long run safe from edits to the working tree.
Growth is the least-squares slope of RSS against frames over the samples after the first --settle-fraction of the
frames and before the last frame (the exit frees memory): model loading and first allocations settle first, and the
StageTimer's reservoirs (RESERVOIR_SAMPLES = 8192 durations per stage, grown by doubling) grow for the last time at
call 4097, so the default fraction 0.5 of 10,000 frames starts the fit after that. `--from-json NAME.json` redoes the
fit and the plot from recorded samples.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from posetrack_app.benchmark import environment  # noqa: E402
from posetrack_app.io.atomic import write_json_atomic  # noqa: E402

DEFAULT_VIDEO = Path(os.environ.get("SHARED_DIR", "/work/shared")) / "data" / "pets09_s2l1" / "vtest.avi"


def write_looped_video(source: Path, frames: int, out: Path) -> int:
    """Writes `frames` frames of `source`, played from its start again each time it ends, to `out` (mp4v); returns
    the source's frame count."""
    writer = None
    written = clip_frames = 0
    try:
        while written < frames:
            capture = cv2.VideoCapture(str(source))
            if not capture.isOpened():
                raise SystemExit(f"cannot open {source}: pass --video with a readable clip")
            read_this_pass = 0
            while written < frames:
                ok, image = capture.read()
                if not ok:
                    break
                if writer is None:
                    height, width = image.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
                writer.write(image)
                read_this_pass += 1
                written += 1
            capture.release()
            if read_this_pass == 0:
                raise SystemExit(f"{source} has no frames")
            clip_frames = max(clip_frames, read_this_pass)
    finally:
        if writer is not None:
            writer.release()
    return clip_frames


def rss_kib(pid: int) -> Optional[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class LineCounter:
    """Counts the lines written so far to the JSON Lines output, which is written under a temporary name
    (`.NAME.PID.RANDOM.part...`, io/atomic.py) and renamed at the end."""

    def __init__(self, out_json: Path):
        self.folder, self.stem = out_json.parent, out_json.stem
        self.path: Optional[Path] = None
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        if self.path is None:
            found = [p for p in self.folder.iterdir() if p.name.startswith(f".{self.stem}") and ".part" in p.name]
            if not found:
                return self.lines
            self.path = found[0]
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:  # renamed into place at the end of the run
            return self.lines
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


def soak(label: str, checkout: Path, video: Path, frames: int, overrides: List[str], interval_s: float,
         work: Path) -> Dict[str, object]:
    """Runs one `posetrack track` child on `video` and samples its RSS; returns the variant's record."""
    out_json = work / f"soak_{label}.jsonl"
    command = [sys.executable, "-m", "posetrack_app", "track", str(video), "--out-json", str(out_json),
               "--no-progress", "--max-frames", str(frames)]
    for override in overrides:
        command += ["--set", override]
    env = dict(os.environ, PYTHONPATH=str(checkout) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # `python -m` / `-c` put the working folder first on sys.path: run in the checkout so that its code is imported.
    probe_code = "import posetrack_app, sys; sys.stdout.write(posetrack_app.__file__)"
    probe = subprocess.run([sys.executable, "-c", probe_code], env=env, cwd=checkout, capture_output=True, text=True,
                           check=True).stdout
    if not Path(probe).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"variant {label}: python imports posetrack_app from {probe}, not from {checkout}")
    samples = []
    counter = LineCounter(out_json)
    start = time.perf_counter()
    stderr_path = work / f"soak_{label}.stderr"
    with open(stderr_path, "w") as stderr:
        child = subprocess.Popen(command, env=env, cwd=checkout, stdout=subprocess.DEVNULL, stderr=stderr)
        while child.poll() is None:
            rss = rss_kib(child.pid)
            if rss is not None:
                samples.append({"elapsed_s": round(time.perf_counter() - start, 2), "frames": counter.count(),
                                "rss_kib": rss})
            time.sleep(interval_s)
    wall_s = time.perf_counter() - start
    log_tail = stderr_path.read_text().strip().splitlines()[-3:]
    if child.returncode != 0:
        raise SystemExit(f"variant {label}: posetrack track exited {child.returncode}: " + " | ".join(log_tail))
    frames_written = sum(1 for _ in open(out_json))
    return {"label": label, "checkout": str(checkout), "command": command, "wall_s": round(wall_s, 1),
            "frames": frames_written, "summary": log_tail[-1] if log_tail else "", "samples": samples}


def fit_growth(samples: List[dict], settle_fraction: float) -> Dict[str, object]:
    """Least-squares RSS growth per frame after the settling part and before the exit, plus the RSS at the first
    and last of those samples and the peak of the run."""
    last_frame = max((s["frames"] for s in samples), default=0)
    settled = [s for s in samples if settle_fraction * last_frame <= s["frames"] < last_frame]
    if len(settled) < 3:
        return {"growth_bytes_per_frame": None, "note": "too few samples after settling"}
    frames = np.array([s["frames"] for s in settled], dtype=np.float64)
    rss_bytes = 1024.0 * np.array([s["rss_kib"] for s in settled], dtype=np.float64)
    slope, intercept = np.polyfit(frames, rss_bytes, 1)
    return {
        "growth_bytes_per_frame": round(float(slope), 2),
        "projected_growth_mib_per_million_frames": round(float(slope) * 1e6 / 2 ** 20, 1),
        "settled_from_frame": int(frames[0]),
        "rss_mib_settled_first": round(float(rss_bytes[0]) / 2 ** 20, 1),
        "rss_mib_last": round(float(rss_bytes[-1]) / 2 ** 20, 1),
        "rss_mib_peak": round(max(1024.0 * s["rss_kib"] for s in samples) / 2 ** 20, 1),
    }


def plot(record: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    running_mib = []
    for variant in record["variants"]:
        last_frame = max(s["frames"] for s in variant["samples"])
        # Samples while the run works (not the start-up before the first frame, nor the exit after the last).
        samples = [s for s in variant["samples"] if 0 < s["frames"] < last_frame]
        frames = [s["frames"] for s in samples]
        rss_mib = [s["rss_kib"] / 1024.0 for s in samples]
        running_mib += rss_mib
        growth = variant["growth"].get("growth_bytes_per_frame")
        fit_from = variant["growth"].get("settled_from_frame")
        label = variant["label"] + (f" ({growth:+.1f} B/frame from frame {fit_from})" if growth is not None else "")
        ax.plot(frames, rss_mib, label=label, linewidth=1.2)
    if running_mib:
        ax.set_ylim(min(running_mib) - 2.0, max(running_mib) + 2.0)
    ax.set_xlabel("frames processed")
    ax.set_ylabel("resident memory (MiB), from the first frame to the last")
    ax.set_title(f"posetrack track, RSS over {record['frames']} frames of looped {Path(record['video']).name}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = png.with_name("." + png.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png)


def refit(path: Path, settle_fraction: float) -> int:
    """The growth fit and the plot again, from the samples a run recorded."""
    import json

    record = json.loads(path.read_text())
    record["settle_fraction"] = settle_fraction
    for variant in record["variants"]:
        variant["growth"] = fit_growth(variant["samples"], settle_fraction)
        print(f"{variant['label']}: {variant['growth']}")
    write_json_atomic(path, record, indent=1)
    plot(record, path.with_suffix(".png"))
    print(f"rewrote {path} and {path.with_suffix('.png')}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000, help="frames processed (10000)")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="clip to loop (PETS09 vtest.avi)")
    parser.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                        help="config overrides for the run (default: detector.input_size=320, for speed)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=DIR",
                        help="run the code of the checkout in DIR (repeatable); default: this checkout, as 'current'")
    parser.add_argument("--interval-s", type=float, default=1.0, help="RSS sampling interval (1 s)")
    parser.add_argument("--settle-fraction", type=float, default=0.5,
                        help="share of the frames left out of the growth fit (0.5)")
    parser.add_argument("--from-json", type=Path, metavar="NAME.json",
                        help="redo the growth fit and the plot of a recorded run (no new run)")
    parser.add_argument("--out", default=str(HERE / "results" / "memory_soak_cpu"), help="prefix for .json / .png")
    args = parser.parse_args(argv)
    if args.from_json:
        return refit(args.from_json, args.settle_fraction)
    if args.frames < 100:
        parser.error("--frames must be >= 100")
    overrides = args.overrides if args.overrides is not None else ["detector.input_size=320"]
    variants = [] if args.variant else [("current", REPO)]
    for spec in args.variant:
        label, sep, folder = spec.partition("=")
        if not sep or not Path(folder).is_dir():
            parser.error(f"--variant takes LABEL=DIR with an existing DIR, got {spec!r}")
        variants.append((label, Path(folder)))

    load_start = environment.load_average_1min()
    with tempfile.TemporaryDirectory(prefix="posetrack-soak-") as tmp:
        work = Path(tmp)
        long_video = work / "looped.mp4"
        clip_frames = write_looped_video(args.video, args.frames, long_video)
        print(f"looped {args.video.name} ({clip_frames} frames) to {args.frames} frames", flush=True)
        results = []
        for label, checkout in variants:
            result = soak(label, checkout, long_video, args.frames, overrides, args.interval_s, work)
            result["growth"] = fit_growth(result["samples"], args.settle_fraction)
            print(f"{label}: {result['frames']} frames in {result['wall_s']} s; {result['growth']}", flush=True)
            results.append(result)
    record = {
        "schema": "posetrack-memory-soak/1",
        "command": " ".join(["python", "benchmarks/memory_soak.py"] + (sys.argv[1:] if argv is None else argv)),
        "video": str(args.video),
        "clip_frames": clip_frames,
        "frames": args.frames,
        "overrides": overrides,
        "interval_s": args.interval_s,
        "settle_fraction": args.settle_fraction,
        "load_average_1min": {"start": load_start, "end": environment.load_average_1min()},
        "environment": environment.capture_environment(),
        "variants": results,
    }
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), record, indent=1)
    plot(record, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
