"""The detector alone, per backend / precision / session option, interleaved (A, B, C, A, B, C, ...) on the same
real frames, so that the shared machine's load hits every variant alike. Reports the median milliseconds per
frame (letterbox + network + decoding, what the pipeline's "detect" stage times), wall clock and CPU time of the
process (all its threads), each variant's speed-up over the first one, and the load average. On a loaded machine
the wall clock mostly measures the other jobs; the CPU time is the variant's own work (busy-waiting threads
included: ONNX Runtime's spinning shows up there).

Frames: PETS09 vtest.avi (768x576) at 960, and the same frames cropped (not resized) to 640x480 at 640.

    python benchmarks/detector_speed.py --frames 10 --rounds 3 \
        --variant fp32:detector.backend=onnxruntime,detector.precision=fp32 \
        --variant openvino:detector.backend=openvino --json benchmarks/results/detector_speed_cpu.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peer_fps import CLIPS, load_average, shared_data  # noqa: E402
from posetrack_app.build import build_detector  # noqa: E402
from posetrack_app.config import load_config  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402
from posetrack_app.structures import Frame  # noqa: E402


def clip_frames(name: str, count: int, step: int = 20):
    """`count` frames of vtest.avi, `step` apart, cropped as peer_fps.py crops that clip."""
    crop, _ = CLIPS[name]
    capture = cv2.VideoCapture(str(shared_data() / "pets09_s2l1" / "vtest.avi"))
    frames, index = [], 0
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        if index % step == 0:
            if crop is not None:
                h, w = image.shape[:2]
                x0, y0 = (w - crop[0]) // 2, (h - crop[1]) // 2
                image = image[y0:y0 + crop[1], x0:x0 + crop[0]].copy()
            frames.append(Frame(index, image))
        index += 1
    return frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=V,KEY=V")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    variants = {}
    for text in args.variant or ["defaults:"]:
        name, _, settings = text.partition(":")
        variants[name] = [s for s in settings.split(",") if s]
    record = {"command": "python benchmarks/detector_speed.py " + " ".join(argv or sys.argv[1:]),
              "variants": variants, "clips": {}}
    for clip in args.clips:
        size = CLIPS[clip][1]
        frames = clip_frames(clip, args.frames)
        detectors = {}
        for name, overrides in variants.items():
            detectors[name] = build_detector(load_config(None, overrides + [f"detector.input_size={size}"]))
            detectors[name](frames[0])  # warm-up: compilation, first-run allocation
        times = {name: [] for name in variants}
        cpu_times = {name: [] for name in variants}
        loads = [load_average()]
        for _ in range(args.rounds):
            for name, detector in detectors.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                for frame in frames:
                    detector(frame)
                times[name].append(1000.0 * (time.perf_counter() - start) / len(frames))
                cpu_times[name].append(1000.0 * (time.process_time() - cpu_start) / len(frames))
            loads.append(load_average())
        first = next(iter(variants))
        base, cpu_base = statistics.median(times[first]), statistics.median(cpu_times[first])
        record["clips"][clip] = {
            "input_size": size, "loads": loads,
            "variants": {name: {"ms_per_frame": times[name], "median_ms": statistics.median(times[name]),
                                "speedup": base / statistics.median(times[name]),
                                "cpu_ms_per_frame": cpu_times[name], "median_cpu_ms": statistics.median(cpu_times[name]),
                                "cpu_speedup": cpu_base / statistics.median(cpu_times[name]),
                                "description": detectors[name].description}
                         for name in variants}}
    lines = [f"Command: `{record['command']}`", "",
             "| clip | variant | what ran | wall ms / frame (median) | wall speed-up | CPU ms / frame (median) | "
             "CPU speed-up | load avg |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for clip, rows in record["clips"].items():
        for name, row in rows["variants"].items():
            lines.append(f"| {clip} | {name} | {row['description']} | {row['median_ms']:.1f} | {row['speedup']:.2f}x | "
                         f"{row['median_cpu_ms']:.1f} | {row['cpu_speedup']:.2f}x | "
                         f"{rows['loads'][0]:.1f}-{rows['loads'][-1]:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        write_json_atomic(Path(args.json), record, indent=2)
    if args.markdown:
        with atomic_write(Path(args.markdown)) as handle:
            handle.write("# Detector alone: backends, precision, session options (interleaved)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
