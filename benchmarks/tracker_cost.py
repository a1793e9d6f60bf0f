"""Per-frame cost of the FlowTracker alone on PETS09-S2L1: flow + box-merge NMS + pose NMS + association.

The detector and the pose stage are excluded: detections are replayed from the dev suite's cache
(benchmarks/tracker_suite.py: our YOLO11n-pose detector, one .npz per clip and input size; made here if absent),
and the detector-keypoint pose stage, which only repackages arrays, runs outside the timed region.
Reports the median and 90th percentile milliseconds per frame, overall and for frames with up to 10 people.

    python benchmarks/tracker_cost.py --size 960 [--set tracker.flow.max_propagation_s=1]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from posetrack_app.build import build_pose_stage, build_tracker, detector_score_threshold  # noqa: E402
from posetrack_app.config import load_config, replace  # noqa: E402
from posetrack_app.structures import Frame  # noqa: E402
from posetrack_app.tracking.merge import merge_detections  # noqa: E402
from tracker_suite import above, cached_detections, load_pets09  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=960, help="detector input size of the replayed detections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--cache-dir", default="/tmp/posetrack_suite")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the video (medians over all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("posetrack_app.build").setLevel(logging.ERROR)

    cfg = load_config(None, ["pose.model=detector", "tracker.kind=flowtrack", *args.overrides])
    cfg = replace(cfg, **{"detector.input_size": args.size})
    clip = load_pets09()
    frames = clip.frames
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    detections = above(cached_detections(clip, args.size, cache)[0], detector_score_threshold(cfg))
    pose_stage = build_pose_stage(cfg)
    tracker = build_tracker(cfg, pose_stage.skeleton)
    merge_iou = cfg.tracker.box_merge_iou_threshold

    per_frame_ms, people = [], []
    for _ in range(args.repeats):
        tracker.reset()
        for i, image in enumerate(frames):
            frame = Frame(i, image, i / clip.fps)
            start = time.perf_counter()
            proposals = tracker.propose(frame)
            boxes = merge_detections(detections[i], proposals, merge_iou)
            elapsed = time.perf_counter() - start
            poses = pose_stage(frame, boxes)          # not timed: repackages the boxes' keypoints
            start = time.perf_counter()
            tracks = tracker.update(frame, poses)
            elapsed += time.perf_counter() - start
            per_frame_ms.append(1000.0 * elapsed)
            people.append(len(tracks))
    ms, people = np.array(per_frame_ms), np.array(people)
    small = ms[people <= 10]
    print(f"FlowTracker cost on vtest.avi ({len(frames)} frames x {args.repeats}, detections at {args.size}, "
          "sparse Lucas-Kanade flow at half resolution):")
    print(f"  all frames:            median {np.median(ms):.2f} ms, p90 {np.percentile(ms, 90):.2f} ms, "
          f"people per frame median {np.median(people):.0f}, max {people.max()}")
    if len(small):
        print(f"  frames with <= 10 people ({len(small)}): median {np.median(small):.2f} ms, "
              f"p90 {np.percentile(small, 90):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
