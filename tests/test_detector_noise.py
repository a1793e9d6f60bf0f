"""The dev suite's detector noise (benchmarks/tracker_suite.perturbed) and its summary (compare_trackers
--noise-seeds): the spread of a tracker's scores is only a measure if the noise is the size it claims, the same for
the same seed, and the summary reports what the runs gave."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from posetrack_app.structures import Detections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_trackers  # noqa: E402  (benchmarks/ is not a package)
import tracker_suite  # noqa: E402

K = 17


def _frames(n_frames=200, per_frame=5, height=200.0, score=0.6):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n_frames):
        x = rng.uniform(0, 500, per_frame)
        boxes = np.stack([x, np.full(per_frame, 50.0), x + 80, np.full(per_frame, 50.0 + height)], axis=1)
        keypoints = np.concatenate([rng.uniform(0, 500, (per_frame, K, 2)), np.full((per_frame, K, 1), 0.7)], axis=2)
        frames.append(Detections(boxes, np.full(per_frame, score), keypoints))
    return frames


def test_noise_has_the_stated_size_relative_to_the_person():
    clean = _frames(height=200.0)
    noisy = tracker_suite.perturbed(clean, seed=3)
    box = np.concatenate([n.boxes_xyxy - c.boxes_xyxy for c, n in zip(clean, noisy)]) / 200.0
    joints = np.concatenate([n.keypoints[..., :2] - c.keypoints[..., :2] for c, n in zip(clean, noisy)]) / 200.0
    scores = np.concatenate([n.scores - c.scores for c, n in zip(clean, noisy)])
    joint_scores = np.concatenate([n.keypoints[..., 2] - c.keypoints[..., 2] for c, n in zip(clean, noisy)])
    assert box.std() == pytest.approx(tracker_suite.NOISE_BOX_SD, rel=0.05)
    assert joints.std() == pytest.approx(tracker_suite.NOISE_JOINT_SD, rel=0.05)
    assert scores.std() == pytest.approx(tracker_suite.NOISE_SCORE_SD, rel=0.05)
    assert joint_scores.std() == pytest.approx(tracker_suite.NOISE_SCORE_SD, rel=0.05)
    assert abs(box.mean()) < 0.1 * tracker_suite.NOISE_BOX_SD  # unbiased (4000 samples: standard error 0.016 sd)


def test_same_seed_same_noise_other_seed_other_noise():
    clean = _frames(n_frames=3)
    a, b, c = (tracker_suite.perturbed(clean, seed) for seed in (1, 1, 2))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x.boxes_xyxy, y.boxes_xyxy)
        assert not np.allclose(x.boxes_xyxy, z.boxes_xyxy)


def test_boxes_pushed_under_the_cache_threshold_are_dropped_and_empty_frames_pass():
    low = _frames(n_frames=50, score=tracker_suite.CACHE_SCORE_THRESHOLD + 0.01)
    noisy = tracker_suite.perturbed(low + [Detections.empty(K)], seed=0)
    kept = sum(len(d) for d in noisy[:-1])
    assert 0 < kept < sum(len(d) for d in low)
    assert all((d.scores >= tracker_suite.CACHE_SCORE_THRESHOLD).all() for d in noisy)
    assert len(noisy[-1]) == 0


def test_noise_spread_reports_median_and_range_of_the_runs():
    runs = [{"MOTA": m, "IDF1": 50.0, "IDSW": s} for m, s in ((70.0, 3), (72.0, 5), (90.0, 4))]
    spread = compare_trackers.noise_spread(runs)
    assert spread["seeds"] == 3
    assert (spread["median"]["MOTA"], spread["min"]["MOTA"], spread["max"]["MOTA"]) == (72.0, 70.0, 90.0)
    assert (spread["median"]["IDSW"], spread["min"]["IDSW"], spread["max"]["IDSW"]) == (4.0, 3.0, 5.0)
    assert "pose MOTA" not in spread["median"]  # a box-only clip has no pose scores
