"""Heatmap decoding and the flip test, on numpy arrays.

Shape glossary:
    N  crops (persons)
    K  keypoints (heatmap channels)
    h x w  heatmap height x width (network input / 4)

Coordinates returned are heatmap coordinates (x, y) in the reference code's convention: the integer index of a
heatmap cell is its coordinate (see ops/affine.py for the map back to image pixels).
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

# The reference decoder moves the argmax a quarter cell toward the higher neighbour.
QUARTER_OFFSET = 0.25
# DARK's Gaussian smoothing kernel (odd, in heatmap cells); 11 is DARK's value for 64x48 heatmaps
# (Zhang et al., CVPR 2020). Floor for the log so empty heatmaps stay finite.
DEFAULT_DARK_KERNEL = 11
_LOG_FLOOR = 1e-10


def argmax_2d(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(coords_xy int64 [N, K, 2], maxvals float32 [N, K]) of each heatmap's largest cell (first on ties)."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    index = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.int64)
    return coords, maxvals.astype(np.float32)


def quarter_offset_refine(heatmaps: np.ndarray, coords_xy: np.ndarray) -> np.ndarray:
    """float64 [N, K, 2]: each argmax moved QUARTER_OFFSET toward its higher neighbour, per axis, where both
    neighbours on that axis exist; unchanged where the neighbours are equal."""
    n, k, h, w = heatmaps.shape
    x = coords_xy[..., 0]
    y = coords_xy[..., 1]
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    refined = coords_xy.astype(np.float64)
    inner_x = (x > 0) & (x < w - 1)
    inner_y = (y > 0) & (y < h - 1)
    xr, xl = np.clip(x + 1, 0, w - 1), np.clip(x - 1, 0, w - 1)
    yd, yu = np.clip(y + 1, 0, h - 1), np.clip(y - 1, 0, h - 1)
    dx = heatmaps[ni, ki, y, xr] - heatmaps[ni, ki, y, xl]
    dy = heatmaps[ni, ki, yd, x] - heatmaps[ni, ki, yu, x]
    refined[..., 0] += np.where(inner_x, np.sign(dx) * QUARTER_OFFSET, 0.0)
    refined[..., 1] += np.where(inner_y, np.sign(dy) * QUARTER_OFFSET, 0.0)
    return refined


def dark_refine(heatmaps: np.ndarray, coords_xy: np.ndarray, kernel: int = DEFAULT_DARK_KERNEL) -> np.ndarray:
    """DARK (distribution-aware coordinate representation): smooth each heatmap with a Gaussian of `kernel`
    cells (rescaled to keep its maximum), take the log, and step from the argmax by -Hessian^-1 * gradient
    (second-order Taylor expansion; exact for a Gaussian peak). float64 [N, K, 2].

    Where the argmax touches the border, or the Hessian is not negative definite, the argmax is kept.
    """
    if kernel % 2 != 1 or kernel < 3:
        raise ValueError(f"DARK kernel must be an odd number >= 3 of heatmap cells, got {kernel}")
    n, k, h, w = heatmaps.shape
    smooth = np.empty((n, k, h, w), dtype=np.float64)
    for i in range(n):
        for j in range(k):
            original_max = float(heatmaps[i, j].max())
            blurred = cv2.GaussianBlur(heatmaps[i, j].astype(np.float64), (kernel, kernel), 0)
            blurred_max = float(blurred.max())
            smooth[i, j] = blurred * (original_max / blurred_max) if blurred_max > 0 else blurred
    logs = np.log(np.maximum(smooth, _LOG_FLOOR))
    x = coords_xy[..., 0]
    y = coords_xy[..., 1]
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    inner = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    xc, yc = np.clip(x, 1, w - 2), np.clip(y, 1, h - 2)

    def at(dy: int, dx: int) -> np.ndarray:
        return logs[ni, ki, yc + dy, xc + dx]

    center = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = at(0, 1) - 2 * center + at(0, -1)
    hyy = at(1, 0) - 2 * center + at(-1, 0)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    # Negative definite Hessian (a proper maximum): hxx < 0 and det > 0.
    ok = inner & (hxx < 0) & (det > 1e-12)
    safe_det = np.where(ok, det, 1.0)
    step_x = -(hyy * gx - hxy * gy) / safe_det
    step_y = -(-hxy * gx + hxx * gy) / safe_det
    # A true peak lies within one cell of the argmax; larger steps come from noise and are not taken.
    ok &= (np.abs(step_x) <= 1.0) & (np.abs(step_y) <= 1.0)
    refined = coords_xy.astype(np.float64)
    refined[..., 0] += np.where(ok, step_x, 0.0)
    refined[..., 1] += np.where(ok, step_y, 0.0)
    return refined


def decode_heatmaps(heatmaps: np.ndarray, *, dark: bool = False, dark_kernel: int = DEFAULT_DARK_KERNEL
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """heatmaps [N, K, h, w] -> (coords_xy float64 [N, K, 2] heatmap coordinates, maxvals float32 [N, K]).

    Default: argmax + quarter-cell offset toward the higher neighbour (the reference decoder). dark=True: DARK.
    The keypoint score is the heatmap maximum (before any smoothing).
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {heatmaps.shape}")
    coords, maxvals = argmax_2d(heatmaps)
    if heatmaps.shape[0] == 0:
        return coords.astype(np.float64), maxvals
    refined = dark_refine(heatmaps, coords, dark_kernel) if dark else quarter_offset_refine(heatmaps, coords)
    return refined, maxvals


def flip_back(heatmaps_of_flipped: np.ndarray, flip_permutation: np.ndarray) -> np.ndarray:
    """Heatmaps predicted for horizontally flipped crops -> the unflipped frame: mirror the columns and swap
    left/right channels (`flip_permutation[k]` = the channel holding keypoint k's mirror partner)."""
    return heatmaps_of_flipped[:, np.asarray(flip_permutation), :, ::-1]


def shift_heatmaps_right(heatmaps: np.ndarray, cells: int = 1) -> np.ndarray:
    """Move every heatmap `cells` columns right, keeping the first columns as they were (the reference code's
    `shift_heatmap`, which compensates the index flip x -> W-1-x of the flipped crop)."""
    shifted = heatmaps.copy()
    if cells > 0:
        shifted[..., cells:] = heatmaps[..., :-cells]
    return shifted


def merge_flip_test(heatmaps: np.ndarray, heatmaps_of_flipped: np.ndarray, flip_permutation: np.ndarray,
                    shift_cells: int = 1) -> np.ndarray:
    """The reference flip test: average the heatmaps with the flipped-back, shifted heatmaps of the mirrored crops."""
    back = shift_heatmaps_right(flip_back(heatmaps_of_flipped, flip_permutation), shift_cells)
    return 0.5 * (heatmaps + back)
