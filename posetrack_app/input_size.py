"""Detector input size "auto": chosen from the frame size.

The rule (benchmarks/results/compare_trackers_suite.md has every clip at 640, 960 and auto):
- Frames whose long side is at most 640 px run at 640, so 640x480 video is not upscaled (smaller frames are scaled up
  to 640, as Ultralytics does). Upscaling 640x480 video to 960 tripled the false positives on an unseen pedestrian
  clip (52 to 224); on the 640x480 synthetic clip at 25 fps, 960 raises the false positives of every tracker 2-3x
  (IoU tracker 105 -> 238, MOTA 72.7 -> 54.3).
- Larger frames run at their long side rounded up to a multiple of the stride (32), at least 960 and at most 1280.
  At least 960 because mid-size frames hold small people: PETS09 (768x576) at 960 against its own 768 raises
  every tracker's MOTA from 21-26 to 51-58. At most 1280: larger inputs cost quadratically more.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Dict, Optional, Tuple

from .detection.schedule import run_detector
from .structures import Detections, Frame

log = logging.getLogger(__name__)

STRIDE = 32
SMALL_FRAME_INPUT_SIZE = 640     # frames up to this long side run at it
AUTO_MIN_INPUT_SIZE = 960        # larger frames: at least this
AUTO_MAX_INPUT_SIZE = 1280


def auto_input_size(frame_wh: Tuple[int, int]) -> int:
    """The detector input size "auto" picks for frames of `frame_wh` (width, height) pixels."""
    long_side = max(int(frame_wh[0]), int(frame_wh[1]))
    if long_side <= SMALL_FRAME_INPUT_SIZE:
        return SMALL_FRAME_INPUT_SIZE
    rounded = -(-long_side // STRIDE) * STRIDE
    return int(min(max(rounded, AUTO_MIN_INPUT_SIZE), AUTO_MAX_INPUT_SIZE))


class OnDemandDetector:
    """A detector built on the first frame that needs it: one real detector per input size, chosen from each frame's
    size ("auto") or fixed, and kept (a folder of mixed sizes does not rebuild back and forth).

    build(size) -> detector: makes the real detector for an input size (build.py passes its own factory).
    fixed_size: the input size of every frame; None = auto_input_size of the frame.
    Safe for concurrent calls (pipeline.detect_ahead >= 2): a size is built once, under a lock; detection runs
    outside it.
    """

    def __init__(self, build: Callable[[int], object], fixed_size: Optional[int] = None):
        self._build = build
        self._fixed_size = fixed_size
        self._by_size: Dict[int, object] = {}
        self._lock = threading.Lock()
        self._detector = None  # the one the latest frame used: its description is the run's
        self.input_size: Optional[int] = None

    def __call__(self, frame: Frame, regions=None) -> Detections:
        size = self._fixed_size or auto_input_size((frame.width, frame.height))
        with self._lock:
            detector = self._by_size.get(size)
            if detector is None:
                if self._fixed_size is None:
                    log.info("detector.input_size auto: %d for %dx%d frames", size, frame.width, frame.height)
                detector = self._by_size[size] = self._build(size)
            self._detector, self.input_size = detector, size
        return run_detector(detector, frame, regions)

    @property
    def built(self):
        """The real detector the latest frame used; None before the first frame."""
        return self._detector

    def __getattr__(self, name):
        # Attributes of the real detector (e.g. its description) once the first frame has built it.
        detector = self.__dict__.get("_detector")
        if detector is None:
            raise AttributeError(f"{name}: the detector is built on the first frame that needs it")
        return getattr(detector, name)
