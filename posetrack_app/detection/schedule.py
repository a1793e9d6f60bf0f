"""When the pipeline runs the detector: on a fixed stride of frames, or adaptively, when the optical flow that
carries the tracks between detections stops being trustworthy.

A schedule is asked `should_detect(frame, frames_since_reset)` before each frame and told `observe(frame, tracks,
detected)` after it. `frames_since_reset == 0` marks a sequence boundary: every schedule detects there and forgets
what it saw before.
"""
from __future__ import annotations

import math
from typing import Dict

from ..errors import ConfigError
from ..structures import Frame, Tracks


class FixedSchedule:
    """Every `detect_every`-th frame of a sequence (1 = every frame)."""

    def __init__(self, detect_every: int = 1):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detect_every = detect_every

    def should_detect(self, frame: Frame, frames_since_reset: int) -> bool:
        return frames_since_reset % self.detect_every == 0

    def observe(self, frame: Frame, tracks: Tracks, detected: bool) -> None:
        pass


class AdaptiveSchedule:
    """Detect when any of these holds, else let the tracker's flow carry the frame:
    - nobody was tracked on the last frame (new people can only come from the detector);
    - fewer than `min_reliable_fraction` of the joints flowed into the last frame passed the tracker's
      forward-backward check (Tracks.info["flow_reliable_fraction"]; unknown counts as unreliable);
    - `max_interval_s` seconds of source time have passed since the last detection (people who enter the frame are
      found within that time).
    """

    def __init__(self, max_interval_s: float = 0.3, min_reliable_fraction: float = 0.9):
        if max_interval_s < 0 or not 0.0 <= min_reliable_fraction <= 1.0:
            raise ValueError(f"adaptive schedule needs max_interval_s >= 0 and min_reliable_fraction in [0, 1], got "
                             f"{max_interval_s}, {min_reliable_fraction}")
        self.max_interval_s = max_interval_s
        self.min_reliable_fraction = min_reliable_fraction
        self._last_detection_s = -math.inf
        self._reliable_fraction = math.nan
        self._tracked = 0

    def should_detect(self, frame: Frame, frames_since_reset: int) -> bool:
        if frames_since_reset == 0:
            self._last_detection_s, self._reliable_fraction, self._tracked = -math.inf, math.nan, 0
            return True
        reliable = self._reliable_fraction >= self.min_reliable_fraction  # False for NaN (nothing was flowed)
        due = frame.timestamp_s - self._last_detection_s >= self.max_interval_s
        return self._tracked == 0 or not reliable or due

    def observe(self, frame: Frame, tracks: Tracks, detected: bool) -> None:
        if detected:
            self._last_detection_s = frame.timestamp_s
        self._reliable_fraction = float(tracks.info.get("flow_reliable_fraction", math.nan))
        self._tracked = len(tracks)


SCHEDULES: Dict[str, type] = {"fixed": FixedSchedule, "adaptive": AdaptiveSchedule}


def build_schedule(kind: str, *, detect_every: int = 1, adaptive_max_interval_s: float = 0.3,
                   adaptive_min_reliable_fraction: float = 0.9):
    """The schedule `kind` names, from the detector config's fields."""
    arguments = {
        "fixed": dict(detect_every=detect_every),
        "adaptive": dict(max_interval_s=adaptive_max_interval_s, min_reliable_fraction=adaptive_min_reliable_fraction),
    }
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown detector.schedule {kind!r}; choose one of: {', '.join(SCHEDULES)}")
    return SCHEDULES[kind](**arguments[kind])
