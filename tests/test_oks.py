"""OKS matrix against the COCO keypoint evaluation's own OKS (pycocotools values recorded as literals), and OKS-NMS
against hand-worked cases."""
import numpy as np
import pytest

import oks_cases
from posetrack_app.ops.oks import oks_matrix, oks_nms
from posetrack_app.skeleton import COCO17

SIGMAS = COCO17.sigmas
K = len(SIGMAS)


def _pose(offset=(0.0, 0.0)):
    base = np.stack([np.linspace(10, 50, K), np.linspace(20, 120, K)], axis=1).astype(np.float32)
    return base + np.asarray(offset, np.float32)


# pycocotools 2.0.11 COCOeval.computeOks for oks_cases.DETECTIONS (rows) x oks_cases.GROUND_TRUTH (columns), printed
# by tests/fixtures/make_oks_expectations.py.
PYCOCOTOOLS_OKS = np.array([[1.000000000000e+000, 1.236263273536e-125],
                            [8.592026821472e-001, 9.649378005908e-123],
                            [2.005142828873e-049, 6.637125120821e-001],
                            [8.549170851998e-035, 1.863441015573e-005]])
# float32 arithmetic here, float64 in pycocotools (which also adds one ulp to the area).
OKS_ABSOLUTE_TOLERANCE = 1e-6


def test_matches_pycocotools():
    """Unlabelled ground-truth joints (visibility 0) count in neither, as in COCO: they enter as score 0."""
    detections = np.stack([d["keypoints"] for d in oks_cases.DETECTIONS])
    ground_truth = np.stack([g["keypoints"] for g in oks_cases.GROUND_TRUTH])
    labelled = np.array([np.asarray(g["visibility"]) > 0 for g in oks_cases.GROUND_TRUTH], np.float32)
    areas = np.array([g["area"] for g in oks_cases.GROUND_TRUTH])
    ours = oks_matrix(detections, np.ones(detections.shape[:2], np.float32), ground_truth, labelled, areas, SIGMAS)
    np.testing.assert_allclose(ours, PYCOCOTOOLS_OKS, rtol=1e-5, atol=OKS_ABSOLUTE_TOLERANCE)


def test_sigmas_are_cocos():
    # The COCO keypoint evaluation's sigmas (pycocotools cocoeval.py, Params.setKpParams).
    coco = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
    np.testing.assert_allclose(SIGMAS, coco, rtol=1e-6)


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
