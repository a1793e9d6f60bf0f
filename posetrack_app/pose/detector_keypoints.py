"""Pose stage that reuses the keypoints the box source already predicted (YOLO-pose, flow propagation).

It is the pose stage when no HRNet weights are configured. Shape glossary: N boxes, K keypoints.
"""
from __future__ import annotations

import numpy as np

from ..skeleton import COCO17, Skeleton
from ..structures import Detections, Frame, Poses


class DetectorKeypointPoses:
    """`stage(frame, detections) -> Poses` from `detections.keypoints` [N, K, 3] (x, y, score).

    Boxes that carry no keypoints produce no pose: without a pose network there is nothing to estimate them with.
    """

    def __init__(self, skeleton: Skeleton = COCO17):
        self.skeleton = skeleton

    def __call__(self, frame: Frame, detections: Detections) -> Poses:
        if len(detections) == 0 or detections.keypoints is None:
            return Poses.empty(self.skeleton.num_keypoints)
        keypoints = detections.keypoints
        if keypoints.shape[1] != self.skeleton.num_keypoints:
            raise ValueError(f"detector predicts {keypoints.shape[1]} keypoints, the {self.skeleton.name} layout has "
                             f"{self.skeleton.num_keypoints}")
        return Poses(keypoints[..., :2], np.clip(keypoints[..., 2], 0.0, 1.0), detections.boxes_xyxy, detections.scores,
                     detections.proposed_by)
