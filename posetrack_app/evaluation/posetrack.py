"""PoseTrack multi-person pose estimation (AP) and tracking (MOTA) scores, with the official tool's semantics.

Shape glossary:
    G  GT persons in a frame, P predicted persons in a frame
    J  the 15 scored joints, in the official order (`EVAL_JOINT_NAMES`; head_bottom is the official "neck")

The official tool is poseval (PoseTrack 2017/2018: py/eval_helpers.py, evaluateAP.py, evaluateTracking.py).
What it does, and so what this module does:
- Only frames with at least one GT person are scored; prediction frames pair with GT frames by position.
  Then persons without a point list are dropped, and in frames with ignore regions every GT and predicted
  point strictly inside a region is removed, then the persons left with no point.
- Distance of a joint: |p_gt - p_pred| / (0.6 x diagonal of the GT head box); a match is d <= 0.5.
- AP: per frame, pck[pred, gt] = matched joints / annotated joints of the GT person; each prediction keeps
  its best GT, each GT the best of the predictions that chose it (first on ties); a GT with pck 0 stays
  unassigned. Each joint of an assigned prediction is a TP when it matches its GT's joint, otherwise FP;
  joints of unassigned predictions are FP. Per joint all candidates of all frames are ranked by score
  (missing score = -9999) and AP is the VOC all-points area (precision made monotone), recall over the
  number of annotated GT joints. A joint with no predictions has AP 0.
- MOTA: per joint, objects = GT persons with the joint, hypotheses = predicted persons with it, pairable iff
  d <= 0.5 with cost d; CLEAR MOT per sequence (motmetrics' algorithm); the last scored frame of each sequence is left
  out; a frame with no predicted person (or no GT person left) contributes exactly one object, one miss and
  one false positive per joint instead of its real persons. MOTA_j = 1 - (misses + switches + FP) / objects
  over all sequences; totals are the mean over joints where defined.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence as SequenceType, Tuple

import numpy as np

from ..errors import UserError
from ..io.posetrack_json import (EVAL_JOINT_NAMES, EVAL_TO_LAYOUT, NUM_EVAL_JOINTS, PoseTrackFormatError,
                                 Sequence, read_sequence)

log = logging.getLogger(__name__)

DISTANCE_THRESHOLD = 0.5
HEAD_SIZE_FACTOR = 0.6
MISSING_SCORE = -9999.0
# Object and hypothesis id the official tool puts into a frame it cannot pair (no predictions / no GT).
_PLACEHOLDER_ID = 0

# The official table: Head = mean(head_top, neck, nose), the rest average left and right; Total is the mean
# over the 15 joints (not over the groups).
JOINT_GROUPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("Head", ("head_top", "head_bottom", "nose")),
    ("Shou", ("right_shoulder", "left_shoulder")),
    ("Elb", ("right_elbow", "left_elbow")),
    ("Wri", ("right_wrist", "left_wrist")),
    ("Hip", ("right_hip", "left_hip")),
    ("Knee", ("right_knee", "left_knee")),
    ("Ankl", ("right_ankle", "left_ankle")),
)


def display_joint_name(name: str) -> str:
    return "neck" if name == "head_bottom" else name


# ------------------------------------------------------------------------------------------------ results

@dataclass(frozen=True)
class JointAP:
    """AP, final precision and recall (percent) of one joint; NaN where the joint has no GT point."""

    name: str
    ap: float
    precision: float
    recall: float
    num_gt: int
    num_predictions: int


@dataclass(frozen=True)
class JointMOT:
    """CLEAR MOT of one joint over all sequences (percent); NaN where undefined (no objects)."""

    name: str
    mota: float
    motp: float
    precision: float
    recall: float
    num_objects: int
    num_misses: int
    num_switches: int
    num_false_positives: int
    num_detections: int


def _nanmean(values: Iterable[float]) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _grouped(per_joint: Dict[str, float]) -> Dict[str, float]:
    # Plain mean inside a group (a NaN joint makes its group NaN), as the official table does.
    groups = {label: float(np.mean([per_joint[n] for n in names])) for label, names in JOINT_GROUPS}
    groups["Total"] = _nanmean(per_joint.values())
    return groups


@dataclass(frozen=True)
class PoseTrackResult:
    joint_names: Tuple[str, ...]
    ap: Tuple[JointAP, ...]
    mot: Tuple[JointMOT, ...]
    num_sequences: int
    num_frames: int
    num_mot_frames: int

    @property
    def total_ap(self) -> float:
        return _nanmean(j.ap for j in self.ap)

    @property
    def total_mota(self) -> float:
        return _nanmean(j.mota for j in self.mot)

    @property
    def total_motp(self) -> float:
        return _nanmean(j.motp for j in self.mot)

    @property
    def total_mot_precision(self) -> float:
        return _nanmean(j.precision for j in self.mot)

    @property
    def total_mot_recall(self) -> float:
        return _nanmean(j.recall for j in self.mot)

    def ap_groups(self) -> Dict[str, float]:
        return _grouped({j.name: j.ap for j in self.ap})

    def mota_groups(self) -> Dict[str, float]:
        return _grouped({j.name: j.mota for j in self.mot})

    def ap_of(self, name: str) -> JointAP:
        return self.ap[self.joint_names.index(name)]

    def mot_of(self, name: str) -> JointMOT:
        return self.mot[self.joint_names.index(name)]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (NaN becomes None)."""
        def clean(value):
            if isinstance(value, float) and np.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value
        return clean({
            "num_sequences": self.num_sequences,
            "num_frames": self.num_frames,
            "num_mot_frames": self.num_mot_frames,
            "ap": {"groups": self.ap_groups(), "joints": [asdict(j) for j in self.ap]},
            "mot": {
                "mota_groups": self.mota_groups(),
                "total": {"mota": self.total_mota, "motp": self.total_motp,
                          "precision": self.total_mot_precision, "recall": self.total_mot_recall},
                "joints": [asdict(j) for j in self.mot],
            },
        })


