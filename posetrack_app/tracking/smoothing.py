"""Keypoint smoothers for reported poses, one instance per track, and the box-centre Kalman filter of lost tracks.

Shape glossary: K keypoints; keypoints [K, 2] in image pixels; dt_s seconds since the previous call.

Smoothing trades a little lag for less jitter; it changes only what is reported, never what is matched.
The constants below are the usual starting points of each filter (Casiez et al. for the One-Euro filter), not
tuned on any clip: smoothing is off by default and has no accuracy benchmark here.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np
from filterpy.kalman import KalmanFilter

# One-Euro filter: 1 Hz minimum cutoff removes a static person's jitter; beta 0.05 lets fast limbs through.
ONE_EURO_MIN_CUTOFF_HZ = 1.0
ONE_EURO_BETA = 0.05
ONE_EURO_DERIVATIVE_CUTOFF_HZ = 1.0
# Constant-velocity Kalman filters: a person accelerates by about a pixel per frame; detector joints and boxes
# jitter by a few pixels.
KALMAN_PROCESS_NOISE_PX = 1.0
KALMAN_MEASUREMENT_NOISE_PX = 4.0
# Initial velocity uncertainty (pixels per frame): a new track may already be walking.
_INITIAL_VELOCITY_STD_PX = 10.0


def _constant_velocity(dim: int, start: np.ndarray) -> KalmanFilter:
    """Filter on `dim` positions and their velocities (pixels, pixels per frame); `start`: positions [dim]."""
    kf = KalmanFilter(dim_x=2 * dim, dim_z=dim)
    eye, zero = np.eye(dim), np.zeros((dim, dim))
    kf.F = np.block([[eye, eye], [zero, eye]])
    kf.H = np.hstack([eye, zero])
    kf.R = eye * KALMAN_MEASUREMENT_NOISE_PX ** 2
    # Piecewise-constant white acceleration with a step of one frame.
    kf.Q = KALMAN_PROCESS_NOISE_PX ** 2 * np.block([[0.25 * eye, 0.5 * eye], [0.5 * eye, eye]])
    kf.P = np.block([[eye * KALMAN_MEASUREMENT_NOISE_PX ** 2, zero], [zero, eye * _INITIAL_VELOCITY_STD_PX ** 2]])
    kf.x = np.concatenate([np.asarray(start, float).reshape(-1), np.zeros(dim)])
    return kf


def box_center_kalman(center_xy: np.ndarray) -> KalmanFilter:
    """Constant-velocity filter on a box centre: state (x, y, vx, vy) in pixels and pixels per frame."""
    return _constant_velocity(2, center_xy)


class OneEuroSmoother:
    """One-Euro filter over all joints of one track (Casiez et al., CHI 2012)."""

    def __init__(self):
        self._value = None
        self._derivative = None

    @staticmethod
    def _alpha(cutoff_hz, dt_s):
        tau = 1.0 / (2.0 * np.pi * cutoff_hz)
        return 1.0 / (1.0 + tau / dt_s)

    def __call__(self, keypoints: np.ndarray, dt_s: float) -> np.ndarray:
        if self._value is None:
            self._value = keypoints.astype(np.float64)
            self._derivative = np.zeros_like(self._value)
            return keypoints.copy()
        derivative = (keypoints - self._value) / dt_s
        a_d = self._alpha(ONE_EURO_DERIVATIVE_CUTOFF_HZ, dt_s)
        self._derivative = a_d * derivative + (1 - a_d) * self._derivative
        speed = np.linalg.norm(self._derivative, axis=-1, keepdims=True)
        a = self._alpha(ONE_EURO_MIN_CUTOFF_HZ + ONE_EURO_BETA * speed, dt_s)
        self._value = a * keypoints + (1 - a) * self._value
        return self._value.astype(np.float32)


class KalmanSmoother:
    """Constant-velocity Kalman filter on all joints of one track: state [2K positions, 2K velocities]."""

    def __init__(self):
        self.kf = None

    def __call__(self, keypoints: np.ndarray, dt_s: float) -> np.ndarray:
        if self.kf is None:
            self.kf = _constant_velocity(keypoints.size, keypoints)
            return keypoints.copy()
        self.kf.predict()
        self.kf.update(keypoints.reshape(-1).astype(float))
        return self.kf.x[: keypoints.size].reshape(keypoints.shape).astype(np.float32)


# "none" reports the poses as estimated.
SMOOTHERS: Dict[str, Callable[[], object]] = {"one_euro": OneEuroSmoother, "kalman": KalmanSmoother}
SMOOTHING_CHOICES = ("none", *SMOOTHERS)
