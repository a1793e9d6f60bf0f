"""The tracker dev suite: clips with identity truth, cached detections, and the four trackers run on equal input.

Clips (every one with ground-truth boxes and ids; the synthetic ones also with pose truth):
    pets09            ../shared/data/pets09_s2l1/vtest.avi, 768x576, 7 fps, 795 frames, tiny pedestrians
    MOT17-xx          the seven ../shared/data/mot17_mini clips, 4-8 frames each, 1920x1080 / 640x480, 14-30 fps
    syn7, syn25, syn30  synthetic crossings (benchmarks/synthetic_clips.py) at 7, 25 and 30 fps, exact truth
    syn25pan          the same kind of scene, 960x540 at 25 fps, seen by a panning, shaking hand-held camera

Detections come from our YOLO11n-pose detector (posetrack_app.build.build_detector) at a score threshold of 0.1,
cached per clip and input size as .npz under the cache folder, so tracker experiments replay them. Our pipeline
then keeps the detections at or above the score its detector would run at (build.detector_score_threshold:
detector.score_threshold, or FlowTrack's lower tracker.flow.low_score_threshold); Ultralytics' ByteTrack and
BoT-SORT get every cached detection (>= 0.1), which is what `YOLO(...).track` hands them by default (it sets
conf=0.1 for trackers), with their packaged default settings. So all four trackers see the same detector at the
same size.

Scores: box CLEAR MOT / IDF1 at IoU >= 0.5 (evaluation/mot.py) for every clip; for the synthetic clips also the
PoseTrack mAP and MOTA of the poses (evaluation/posetrack.py), with the peers' poses taken from the detection each
of their tracks was matched to (the issue's method). Before pose scoring, a reported person matched one-to-one (box
IoU >= 0.5) to a not-scored box of the box truth (conf 0) is left out, as the box metric leaves it out.
"""
from __future__ import annotations

import configparser
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import cv2
import numpy as np

from posetrack_app.build import build_detector, build_pose_stage, build_tracker, detector_score_threshold
from posetrack_app.config import AppConfig, replace
from posetrack_app.evaluation.mot import MotFrames, evaluate_mot, load_mot_file
from posetrack_app.ops.boxes import xyxy_to_xywh
from posetrack_app.pipeline import Pipeline
from posetrack_app.structures import Detections, Frame, Poses, Tracks
from posetrack_app.tracking.backfill import Backfill

log = logging.getLogger("tracker_suite")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", "")) if os.environ.get("SHARED_DIR") else None


def shared_data() -> Path:
    """../shared/data beside the checkout, else /work/shared/data (as the tests find it)."""
    for candidate in ([SHARED / "data"] if SHARED else []) + [REPO.parent / "shared" / "data",
                                                               Path("/work/shared/data")]:
        if candidate.is_dir():
            return candidate
    raise SystemExit("shared data not found: set SHARED_DIR to the folder that holds data/")


# Detections are cached at this score so ByteTrack's low-score round gets what `YOLO.track` gives it by default.
CACHE_SCORE_THRESHOLD = 0.1
PEERS = ("bytetrack", "botsort")
OURS = ("iou", "flowtrack")


@dataclass
class Clip:
    """frames: BGR uint8 [H, W, 3] each; gt: MOT frames (1-based) with conf 1 = target, 0 = not scored."""

    name: str
    fps: float
    frames: List[np.ndarray]
    gt: MotFrames
    # PoseTrack ground truth (posetrack_json.Sequence) for clips with pose truth, else None.
    pose_gt: Optional[object] = None
    group: str = ""
    # Name of the cached detections (synthetic clips add a hash of their generator settings).
    cache_key: str = ""

    @property
    def size_wh(self):
        return self.frames[0].shape[1], self.frames[0].shape[0]


def _read_video(path: Path) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    if not frames:
        raise SystemExit(f"cannot read {path}")
    return frames


