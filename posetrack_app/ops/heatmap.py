"""Heatmap decoding and the flip test: numpy (the reference, and DARK) and torch (on the network's device).

Shape glossary:
    N  crops (persons)
    K  keypoints (heatmap channels)
    h x w  heatmap height x width (network input / 4)

Coordinates returned are heatmap coordinates (x, y) in the reference code's convention: the integer index of a
heatmap cell is its coordinate (see ops/affine.py for the map back to image pixels).

Paper mode (the default) decodes exactly as the official HRNet code does (lib/core/inference.py of
leoxiaobin/deep-high-resolution-net.pytorch, `get_max_preds` and `get_final_preds` with POST_PROCESS on):
    1. argmax of each heatmap (the first cell on ties);
    2. a joint whose maximum is <= 0 is put at cell (0, 0): the official code multiplies its coordinates by
       `maxval > 0`, so a network that sees nothing of a joint reports it at the crop's top-left corner;
    3. the argmax moves a quarter cell toward the higher neighbour on each axis (sign of the difference of the two
       neighbours, so equal neighbours move nothing), but only when the peak lies at least two cells inside the
       heatmap on BOTH axes together (1 < x < w - 1 and 1 < y < h - 1); a peak in the outer two rows or columns
       keeps its integer cell on both axes;
    4. the score is the raw heatmap maximum: not clipped (it can be negative or above 1), because it feeds the
       OKS rescoring and the PoseTrack ranking as it is.
DARK (`dark_refine`) is an explicit improvement over step 3, and clipping scores to [0, 1] an explicit display
option of the estimator; neither is the paper's.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np
import torch

# The reference decoder moves the argmax a quarter cell toward the higher neighbour.
QUARTER_OFFSET = 0.25
# The reference decoder shifts a peak only where its cell index c satisfies BORDER_CELLS < c < size - 1 on both
# axes (its `1 < px < heatmap_width - 1`): cells 0 and 1 at the low end and the last cell are left alone.
BORDER_CELLS = 1
# DARK's Gaussian smoothing kernel (odd, in heatmap cells); 11 is DARK's value for 64x48 heatmaps
# (Zhang et al., CVPR 2020). Floor for the log so empty heatmaps stay finite.
DEFAULT_DARK_KERNEL = 11
_LOG_FLOOR = 1e-10


def argmax_2d(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(coords_xy int64 [N, K, 2], maxvals float32 [N, K]): each heatmap's largest cell (the first on ties), and
    cell (0, 0) where the maximum is <= 0 (the reference decoder's rule). maxvals are the raw maxima."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    index = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % w, index // w], axis=-1).astype(np.int64)
    coords *= (maxvals > 0)[..., None]
    return coords, maxvals.astype(np.float32)


def _inside_shift_border(x, y, h: int, w: int):
    """Where the reference decoder applies the quarter-cell shift: both axes at once (works on numpy and torch)."""
    return (x > BORDER_CELLS) & (x < w - 1) & (y > BORDER_CELLS) & (y < h - 1)


def quarter_offset_refine(heatmaps: np.ndarray, coords_xy: np.ndarray) -> np.ndarray:
    """float64 [N, K, 2]: each argmax moved QUARTER_OFFSET toward its higher neighbour on each axis (no move where
    the two neighbours are equal), only where the peak is inside the shift border on both axes (module
    docstring, rule 3)."""
    n, k, h, w = heatmaps.shape
    x = coords_xy[..., 0]
    y = coords_xy[..., 1]
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    refined = coords_xy.astype(np.float64)
    inside = _inside_shift_border(x, y, h, w)
    xr, xl = np.clip(x + 1, 0, w - 1), np.clip(x - 1, 0, w - 1)
    yd, yu = np.clip(y + 1, 0, h - 1), np.clip(y - 1, 0, h - 1)
    dx = heatmaps[ni, ki, y, xr] - heatmaps[ni, ki, y, xl]
    dy = heatmaps[ni, ki, yd, x] - heatmaps[ni, ki, yu, x]
    refined[..., 0] += np.where(inside, np.sign(dx) * QUARTER_OFFSET, 0.0)
    refined[..., 1] += np.where(inside, np.sign(dy) * QUARTER_OFFSET, 0.0)
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

    Default: paper mode (module docstring, rules 1-4). dark=True: DARK instead of the quarter-cell shift (rules 1,
    2 and 4 still hold). The keypoint score is the raw heatmap maximum (before any smoothing).
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


# -- torch versions, for heatmaps that stay on the network's device (only keypoints cross back to the host) --

def decode_heatmaps_torch(heatmaps: torch.Tensor) -> torch.Tensor:
    """Paper-mode decoding on the heatmaps' device: [N, K, h, w] -> float32 [N, K, 3] = (x, y, raw score) in
    heatmap coordinates. The same rules, and the same numbers, as `decode_heatmaps(dark=False)` (tested equal)."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    heatmaps = heatmaps.float()
    flat = heatmaps.reshape(n, k, h * w)
    if n == 0 or k == 0:
        return heatmaps.new_zeros((n, k, 3))
    # argmax returns the first index on ties, as numpy's (and so the reference code's) does.
    index = flat.argmax(dim=2)
    maxvals = flat.gather(2, index.unsqueeze(2)).squeeze(2)
    index = index * (maxvals > 0)
    x, y = index % w, torch.div(index, w, rounding_mode="floor")
    inside = _inside_shift_border(x, y, h, w)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        cell = yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)
        return flat.gather(2, cell.unsqueeze(2)).squeeze(2)

    dx = at(y, x + 1) - at(y, x - 1)
    dy = at(y + 1, x) - at(y - 1, x)
    shift = QUARTER_OFFSET * inside.to(heatmaps.dtype)
    return torch.stack([x.to(heatmaps.dtype) + torch.sign(dx) * shift,
                        y.to(heatmaps.dtype) + torch.sign(dy) * shift, maxvals], dim=2)


def merge_flip_test_torch(heatmaps: torch.Tensor, heatmaps_of_flipped: torch.Tensor,
                          flip_permutation, shift_cells: int = 1) -> torch.Tensor:
    """`merge_flip_test` on torch tensors (any device): mirror back, swap left/right channels, shift `shift_cells`
    columns right keeping the first columns, average. float32 [N, K, h, w]; equal to the numpy version.

    flip_permutation: [K] indices; pass a long tensor already on the heatmaps' device to avoid a host copy (a
    pageable host-to-device copy waits for the device) in a per-frame call.
    """
    permutation = flip_permutation if isinstance(flip_permutation, torch.Tensor) else \
        torch.as_tensor(np.asarray(flip_permutation), dtype=torch.long)
    back = heatmaps_of_flipped.float().flip(3).index_select(1, permutation.to(heatmaps_of_flipped.device))
    if shift_cells > 0:
        back = torch.cat([back[..., :shift_cells], back[..., :-shift_cells]], dim=3)
    return 0.5 * (heatmaps.float() + back)
