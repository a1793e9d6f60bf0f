"""Top-down crop geometry: person boxes -> fixed-aspect crop regions -> affine maps into the network input.

Shape glossary:
    N  boxes (crops)
    K  keypoints
    H x W  network input (crop) in pixels; h x w heatmap = (H / stride) x (W / stride)

Conventions (those of the HRNet reference code, so that released checkpoints see the crops they were trained
on): a crop region is a center and a size in image pixels with the aspect of the network input; the affine map
takes the region's center to the crop point (W/2, H/2) and scales uniformly by W / region_width. cv2.warpAffine
reads the matrix in the same pixel-index coordinates. Heatmap coordinates are crop coordinates divided by the
stride (heatmap index j <-> crop coordinate stride * j). No rotation at test time.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

# The reference code's box enlargement for context around the person.
DEFAULT_BOX_PADDING = 1.25


def boxes_to_regions(boxes_xyxy: np.ndarray, aspect_w_over_h: float, padding: float = DEFAULT_BOX_PADDING
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes -> (centers_xy [N, 2], region_sizes_wh_px [N, 2]) with the region grown to `aspect_w_over_h`
    (only ever enlarged: the narrower side grows) and then scaled by `padding`.

    aspect_w_over_h: network input width / height (192 / 256 = 0.75 for the 4:3 portrait crops).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    centers = (boxes[:, 0:2] + boxes[:, 2:4]) * 0.5
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    too_wide = w > aspect_w_over_h * h
    h = np.where(too_wide, w / aspect_w_over_h, h)
    w = np.where(too_wide, w, h * aspect_w_over_h)
    sizes = np.stack([w, h], axis=1) * padding
    # A degenerate box (zero size) would give a singular map; one pixel keeps the algebra finite.
    sizes = np.maximum(sizes, 1.0)
    return centers, sizes


def region_to_crop_matrices(centers_xy: np.ndarray, region_sizes_wh_px: np.ndarray, output_wh: Tuple[int, int]
                            ) -> np.ndarray:
    """[N, 2, 3] float64 affine maps image pixels -> output pixels (crop input, or heatmap when `output_wh` is
    the heatmap size): region center -> (W/2, H/2), scale W / region_width in both axes."""
    centers = np.asarray(centers_xy, dtype=np.float64).reshape(-1, 2)
    sizes = np.asarray(region_sizes_wh_px, dtype=np.float64).reshape(-1, 2)
    out_w, out_h = float(output_wh[0]), float(output_wh[1])
    scale = out_w / sizes[:, 0]
    matrices = np.zeros((len(centers), 2, 3), dtype=np.float64)
    matrices[:, 0, 0] = scale
    matrices[:, 1, 1] = scale
    matrices[:, 0, 2] = out_w * 0.5 - scale * centers[:, 0]
    matrices[:, 1, 2] = out_h * 0.5 - scale * centers[:, 1]
    return matrices


def invert_affine(matrices: np.ndarray) -> np.ndarray:
    """[N, 2, 3] -> [N, 2, 3] inverse maps."""
    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    linear = matrices[:, :, :2]
    inverse_linear = np.linalg.inv(linear)
    inverse = np.empty_like(matrices)
    inverse[:, :, :2] = inverse_linear
    inverse[:, :, 2] = -np.einsum("nij,nj->ni", inverse_linear, matrices[:, :, 2])
    return inverse


def apply_affine(points_xy: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """points [N, K, 2] through per-row maps [N, 2, 3] -> [N, K, 2] float64."""
    points = np.asarray(points_xy, dtype=np.float64)
    matrices = np.asarray(matrices, dtype=np.float64)
    return np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def warp_crops(image: np.ndarray, matrices: np.ndarray, output_wh: Tuple[int, int]) -> np.ndarray:
    """Crops [N, H, W, C] (image's dtype) by bilinear cv2.warpAffine; outside the image is 0 (black)."""
    out_w, out_h = int(output_wh[0]), int(output_wh[1])
    crops = np.zeros((len(matrices), out_h, out_w) + image.shape[2:], dtype=image.dtype)
    for i, matrix in enumerate(matrices):
        crops[i] = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crops