# ------------------------------------------------------------------------------------ frame preparation

@dataclass
class _FramePersons:
    """Persons of one scored frame in eval-joint order: keypoints [N, J, 2], present [N, J], scores [N, J]
    (predictions; missing = -9999), head_size [N] (GT), track_ids [N]."""

    keypoints: np.ndarray
    present: np.ndarray
    scores: np.ndarray
    head_size: np.ndarray
    track_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.track_ids)


def points_strictly_inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """bool [M]: which points [M, 2] lie strictly inside `polygon` [V, 2] (even-odd rule; points on an edge
    are outside, like shapely's Polygon.contains). Fewer than 3 vertices contain nothing."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(polygon) < 3 or len(points) == 0:
        return np.zeros(len(points), dtype=bool)
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    inside = (np.sum(straddles & (x < x_cross), axis=1) % 2) == 1
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    on_edge = ((cross == 0) & (np.minimum(x1, x2) <= x) & (x <= np.maximum(x1, x2))
               & (np.minimum(y1, y2) <= y) & (y <= np.maximum(y1, y2)))
    return inside & ~on_edge.any(axis=1)


def _frame_persons(persons, regions: List[np.ndarray], is_gt: bool) -> _FramePersons:
    persons = [p for p in persons if p.has_point_list]
    n = len(persons)
    keypoints = np.zeros((n, NUM_EVAL_JOINTS, 2))
    present = np.zeros((n, NUM_EVAL_JOINTS), dtype=bool)
    scores = np.full((n, NUM_EVAL_JOINTS), MISSING_SCORE)
    head_size = np.full(n, np.nan)
    track_ids = np.zeros(n, dtype=np.int64)
    for i, person in enumerate(persons):
        keypoints[i] = person.keypoints[EVAL_TO_LAYOUT]
        present[i] = person.present[EVAL_TO_LAYOUT]
        s = person.keypoint_scores[EVAL_TO_LAYOUT]
        scores[i] = np.where(np.isnan(s), MISSING_SCORE, s)
        track_ids[i] = person.track_id
        if is_gt and person.head_box_xyxy is not None:
            x1, y1, x2, y2 = person.head_box_xyxy
            head_size[i] = HEAD_SIZE_FACTOR * np.hypot(x2 - x1, y2 - y1)
    if regions and n:
        flat = keypoints.reshape(-1, 2)
        ignored = np.zeros(len(flat), dtype=bool)
        for region in regions:
            ignored |= points_strictly_inside(flat, region)
        present &= ~ignored.reshape(n, NUM_EVAL_JOINTS)
        keep = present.any(axis=1)
        keypoints, present, scores, head_size, track_ids = (
            keypoints[keep], present[keep], scores[keep], head_size[keep], track_ids[keep])
    return _FramePersons(keypoints, present, scores, head_size, track_ids)


def _check_unique_ids(sequence: Sequence, what: str) -> None:
    for f_idx, frame in enumerate(sequence.frames):
        ids = [p.track_id for p in frame.persons]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise PoseTrackFormatError(
                f"{sequence.path or sequence.name}: frame {f_idx} ({frame.file_name}) has duplicate track ids "
                f"{dup} in the {what}; track ids must be unique within a frame")


def _check_pair(gt: Sequence, pred: Sequence) -> None:
    if len(gt.frames) != len(pred.frames):
        raise PoseTrackFormatError(
            f"{pred.path or pred.name}: {len(pred.frames)} frames, but the GT {gt.path or gt.name} has "
            f"{len(gt.frames)}: write one entry per GT frame, in the GT's order (empty ones included)")
    _check_unique_ids(gt, "ground truth")
    _check_unique_ids(pred, "predictions")
    for f_idx, frame in enumerate(gt.frames):
        for p_idx, person in enumerate(frame.persons):
            if person.head_box_xyxy is None and person.num_points:
                raise PoseTrackFormatError(
                    f"{gt.path or gt.name}: frame {f_idx} ({frame.file_name}), person {p_idx} has no head box "
                    "(x1/y1/x2/y2 in 2017 files, bbox_head in 2018 files); PoseTrack scoring needs it")


# --------------------------------------------------------------------------------------------- scoring

@dataclass
class _FrameScore:
    """What one frame contributes: AP candidates per joint and the MOT update per joint."""

    candidate_scores: List[np.ndarray]   # per joint: [C_j]
    candidate_labels: List[np.ndarray]   # per joint: bool [C_j]
    num_gt: np.ndarray                   # [J]
    mot: List[Tuple[np.ndarray, np.ndarray, np.ndarray]]  # per joint: oids, hids, dist [O, H] (NaN = no pair)


def _score_frame(gt: _FramePersons, pr: _FramePersons) -> _FrameScore:
    num_gt = gt.present.sum(axis=0).astype(np.int64)
    if len(gt) and len(pr):
        diff = pr.keypoints[:, None] - gt.keypoints[None]                      # [P, G, J, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.linalg.norm(diff, axis=3) / gt.head_size[None, :, None]  # [P, G, J]
        dist = np.where(pr.present[:, None, :] & gt.present[None, :, :], dist, np.inf)
        match = dist <= DISTANCE_THRESHOLD
        pck = match.sum(axis=2).astype(np.float64)                             # [P, G]
        annotated = gt.present.sum(axis=1)
        pck[:, annotated > 0] /= annotated[annotated > 0]
        rows = np.arange(len(pr))
        best_gt = np.argmax(pck, axis=1)
        kept = np.zeros_like(pck)
        kept[rows, best_gt] = pck[rows, best_gt]
        pred_of_gt = np.argmax(kept, axis=0)
        pred_of_gt[np.max(kept, axis=0) == 0] = -1
        labels = np.zeros((len(pr), NUM_EVAL_JOINTS), dtype=bool)
        for g, p in enumerate(pred_of_gt):
            if p >= 0:
                labels[p] = match[p, g]
        candidate_scores = [pr.scores[pr.present[:, j], j] for j in range(NUM_EVAL_JOINTS)]
        candidate_labels = [labels[pr.present[:, j], j] for j in range(NUM_EVAL_JOINTS)]
        mot = []
        for j in range(NUM_EVAL_JOINTS):
            g_sel = np.flatnonzero(gt.present[:, j])
            p_sel = np.flatnonzero(pr.present[:, j])
            d = dist[np.ix_(p_sel, g_sel, [j])][:, :, 0].T                     # [O, H]
            d = np.where(d <= DISTANCE_THRESHOLD, d, np.nan)
            mot.append((gt.track_ids[g_sel], pr.track_ids[p_sel], d))
        return _FrameScore(candidate_scores, candidate_labels, num_gt, mot)
    # No pairing possible. Without GT every predicted joint is a false positive for AP.
    candidate_scores, candidate_labels = [], []
    for j in range(NUM_EVAL_JOINTS):
        scores = pr.scores[pr.present[:, j], j] if not len(gt) else np.zeros(0)
        candidate_scores.append(scores)
        candidate_labels.append(np.zeros(len(scores), dtype=bool))
    placeholder = (np.array([_PLACEHOLDER_ID]), np.array([_PLACEHOLDER_ID]), np.full((1, 1), np.nan))
    return _FrameScore(candidate_scores, candidate_labels, num_gt, [placeholder] * NUM_EVAL_JOINTS)


def average_precision(scores: np.ndarray, labels: np.ndarray, num_positives: float) -> Tuple[float, float, float]:
    """VOC all-points AP, final precision and final recall (fractions) of ranked candidates.

    Ranking is numpy's default argsort of the scores, reversed, as the official tool ranks them, so that ties
    break the same way. Without candidates all three are 0; with candidates but no positives, NaN.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if len(scores) == 0:
        return 0.0, 0.0, 0.0
    order = scores.argsort()[::-1]
    true_positives = np.cumsum(labels[order])
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = true_positives / float(num_positives)
    precision = true_positives / np.arange(1, len(scores) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    ap = float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))
    return ap, float(precision[-1]), float(recall[-1])


class ClearMotCounter:
    """CLEAR MOT counts of one joint over one sequence, frame by frame.

    The algorithm is motmetrics' MOTAccumulator.update (1.4.0), which the official tool uses: first keep
    last frame's object-hypothesis pairs that are still pairable, then solve the rest with motmetrics' own
    linear assignment solver (same solver, so the same choice among equal-cost assignments); a matched
    object whose previous partner differs is an ID switch. motmetrics also logs every event in a pandas
    table, which costs ~1 ms per update; this keeps only the counts. `evaluate_sequences(...,
    mot_engine="motmetrics")` runs motmetrics itself, and the tests check both give the same counts.
    """

    def __init__(self) -> None:
        self.partner: Dict[int, int] = {}
        self.objects = self.misses = self.switches = self.false_positives = self.matches = 0
        self.sum_distance = 0.0

    def update(self, oids: np.ndarray, hids: np.ndarray, dist: np.ndarray) -> None:
        """oids [O], hids [H] track ids; dist [O, H], NaN where a pair is not allowed."""
        from motmetrics.lap import linear_sum_assignment

        oids, hids = [int(o) for o in oids], [int(h) for h in hids]
        self.objects += len(oids)
        if not oids or not hids:
            self.misses += len(oids)
            self.false_positives += len(hids)
            return
        dist = np.array(dist, dtype=np.float64).reshape(len(oids), len(hids))
        o_done = np.zeros(len(oids), dtype=bool)
        h_done = np.zeros(len(hids), dtype=bool)
        for i, o in enumerate(oids):
            previous = self.partner.get(o)
            if previous is None:
                continue
            for j, h in enumerate(hids):
                if h == previous and not h_done[j]:
                    if np.isfinite(dist[i, j]):
                        o_done[i] = h_done[j] = True
                        self.matches += 1
                        self.sum_distance += dist[i, j]
                    break
        dist[o_done, :] = np.nan
        dist[:, h_done] = np.nan
        if np.isfinite(dist).any():
            for i, j in zip(*linear_sum_assignment(dist)):
                if not np.isfinite(dist[i, j]):
                    continue
                o, h = oids[i], hids[j]
                if o in self.partner and self.partner[o] != h:
                    self.switches += 1
                else:
                    self.matches += 1
                self.sum_distance += dist[i, j]
                o_done[i] = h_done[j] = True
                self.partner[o] = h
        self.misses += int((~o_done).sum())
        self.false_positives += int((~h_done).sum())

    def counts(self) -> np.ndarray:
        detections = self.matches + self.switches
        return np.array([self.objects, self.misses, self.switches, self.false_positives, detections,
                         self.sum_distance], dtype=np.float64)


