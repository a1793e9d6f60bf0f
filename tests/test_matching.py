"""greedy_match / hungarian_match: one return shape, thresholds respected, table-driven."""
import numpy as np
import pytest

from posetrack_app.tracking.matching import get_matcher, greedy_match, hungarian_match

CASES = [
    # similarity, threshold, greedy pairs, hungarian pairs
    ([[0.9, 0.8], [0.85, 0.1]], 0.05, {(0, 0), (1, 1)}, {(0, 1), (1, 0)}),
    ([[0.9, 0.8], [0.85, 0.1]], 0.5, {(0, 0)}, {(0, 1), (1, 0)}),
    ([[0.2, 0.3]], 0.5, set(), set()),
    ([[0.6], [0.7], [0.65]], 0.5, {(1, 0)}, {(1, 0)}),
    (np.zeros((0, 3)), 0.5, set(), set()),
    (np.zeros((2, 0)), 0.5, set(), set()),
    ([[np.nan, 0.9]], 0.5, {(0, 1)}, {(0, 1)}),
]


@pytest.mark.parametrize("similarity, threshold, greedy_pairs, hungarian_pairs", CASES)
def test_matchers(similarity, threshold, greedy_pairs, hungarian_pairs):
    similarity = np.asarray(similarity, dtype=float)
    n, m = similarity.shape
    for matcher, expected in ((greedy_match, greedy_pairs), (hungarian_match, hungarian_pairs)):
        matches, unmatched_a, unmatched_b = matcher(similarity, threshold)
        assert matches.shape[1] == 2 and matches.dtype == np.int64
        assert {tuple(p) for p in matches.tolist()} == expected, matcher.__name__
        assert sorted(unmatched_a.tolist() + matches[:, 0].tolist()) == list(range(n))
        assert sorted(unmatched_b.tolist() + matches[:, 1].tolist()) == list(range(m))
        for r, c in matches:
            assert similarity[r, c] >= threshold


def test_greedy_takes_highest_pair_first():
    matches, _, _ = greedy_match(np.array([[0.5, 0.9, 0.1], [0.4, 0.95, 0.3]]), 0.2)
    assert matches.tolist() == [[1, 1], [0, 0]]


def test_get_matcher_names_the_choices():
    assert get_matcher("greedy") is greedy_match
    with pytest.raises(ValueError, match="greedy, hungarian"):
        get_matcher("auction")

