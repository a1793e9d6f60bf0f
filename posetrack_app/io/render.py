"""Drawing tracked skeletons on frames: a stable colour per track id, limbs, joints, box and id label."""
from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Optional, Tuple

import cv2
import numpy as np

from ..skeleton import Skeleton
from ..structures import Tracks


@lru_cache(maxsize=4096)
def track_color_bgr(track_id: int) -> Tuple[int, int, int]:
    """A bright colour that depends only on the id; golden-ratio hue steps keep neighbouring ids apart."""
    hue = (track_id * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_tracks(image_bgr: np.ndarray, tracks: Tracks, skeleton: Skeleton, *, keypoint_score_threshold: float = 0.3,
                draw_boxes: bool = True, line_thickness: int = 2, fps: Optional[float] = None,
                latency_s: Optional[float] = None) -> np.ndarray:
    """Draws on (and returns) `image_bgr` in place. `fps` and `latency_s` (capture -> result, live sources) are
    written in the top-left corner when given."""
    poses = tracks.poses
    limbs = skeleton.limbs
    radius = max(2, line_thickness + 1)
    for i, track_id in enumerate(tracks.track_ids):
        color = track_color_bgr(int(track_id))
        points = poses.keypoints[i]
        visible = poses.keypoint_scores[i] >= keypoint_score_threshold
        for a, b in limbs:
            if visible[a] and visible[b]:
                cv2.line(image_bgr, tuple(np.round(points[a]).astype(int)), tuple(np.round(points[b]).astype(int)),
                         color, line_thickness, cv2.LINE_AA)
        for k in np.flatnonzero(visible):
            cv2.circle(image_bgr, tuple(np.round(points[k]).astype(int)), radius, color, -1, cv2.LINE_AA)
        x1, y1, x2, y2 = np.round(poses.boxes_xyxy[i]).astype(int)
        if draw_boxes:
            cv2.rectangle(image_bgr, (x1, y1), (x2, y2), color, 1, cv2.LINE_AA)
        label = f"{int(track_id)}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(y1 - th - 4, 0)
        cv2.rectangle(image_bgr, (x1, top), (x1 + tw + 4, top + th + 4), color, -1)
        cv2.putText(image_bgr, label, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    status = []
    if fps is not None:
        status.append(f"{fps:5.1f} FPS")
    if latency_s is not None:
        status.append(f"{1000.0 * latency_s:5.0f} ms latency")
    for row, text in enumerate(status):
        _draw_status_text(image_bgr, text, STATUS_ORIGIN_Y_PX + row * STATUS_LINE_HEIGHT_PX)
    return image_bgr


# Top-left status lines (FPS, latency): baseline of the first, and the spacing of the next.
STATUS_ORIGIN_Y_PX = 28
STATUS_LINE_HEIGHT_PX = 30


def _draw_status_text(image_bgr: np.ndarray, text: str, y_px: int) -> None:
    # White on a black outline: readable on any picture.
    cv2.putText(image_bgr, text, (10, y_px), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(image_bgr, text, (10, y_px), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
