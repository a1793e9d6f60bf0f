"""The ONNX Runtime detector network with and without the channel-split rewrite (detection/onnx_graph.py), in one
process, interleaved call by call on the same real frames, so that the shared machine's drift hits every variant
alike. The rewrite has no setting (it computes the same numbers), so this script switches it off by replacing the
backend's reference to it with a no-op for the networks built without it.

Variants: the head split at the scoring anchors (the default) and the whole graph, each with and without the
rewrite. Reports per clip the median CPU and wall milliseconds per network call (network only: the frame is
letterboxed once beforehand), and the largest difference between the two forms' outputs.

    python benchmarks/onnx_rewrite_speed.py --frames 10 --rounds 10 --threads 1 --markdown benchmarks/results/onnx_rewrite_speed.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector_speed import clip_frames  # noqa: E402
from peer_fps import CLIPS, load_average  # noqa: E402
from posetrack_app.detection.backends import onnxruntime_backend  # noqa: E402
from posetrack_app.detection.quantize import calibration_blob  # noqa: E402
from posetrack_app.detection.yolo_onnx import resolve_model  # noqa: E402
from posetrack_app.io.atomic import atomic_write  # noqa: E402

MIN_SCORE = 0.1  # the detector's default threshold: what the split head keeps


def build_networks(threads: int):
    """{variant: network}; the variants without the rewrite are built with it replaced by a no-op."""
    path, rewrite = resolve_model("yolo11n-pose"), onnxruntime_backend.split_channel_split_convs
    networks = {}
    try:
        for rewritten in (True, False):
            onnxruntime_backend.split_channel_split_convs = rewrite if rewritten else (lambda model: 0)
            for head in ("split head", "whole graph"):
                networks[f"{head}, {'rewritten' if rewritten else 'as exported'}"] = onnxruntime_backend.OnnxRuntimeNetwork(
                    path, intra_op_threads=threads, split_head=head == "split head")
    finally:
        onnxruntime_backend.split_channel_split_convs = rewrite
    return networks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0 = one per core)")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    networks = build_networks(args.threads)
    lines = [f"Command: `python benchmarks/onnx_rewrite_speed.py {' '.join(argv or sys.argv[1:])}`", "",
             "| clip | input | variant | CPU ms / call (median) | wall ms / call (median) | CPU vs as exported | "
             "max output difference | load avg |", "|---|---|---|---:|---:|---:|---:|---|"]
    for clip in args.clips:
        blobs = [calibration_blob(frame.image_bgr, CLIPS[clip][1]) for frame in clip_frames(clip, args.frames)]
        outputs = {name: network.run(blobs[0], MIN_SCORE) for name, network in networks.items()}  # warm-up too
        cpu, wall = {name: [] for name in networks}, {name: [] for name in networks}
        loads = [load_average()]
        for _ in range(args.rounds):
            for blob in blobs:
                for name, network in networks.items():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    network.run(blob, MIN_SCORE)
                    wall[name].append(1000.0 * (time.perf_counter() - start))
                    cpu[name].append(1000.0 * (time.process_time() - cpu_start))
        loads.append(load_average())
        for name in networks:
            head, _, form = name.partition(", ")
            reference = f"{head}, as exported"
            difference = (float(np.abs(outputs[name] - outputs[reference]).max())
                          if outputs[name].shape == outputs[reference].shape and outputs[name].size else float("nan"))
            lines.append(f"| {clip} | {'x'.join(map(str, blobs[0].shape[2:]))} | {name} | "
                         f"{statistics.median(cpu[name]):.1f} | {statistics.median(wall[name]):.1f} | "
                         f"{statistics.median(cpu[reference]) / statistics.median(cpu[name]):.2f}x | "
                         f"{difference:.1e} | {loads[0]:.1f}-{loads[-1]:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with atomic_write(Path(args.markdown)) as handle:
            handle.write("# The channel-split rewrite (detection/onnx_graph.py): detector network with and without "
                         "(interleaved)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
