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


class CenterMotion:
    """Constant-velocity filter on one person's box centre. `center_xy`: pixels; `height_px`: the person's height;
    `time_s`: when the centre was seen.

    x and y move independently under the same noises, so both share one 2x2 covariance of (position, velocity),
    kept as three floats: the filter runs for every track on every frame, and scalar arithmetic costs a fraction of
    4x4 matrix products."""

    def __init__(self, center_xy: np.ndarray, height_px: float, time_s: float):
        h = max(1.0, float(height_px))
        self._position = np.asarray(center_xy, np.float64).reshape(2).copy()
        self._velocity = np.zeros(2)
        # Covariance of (position, velocity) along either axis, in pixels and pixels per second.
        self._p00 = (MEASUREMENT_STD_HEIGHTS * h) ** 2
        self._p01 = 0.0
        self._p11 = (INITIAL_VELOCITY_STD_HEIGHTS_PER_S * h) ** 2
        self.time_s = float(time_s)

    @property
    def center(self) -> np.ndarray:
        """[2] the centre (x, y) in pixels at the filter's time."""
        return self._position.copy()

    @property
    def velocity(self) -> np.ndarray:
        """[2] (vx, vy) in pixels per second."""
        return self._velocity.copy()

    @property
    def covariance(self) -> np.ndarray:
        """[2, 2] covariance of (position, velocity) along either axis."""
        return np.array([[self._p00, self._p01], [self._p01, self._p11]])

    def predict(self, time_s: float, height_px: float) -> None:
        """Move the state to `time_s` (no-op for a time not after the filter's own)."""
        dt = float(time_s) - self.time_s
        if dt <= 0.0:
            return
        # Piecewise-constant white acceleration over the step: F = [[1, dt], [0, 1]], P <- F P F^T + Q.
        q = (ACCELERATION_STD_HEIGHTS_PER_S2 * max(1.0, float(height_px))) ** 2
        p00, p01, p11 = self._p00, self._p01, self._p11
        self._p00 = p00 + 2.0 * dt * p01 + dt * dt * p11 + q * dt ** 4 / 4.0
        self._p01 = p01 + dt * p11 + q * dt ** 3 / 2.0
        self._p11 = p11 + q * dt * dt
        self._position = self._position + dt * self._velocity
        self.time_s = float(time_s)

    def update(self, center_xy: np.ndarray, height_px: float) -> None:
        """Fold in a measured centre (pixels) of a person `height_px` tall, at the filter's time."""
        r = (MEASUREMENT_STD_HEIGHTS * max(1.0, float(height_px))) ** 2
        p00, p01, p11 = self._p00, self._p01, self._p11
        s = p00 + r
        k0, k1 = p00 / s, p01 / s
        residual = np.asarray(center_xy, np.float64).reshape(2) - self._position
        self._position = self._position + k0 * residual
        self._velocity = self._velocity + k1 * residual
        # Joseph form, (I - K H) P (I - K H)^T + K r K^T: stays positive definite under rounding.
        a = 1.0 - k0
        self._p00 = a * a * p00 + k0 * k0 * r
        self._p01 = a * (p01 - k1 * p00) + k0 * k1 * r
        self._p11 = p11 - 2.0 * k1 * p01 + k1 * k1 * p00 + k1 * k1 * r
