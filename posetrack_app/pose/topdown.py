"""TopDownEstimator: person boxes -> affine crops -> pose backend -> heatmaps -> keypoints in image pixels.

Shape glossary:
    N  boxes (persons) in the frame
    K  keypoints
    H x W  network input (e.g. 384 x 288); h x w heatmaps (H/4 x W/4)

Procedure (the HRNet paper's test time, as the reference code does it):
    1. box -> region: center of the box, grown to the input aspect (W:H = 3:4), times `box_padding` (1.25)
    2. affine crop of each region to H x W (cv2.warpAffine), all crops of the frame stacked in one batch
    3. BGR -> RGB, /255, ImageNet mean/std
    4. backend.infer in chunks of `max_batch` (with the flip test the mirrored crops ride in the same batch)
    5. flip test: heatmaps of the mirrored crops mirrored back, left/right channels swapped, shifted one cell
       right, averaged with the plain heatmaps
    6. decode: argmax + quarter-cell offset toward the higher neighbour (or DARK), inverse affine to image pixels
    7. keypoint score = heatmap maximum (clipped to [0, 1], the Poses contract)
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Tuple

import numpy as np
import torch

from ..ops.affine import (DEFAULT_BOX_PADDING, apply_affine, boxes_to_regions, invert_affine,
                          region_to_crop_matrices, warp_crops)
from ..ops.heatmap import DEFAULT_DARK_KERNEL, decode_heatmaps, merge_flip_test
from ..skeleton import Skeleton
from ..structures import Detections, Frame, Poses
from .backends.base import HEATMAP_STRIDE, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

log = logging.getLogger(__name__)


class TopDownEstimator:
    """`estimator(frame, detections) -> Poses`; `.skeleton` is the keypoint layout of the network's channels.

    backend: a PoseBackend (backends/base.py) whose heatmaps have `skeleton.num_keypoints` channels.
    flip_test: average with the mirrored crop (doubles the network work). flip_shift_cells: the reference
    code's one-cell shift of the flipped-back heatmaps. dark: DARK decoding instead of the quarter offset.
    """

    def __init__(self, backend, *, skeleton: Skeleton, flip_test: bool = True, flip_shift_cells: int = 1,
                 dark: bool = False, dark_kernel: int = DEFAULT_DARK_KERNEL, box_padding: float = DEFAULT_BOX_PADDING,
                 max_batch: int = 32, mean_rgb=IMAGENET_MEAN_RGB, std_rgb=IMAGENET_STD_RGB):
        if backend.num_keypoints != skeleton.num_keypoints:
            raise ValueError(f"the pose backend predicts {backend.num_keypoints} keypoints, layout {skeleton.name} "
                             f"has {skeleton.num_keypoints}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.skeleton = skeleton
        self.flip_test = flip_test
        self.flip_shift_cells = flip_shift_cells
        self.dark = dark
        self.dark_kernel = dark_kernel
        self.box_padding = box_padding
        self.max_batch = max_batch
        self.input_hw: Tuple[int, int] = tuple(backend.input_hw)
        self.heatmap_hw = (self.input_hw[0] // HEATMAP_STRIDE, self.input_hw[1] // HEATMAP_STRIDE)
        # Normalisation in 0..255 units, BGR order folded in by reversing channels first.
        self._mean = torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std_rgb, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._flip_permutation = skeleton.flip_permutation
        self._mean_rgb, self._std_rgb = tuple(mean_rgb), tuple(std_rgb)
        # On a GPU the crops are cut there (batched affine sampling) from one pinned-memory upload of the frame,
        # instead of N cv2.warpAffine calls and N crop uploads.
        device = str(getattr(backend, "device", "cpu"))
        self._uploader = None
        if device.startswith("cuda"):
            from ..ops.gpu_crop import FrameUploader
            self._uploader = FrameUploader(device)
        # Set by the Pipeline to its StageTimer: then crop, network and decode are timed as pose.* sub-stages.
        self.timer = None

    # -- the stages, separately callable for tests and benchmarks --

    def regions(self, boxes_xyxy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(centers_xy [N, 2], region_sizes_wh_px [N, 2]) of the crops."""
        h, w = self.input_hw
        return boxes_to_regions(boxes_xyxy, w / h, self.box_padding)

    def crop_batch(self, image_bgr: np.ndarray, centers: np.ndarray, sizes: np.ndarray) -> torch.Tensor:
        """float32 [N, 3, H, W]: the crops, RGB, ImageNet-normalised (on the CPU)."""
        h, w = self.input_hw
        matrices = region_to_crop_matrices(centers, sizes, (w, h))
        if self._uploader is not None:
            from ..ops.gpu_crop import crop_batch
            return crop_batch(image_bgr, matrices, (w, h), device=self._uploader.device, uploader=self._uploader,
                              mean_rgb=self._mean_rgb, std_rgb=self._std_rgb)
        crops = warp_crops(image_bgr, matrices, (w, h))
        batch = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).float()
        return (batch - self._mean) / self._std

    def heatmaps(self, batch: torch.Tensor) -> np.ndarray:
        """float32 [N, K, h, w] for crops [N, 3, H, W], flip test included when enabled."""
        n = batch.shape[0]
        device = getattr(self.backend, "device", "cpu")
        batch = batch.to(device, non_blocking=True)
        if self.flip_test:
            batch = torch.cat([batch, torch.flip(batch, dims=[3])])
        outputs = [self.backend.infer(batch[s:s + self.max_batch]) for s in range(0, batch.shape[0], self.max_batch)]
        heatmaps = torch.cat(outputs).float().cpu().numpy()
        if self.flip_test:
            heatmaps = merge_flip_test(heatmaps[:n], heatmaps[n:], self._flip_permutation, self.flip_shift_cells)
        return heatmaps

    def decode(self, heatmaps: np.ndarray, centers: np.ndarray, sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(keypoints_xy float32 [N, K, 2] image pixels, keypoint_scores float32 [N, K])."""
        coords, maxvals = decode_heatmaps(heatmaps, dark=self.dark, dark_kernel=self.dark_kernel)
        hh, hw = self.heatmap_hw
        to_image = invert_affine(region_to_crop_matrices(centers, sizes, (hw, hh)))
        keypoints = apply_affine(coords, to_image).astype(np.float32)
        return keypoints, np.clip(maxvals, 0.0, 1.0).astype(np.float32)

    def __call__(self, frame: Frame, detections: Detections) -> Poses:
        k = self.skeleton.num_keypoints
        if len(detections) == 0:
            return Poses.empty(k)
        timer = self.timer
        with timer.stage("pose.crop") if timer else nullcontext():
            centers, sizes = self.regions(detections.boxes_xyxy)
            batch = self.crop_batch(frame.image_bgr, centers, sizes)
        with timer.stage("pose.network") if timer else nullcontext():
            heatmaps = self.heatmaps(batch)
        with timer.stage("pose.decode") if timer else nullcontext():
            keypoints, scores = self.decode(heatmaps, centers, sizes)
        return Poses(keypoints, scores, detections.boxes_xyxy, detections.scores, detections.proposed_by)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
