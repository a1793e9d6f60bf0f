"""Model output -> persons in the PoseTrack layout: joints moved by name, the head rule for COCO-17 models, and
prediction sequences shaped like a GT file. This is not file I/O: io/posetrack_json.py reads and writes the files.

Shape glossary:
    N  persons of one frame
    K  keypoints of the model's layout (`skeleton`); the output has the 17 slots of the PoseTrack-18 layout

`tracks_to_persons` puts a model's output into the PoseTrack layout: by name when the model predicts
head_bottom/head_top (a PoseTrack-trained checkpoint), else through a head-derivation rule (`HEAD_RULES`,
see docs/posetrack.md).
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Sequence as SequenceType, Tuple

import numpy as np

from .errors import UserError
from .io.posetrack_json import NUM_KEYPOINTS, FrameAnnotation, Person, Sequence
from .skeleton import POSETRACK18, Skeleton, keypoint_mapping


def _derive_head_shoulders_nose(keypoints: np.ndarray, scores: np.ndarray, skeleton: Skeleton):
    """head_bottom = S + 0.3 (N - S), head_top = N + 0.5 (N - S), with S the shoulder midpoint and N the nose.

    keypoints: [N, K, 2], scores [N, K] in `skeleton`'s layout. Returns (head_bottom [N, 2], head_top [N, 2],
    score [N]); the score is the lowest of the three inputs', so a derived joint is never more trusted than
    what it was made from. The fractions are the medians over the 14 persons of the PoseTrack 2018 sample
    (docs/posetrack.md).
    """
    nose = keypoints[:, skeleton.index("nose")]
    shoulders = 0.5 * (keypoints[:, skeleton.index("left_shoulder")] + keypoints[:, skeleton.index("right_shoulder")])
    up = nose - shoulders
    score = np.min(scores[:, [skeleton.index("nose"), skeleton.index("left_shoulder"),
                              skeleton.index("right_shoulder")]], axis=1)
    return shoulders + HEAD_BOTTOM_FRACTION * up, nose + HEAD_TOP_FRACTION * up, score


HEAD_BOTTOM_FRACTION = 0.3
HEAD_TOP_FRACTION = 0.5
HEAD_RULES = {
    "shoulders_nose": _derive_head_shoulders_nose,
    # Leave head_bottom and head_top out: those joints then score AP 0 (honest, but costs ~2/15 of the total).
    "none": None,
}


def check_head_rule(head_rule: str) -> str:
    if head_rule not in HEAD_RULES:
        raise UserError(f"unknown PoseTrack head rule {head_rule!r}; choose one of {', '.join(HEAD_RULES)} "
                        "(--set posetrack.head_rule=...)")
    return head_rule


def to_posetrack_layout(keypoints: np.ndarray, scores: np.ndarray, skeleton: Skeleton,
                        head_rule: str = "shoulders_nose") -> Tuple[np.ndarray, np.ndarray]:
    """Model keypoints [N, K_model, 2] + scores [N, K_model] -> PoseTrack-18 layout [N, 17, 2], [N, 17].

    Joints move by name; where the model has no head_bottom/head_top (a COCO-17 model), `head_rule` derives
    them. Slots nothing fills get score NaN (never written).
    """
    check_head_rule(head_rule)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(keypoints)
    mapping = keypoint_mapping(skeleton, POSETRACK18)
    out_kp = np.zeros((n, NUM_KEYPOINTS, 2))
    out_scores = np.full((n, NUM_KEYPOINTS), np.nan)
    for slot, source in enumerate(mapping):
        name = POSETRACK18.keypoint_names[slot]
        if source >= 0 and name not in ("left_ear", "right_ear"):
            out_kp[:, slot] = keypoints[:, source]
            out_scores[:, slot] = scores[:, source]
    needs_head = [s for s in (POSETRACK18.index("head_bottom"), POSETRACK18.index("head_top")) if mapping[s] < 0]
    rule = HEAD_RULES[head_rule]
    if needs_head and rule is not None and n:
        head_bottom, head_top, head_score = rule(keypoints, scores, skeleton)
        for slot, values in ((POSETRACK18.index("head_bottom"), head_bottom), (POSETRACK18.index("head_top"), head_top)):
            if slot in needs_head:
                out_kp[:, slot] = values
                out_scores[:, slot] = head_score
    return out_kp, out_scores


def tracks_to_persons(tracks, skeleton: Skeleton, keypoint_score_threshold: float,
                      head_rule: str = "shoulders_nose") -> List[Person]:
    """Tracks of one frame -> Persons in the PoseTrack layout.

    Keypoints scoring below `keypoint_score_threshold` are dropped (fewer false positives, more misses: it
    moves MOTA); a person left with no keypoint is not written at all.
    """
    keypoints, scores = to_posetrack_layout(tracks.poses.keypoints, tracks.poses.keypoint_scores, skeleton, head_rule)
    persons = []
    for i in range(len(tracks)):
        present = ~np.isnan(scores[i]) & (scores[i] >= keypoint_score_threshold)
        if not present.any():
            continue
        persons.append(Person(
            track_id=int(tracks.track_ids[i]),
            keypoints=np.where(present[:, None], keypoints[i], 0.0),
            present=present,
            keypoint_scores=np.where(present, scores[i], np.nan),
            box_xyxy=tracks.poses.boxes_xyxy[i],
            score=float(tracks.poses.box_scores[i]),
        ))
    return persons


def prediction_template(gt: Sequence) -> Sequence:
    """An empty prediction sequence with the GT's frames (same count, file names, ids, format)."""
    frames = [FrameAnnotation(file_name=f.file_name, image_id=f.image_id, is_labeled=f.is_labeled,
                              image_info=dict(f.image_info)) for f in gt.frames]
    return Sequence(name=gt.name, frames=frames, format=gt.format)


def with_persons(sequence: Sequence, persons_per_frame: SequenceType[List[Person]]) -> Sequence:
    if len(persons_per_frame) != len(sequence.frames):
        raise ValueError(f"{len(persons_per_frame)} person lists for {len(sequence.frames)} frames")
    frames = [replace(f, persons=list(p)) for f, p in zip(sequence.frames, persons_per_frame)]
    return replace(sequence, frames=frames)