def load_pets09(max_frames: int = 0) -> Clip:
    root = shared_data() / "pets09_s2l1"
    frames = _read_video(root / "vtest.avi")
    gt = load_mot_file(root / "gt" / "gt.txt")
    if max_frames:
        frames = frames[:max_frames]
        gt = {f: v for f, v in gt.items() if f <= max_frames}
    fps = float(_seqinfo(root / "seqinfo.ini")["framerate"])  # 7: the AVI header's 10 is wrong
    return Clip("pets09", fps, frames, gt, group="pets09")


def _seqinfo(path: Path) -> dict:
    parser = configparser.ConfigParser()
    parser.read(path)
    return {k.lower(): v for k, v in parser["Sequence"].items()}


# MOT17 classes that are regions to ignore (person on vehicle, static person, distractor, reflection).
MOT17_IGNORED_CLASSES = (2, 7, 8, 12)


def load_mot17(name: str) -> Clip:
    root = shared_data() / "mot17_mini" / name
    info = _seqinfo(root / "seqinfo.ini")
    paths = sorted((root / "img1").glob("*.jpg"))
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    table = np.loadtxt(root / "gt" / "gt.txt", delimiter=",", ndmin=2)
    gt: MotFrames = {}
    for frame in range(1, len(frames) + 1):
        rows = table[table[:, 0] == frame]
        target = (rows[:, 6] == 1) & (rows[:, 7] == 1)
        ignored = np.isin(rows[:, 7], MOT17_IGNORED_CLASSES) | ((rows[:, 6] == 0) & (rows[:, 7] == 1))
        rows, target = rows[target | ignored], target[target | ignored]
        gt[frame] = (rows[:, 1].astype(np.int64), rows[:, 2:6].astype(np.float32), target.astype(np.float32))
    return Clip(name, float(info["framerate"]), frames, gt, group="mot17")


def mot17_names() -> List[str]:
    return sorted(p.name for p in (shared_data() / "mot17_mini").iterdir() if (p / "gt" / "gt.txt").is_file())


def suite_clips() -> List[str]:
    """The dev suite's clip names: PETS09, the seven MOT17 clips (as "mot17") and every synthetic clip."""
    from synthetic_clips import SYNTHETIC_CLIPS

    return ["pets09", "mot17", *SYNTHETIC_CLIPS]


def load_clips(names: List[str], cache_dir: Path) -> List[Clip]:
    from synthetic_clips import SYNTHETIC_CLIPS, load_synthetic

    cache_dir.mkdir(parents=True, exist_ok=True)  # the synthetic clips cache their sprites and background here
    clips = []
    for name in names:
        if name == "pets09":
            clips.append(load_pets09())
        elif name == "mot17":
            clips += [load_mot17(n) for n in mot17_names()]
        elif name.startswith("MOT17-"):
            clips.append(load_mot17(name))
        elif name in SYNTHETIC_CLIPS:
            clips.append(load_synthetic(name, cache_dir))
        else:
            raise SystemExit(f"unknown clip {name}; choose pets09, mot17, MOT17-xx-FRCNN or {', '.join(SYNTHETIC_CLIPS)}")
    return clips


# ------------------------------------------------------------------------------------------------ detections

def _pack(dets: List[Detections], **extra) -> dict:
    k = next((d.keypoints.shape[1] for d in dets if d.keypoints is not None), 17)
    return dict(counts=np.array([len(d) for d in dets]),
                boxes=np.concatenate([d.boxes_xyxy for d in dets]).reshape(-1, 4),
                scores=np.concatenate([d.scores for d in dets]),
                keypoints=np.concatenate([d.keypoints for d in dets]).reshape(-1, k, 3), **extra)


def _unpack(z) -> List[Detections]:
    offsets = np.concatenate([[0], np.cumsum(z["counts"])])
    return [Detections(z["boxes"][a:b], z["scores"][a:b], z["keypoints"][a:b]) for a, b in zip(offsets[:-1], offsets[1:])]