def _clear_mot_counts(frames: List[_FrameScore], engine: str = "builtin") -> np.ndarray:
    """float [J, 6]: objects, misses, switches, false positives, detections, sum of matched distances,
    over the frames of one sequence."""
    counts = np.zeros((NUM_EVAL_JOINTS, 6))
    if not frames:
        return counts
    if engine == "builtin":
        for j in range(NUM_EVAL_JOINTS):
            counter = ClearMotCounter()
            for frame in frames:
                counter.update(*frame.mot[j])
            counts[j] = counter.counts()
        return counts
    if engine != "motmetrics":
        raise ValueError(f"unknown MOT engine {engine!r}; choose builtin or motmetrics")
    import motmetrics

    for j in range(NUM_EVAL_JOINTS):
        acc = motmetrics.MOTAccumulator(auto_id=True)
        for frame in frames:
            acc.update(*frame.mot[j])
        events = acc.mot_events
        types = events["Type"].astype(str).value_counts()
        matched = events["Type"].isin(["MATCH", "SWITCH"])
        misses, switches, fps, matches = (int(types.get(t, 0)) for t in ("MISS", "SWITCH", "FP", "MATCH"))
        counts[j] = (matches + switches + misses, misses, switches, fps, matches + switches,
                     float(events.loc[matched, "D"].sum()))
    return counts


