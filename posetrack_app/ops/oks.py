"""Object keypoint similarity (OKS) between pose sets, and OKS-based non-maximum suppression.

Shape glossary:
    N, M  persons in the two sets
    K     keypoints per person
Keypoints are continuous image pixels [.., K, 2]; keypoint scores are [.., K] in [0, 1].

OKS follows the COCO keypoint evaluation: for joint k with falloff sigma_k and object area s (pixels^2),
    e_k = d_k^2 / (2 * s * (2 * sigma_k)^2),  OKS = mean over valid joints of exp(-e_k).
A joint is valid when both poses score it above `keypoint_score_threshold`; a pair with no valid joint
has OKS 0 (nothing says they are the same person).
"""
from __future__ import annotations

import numpy as np


def oks_matrix(
    keypoints_a: np.ndarray,
    scores_a: np.ndarray,
    keypoints_b: np.ndarray,
    scores_b: np.ndarray,
    areas_b: np.ndarray,
    sigmas: np.ndarray,
    keypoint_score_threshold: float = 0.0,
    min_area_px2: float = 1.0,
) -> np.ndarray:
    """[N, M] OKS of every pose of set a against every pose of set b, with b's object areas.

    keypoints_a [N, K, 2], scores_a [N, K], keypoints_b [M, K, 2], scores_b [M, K], areas_b [M] pixels^2,
    sigmas [K]. Areas below `min_area_px2` are raised to it so a degenerate box does not divide by zero.
    """
    keypoints_a = np.asarray(keypoints_a, dtype=np.float32)
    keypoints_b = np.asarray(keypoints_b, dtype=np.float32)
    n, m = len(keypoints_a), len(keypoints_b)
    if n == 0 or m == 0:
        return np.zeros((n, m), np.float32)
    sigmas = np.asarray(sigmas, dtype=np.float32)
    if keypoints_a.shape[1] != len(sigmas) or keypoints_b.shape[1] != len(sigmas):
        raise ValueError(
            f"OKS needs the same K everywhere: got {keypoints_a.shape[1]} and {keypoints_b.shape[1]} keypoints "
            f"for {len(sigmas)} sigmas")
    diff = keypoints_a[:, None, :, :] - keypoints_b[None, :, :, :]          # [N, M, K, 2]
    dist2 = np.einsum("nmkc,nmkc->nmk", diff, diff)                           # [N, M, K]
    areas = np.maximum(np.asarray(areas_b, dtype=np.float32).reshape(-1), min_area_px2)
    variances = (2.0 * sigmas) ** 2                                           # [K]
    e = dist2 / (2.0 * areas[None, :, None] * variances[None, None, :])
    valid = (np.asarray(scores_a)[:, None, :] > keypoint_score_threshold) & \
            (np.asarray(scores_b)[None, :, :] > keypoint_score_threshold)     # [N, M, K]
    count = valid.sum(axis=2)
    total = np.where(valid, np.exp(-e), 0.0).sum(axis=2)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)


def oks_nms(
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    areas: np.ndarray,
    priorities: np.ndarray,
    sigmas: np.ndarray,
    oks_threshold: float,
    keypoint_score_threshold: float = 0.0,
) -> np.ndarray:
    """Greedy pose NMS: int64 indices of kept poses, highest priority first.

    keypoints [N, K, 2], keypoint_scores [N, K], areas [N] pixels^2, priorities [N] (higher is kept first,
    e.g. pose scores). A pose is removed when its OKS with a kept, higher-priority pose exceeds `oks_threshold`;
    the kept pose's area scales the OKS (it is the reference).
    """
    order = np.argsort(-np.asarray(priorities, dtype=np.float64), kind="stable")
    if len(order) == 0:
        return order.astype(np.int64)
    # oks[i, j]: pose i measured against reference pose j.
    oks = oks_matrix(keypoints, keypoint_scores, keypoints, keypoint_scores, areas, sigmas, keypoint_score_threshold)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for j in order:
        if suppressed[j]:
            continue
        keep.append(j)
        suppressed |= oks[:, j] > oks_threshold
    return np.asarray(keep, dtype=np.int64)
