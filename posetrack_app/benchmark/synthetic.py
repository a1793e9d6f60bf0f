"""Synthetic benchmark clips: N stick figures walking on a textured background, with the exact boxes and COCO-17
keypoints of every figure, and the stub detector that returns them.

Shape glossary: N persons in a frame;  K = 17 COCO keypoints;  H x W frame size in pixels.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import cv2
import numpy as np

from ..detection.schedule import run_detector
from ..ops.boxes import clip_boxes
from ..skeleton import COCO17, Skeleton
from ..structures import Detections, Frame

RESOLUTIONS_WH = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
SYNTHETIC_DETECTIONS_NOTE = ("synthetic detections: a stub detector returns the known boxes and keypoints of the "
                             "drawn figures")

# COCO-17 joints of a standing person, x right and y down, in units of body height, origin between the feet.
_POSE_TEMPLATE = np.array([
    [0.00, -0.93],                                # nose
    [-0.02, -0.95], [0.02, -0.95],                # eyes (left, right as seen: image left is the person's right)
    [-0.045, -0.93], [0.045, -0.93],              # ears
    [0.11, -0.81], [-0.11, -0.81],                # shoulders (left, right)
    [0.15, -0.64], [-0.15, -0.64],                # elbows
    [0.16, -0.50], [-0.16, -0.50],                # wrists
    [0.08, -0.49], [-0.08, -0.49],                # hips
    [0.09, -0.26], [-0.09, -0.26],                # knees
    [0.09, -0.02], [-0.09, -0.02],                # ankles
], dtype=np.float64)
# Which joints swing forward/back while walking, and with which sign (arms opposite to legs).
_SWING = np.zeros((17, 2))
_SWING[[7, 9], 0], _SWING[[8, 10], 0] = 0.06, -0.06      # elbows/wrists
_SWING[[13, 15], 0], _SWING[[14, 16], 0] = -0.07, 0.07   # knees/ankles
_SWING[[9, 10], 0] *= 2.0
_SWING[[15, 16], 0] *= 2.0


def parse_resolution(text: str) -> tuple:
    """'720p' or '1280x720' -> (width, height)."""
    if text in RESOLUTIONS_WH:
        return RESOLUTIONS_WH[text]
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS_WH)} or WIDTHxHEIGHT, got {text!r}")


@dataclass
class _Walker:
    foot_xy: np.ndarray        # position of the feet, pixels
    velocity_xy: np.ndarray    # pixels per frame
    height_px: float
    phase: float
    color_bgr: tuple


class SyntheticClip:
    """`num_frames` frames of `num_persons` stick figures walking on a textured background, with the exact boxes
    and COCO-17 keypoints of every figure (deterministic for a seed).

    Figures walk in straight lines and bounce off the frame edges, so they cross and occlude each other.
    """

    skeleton: Skeleton = COCO17

    def __init__(self, num_persons: int, width: int, height: int, num_frames: int, *, seed: int = 0,
                 fps: float = 30.0, keypoint_noise_px: float = 1.0):
        if num_persons < 0 or width < 64 or height < 64 or num_frames < 1:
            raise ValueError(f"need num_persons >= 0, a frame of at least 64x64 and num_frames >= 1; got "
                             f"{num_persons}, {width}x{height}, {num_frames}")
        self.num_persons, self.width, self.height, self.num_frames = num_persons, width, height, num_frames
        self.fps, self.seed, self.keypoint_noise_px = fps, seed, keypoint_noise_px
        rng = np.random.default_rng(seed)
        self.walkers: List[_Walker] = []
        for _ in range(num_persons):
            person_h = rng.uniform(0.25, 0.45) * height
            foot = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.45, 0.98) * height])
            foot[1] = max(foot[1], person_h + 2)
            speed = rng.uniform(0.004, 0.012) * height
            angle = rng.uniform(-0.35, 0.35) + (np.pi if rng.random() < 0.5 else 0.0)
            color = tuple(int(c) for c in rng.integers(40, 230, 3))
            self.walkers.append(_Walker(foot, speed * np.array([np.cos(angle), np.sin(angle)]), person_h,
                                        rng.uniform(0, 2 * np.pi), color))
        # Texture gives optical flow something to lock on; low-pass so it compresses like a real scene.
        noise = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        texture = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
        ramp = np.linspace(60, 160, height, dtype=np.float32)[:, None, None]
        self.background = np.clip(0.5 * texture + ramp, 0, 255).astype(np.uint8)
        self._states = self._simulate()

    def _simulate(self) -> List[np.ndarray]:
        """Per frame: keypoints [N, K, 2] of every figure (noise-free)."""
        states = []
        feet = [w.foot_xy.copy() for w in self.walkers]
        velocities = [w.velocity_xy.copy() for w in self.walkers]
        for index in range(self.num_frames):
            keypoints = np.zeros((self.num_persons, 17, 2))
            for i, walker in enumerate(self.walkers):
                direction = 1.0 if velocities[i][0] >= 0 else -1.0
                swing = np.sin(walker.phase + 0.25 * index)
                joints = _POSE_TEMPLATE + _SWING * swing * np.array([direction, 1.0])
                keypoints[i] = feet[i] + joints * walker.height_px
                feet[i] = feet[i] + velocities[i]
                # Bounce so figures stay in view (at least most of them).
                if not (0.05 * self.width < feet[i][0] < 0.95 * self.width):
                    velocities[i][0] *= -1
                if not (walker.height_px < feet[i][1] < self.height - 1):
                    velocities[i][1] *= -1
            states.append(keypoints)
        return states

    def __len__(self) -> int:
        return self.num_frames

    def detections(self, index: int) -> Detections:
        """The known persons of frame `index`: boxes (joint extent grown 10%, clipped to the frame), score 0.9,
        keypoints [N, 17, 3] with a little seeded noise and score 0.9. Figures fully outside are left out."""
        keypoints = self._states[index].copy()
        rng = np.random.default_rng((self.seed, index))
        keypoints += rng.normal(0.0, self.keypoint_noise_px, keypoints.shape)
        lo, hi = keypoints.min(axis=1), keypoints.max(axis=1)
        margin = 0.05 * (hi - lo)
        boxes = clip_boxes(np.concatenate([lo - margin, hi + margin], axis=1), self.width, self.height)
        visible = (boxes[:, 2] - boxes[:, 0] > 2) & (boxes[:, 3] - boxes[:, 1] > 2)
        scores = np.full(len(boxes), 0.9)
        kpts = np.concatenate([keypoints, np.full(keypoints.shape[:2] + (1,), 0.9)], axis=2)
        return Detections(boxes[visible], scores[visible], kpts[visible])

    def render(self, index: int) -> np.ndarray:
        """uint8 BGR [H, W, 3] of frame `index`: far figures (higher feet) drawn first."""
        image = self.background.copy()
        keypoints = self._states[index]
        order = np.argsort(keypoints[:, 15:17, 1].max(axis=1)) if self.num_persons else []
        for i in order:
            walker = self.walkers[i]
            points = np.round(keypoints[i]).astype(np.int32)
            thickness = max(2, int(walker.height_px / 14))
            torso = points[[5, 6, 12, 11]]
            cv2.fillConvexPoly(image, torso, walker.color_bgr, cv2.LINE_AA)
            for a, b in self.skeleton.limbs[:12]:
                cv2.line(image, tuple(points[a]), tuple(points[b]), walker.color_bgr, thickness, cv2.LINE_AA)
            head_radius = max(3, int(walker.height_px * 0.065))
            cv2.circle(image, tuple(points[0]), head_radius, (90, 140, 200), -1, cv2.LINE_AA)
        return image

    def frames(self) -> Iterator[Frame]:
        for index in range(self.num_frames):
            yield Frame(index, self.render(index), index / self.fps)

    def write_video(self, path) -> Path:
        """Encodes the clip (mp4v for .mp4, MJPG for .avi) so that a benchmark also times decoding."""
        path = Path(path)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
        writer = cv2.VideoWriter(str(path), fourcc, self.fps, (self.width, self.height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot encode {path}: try a .avi name")
        try:
            for frame in self.frames():
                writer.write(frame.image_bgr)
        finally:
            writer.release()
        return path


class SyntheticDetector:
    """Stub detector for a synthetic clip: returns the clip's known detections of `frame.index`.

    network: optional real detector run on the frame first and its output discarded, so that the "detect" stage
    costs what the network costs on frames of this size while the pose and tracking stages get known persons
    (a detector trained on photos need not find drawn figures).
    """

    def __init__(self, clip: SyntheticClip, network: Optional[Callable[[Frame], Detections]] = None):
        self.clip = clip
        self.network = network

    def __call__(self, frame: Frame, regions=None) -> Detections:
        if self.network is not None:  # the whole frame, or windows around the regions (detector.schedule=roi)
            run_detector(self.network, frame, regions)
        return self.clip.detections(frame.index)


def synthetic_video(clip: SyntheticClip, folder: Optional[str] = None) -> tuple:
    """Writes `clip` to a temporary .mp4 (mp4v, as the app's video output) and returns
    (path, the TemporaryDirectory holding it: keep it referenced while the file is read)."""
    tmp = tempfile.TemporaryDirectory(prefix="posetrack-bench-", dir=folder)
    path = clip.write_video(Path(tmp.name) / "synthetic.mp4")
    return path, tmp