def evaluate_sequences(pairs: SequenceType[Tuple[Sequence, Sequence]], mot_engine: str = "builtin") -> PoseTrackResult:
    """Score (GT, prediction) sequence pairs: AP and CLEAR MOT per joint and in total.

    mot_engine: "builtin" (`ClearMotCounter`, motmetrics' algorithm and solver without its event log) or
    "motmetrics" (its MOTAccumulator; same counts, ~20x slower).

    Raises PoseTrackFormatError for a frame-count mismatch, duplicate track ids in a frame or a GT person
    without head box.
    """
    scores: List[List[np.ndarray]] = [[] for _ in range(NUM_EVAL_JOINTS)]
    labels: List[List[np.ndarray]] = [[] for _ in range(NUM_EVAL_JOINTS)]
    num_gt = np.zeros(NUM_EVAL_JOINTS, dtype=np.int64)
    mot_counts = np.zeros((NUM_EVAL_JOINTS, 6))
    num_frames = num_mot_frames = 0
    for gt, pred in pairs:
        _check_pair(gt, pred)
        frame_scores = []
        for gt_frame, pred_frame in zip(gt.frames, pred.frames):
            if not gt_frame.persons:
                continue
            regions = gt_frame.ignore_regions
            fs = _score_frame(_frame_persons(gt_frame.persons, regions, True),
                              _frame_persons(pred_frame.persons, regions, False))
            frame_scores.append(fs)
            num_gt += fs.num_gt
            for j in range(NUM_EVAL_JOINTS):
                scores[j].append(fs.candidate_scores[j])
                labels[j].append(fs.candidate_labels[j])
        num_frames += len(frame_scores)
        # The official tool leaves out the last scored frame of every sequence.
        mot_frames = frame_scores[:-1]
        num_mot_frames += len(mot_frames)
        mot_counts += _clear_mot_counts(mot_frames, mot_engine)

    ap_results = []
    for j, name in enumerate(EVAL_JOINT_NAMES):
        s = np.concatenate(scores[j]) if scores[j] else np.zeros(0)
        lab = np.concatenate(labels[j]) if labels[j] else np.zeros(0, dtype=bool)
        ap, pre, rec = average_precision(s, lab, num_gt[j])
        ap_results.append(JointAP(name, 100 * ap, 100 * pre, 100 * rec, int(num_gt[j]), int(len(s))))

    mot_results = []
    for j, name in enumerate(EVAL_JOINT_NAMES):
        objects, misses, switches, fps, detections, sum_d = mot_counts[j]
        nan = float("nan")
        mota = 100 * (1 - (misses + switches + fps) / objects) if objects > 0 else nan
        motp = 100 * (1 - sum_d / detections) if detections > 0 else 0.0
        precision = 100 * detections / (detections + fps) if detections + fps > 0 else nan
        recall = 100 * detections / objects if objects > 0 else nan
        mot_results.append(JointMOT(name, float(mota), float(motp), float(precision), float(recall),
                                    int(objects), int(misses),
                                    int(switches), int(fps), int(detections)))
    return PoseTrackResult(EVAL_JOINT_NAMES, tuple(ap_results), tuple(mot_results),
                           num_sequences=len(pairs), num_frames=num_frames, num_mot_frames=num_mot_frames)


def load_folder_pairs(gt_dir, pred_dir) -> List[Tuple[Sequence, Sequence]]:
    """Read every GT file of `gt_dir` (*.json, sorted) and the prediction file of the same name in `pred_dir`."""
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    if not gt_dir.is_dir():
        raise UserError(f"GT folder {gt_dir} does not exist (expected a folder of PoseTrack .json files)")
    if not pred_dir.is_dir():
        raise UserError(f"prediction folder {pred_dir} does not exist")
    gt_files = sorted(gt_dir.glob("*.json"))
    if not gt_files:
        raise UserError(f"GT folder {gt_dir} holds no .json sequence files")
    pairs = []
    for gt_file in gt_files:
        pred_file = pred_dir / gt_file.name
        if not pred_file.is_file():
            raise PoseTrackFormatError(f"{pred_file}: prediction file missing for GT sequence {gt_file}; "
                                       "every GT sequence needs a prediction file of the same name")
        pairs.append((read_sequence(gt_file), read_sequence(pred_file)))
    return pairs


def evaluate_folders(gt_dir, pred_dir, mot_engine: str = "builtin") -> PoseTrackResult:
    return evaluate_sequences(load_folder_pairs(gt_dir, pred_dir), mot_engine)
