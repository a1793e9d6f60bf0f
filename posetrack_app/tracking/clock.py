"""The trackers' clock: seconds from Frame.timestamp_s, so time limits hold at any frame rate.

Where timestamps do not advance (images without a frame rate, frames made by hand), frames are taken as
DEFAULT_FRAME_INTERVAL_S apart.
"""
from __future__ import annotations

from typing import Optional

from ..structures import Frame

# The common video rate: the best guess for frames that carry no time.
DEFAULT_FRAME_INTERVAL_S = 1.0 / 30.0


class TrackerClock:
    """now_s: the current frame's time in seconds; dt_s: seconds since the previous frame."""

    def __init__(self) -> None:
        self.now_s: Optional[float] = None
        self.dt_s = DEFAULT_FRAME_INTERVAL_S

    def tick(self, frame: Frame) -> float:
        t = float(frame.timestamp_s)
        if self.now_s is None:
            self.now_s = t
        elif t > self.now_s:
            self.dt_s, self.now_s = t - self.now_s, t
        else:
            self.dt_s = DEFAULT_FRAME_INTERVAL_S
            self.now_s += DEFAULT_FRAME_INTERVAL_S
        return self.now_s
