"""Keypoint smoothing after the tracker: a One-Euro filter per track id.

Shape glossary: N persons of a frame, K keypoints; keypoints [.., K, 2] in image pixels; times in seconds.

`SmoothedTracker` wraps any tracker (pipeline.py's protocol: propose / update / reset) and filters the keypoints it
reports, one One-Euro filter (Casiez et al., CHI 2012) per track id, timed by the frames' timestamps. It changes only
what is reported, never what is matched: the wrapped tracker keeps matching on its own unsmoothed poses, and the
reported Tracks carry the unsmoothed keypoints beside the smoothed ones (Tracks.raw_keypoints). build.build_tracker
wraps the tracker only when tracker.smoothing.enabled; the settings are SmoothingConfig's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict

import numpy as np

from ..config import SmoothingConfig
from ..structures import Detections, Frame, Poses, Tracks
from .clock import TrackerClock

log = logging.getLogger(__name__)

# The One-Euro filter's cutoff for its speed estimate. 1 Hz is the paper's value: the speed only has to tell a still
# joint from a moving one, and a slower estimate would keep a limb that has just stopped lightly filtered.
ONE_EURO_DERIVATIVE_CUTOFF_HZ = 1.0
# A track's filter is kept this long while the tracker does not report it (occluded, lost), so a short gap does not
# restart it, and dropped after: ids are never reused, so without a limit a long stream would keep a filter for
# every person it ever saw. After a second the old state would weigh little anyway (at the 1 Hz minimum cutoff the
# first value after a 1 s gap is weighted 1 / (1 + 1 / (2 pi)) = 0.86), and the person may be elsewhere.
MAX_ABSENT_S = 1.0
# Heights below this are taken as this (pixels): a degenerate box must not make a still joint look infinitely fast.
MIN_BOX_HEIGHT_PX = 1.0


def _alpha(cutoff_hz, dt_s: float):
    """The exponential smoothing factor of a first-order low-pass filter with this cutoff, for a step of dt_s."""
    tau_s = 1.0 / (2.0 * np.pi * cutoff_hz)
    return 1.0 / (1.0 + tau_s / dt_s)


class OneEuroFilter:
    """One-Euro filter over the K joints of one person: a low-pass filter whose cutoff rises with the joint's speed,
    so a still joint is smoothed hard and a fast one follows with little lag.

    min_cutoff_hz: the cutoff of a still joint; beta: Hz added per box height per second of joint speed (speed is
    relative to the person, so the same settings hold for 30-px and 300-px people); derivative_cutoff_hz: the
    cutoff of the speed estimate.
    """

    def __init__(self, *, min_cutoff_hz: float = SmoothingConfig.min_cutoff_hz, beta: float = SmoothingConfig.beta,
                 derivative_cutoff_hz: float = ONE_EURO_DERIVATIVE_CUTOFF_HZ):
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.derivative_cutoff_hz = derivative_cutoff_hz
        self._value = None       # float64 [K, 2] pixels, the filtered keypoints
        self._raw = None         # float64 [K, 2] pixels, the previous measurement
        self._derivative = None  # float64 [K, 2] pixels per second

    def __call__(self, keypoints: np.ndarray, dt_s: float, box_height_px: float) -> np.ndarray:
        """keypoints: [K, 2] pixels of this frame; dt_s: seconds since this filter's previous call (> 0);
        box_height_px: the person's height, the unit of speed. Returns float32 [K, 2]."""
        keypoints = np.asarray(keypoints, np.float64)
        if self._value is None:
            self._value, self._raw = keypoints.copy(), keypoints
            self._derivative = np.zeros_like(keypoints)
            return keypoints.astype(np.float32)
        a_d = _alpha(self.derivative_cutoff_hz, dt_s)
        # The speed of the measured joint (from the previous measurement, not the lagging filtered value, so a joint
        # at constant speed is seen at that speed).
        self._derivative = a_d * (keypoints - self._raw) / dt_s + (1 - a_d) * self._derivative
        self._raw = keypoints
        speed_heights_per_s = np.linalg.norm(self._derivative, axis=-1, keepdims=True) / max(box_height_px,
                                                                                              MIN_BOX_HEIGHT_PX)
        a = _alpha(self.min_cutoff_hz + self.beta * speed_heights_per_s, dt_s)
        self._value = a * keypoints + (1 - a) * self._value
        return self._value.astype(np.float32)