def cached_detections(clip: Clip, size: int, cache_dir: Path, base: Optional[AppConfig] = None):
    """(detections per frame at score >= CACHE_SCORE_THRESHOLD, detector seconds per frame)."""
    cache = cache_dir / f"det_{clip.cache_key or clip.name}_{size}_{CACHE_SCORE_THRESHOLD}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return _unpack(z), float(z["seconds_per_frame"])
    cfg = replace(base or AppConfig(), **{"detector.input_size": size,
                                          "detector.score_threshold": CACHE_SCORE_THRESHOLD})
    detector = build_detector(cfg)
    dets, start = [], time.perf_counter()
    for i, image in enumerate(clip.frames):
        dets.append(detector(Frame(i, image, i / clip.fps)))
    seconds = (time.perf_counter() - start) / len(clip.frames)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **_pack(dets, seconds_per_frame=seconds))
    os.replace(tmp, cache)
    log.info("detector %s at %d: %d frames, %.0f ms per frame", clip.name, size, len(dets), 1000 * seconds)
    return dets, seconds


def above(dets: List[Detections], threshold: float) -> List[Detections]:
    return [d.select(np.flatnonzero(d.scores >= threshold)) for d in dets]


# Detector noise of the size that separates our int8 detector from the fp32 one (measured on the detections of
# PETS09, syn7 and syn30 at size auto, matched one-to-one by IoU: box corners differ by a median 0.35% of the box
# height, joints by 0.9%, scores by a standard deviation of 0.04-0.055). A tracker whose scores move far more than
# this noise moves the detections is deciding on chance: the spread over seeds says how far one run can be trusted.
NOISE_BOX_SD = 0.004       # box corners: standard deviation, fraction of the box height
NOISE_JOINT_SD = 0.008     # joint x and y: standard deviation, fraction of the box height
NOISE_SCORE_SD = 0.05      # box and joint scores: standard deviation (then clipped into [0, 1])


def perturbed(dets: List[Detections], seed: int) -> List[Detections]:
    """The detections with seeded Gaussian noise of NOISE_*_SD; boxes whose score falls under
    CACHE_SCORE_THRESHOLD are dropped, as the detector would have."""
    rng = np.random.default_rng(seed)
    out = []
    for d in dets:
        if not len(d):
            out.append(d)
            continue
        height = (d.boxes_xyxy[:, 3] - d.boxes_xyxy[:, 1])[:, None]
        boxes = d.boxes_xyxy + rng.normal(0.0, 1.0, d.boxes_xyxy.shape) * NOISE_BOX_SD * height
        keypoints = d.keypoints.copy()
        keypoints[:, :, :2] += rng.normal(0.0, 1.0, keypoints[:, :, :2].shape) * NOISE_JOINT_SD * height[:, :, None]
        keypoints[:, :, 2] = np.clip(keypoints[:, :, 2] + rng.normal(0.0, NOISE_SCORE_SD, keypoints[:, :, 2].shape),
                                     0.0, 1.0)
        scores = np.clip(d.scores + rng.normal(0.0, NOISE_SCORE_SD, d.scores.shape), 0.0, 1.0)
        keep = scores >= CACHE_SCORE_THRESHOLD
        out.append(Detections(boxes[keep], scores[keep], keypoints[keep]))
    return out


# -------------------------------------------------------------------------------------------------- trackers

@dataclass
class RunOutput:
    """MOT frames (1-based) of the reported boxes, and per frame the Tracks (for pose scoring)."""

    mot: MotFrames
    tracks: List[Tracks] = field(default_factory=list)
    seconds_per_frame: float = 0.0


class ReplayDetector:
    def __init__(self, detections: List[Detections]):
        self.detections = detections

    def __call__(self, frame: Frame) -> Detections:
        return self.detections[frame.index]


def _mot_frames(tracks_per_frame: List[Tracks]) -> MotFrames:
    return _to_mot((tracks.track_ids, tracks.poses.boxes_xyxy) for tracks in tracks_per_frame)


def _to_mot(frames: Iterable[Tuple[np.ndarray, np.ndarray]]) -> MotFrames:
    """MOT frames (1-based) of per-frame (ids [N], boxes xyxy [N, 4]); frames without a box are left out."""
    return {i + 1: (ids, xyxy_to_xywh(boxes), np.ones(len(ids), np.float32))
            for i, (ids, boxes) in enumerate(frames) if len(ids)}


