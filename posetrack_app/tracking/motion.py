"""FlowTrack's motion model: a constant-velocity Kalman filter on a person's box centre, in seconds and person
heights, so the same settings hold at 7 and 30 fps and for 50-px and 500-px people.

State: centre (x, y) in pixels and velocity (vx, vy) in pixels per second. Every noise is a multiple of the person's
height, and `predict` steps by the seconds elapsed since the filter's previous time.

Until 2026-11-30 the filter counted pixels and frames (1 px/frame^2 of acceleration, 4 px of box jitter, 10 px/frame
of initial speed), values that suited PETS09 (7 fps, people about 80 px tall). The acceleration and jitter below are
those values converted at PETS09's rate and size, so PETS09 tracks as before (the initial speed is wider, for
panning cameras). Elsewhere the old filter drifted with the frame rate and the person's size: at 30 fps it allowed
18 times PETS09's acceleration per second^2, and at crossings a track's velocity followed the person passing in
front. Dev suite (benchmarks/results/compare_trackers_suite.md), FlowTrack's
mean MOTA / IDF1 / ID switches at detector size 640, 960, auto: before 33.0 / 40.8 / 15, 38.7 / 47.9 / 40,
43.4 / 53.9 / 39; after 33.0 / 41.7 / 13, 38.7 / 50.8 / 35, 43.5 / 55.3 / 38. Only the 25 and 30 fps clips move:
syn30 IDF1 59.2 -> 74.5 and syn25 at 960 69.8 -> 86.1 (ID switches 4 -> 0), for syn25's MOTA -0.4 (-0.8 at 960).
"""
from __future__ import annotations

import numpy as np

# Acceleration (heights/s^2): 1 px/frame^2 at 7 fps on an 80-px person. 0.3 (with 0.9 heights/s of initial speed)
# tracks the 25-30 fps clips as well but loses PETS09 MOTA 68.3 -> 66.7 and IDF1 66.2 -> 63.5 at detector size 960.
ACCELERATION_STD_HEIGHTS_PER_S2 = 0.6
# A detector's box centre jitters by a few percent of the person's height from frame to frame (4 px on 80 px).
MEASUREMENT_STD_HEIGHTS = 0.05
# The speed a new track may already have: a walker does about 0.8 heights (1.4 m) per second, and a panning camera
# moves everyone by several heights per second (tests/test_flowtrack.py's pan: 8 heights/s; at 0.9 heights/s the
# filter lags the pan and flow is overruled, so ids change).
INITIAL_VELOCITY_STD_HEIGHTS_PER_S = 3.0

_H = np.hstack([np.eye(2), np.zeros((2, 2))])  # measures the centre, not the velocity


class CenterMotion:
    """Constant-velocity filter on one person's box centre. `center_xy`: pixels; `height_px`: the person's height;
    `time_s`: when the centre was seen."""

    def __init__(self, center_xy: np.ndarray, height_px: float, time_s: float):
        h = max(1.0, float(height_px))
        self.x = np.concatenate([np.asarray(center_xy, np.float64).reshape(2), np.zeros(2)])
        self.P = np.diag([(MEASUREMENT_STD_HEIGHTS * h) ** 2] * 2 + [(INITIAL_VELOCITY_STD_HEIGHTS_PER_S * h) ** 2] * 2)
        self.time_s = float(time_s)

    @property
    def center(self) -> np.ndarray:
        """[2] the centre (x, y) in pixels at the filter's time."""
        return self.x[:2]

    def predict(self, time_s: float, height_px: float) -> None:
        """Move the state to `time_s` (no-op for a time not after the filter's own)."""
        dt = float(time_s) - self.time_s
        if dt <= 0.0:
            return
        eye = np.eye(2)
        F = np.block([[eye, dt * eye], [np.zeros((2, 2)), eye]])
        # Piecewise-constant white acceleration over the step.
        q = (ACCELERATION_STD_HEIGHTS_PER_S2 * max(1.0, float(height_px))) ** 2
        Q = q * np.block([[dt ** 4 / 4 * eye, dt ** 3 / 2 * eye], [dt ** 3 / 2 * eye, dt ** 2 * eye]])
        self.x = F @ self.x
        self.P = F @ self.P @ F.T + Q
        self.time_s = float(time_s)

    def update(self, center_xy: np.ndarray, height_px: float) -> None:
        """Fold in a measured centre (pixels) of a person `height_px` tall, at the filter's time."""
        R = np.eye(2) * (MEASUREMENT_STD_HEIGHTS * max(1.0, float(height_px))) ** 2
        residual = np.asarray(center_xy, np.float64).reshape(2) - _H @ self.x
        S = _H @ self.P @ _H.T + R
        gain = self.P @ _H.T @ np.linalg.inv(S)
        self.x = self.x + gain @ residual
        # Joseph form: stays symmetric and positive definite under rounding.
        A = np.eye(4) - gain @ _H
        self.P = A @ self.P @ A.T + gain @ R @ gain.T
