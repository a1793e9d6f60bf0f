"""Greedy IoU tracker: the baseline row against which FlowTrack is measured.

Each frame, every pose box is matched to the last box of a live track by IoU, greedily, highest first.
A track that finds no match is kept (lost) for `max_lost_s` seconds so its id can come back, then retired.
Shape glossary: N poses this frame, T live tracks, K keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..config import IouTrackerConfig
from ..ops.boxes import box_iou
from ..skeleton import Skeleton
from ..structures import Detections, Frame, Poses, Tracks
from .clock import TrackerClock
from .matching import greedy_match



@dataclass
class _IouTrack:
    track_id: int
    box_xyxy: np.ndarray
    lost_since_s: Optional[float] = None


class IouTracker:
    """`update(frame, poses) -> Tracks`; the settings are IouTrackerConfig's (`from_config` builds one from it)."""

    def __init__(self, *, skeleton: Skeleton, match_iou_threshold: float = IouTrackerConfig.match_iou_threshold,
                 max_lost_s: float = IouTrackerConfig.max_lost_s,
                 new_track_min_score: float = IouTrackerConfig.new_track_min_score):
        IouTrackerConfig(match_iou_threshold=match_iou_threshold, max_lost_s=max_lost_s,
                         new_track_min_score=new_track_min_score)  # the range checks live with the fields
        self.skeleton = skeleton
        self.match_iou_threshold = match_iou_threshold
        self.max_lost_s = max_lost_s
        self.new_track_min_score = new_track_min_score
        self.reset()

    @classmethod
    def from_config(cls, cfg: IouTrackerConfig, skeleton: Skeleton) -> "IouTracker":
        return cls(skeleton=skeleton, match_iou_threshold=cfg.match_iou_threshold, max_lost_s=cfg.max_lost_s,
                   new_track_min_score=cfg.new_track_min_score)

    def reset(self) -> None:
        self._tracks: List[_IouTrack] = []
        self._next_id = 1
        self._clock = TrackerClock()

    def propose(self, frame: Frame) -> Detections:
        """The IoU baseline propagates nothing: boxes come from the detector alone."""
        return Detections.empty(self.skeleton.num_keypoints)

    def update(self, frame: Frame, poses: Poses) -> Tracks:
        now_s = self._clock.tick(frame)
        track_boxes = np.array([t.box_xyxy for t in self._tracks], dtype=np.float32).reshape(-1, 4)
        iou = box_iou(poses.boxes_xyxy, track_boxes)
        matches, unmatched_poses, unmatched_tracks = greedy_match(iou, self.match_iou_threshold)

        ids = np.full(len(poses), -1, dtype=np.int64)
        for pose_index, track_index in matches:
            track = self._tracks[track_index]
            track.box_xyxy = poses.boxes_xyxy[pose_index].copy()
            track.lost_since_s = None
            ids[pose_index] = track.track_id
        for track_index in unmatched_tracks:
            track = self._tracks[track_index]
            if track.lost_since_s is None:
                track.lost_since_s = now_s
        for pose_index in unmatched_poses:
            if poses.box_scores[pose_index] >= self.new_track_min_score:
                self._tracks.append(_IouTrack(self._next_id, poses.boxes_xyxy[pose_index].copy()))
                ids[pose_index] = self._next_id
                self._next_id += 1
        self._tracks = [t for t in self._tracks
                        if t.lost_since_s is None or now_s - t.lost_since_s <= self.max_lost_s + 1e-9]

        kept = np.flatnonzero(ids >= 0)
        return Tracks(ids[kept], poses.select(kept),
                      info={"lost_tracks": sum(t.lost_since_s is not None for t in self._tracks)})
