"""Paper-mode heatmap decoding pinned rule by rule on constructed heatmaps, for the numpy decoder and the torch
decoder that runs on the network's device; and the torch flip merge against the numpy one.

The rules are those of the official HRNet code (lib/core/inference.py: get_max_preds, get_final_preds); each case
below states the expected cell by hand from the rule, not from either implementation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posetrack_app.ops.heatmap import (decode_heatmaps, decode_heatmaps_torch, merge_flip_test,
                                       merge_flip_test_torch)
from posetrack_app.skeleton import COCO17

H, W = 64, 48   # heatmaps of a 256x192 input
PEAK = 1.0
NEIGHBOUR = 0.5


def _heatmap(peak_xy, neighbours=(), background=0.0, peak=PEAK):
    """[1, 1, H, W]: `background` everywhere, `peak` at peak_xy, and each (x, y, value) of `neighbours`."""
    heatmap = np.full((1, 1, H, W), background, np.float32)
    heatmap[0, 0, peak_xy[1], peak_xy[0]] = peak
    for x, y, value in neighbours:
        heatmap[0, 0, y, x] = value
    return heatmap


def _both_decoders(heatmaps):
    """[(coords_xy [N, K, 2], scores [N, K]) from numpy, the same from torch]."""
    coords, scores = decode_heatmaps(heatmaps)
    decoded = decode_heatmaps_torch(torch.from_numpy(heatmaps)).numpy()
    return [(coords, scores), (decoded[..., :2].astype(np.float64), decoded[..., 2])]


RIGHT_AND_DOWN_HIGHER = lambda x, y: [(x + 1, y, NEIGHBOUR), (x, y + 1, NEIGHBOUR)]  # noqa: E731

# (peak cell, neighbour values, expected decoded position). Rule: shift by 0.25 toward the higher neighbour on each
# axis only where 1 < x < W-1 AND 1 < y < H-1; else keep the integer cell on both axes.
SHIFT_CASES = {
    "inside: both axes move": ((10, 20), [(11, 20, NEIGHBOUR), (10, 19, NEIGHBOUR)], (10.25, 19.75)),
    "inside: equal neighbours do not move": ((10, 20), [(9, 20, NEIGHBOUR), (11, 20, NEIGHBOUR)], (10.0, 20.0)),
    "x = 0: neither axis moves": ((0, 30), RIGHT_AND_DOWN_HIGHER(0, 30), (0.0, 30.0)),
    "x = 1: neither axis moves (1 < x is false)": ((1, 30), RIGHT_AND_DOWN_HIGHER(1, 30), (1.0, 30.0)),
    "x = 2: moves": ((2, 30), RIGHT_AND_DOWN_HIGHER(2, 30), (2.25, 30.25)),
    "x = W-2: moves": ((W - 2, 30), [(W - 3, 30, NEIGHBOUR), (W - 2, 31, NEIGHBOUR)], (W - 2 - 0.25, 30.25)),
    "x = W-1: neither axis moves": ((W - 1, 30), [(W - 2, 30, NEIGHBOUR), (W - 1, 31, NEIGHBOUR)], (W - 1.0, 30.0)),
    "y = 1: neither axis moves": ((10, 1), RIGHT_AND_DOWN_HIGHER(10, 1), (10.0, 1.0)),
    "y = 2: moves": ((10, 2), RIGHT_AND_DOWN_HIGHER(10, 2), (10.25, 2.25)),
    "y = H-2: moves": ((10, H - 2), [(11, H - 2, NEIGHBOUR), (10, H - 3, NEIGHBOUR)], (10.25, H - 2 - 0.25)),
    "y = H-1: neither axis moves": ((10, H - 1), [(11, H - 1, NEIGHBOUR), (10, H - 2, NEIGHBOUR)], (10.0, H - 1.0)),
    "corner (0, 0)": ((0, 0), [(1, 0, NEIGHBOUR), (0, 1, NEIGHBOUR)], (0.0, 0.0)),
}


@pytest.mark.parametrize("name", list(SHIFT_CASES))
def test_quarter_cell_shift_border_rule(name):
    peak_xy, neighbours, expected_xy = SHIFT_CASES[name]
    for coords, scores in _both_decoders(_heatmap(peak_xy, neighbours)):
        assert coords[0, 0].tolist() == list(expected_xy), name
        assert scores[0, 0] == PEAK


# (heatmap, expected position, expected raw score). Rule: a maximum <= 0 puts the joint at cell (0, 0) (and then
# no shift: x = 0 is on the border); the score is the raw maximum, never clipped.
PEAK_CASES = {
    "negative maximum -> (0, 0)": (_heatmap((20, 30), background=-1.0, peak=-0.2), (0.0, 0.0), -0.2),
    "all zero -> (0, 0)": (_heatmap((20, 30), peak=0.0), (0.0, 0.0), 0.0),
    "zero maximum over negatives -> (0, 0)": (_heatmap((20, 30), background=-0.3, peak=0.0), (0.0, 0.0), 0.0),
    "tiny positive maximum is kept and shifted": (_heatmap((20, 30), [(21, 30, 5e-7)], peak=1e-6), (20.25, 30.0),
                                                  1e-6),
    "score above 1 is not clipped": (_heatmap((20, 30), peak=1.7), (20.0, 30.0), 1.7),
    "ties: the first cell in row-major order": (_heatmap((30, 5), [(10, 6, PEAK)]), (30.0, 5.0), PEAK),
}


@pytest.mark.parametrize("name", list(PEAK_CASES))
def test_peak_rules_and_raw_scores(name):
    heatmap, expected_xy, expected_score = PEAK_CASES[name]
    for coords, scores in _both_decoders(heatmap):
        assert coords[0, 0].tolist() == list(expected_xy), name
        assert scores[0, 0] == pytest.approx(expected_score, rel=1e-6), name


def _random_heatmaps(seed: int, n: int = 6, k: int = 17) -> np.ndarray:
    """Noise with peaks planted on every border row / column, negative channels and tied maxima."""
    rng = np.random.default_rng(seed)
    heatmaps = rng.normal(0.0, 0.3, size=(n, k, H, W)).astype(np.float32)
    heatmaps[0, :] -= 5.0                                    # every maximum negative
    for j, (x, y) in enumerate([(0, 9), (1, 9), (2, 9), (W - 2, 9), (W - 1, 9), (9, 0), (9, 1), (9, H - 2),
                                (9, H - 1), (1, 1), (W - 1, H - 1)]):
        heatmaps[1, j, y, x] = 10.0
    heatmaps[2, 0, 3, 4] = heatmaps[2, 0, 3, 40] = 10.0      # a tie
    heatmaps[3] = np.round(heatmaps[3], 1)                   # many equal neighbours
    return heatmaps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_decoder_equals_numpy_decoder_exactly(seed):
    heatmaps = _random_heatmaps(seed)
    (coords, scores), (coords_t, scores_t) = _both_decoders(heatmaps)
    assert np.array_equal(coords, coords_t)
    assert np.array_equal(scores, scores_t)
    assert np.all(coords[0] == 0.0) and np.all(scores[0] < 0)


@pytest.mark.parametrize("shift_cells", [0, 1, 2])
def test_torch_flip_merge_equals_numpy_flip_merge_exactly(shift_cells):
    rng = np.random.default_rng(shift_cells)
    plain, flipped = (rng.normal(size=(3, 17, H, W)).astype(np.float32) for _ in range(2))
    expected = merge_flip_test(plain, flipped, COCO17.flip_permutation, shift_cells)
    permutation = torch.as_tensor(COCO17.flip_permutation)
    got = merge_flip_test_torch(torch.from_numpy(plain), torch.from_numpy(flipped), permutation, shift_cells)
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), expected)


def test_empty_batches_decode_to_empty_arrays():
    assert decode_heatmaps_torch(torch.zeros((0, 17, H, W))).shape == (0, 17, 3)
    coords, scores = decode_heatmaps(np.zeros((0, 17, H, W), np.float32))
    assert coords.shape == (0, 17, 2) and scores.shape == (0, 17)


@pytest.mark.needs_cuda
def test_cuda_decoder_equals_numpy_decoder():
    heatmaps = _random_heatmaps(4)
    decoded = decode_heatmaps_torch(torch.from_numpy(heatmaps).cuda()).cpu().numpy()
    coords, scores = decode_heatmaps(heatmaps)
    assert np.array_equal(decoded[..., :2], coords) and np.array_equal(decoded[..., 2], scores)
