"""Synthetic people with exact truth for the API, CSV, timestamp and live-stream tests: white rectangles on black
that appear, move and leave on a script, and a detector that finds exactly them (no network), so every box,
keypoint and id in an output can be checked against a number."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from posetrack_app.structures import Detections

WIDTH, HEIGHT = 320, 240
NUM_KEYPOINTS = 17
DETECTOR_SCORE = 0.9
KEYPOINT_SCORE = 0.8


@dataclass(frozen=True)
class Walker:
    """A person-sized rectangle present in frames [first, last], at x0 + speed_px * frame, fixed y."""

    first: int
    last: int
    x0: float
    y0: float
    speed_px: float = 2.0
    width: int = 24
    height: int = 72

    def box(self, frame: int) -> Tuple[int, int, int, int]:
        x = int(round(self.x0 + self.speed_px * frame))
        return x, int(self.y0), x + self.width, int(self.y0) + self.height


def _texture(walker: Walker) -> np.ndarray:
    """Noise in [128, 255] that moves with the walker (optical flow can follow it; the detector still sees white)."""
    seed = abs(hash((walker.x0, walker.y0, walker.first))) % (2 ** 32)
    return np.random.default_rng(seed).integers(128, 256, (walker.height, walker.width, 3), dtype=np.uint8)


def draw(frame: int, walkers: Sequence[Walker], textured: bool = False) -> np.ndarray:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for walker in walkers:
        if walker.first <= frame <= walker.last:
            x1, y1, x2, y2 = walker.box(frame)
            patch = _texture(walker) if textured else np.full((walker.height, walker.width, 3), 255, np.uint8)
            left, top = max(x1, 0), max(y1, 0)
            right, bottom = min(x2, WIDTH), min(y2, HEIGHT)
            if right > left and bottom > top:
                image[top:bottom, left:right] = patch[top - y1:bottom - y1, left - x1:right - x1]
    return image


def clip(frames: int, walkers: Sequence[Walker], textured: bool = False) -> List[np.ndarray]:
    return [draw(i, walkers, textured) for i in range(frames)]


class MissingFrames:
    """Wraps a detector; on the frames listed it finds nobody (a detector miss for propagation to carry)."""

    def __init__(self, detector, frames: Sequence[int]):
        self.detector, self.frames = detector, set(frames)

    def __call__(self, frame) -> Detections:
        detections = self.detector(frame)
        return detections.select(np.zeros(0, int)) if frame.index in self.frames else detections


def keypoints_for(boxes_xyxy: np.ndarray) -> np.ndarray:
    """[N, 17, 3]: joints spread over each box (a 3-wide column, top to bottom), score KEYPOINT_SCORE."""
    keypoints = np.zeros((len(boxes_xyxy), NUM_KEYPOINTS, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes_xyxy):
        keypoints[i, :, 0] = x1 + (x2 - x1) * (0.25 + 0.25 * (np.arange(NUM_KEYPOINTS) % 3))
        keypoints[i, :, 1] = np.linspace(y1 + 2, y2 - 2, NUM_KEYPOINTS)
        keypoints[i, :, 2] = KEYPOINT_SCORE
    return keypoints


class RectangleDetector:
    """Finds every white rectangle (connected component) of a frame exactly; keypoints from `keypoints_for`.
    `calls` counts the frames it ran on."""

    def __init__(self):
        self.calls = 0

    def __call__(self, frame) -> Detections:
        self.calls += 1
        mask = (frame.image_bgr[..., 0] > 127).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:count]], np.float32).reshape(-1, 4)
        return Detections(boxes, np.full(len(boxes), DETECTOR_SCORE, np.float32), keypoints_for(boxes))


def ids_by_first_appearance(rows: Sequence[Tuple[int, int]]) -> List[int]:
    """Track ids in the order they first appear, from (frame, track_id) pairs."""
    first: Dict[int, int] = {}
    for frame, track_id in sorted(rows):
        first.setdefault(track_id, frame)
    return sorted(first, key=lambda t: (first[t], t))


def scripted_pipeline(cfg=None, detector=None, live=False):
    """The real Pipeline around RectangleDetector, the detector-keypoint pose stage and the IoU tracker (exact
    boxes); a stand-in for build.build_pipeline in CLI tests (monkeypatch it in). `live` is taken as
    build_pipeline takes it; the scripted pipeline has no choice it changes."""
    from posetrack_app.pipeline import Pipeline
    from posetrack_app.pose.detector_keypoints import DetectorKeypointPoses
    from posetrack_app.skeleton import COCO17
    from posetrack_app.tracking.iou_tracker import IouTracker

    return Pipeline(detector or RectangleDetector(), DetectorKeypointPoses(),
                    IouTracker(skeleton=COCO17, match_iou_threshold=0.3, max_lost_s=1.0, new_track_min_score=0.4))


def write_video(path, images, fps) -> None:
    """`images` as a video at `fps` with OpenCV (MJPG for .avi, mp4v otherwise)."""
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if str(path).endswith(".avi") else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (images[0].shape[1], images[0].shape[0]))
    assert writer.isOpened(), path
    for image in images:
        writer.write(image)
    writer.release()


# Two people for tests that need someone in every frame and nothing more.
LANES_FOR_TIME = [Walker(0, 999, 10, 20), Walker(0, 999, 40, 140, speed_px=3)]