def run_ours(cfg: AppConfig, clip: Clip, detections: List[Detections]) -> RunOutput:
    """Our pipeline (detector replayed, detector-keypoint poses) over the clip (run_pipeline)."""
    cfg = replace(cfg, **{"pose.model": "detector"})
    pose_stage = build_pose_stage(cfg)
    tracker = build_tracker(cfg, pose_stage.skeleton)
    threshold = detector_score_threshold(cfg)
    if threshold < CACHE_SCORE_THRESHOLD - 1e-9:
        raise SystemExit(f"the detection cache holds scores >= {CACHE_SCORE_THRESHOLD}; the pipeline asks for "
                         f"{threshold}: raise tracker.flow.low_score_threshold / detector.score_threshold")
    replay = ReplayDetector(above(detections, threshold))
    return run_pipeline(Pipeline(replay, pose_stage, tracker, detect_every=cfg.detector.detect_every,
                                 box_merge_iou_threshold=cfg.tracker.box_merge_iou_threshold), clip)


def run_pipeline(pipe: Pipeline, clip: Clip) -> RunOutput:
    """`pipe` over the clip at the clip's frame rate; the tracks as an output file holds them (a track confirmed
    late gets its first frames back, tracking/backfill.py)."""
    pipe.reset()
    backfill = Backfill()
    out, start = [], time.perf_counter()
    for i, image in enumerate(clip.frames):
        frame = Frame(i, image, i / clip.fps)
        out += [tracks for _, tracks, _ in backfill.push(frame, pipe.step(frame))]
    out += [tracks for _, tracks, _ in backfill.flush()]
    seconds = (time.perf_counter() - start) / len(clip.frames)
    return RunOutput(_mot_frames(out), out, seconds)


class _Boxes:
    """The slice of ultralytics' Boxes that its trackers read: conf, cls, xywh, xyxy, boolean indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray):
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32).reshape(-1)
        self.cls = np.zeros(len(self.conf), np.float32)

    @property
    def xywh(self):
        x1, y1, x2, y2 = self.xyxy.T
        return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)

    def __len__(self):
        return len(self.conf)

    def __getitem__(self, index):
        return _Boxes(self.xyxy[index], self.conf[index])


def run_peer(name: str, clip: Clip, detections: List[Detections]) -> RunOutput:
    """Ultralytics' BYTETracker / BOTSORT with their packaged defaults over the same cached detections."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace, YAML
    from ultralytics.utils.checks import check_yaml

    args = IterableSimpleNamespace(**YAML.load(check_yaml(f"{name}.yaml")))
    tracker = {"bytetrack": BYTETracker, "botsort": BOTSORT}[name](args=args)
    out, start = [], time.perf_counter()
    for i, image in enumerate(clip.frames):
        det = detections[i]
        rows = tracker.update(_Boxes(det.boxes_xyxy, det.scores), image)
        rows = np.asarray(rows, np.float32).reshape(-1, 8)
        idx = rows[:, 7].astype(int)
        kp = det.keypoints[idx] if len(idx) else np.zeros((0, 17, 3), np.float32)
        poses = Poses(kp[..., :2], np.clip(kp[..., 2], 0, 1), rows[:, :4], rows[:, 5])
        out.append(Tracks(rows[:, 4].astype(np.int64), poses))
    seconds = (time.perf_counter() - start) / len(clip.frames)
    return RunOutput(_mot_frames(out), out, seconds)


def detector_alone_scores(cfg: AppConfig, clip: Clip, detections: List[Detections]) -> Dict[str, float]:
    """FP, FN, precision and recall of the detector alone: every detection at detector.score_threshold reported as
    it is, in every frame, without a tracker (what issue 12's "never worse than the detector alone" compares with).
    Each box is its own identity, so MOTA, IDF1 and ID switches mean nothing here and are left out."""
    kept = above(detections, cfg.detector.score_threshold)
    first_ids = np.cumsum([1] + [len(d) for d in kept])
    scores = box_scores(clip, _to_mot((np.arange(first, first + len(d)), d.boxes_xyxy)
                                      for first, d in zip(first_ids, kept)))
    return {k: scores[k] for k in ("FP", "FN", "Prec", "Rec")}


