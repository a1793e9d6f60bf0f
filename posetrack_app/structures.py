"""Per-frame data passed between stages: dataclasses of parallel numpy arrays, shapes checked.

Shape glossary:
    N  persons (or boxes) in one frame
    K  keypoints per person
    H x W  image height x width in pixels

All coordinates are continuous image pixels (x right, y down), no `+1` convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


def _as_float32(array, shape_tail: tuple, name: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        raise ValueError(f"{name} must have shape [N, {', '.join(map(str, shape_tail))}], got {array.shape}")
    return array


def _check_length(n: int, array: np.ndarray, name: str) -> None:
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} rows, expected {n}")


@dataclass
class Frame:
    """One decoded video frame.

    image_bgr: uint8 [H, W, 3] as OpenCV decodes it.
    index: 0-based position in the source; timestamp_s: seconds since the source started, on the source's clock
    (a video's presentation times, the capture clock of a live source, index / fps for image folders).
    capture_unix_s: wall-clock (UNIX) time at which a live source captured the frame; None for files, folders
    and frames made by hand. End-to-end latency is measured from it.
    """

    index: int
    image_bgr: np.ndarray
    timestamp_s: float = 0.0
    capture_unix_s: Optional[float] = None

    def __post_init__(self) -> None:
        if self.image_bgr.ndim != 3 or self.image_bgr.shape[2] != 3 or self.image_bgr.dtype != np.uint8:
            raise ValueError(f"Frame.image_bgr must be uint8 [H, W, 3], got {self.image_bgr.dtype} {self.image_bgr.shape}")

    @property
    def height(self) -> int:
        return int(self.image_bgr.shape[0])

    @property
    def width(self) -> int:
        return int(self.image_bgr.shape[1])


def _as_provenance(proposed_by, n: int, name: str) -> np.ndarray:
    """int64 [N] track ids of the tracks that proposed each row; -1 = the detector (also when None is given)."""
    if proposed_by is None:
        return np.full(n, DETECTOR, np.int64)
    proposed_by = np.asarray(proposed_by, dtype=np.int64).reshape(-1)
    _check_length(n, proposed_by, name)
    return proposed_by


# Provenance value of a box or pose the detector found (any other value is the id of the track that proposed it).
DETECTOR = -1


@dataclass
class Detections:
    """Person boxes of one frame.

    boxes_xyxy: float32 [N, 4]; scores: float32 [N];
    keypoints: optional float32 [N, K, 3] (x, y, score) when the box source predicts joints
    (the YOLO-pose detector, or flow-propagated poses);
    proposed_by: int64 [N] provenance: -1 (DETECTOR) for a detector box, else the id of the track whose
    flow-propagated box this is. Omitted = all detector boxes.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    keypoints: Optional[np.ndarray] = None
    proposed_by: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.boxes_xyxy = _as_float32(self.boxes_xyxy, (4,), "boxes_xyxy")
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        _check_length(len(self.boxes_xyxy), self.scores, "scores")
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if self.keypoints.ndim != 3 or self.keypoints.shape[2] != 3:
                raise ValueError(f"keypoints must have shape [N, K, 3], got {self.keypoints.shape}")
            _check_length(len(self.boxes_xyxy), self.keypoints, "keypoints")
        self.proposed_by = _as_provenance(self.proposed_by, len(self.boxes_xyxy), "proposed_by")

    def __len__(self) -> int:
        return len(self.boxes_xyxy)

    @classmethod
    def empty(cls, num_keypoints: Optional[int] = None) -> "Detections":
        keypoints = None if num_keypoints is None else np.zeros((0, num_keypoints, 3), np.float32)
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), keypoints)

    def select(self, index) -> "Detections":
        keypoints = None if self.keypoints is None else self.keypoints[index]
        return Detections(self.boxes_xyxy[index], self.scores[index], keypoints, self.proposed_by[index])


