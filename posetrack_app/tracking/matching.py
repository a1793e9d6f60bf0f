"""Assignment between two sets from a similarity matrix.

Shape glossary:
    N  items of set a (rows, e.g. current poses); M  items of set b (columns, e.g. tracks)
    P  matched pairs
Both matchers return the same triple:
    matches int64 [P, 2] (row, column) pairs, unmatched_a int64 [N - P], unmatched_b int64 [M - P],
all sorted ascending except `matches`, which is in the order the matcher accepted the pairs.
A pair is matched only when its similarity is >= threshold.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


MatchResult = Tuple[np.ndarray, np.ndarray, np.ndarray]


def _result(matches, n: int, m: int) -> MatchResult:
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    unmatched_a = np.setdiff1d(np.arange(n, dtype=np.int64), matches[:, 0])
    unmatched_b = np.setdiff1d(np.arange(m, dtype=np.int64), matches[:, 1])
    return matches, unmatched_a, unmatched_b


def _check(similarity) -> np.ndarray:
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be a 2-D [N, M] matrix, got shape {similarity.shape}")
    return similarity


def greedy_match(similarity: np.ndarray, threshold: float) -> MatchResult:
    """Take the highest remaining pair >= threshold, remove its row and column, repeat.

    Ties are broken by row-major position, so the result is deterministic. NaN never matches.
    """
    similarity = _check(similarity)
    n, m = similarity.shape
    ok = np.isfinite(similarity) & (similarity >= threshold)
    rows, cols = np.nonzero(ok)
    order = np.argsort(-similarity[rows, cols], kind="stable")
    used_rows = np.zeros(n, dtype=bool)
    used_cols = np.zeros(m, dtype=bool)
    matches = []
    for r, c in zip(rows[order], cols[order]):
        if used_rows[r] or used_cols[c]:
            continue
        used_rows[r] = used_cols[c] = True
        matches.append((r, c))
    return _result(matches, n, m)


def hungarian_match(similarity: np.ndarray, threshold: float) -> MatchResult:
    """Assignment maximising the summed similarity over pairs >= threshold (scipy's linear_sum_assignment).

    Pairs below the threshold are made worthless before solving, so they never displace a valid pair,
    and are dropped from the result.
    """
    similarity = _check(similarity)
    n, m = similarity.shape
    if n == 0 or m == 0:
        return _result([], n, m)
    ok = np.isfinite(similarity) & (similarity >= threshold)
    # Valid pairs keep a positive weight (shifted above 0) so the solver prefers any valid pair to none.
    low = np.min(np.where(ok, similarity, np.inf)) if ok.any() else 0.0
    weights = np.where(ok, similarity - low + 1.0, 0.0)
    # Imported here: scipy.optimize takes about a second to import, and the default trackers match greedily.
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(weights, maximize=True)
    keep = ok[rows, cols]
    order = np.argsort(-similarity[rows[keep], cols[keep]], kind="stable")
    return _result(np.stack([rows[keep][order], cols[keep][order]], axis=1), n, m)


MATCHERS = {"greedy": greedy_match, "hungarian": hungarian_match}


def get_matcher(name: str):
    try:
        return MATCHERS[name]
    except KeyError:
        raise ValueError(f"unknown matcher {name!r}; choose one of {', '.join(MATCHERS)}") from None