def run_tracker(name: str, cfg: AppConfig, clip: Clip, detections: List[Detections]) -> RunOutput:
    if name in OURS:
        return run_ours(replace(cfg, **{"tracker.kind": name}), clip, detections)
    if name in PEERS:
        return run_peer(name, clip, detections)
    raise SystemExit(f"unknown tracker {name}; choose from {', '.join(OURS + PEERS)}")


# ---------------------------------------------------------------------------------------------------- scores

def score(clip: Clip, run: RunOutput, frames: Optional[Callable[[int], bool]] = None) -> Dict[str, float]:
    """{MOTA, IDF1, IDSW, FP, FN, Prec, Rec} in % / counts; plus pose mAP, pose MOTA, pose Prec/Rec when the clip
    has pose truth. `frames`: keep only the 1-based frames it accepts."""
    out = box_scores(clip, run.mot, frames)
    if clip.pose_gt is not None and frames is None:
        out.update(pose_scores(clip, run))
    return out


def box_scores(clip: Clip, pred: MotFrames, frames: Optional[Callable[[int], bool]] = None) -> Dict[str, float]:
    """{MOTA, IDF1, IDSW, FP, FN, Prec, Rec} of the MOT frames `pred` against the clip's box truth."""
    gt = clip.gt
    if frames is not None:
        gt = {f: v for f, v in gt.items() if frames(f)}
        pred = {f: v for f, v in pred.items() if frames(f)}
    r = evaluate_mot(gt, pred)
    # Precision is undefined for a tracker that reported nothing (motmetrics then says 0).
    precision = 100 * r.precision if r.num_pred_boxes else float("nan")
    return {"MOTA": 100 * r.mota, "IDF1": 100 * r.idf1, "IDSW": r.id_switches, "FP": r.false_positives,
            "FN": r.false_negatives, "Prec": precision, "Rec": 100 * r.recall}


def _without_non_targets(tracks: Tracks, gt_frame) -> Tracks:
    """The tracks minus those matched one-to-one (IoU >= 0.5) to a not-scored ground-truth box (conf 0: a hidden
    person, a bystander inside a synthetic sprite), as the box metric does: the pose truth cannot mark a bystander
    without removing the joints of the person in front of them (synthetic_clips.py)."""
    from scipy.optimize import linear_sum_assignment

    from posetrack_app.ops.boxes import box_iou, xywh_to_xyxy

    if gt_frame is None or len(tracks) == 0:
        return tracks
    _, boxes_xywh, conf = gt_frame
    others = xywh_to_xyxy(boxes_xywh[conf < 1.0])
    if len(others) == 0:
        return tracks
    iou = box_iou(others, tracks.poses.boxes_xyxy)
    rows, cols = linear_sum_assignment(-np.where(iou >= 0.5, iou, 0.0))
    drop = cols[iou[rows, cols] >= 0.5]
    keep = np.setdiff1d(np.arange(len(tracks)), drop)
    return Tracks(tracks.track_ids[keep], tracks.poses.select(keep), info=tracks.info)


def pose_scores(clip: Clip, run: RunOutput) -> Dict[str, float]:
    from posetrack_app.config import PoseTrackOutputConfig
    from posetrack_app.evaluation.posetrack import evaluate_sequences
    from posetrack_app.posetrack_layout import prediction_template, tracks_to_persons, with_persons
    from posetrack_app.skeleton import COCO17

    out_cfg = PoseTrackOutputConfig()
    tracks = [_without_non_targets(t, clip.gt.get(i + 1)) for i, t in enumerate(run.tracks)]
    persons = [tracks_to_persons(t, COCO17, out_cfg.keypoint_score_threshold, out_cfg.head_rule) for t in tracks]
    pred = with_persons(prediction_template(clip.pose_gt), persons)
    result = evaluate_sequences([(clip.pose_gt, pred)])
    return {"pose mAP": result.total_ap, "pose MOTA": result.total_mota,
            "pose Prec": result.total_mot_precision, "pose Rec": result.total_mot_recall}