@dataclass
class Poses:
    """Estimated poses of one frame.

    keypoints: float32 [N, K, 2] image pixels; keypoint_scores: float32 [N, K]: the detector's keypoint
    confidences in [0, 1], or HRNet's raw heatmap maxima (paper mode: about 0..1, but may lie outside; see
    ops/heatmap.py and pose.clip_scores);
    boxes_xyxy: float32 [N, 4] the box each pose was estimated in; box_scores: float32 [N];
    proposed_by: int64 [N] the provenance of that box (see Detections; omitted = all from the detector).
    A pose stage passes its input's `proposed_by` through, so the tracker knows which poses exist only because a
    track proposed their box.
    """

    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    boxes_xyxy: np.ndarray
    box_scores: np.ndarray
    proposed_by: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.keypoints.ndim != 3 or self.keypoints.shape[2] != 2:
            raise ValueError(f"keypoints must have shape [N, K, 2], got {self.keypoints.shape}")
        n, k = self.keypoints.shape[:2]
        self.keypoint_scores = np.asarray(self.keypoint_scores, dtype=np.float32)
        if self.keypoint_scores.shape != (n, k):
            raise ValueError(f"keypoint_scores must have shape [{n}, {k}], got {self.keypoint_scores.shape}")
        self.boxes_xyxy = _as_float32(self.boxes_xyxy, (4,), "boxes_xyxy")
        _check_length(n, self.boxes_xyxy, "boxes_xyxy")
        self.box_scores = np.asarray(self.box_scores, dtype=np.float32).reshape(-1)
        _check_length(n, self.box_scores, "box_scores")
        self.proposed_by = _as_provenance(self.proposed_by, n, "proposed_by")

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[1])

    @classmethod
    def empty(cls, num_keypoints: int) -> "Poses":
        return cls(
            np.zeros((0, num_keypoints, 2), np.float32),
            np.zeros((0, num_keypoints), np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
        )

    def select(self, index) -> "Poses":
        return Poses(self.keypoints[index], self.keypoint_scores[index], self.boxes_xyxy[index], self.box_scores[index],
                     self.proposed_by[index])

    @classmethod
    def concatenate(cls, parts: Sequence["Poses"]) -> "Poses":
        """The rows of `parts` (at least one), in order."""
        return cls(np.concatenate([p.keypoints for p in parts]), np.concatenate([p.keypoint_scores for p in parts]),
                   np.concatenate([p.boxes_xyxy for p in parts]), np.concatenate([p.box_scores for p in parts]),
                   np.concatenate([p.proposed_by for p in parts]))


# Tracks.info key: float32 [M, 4] boxes where the tracker expects people it does not report (tentative and lost
# tracks); a tracker that keeps none may leave it out.
UNREPORTED_BOXES = "unreported_boxes"
# Tracks.info keys for output files (tracking/backfill.py), left out by a tracker that reports every person at once:
# LATE_POSES: {earlier frame index: Tracks} the poses of tracks confirmed in this frame, in the earlier frames where
# they were seen before they were confirmed; PENDING_SINCE: int, the earliest frame to which a track not yet
# confirmed may still add poses that way.
LATE_POSES = "late_poses"
PENDING_SINCE = "pending_since"


@dataclass
class Tracks:
    """Tracked poses of one frame: Poses plus one track id per person.

    track_ids: int64 [N], unique within the frame, stable across frames for the same person.
    raw_keypoints: float32 [N, K, 2] image pixels, the keypoints before smoothing (poses.keypoints are then the
    smoothed ones; tracking/smoothing.py), or None when smoothing is off.
    """

    track_ids: np.ndarray
    poses: Poses
    # Extra per-frame facts for logs and benchmarks (e.g. number of lost tracks kept alive).
    info: dict = field(default_factory=dict)
    raw_keypoints: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
        _check_length(len(self.poses), self.track_ids, "track_ids")
        if self.raw_keypoints is not None:
            self.raw_keypoints = np.asarray(self.raw_keypoints, dtype=np.float32)
            if self.raw_keypoints.shape != self.poses.keypoints.shape:
                raise ValueError(f"raw_keypoints must have the shape of poses.keypoints {self.poses.keypoints.shape}, "
                                 f"got {self.raw_keypoints.shape}")
        if len(np.unique(self.track_ids)) != len(self.track_ids):
            raise ValueError(f"track ids must be unique within a frame, got {self.track_ids.tolist()}")

    def __len__(self) -> int:
        return len(self.track_ids)

    @classmethod
    def empty(cls, num_keypoints: int) -> "Tracks":
        return cls(np.zeros(0, np.int64), Poses.empty(num_keypoints))
