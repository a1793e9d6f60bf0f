"""When the pipeline runs the detector: on a fixed stride of frames, or adaptively, when the optical flow that
carries the tracks between detections stops being trustworthy.

A schedule is asked `should_detect(frame, frames_since_reset)` before each frame and told `observe(frame, tracks,
detected)` after it. `frames_since_reset == 0` marks a sequence boundary: every schedule detects there and forgets
what it saw before. When it detects, `regions(frame, frames_since_reset)` says where: None for the whole frame,
image boxes around the people it expects (the detector then looks only there; detection/windows.py), or UNDECIDED
while that depends on frames not tracked yet (asked by a pipeline detecting ahead).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..structures import UNREPORTED_BOXES, Frame, Tracks


class FixedSchedule:
    """Every `detect_every`-th frame of a sequence (1 = every frame)."""

    def __init__(self, detect_every: int = 1):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detect_every = detect_every

    def should_detect(self, frame: Frame, frames_since_reset: int) -> bool:
        return frames_since_reset % self.detect_every == 0

    def regions(self, frame: Frame, frames_since_reset: int) -> Optional[np.ndarray]:
        return None

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

    def regions(self, frame: Frame, frames_since_reset: int) -> Optional[np.ndarray]:
        return None

    def observe(self, frame: Frame, tracks: Tracks, detected: bool) -> None:
        if detected:
            self._last_detection_s = frame.timestamp_s
        self._reliable_fraction = float(tracks.info.get("flow_reliable_fraction", math.nan))
        self._tracked = len(tracks)


# What RegionSchedule.regions says of a frame whose windows depend on tracks not made yet (a pipeline detecting
# ahead asks early): ask again at the frame's turn.
UNDECIDED = object()
TIMES_KEPT = 32


def run_detector(detector, frame: Frame, regions):
    """`detector` on a schedule's answer for `frame`: the whole frame (regions None) as `detector(frame)`, so a
    detector that takes no regions keeps working, or float [R, 4] image boxes as `detector(frame, regions)`."""
    if regions is UNDECIDED:  # a schedule's answer at a frame's turn, after the frame before was tracked
        raise RuntimeError(f"the detection schedule left frame {frame.index} undecided at its turn")
    return detector(frame) if regions is None else detector(frame, regions)


class RegionSchedule:
    """Detect on every frame, but on most frames only around the people already tracked:
    - the whole frame at a sequence's start, at the first frame of every `full_interval_s` seconds of source time
      (people who enter are found within that time), and whenever nobody was tracked on the frame before;
    - else windows around the boxes of the tracks of the frame before: each box together with where it would be
      now at the velocity it had then (from the frame before that), and the boxes where the tracker expected the
      people it did not report (Tracks.info[UNREPORTED_BOXES]: tentative and lost tracks), each grown by `margin`
      times its longer side on every side (for changes of speed and direction, and context for the network).

    Whole frames on the clock can be known ahead, so a pipeline detecting ahead runs them ahead; windows need the
    frame before tracked (UNDECIDED until then), so it runs them at the frame's turn. Every answer depends only on
    the frames' times and the tracks before, so detecting ahead or not, the pipeline gets the same answers.
    """

    def __init__(self, full_interval_s: float = 0.3, margin: float = 0.5):
        if full_interval_s < 0 or margin < 0:
            raise ValueError(f"roi schedule needs full_interval_s >= 0 and margin >= 0, got {full_interval_s}, {margin}")
        self.full_interval_s, self.margin = full_interval_s, margin
        self._reset(None)

    def _reset(self, first: Optional[Frame]) -> None:
        self._first = first
        self._start_s = first.timestamp_s if first is not None else 0.0
        self._times: Dict[int, float] = {}  # frame number since the reset -> its time, for the frames asked about
        self._observed = 0  # frames observed since the reset
        # frame number since the reset -> (its time, its tracks' ids [N], their boxes [N, 4], unreported boxes [M, 4])
        self._seen: Dict[int, Tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}

    def should_detect(self, frame: Frame, frames_since_reset: int) -> bool:
        return True

    def regions(self, frame: Frame, frames_since_reset: int):
        """None (the whole frame), float [R, 4] image boxes to look around, or UNDECIDED. Frames are asked about in
        their order (each at least once) since the reset."""
        n = frames_since_reset
        if n == 0 and frame is not self._first:
            self._reset(frame)
        self._times.setdefault(n, frame.timestamp_s)
        # A pipeline asks about frames up to pipeline.detect_ahead (at most 16) frames before their turn, and each
        # answer looks at the frame before: older times are not needed, and a long live run keeps a few.
        self._times.pop(n - TIMES_KEPT, None)
        if n == 0 or self._starts_interval(n):
            return None
        seen = self._seen.get(n - 1)
        if seen is None:
            return UNDECIDED
        seen_s, ids, boxes, unreported = seen
        if len(ids) == 0:
            return None
        moved = boxes.copy()
        before = self._seen.get(n - 2)
        if before is not None and seen_s > before[0]:
            before_s, before_ids, before_boxes, _ = before
            row = {int(i): r for r, i in enumerate(before_ids)}
            for r, i in enumerate(ids):
                if int(i) in row:
                    velocity = (boxes[r] - before_boxes[row[int(i)]]) / (seen_s - before_s)
                    moved[r] += velocity * (frame.timestamp_s - seen_s)
        spans = np.concatenate([np.minimum(boxes[:, :2], moved[:, :2]), np.maximum(boxes[:, 2:], moved[:, 2:])], axis=1)
        spans = np.concatenate([spans, unreported])
        sizes = np.concatenate([boxes, unreported])
        grow = self.margin * np.maximum(sizes[:, 2] - sizes[:, 0], sizes[:, 3] - sizes[:, 1])[:, None]
        return np.concatenate([spans[:, :2] - grow, spans[:, 2:] + grow], axis=1)

    def _starts_interval(self, n: int) -> bool:
        """Frame n is the first of a new full_interval_s stretch of source time since the sequence's first frame."""
        if self.full_interval_s == 0:
            return True
        previous = self._times.get(n - 1)
        if previous is None:
            return True  # asked out of order: look at the whole frame rather than guess
        return (math.floor((self._times[n] - self._start_s) / self.full_interval_s)
                > math.floor((previous - self._start_s) / self.full_interval_s))

    def observe(self, frame: Frame, tracks: Tracks, detected: bool) -> None:
        boxes = np.array(tracks.poses.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        unreported = np.array(tracks.info.get(UNREPORTED_BOXES, ()), dtype=np.float32).reshape(-1, 4)
        self._seen[self._observed] = (frame.timestamp_s, tracks.track_ids.copy(), boxes, unreported)
        self._seen.pop(self._observed - 2, None)  # no frame to come looks that far back
        self._observed += 1


SCHEDULES: Dict[str, type] = {"fixed": FixedSchedule, "adaptive": AdaptiveSchedule, "roi": RegionSchedule}


def build_schedule(kind: str, *, detect_every: int = 1, adaptive_max_interval_s: float = 0.3,
                   adaptive_min_reliable_fraction: float = 0.9, roi_full_interval_s: float = 0.3,
                   roi_margin: float = 0.5):
    """The schedule `kind` names, from the detector config's fields."""
    arguments = {
        "fixed": dict(detect_every=detect_every),
        "adaptive": dict(max_interval_s=adaptive_max_interval_s, min_reliable_fraction=adaptive_min_reliable_fraction),
        "roi": dict(full_interval_s=roi_full_interval_s, margin=roi_margin),
    }
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown detector.schedule {kind!r}; choose one of: auto, {', '.join(SCHEDULES)}")
    return SCHEDULES[kind](**arguments[kind])
