"""Frame time against persons per frame (1, 2, 5, 10, 20) and resolution (480p, 720p, 1080p), for the whole
pipeline and for the tracker alone, on synthetic clips. One command rewrites the JSON, the PNGs and the table:

    python benchmarks/scaling.py --out benchmarks/results/scaling_cpu

writes scaling_cpu.json, scaling_cpu_pipeline.png, scaling_cpu_tracker_<kind>.png, scaling_cpu.md.

Whole pipeline: the sequential loop of `posetrack bench` (decode of an mp4v-encoded synthetic clip, detector
network, propagate, pose stage, tracker, render), so a frame's time is the sum of its stages. The pose and
tracking stages get the clip's known persons through a stub detector; the detector network still runs on every
frame (its output discarded) so that its cost at that resolution is counted. With the default config the pose
stage is the detector's keypoints (no HRNet weights): pass --set pose.weights=... for HRNet.
Tracker alone: `propose(frame)` + `update(frame, poses)` per frame, poses from the known persons.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from posetrack_app.benchmark import environment  # noqa: E402
from posetrack_app.benchmark.runs import run_sequential  # noqa: E402
from posetrack_app.benchmark.synthetic import (  # noqa: E402
    SYNTHETIC_DETECTIONS_NOTE, SyntheticClip, SyntheticDetector, parse_resolution, synthetic_video)
from posetrack_app.config import load_config, replace  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402
from posetrack_app.io.sources import open_video_file  # noqa: E402
from posetrack_app.build import build_detector, build_pipeline, build_tracker  # noqa: E402
from posetrack_app.pose.detector_keypoints import DetectorKeypointPoses  # noqa: E402
from posetrack_app.timing import StageTimer, stats_from_ms  # noqa: E402

sys.path.insert(0, str(HERE))
import plot_results  # noqa: E402


def _csv_ints(text):
    return [int(v) for v in text.split(",") if v]


def measure_pipeline(pipeline, synthetic_detector, clip, warmup, frames):
    """The sequential bench loop on `clip`; `synthetic_detector` (the pipeline's detector) is pointed at the clip,
    so the pose network and tracker built once serve every point."""
    synthetic_detector.clip = clip
    video, keep_alive = synthetic_video(clip)
    try:
        run = run_sequential(pipeline, open_video_file(video), warmup=warmup, frames=frames)
    finally:
        keep_alive.cleanup()
    frame = stats_from_ms(run.frame_interval_ms)
    return {
        "frame_median_ms": round(frame.median_ms, 3),
        "frame_p95_ms": round(frame.p95_ms, 3),
        "fps": round(run.fps, 3),
        "persons_mean": round(float(np.mean(run.persons_per_frame)), 2),
        "stage_median_ms": {name: round(s.median_ms, 3) for name, s in run.stage_stats.items()},
    }


def measure_tracker(tracker, clip, warmup, frames):
    pose_stage = DetectorKeypointPoses(clip.skeleton)
    tracker.reset()
    durations_ms = []
    for frame in clip.frames():
        poses = pose_stage(frame, clip.detections(frame.index))
        start = time.perf_counter()
        tracker.propose(frame)
        tracker.update(frame, poses)
        if frame.index >= warmup:
            durations_ms.append(1000.0 * (time.perf_counter() - start))
    s = stats_from_ms(durations_ms[:frames])
    return {"median_ms": round(s.median_ms, 3), "p95_ms": round(s.p95_ms, 3), "mean_ms": round(s.mean_ms, 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results" / "scaling_cpu"),
                        help="output prefix (.json, _pipeline.png, _tracker_<kind>.png, .md)")
    parser.add_argument("--persons", type=_csv_ints, default=[1, 2, 5, 10, 20])
    parser.add_argument("--resolutions", default="480p,720p,1080p")
    parser.add_argument("--frames", type=int, default=30, help="frames measured per point (30)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--trackers", default="iou,flowtrack", help="tracker kinds timed alone")
    parser.add_argument("--no-pipeline", action="store_true", help="tracker-alone curves only")
    parser.add_argument("--no-detector-network", action="store_true",
                        help="do not run the detector network (detect costs ~0)")
    parser.add_argument("--config", help="YAML preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        parser.error("--frames must be >= 1 and --warmup >= 0")
    resolutions = args.resolutions.split(",")
    sizes = {r: parse_resolution(r) for r in resolutions}
    cfg = load_config(args.config, args.overrides)
    load_start = environment.load_average_1min()

    def make_clip(resolution, persons):
        return SyntheticClip(persons, *sizes[resolution], args.warmup + args.frames, seed=persons)

    pipeline_rows = []
    setup = {}
    if not args.no_pipeline:
        # Built once: the stub detector is pointed at each point's clip in turn.
        synthetic_detector = SyntheticDetector(make_clip(resolutions[0], args.persons[0]),
                                               network=None if args.no_detector_network else build_detector(cfg))
        pipeline = build_pipeline(cfg, timer=StageTimer.for_device(cfg.pose.device), detector=synthetic_detector)
        setup = environment.describe_setup(cfg, pipeline)
        for resolution in resolutions:
            for persons in args.persons:
                row = {"resolution": resolution, "persons": persons,
                       **measure_pipeline(pipeline, synthetic_detector, make_clip(resolution, persons),
                                          args.warmup, args.frames)}
                pipeline_rows.append(row)
                print(f"pipeline {resolution:>6} {persons:3d} persons: {row['frame_median_ms']:8.1f} ms median, "
                      f"{row['frame_p95_ms']:8.1f} ms p95", flush=True)

    tracker_rows = {}
    for kind in [k for k in args.trackers.split(",") if k]:
        tracker = build_tracker(replace(cfg, **{"tracker.kind": kind}), SyntheticClip.skeleton)
        rows = tracker_rows[kind] = []
        for resolution in resolutions:
            for persons in args.persons:
                clip = make_clip(resolution, persons)
                row = {"resolution": resolution, "persons": persons,
                       **measure_tracker(tracker, clip, args.warmup, args.frames)}
                rows.append(row)
                print(f"tracker {kind:>9} {resolution:>6} {persons:3d} persons: {row['median_ms']:8.2f} ms median",
                      flush=True)

    record = {
        "schema": "posetrack-scaling/1",
        "command": " ".join(["python", "benchmarks/scaling.py"] + sys.argv[1:] if argv is None else argv),
        "persons": args.persons,
        "resolutions": resolutions,
        "frames": args.frames,
        "warmup": args.warmup,
        "detections_note": SYNTHETIC_DETECTIONS_NOTE + (
            "; detector network not run" if args.no_detector_network
            else "; the detector network runs on every frame for timing, its output discarded"),
        "pose_stage": setup.get("pose_stage", "DetectorKeypointPoses (tracker-alone)"),
        "detector_input_size": cfg.detector.input_size,
        "setup": setup,
        "load_average_1min": {"start": load_start, "end": environment.load_average_1min()},
        "environment": environment.capture_environment(),
        "pipeline": pipeline_rows,
        "trackers": tracker_rows,
    }
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), record, indent=2)
    pngs = plot_results.plot_scaling(record, out)
    with atomic_write(out.with_suffix(".md")) as handle:
        handle.write(plot_results.scaling_markdown(record))
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, " + ", ".join(str(p) for p in pngs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
