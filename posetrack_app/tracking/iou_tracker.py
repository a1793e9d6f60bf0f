"""Greedy IoU tracker: the baseline row against which FlowTrack is measured.

Each frame, every pose box is matched to the last box of a live track by IoU, greedily, highest first.
A track that finds no match is kept (lost) for `max_lost_frames` so its id can come back, then retired.
Shape glossary: N poses this frame, T live tracks, K keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from ..ops.boxes import box_iou
from ..skeleton import Skeleton
from ..structures import Detections, Frame, Poses, Tracks
from .matching import greedy_match


@dataclass
class _IouTrack:
    track_id: int
    box_xyxy: np.ndarray
    frames_lost: int = 0


class IouTracker:
    def __init__(self, *, skeleton: Skeleton, match_iou_threshold: float = 0.3, max_lost_frames: int = 30,
                 new_track_min_score: float = 0.4):
        self.skeleton = skeleton
        self.match_iou_threshold = match_iou_threshold
        self.max_lost_frames = max_lost_frames
        self.new_track_min_score = new_track_min_score
        self.reset()

    def reset(self) -> None:
        self._tracks: List[_IouTrack] = []
        self._next_id = 1

    def propose(self, frame: Frame) -> Detections:
        """The IoU baseline propagates nothing: boxes come from the detector alone."""
        return Detections.empty(self.skeleton.num_keypoints)

    def update(self, frame: Frame, poses: Poses) -> Tracks:
        track_boxes = np.array([t.box_xyxy for t in self._tracks], dtype=np.float32).reshape(-1, 4)
        iou = box_iou(poses.boxes_xyxy, track_boxes)
        matches, unmatched_poses, unmatched_tracks = greedy_match(iou, self.match_iou_threshold)

        ids = np.full(len(poses), -1, dtype=np.int64)
        for pose_index, track_index in matches:
            track = self._tracks[track_index]
            track.box_xyxy = poses.boxes_xyxy[pose_index].copy()
            track.frames_lost = 0
            ids[pose_index] = track.track_id
        for track_index in unmatched_tracks:
            self._tracks[track_index].frames_lost += 1
        for pose_index in unmatched_poses:
            if poses.box_scores[pose_index] >= self.new_track_min_score:
                self._tracks.append(_IouTrack(self._next_id, poses.boxes_xyxy[pose_index].copy()))
                ids[pose_index] = self._next_id
                self._next_id += 1
        self._tracks = [t for t in self._tracks if t.frames_lost <= self.max_lost_frames]

        kept = np.flatnonzero(ids >= 0)
        return Tracks(ids[kept], poses.select(kept), info={"lost_tracks": sum(t.frames_lost > 0 for t in self._tracks)})