@dataclass
class _TrackFilter:
    one_euro: OneEuroFilter
    last_seen_s: float


class SmoothedTracker:
    """A tracker whose reported keypoints are One-Euro filtered per track id (see the module docstring).

    propose(frame) and reset() are the wrapped tracker's (reset also forgets every filter); update(frame, poses)
    returns the wrapped tracker's Tracks with poses.keypoints smoothed and raw_keypoints [N, K, 2] the unsmoothed
    ones. dt is the time since the track was last reported, from Frame.timestamp_s (TrackerClock: frames whose time
    does not advance are taken as 1/30 s apart). A track absent for more than max_absent_s restarts its filter.
    """

    def __init__(self, tracker, *, min_cutoff_hz: float = SmoothingConfig.min_cutoff_hz,
                 beta: float = SmoothingConfig.beta, max_absent_s: float = MAX_ABSENT_S):
        SmoothingConfig(min_cutoff_hz=min_cutoff_hz, beta=beta)  # the range checks live with the fields
        if not max_absent_s >= 0:
            raise ValueError(f"max_absent_s must be >= 0 seconds, got {max_absent_s!r}")
        self.tracker = tracker
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.max_absent_s = max_absent_s
        self._filters: Dict[int, _TrackFilter] = {}
        self._clock = TrackerClock()

    @classmethod
    def from_config(cls, tracker, cfg: SmoothingConfig) -> "SmoothedTracker":
        return cls(tracker, min_cutoff_hz=cfg.min_cutoff_hz, beta=cfg.beta)

    @property
    def skeleton(self):
        return self.tracker.skeleton

    @property
    def num_filters(self) -> int:
        """Filters held now (reported tracks and those absent for at most max_absent_s)."""
        return len(self._filters)

    def reset(self) -> None:
        """Sequence boundary: the wrapped tracker resets and every filter is forgotten."""
        self.tracker.reset()
        self._filters = {}
        self._clock = TrackerClock()

    def propose(self, frame: Frame) -> Detections:
        return self.tracker.propose(frame)

    def update(self, frame: Frame, poses: Poses) -> Tracks:
        tracks = self.tracker.update(frame, poses)
        now_s = self._clock.tick(frame)
        reported = tracks.poses
        raw = reported.keypoints.copy()
        smoothed = raw.copy()
        heights_px = reported.boxes_xyxy[:, 3] - reported.boxes_xyxy[:, 1]
        for i, track_id in enumerate(tracks.track_ids.tolist()):
            entry = self._filters.get(track_id)
            if entry is None or now_s - entry.last_seen_s > self.max_absent_s + 1e-9:
                entry = _TrackFilter(OneEuroFilter(min_cutoff_hz=self.min_cutoff_hz, beta=self.beta), now_s)
                self._filters[track_id] = entry
            # Seconds since this track was last reported, not since the last frame: a gap is a longer step.
            dt_s = now_s - entry.last_seen_s if now_s > entry.last_seen_s else self._clock.dt_s
            smoothed[i] = entry.one_euro(raw[i], dt_s, float(heights_px[i]))
            entry.last_seen_s = now_s
        self._filters = {track_id: entry for track_id, entry in self._filters.items()
                         if now_s - entry.last_seen_s <= self.max_absent_s + 1e-9}
        out = Poses(smoothed, reported.keypoint_scores, reported.boxes_xyxy, reported.box_scores,
                    reported.proposed_by)
        return Tracks(tracks.track_ids, out, info=tracks.info, raw_keypoints=raw)
