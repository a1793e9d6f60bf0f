"""OKS matrix and OKS-NMS against hand-computed values."""
import numpy as np
import pytest

from posetrack_app.ops.oks import oks_matrix, oks_nms
from posetrack_app.skeleton import COCO17

SIGMAS = COCO17.sigmas
K = len(SIGMAS)


def _pose(offset=(0.0, 0.0)):
    base = np.stack([np.linspace(10, 50, K), np.linspace(20, 120, K)], axis=1).astype(np.float32)
    return base + np.asarray(offset, np.float32)


@pytest.mark.parametrize("shift_px, area", [(0.0, 4000.0), (3.0, 4000.0), (5.0, 1000.0), (20.0, 10000.0)])
def test_uniform_shift_matches_the_formula(shift_px, area):
    a, b = _pose((shift_px, 0.0)), _pose()
    scores = np.ones((1, K), np.float32)
    got = oks_matrix(a[None], scores, b[None], scores, np.array([area]), SIGMAS)[0, 0]
    expected = np.mean(np.exp(-shift_px ** 2 / (2 * area * (2 * SIGMAS) ** 2)))
    assert got == pytest.approx(expected, abs=1e-6)


def test_only_joints_valid_in_both_count():
    a, b = _pose(), _pose()
    a[0] += 100.0  # far off, but joint 0 is not scored in b
    sa = np.ones((1, K), np.float32)
    sb = np.ones((1, K), np.float32)
    sb[0, 0] = 0.0
    assert oks_matrix(a[None], sa, b[None], sb, np.array([4000.0]), SIGMAS, 0.1)[0, 0] == pytest.approx(1.0)
    assert oks_matrix(a[None], sa, b[None], sa, np.array([4000.0]), SIGMAS, 0.1)[0, 0] < 0.95


def test_no_valid_joint_gives_zero_and_empty_sets_give_empty_matrices():
    zero = np.zeros((1, K), np.float32)
    assert oks_matrix(_pose()[None], zero, _pose()[None], zero, np.array([100.0]), SIGMAS, 0.1)[0, 0] == 0.0
    assert oks_matrix(np.zeros((0, K, 2)), np.zeros((0, K)), _pose()[None], zero, [1.0], SIGMAS).shape == (0, 1)


def test_matrix_shape_and_ordering():
    a = np.stack([_pose(), _pose((30, 0))])
    b = np.stack([_pose((30, 0)), _pose(), _pose((200, 0))])
    s = np.ones((3, K), np.float32)
    oks = oks_matrix(a, s[:2], b, s, np.full(3, 4000.0), SIGMAS)
    assert oks.shape == (2, 3)
    np.testing.assert_allclose([oks[0, 1], oks[1, 0]], [1.0, 1.0], atol=1e-6)
    assert oks[0, 2] < 1e-3


def test_degenerate_area_does_not_divide_by_zero():
    s = np.ones((1, K), np.float32)
    value = oks_matrix(_pose((1, 0))[None], s, _pose()[None], s, np.array([0.0]), SIGMAS)[0, 0]
    assert np.isfinite(value) and 0.0 <= value < 1.0


def test_oks_nms_removes_near_duplicates_and_keeps_the_higher_priority():
    poses = np.stack([_pose(), _pose((0.5, 0)), _pose((80, 0))])
    scores = np.ones((3, K), np.float32)
    keep = oks_nms(poses, scores, np.full(3, 4000.0), np.array([0.5, 0.9, 0.7]), SIGMAS, 0.7)
    assert keep.tolist() == [1, 2]
    assert oks_nms(np.zeros((0, K, 2)), np.zeros((0, K)), np.zeros(0), np.zeros(0), SIGMAS, 0.7).tolist() == []
