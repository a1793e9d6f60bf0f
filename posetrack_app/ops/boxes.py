"""Box arithmetic on float arrays in continuous pixel coordinates.

Shape glossary: N, M boxes; boxes are [N, 4] as (x1, y1, x2, y2) unless the name says otherwise.
"""
from __future__ import annotations

import numpy as np


def box_areas(boxes_xyxy: np.ndarray) -> np.ndarray:
    """[N] areas; degenerate boxes have area 0."""
    wh = np.clip(boxes_xyxy[:, 2:4] - boxes_xyxy[:, 0:2], 0.0, None)
    return wh[:, 0] * wh[:, 1]


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[N, M] intersection over union between two sets of xyxy boxes (0 where the union is empty)."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_areas(boxes_a)[:, None] + box_areas(boxes_b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression. Returns int64 indices of kept boxes, highest score first.
    A box is suppressed when its IoU with a kept, higher-scoring box is above `iou_threshold`."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if len(order) == 0:
        return order.astype(np.int64)
    iou = box_iou(boxes_xyxy, boxes_xyxy)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def xyxy_to_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (left, top, width, height)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def xywh_to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """(left, top, width, height) -> (x1, y1, x2, y2)."""
    boxes = np.asarray(boxes_xywh, dtype=np.float32).copy()
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def clip_boxes(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes
