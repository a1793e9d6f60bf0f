"""Poses for the OKS oracle (tests/test_oks.py; expected values from pycocotools via
tests/fixtures/make_oks_expectations.py): two annotated persons, one with four joints not labelled, and four
detections (exact, shifted, jittered, far away), listed by descending score as COCOeval orders them."""
from __future__ import annotations

import numpy as np

IMAGE_HW = (480, 640)
K = 17
_rng = np.random.default_rng(20261129)
_base = np.stack([np.linspace(100, 160, K), np.linspace(80, 300, K)], axis=1).round(2)
_second = (_base + [300.0, 40.0]).round(2)

GROUND_TRUTH = [
    {"keypoints": _base, "visibility": [2] * K, "area": 9000.0, "bbox": [90.0, 70.0, 80.0, 240.0]},
    {"keypoints": _second, "visibility": [0, 0, 2, 2, 2, 1, 1, 2, 2, 0, 0, 2, 2, 2, 2, 2, 2], "area": 3500.0,
     "bbox": [390.0, 110.0, 80.0, 240.0]},
]
DETECTIONS = [
    {"keypoints": _base.copy(), "score": 0.95},
    {"keypoints": (_base + [4.0, -3.0]).round(2), "score": 0.9},
    {"keypoints": (_second + _rng.normal(0.0, 6.0, size=(K, 2))).round(2), "score": 0.8},
    {"keypoints": (_base + [250.0, 20.0]).round(2), "score": 0.7},
]
