"""Union of the detector's boxes and the tracker's flow-propagated boxes for the pose stage.

Shape glossary: N detector boxes, M propagated boxes, K keypoints.

Priority, not score: every detector box is kept, and a propagated box that overlaps a detector box (IoU above the
threshold) is dropped whatever the two scores, because a fresh detection is better evidence of where a person is
than last frame's pose moved by flow. Propagated boxes left over are de-duplicated among themselves by NMS (higher
score first) and appended after the detector boxes, keeping their `proposed_by` column (the proposing track).
"""
from __future__ import annotations

import numpy as np

from ..ops.boxes import box_iou, nms
from ..structures import DETECTOR, Detections


def merge_detections(detections: Detections, proposals: Detections, iou_threshold: float) -> Detections:
    """Detector boxes (all kept, provenance -1) + the propagated boxes that add a person the detector missed.

    Keypoints survive the merge when both sides carry them with the same K; otherwise they are dropped.
    """
    detections = Detections(detections.boxes_xyxy, detections.scores, detections.keypoints,
                            np.full(len(detections), DETECTOR, np.int64))
    if len(proposals) == 0:
        return detections
    if len(detections):
        overlap = box_iou(proposals.boxes_xyxy, detections.boxes_xyxy).max(axis=1)
        proposals = proposals.select(np.flatnonzero(overlap <= iou_threshold))
    proposals = proposals.select(nms(proposals.boxes_xyxy, proposals.scores, iou_threshold))
    if len(detections) == 0:
        return proposals
    keypoints = None
    if (detections.keypoints is not None and proposals.keypoints is not None
            and detections.keypoints.shape[1] == proposals.keypoints.shape[1]):
        keypoints = np.concatenate([detections.keypoints, proposals.keypoints])
    return Detections(np.concatenate([detections.boxes_xyxy, proposals.boxes_xyxy]),
                      np.concatenate([detections.scores, proposals.scores]), keypoints,
                      np.concatenate([detections.proposed_by, proposals.proposed_by]))
