"""TopDownEstimator: person boxes -> affine crops -> pose backend -> heatmaps -> keypoints in image pixels.

Shape glossary:
    N  boxes (persons) in the frame
    K  keypoints
    H x W  network input (e.g. 384 x 288); h x w heatmaps (H/4 x W/4)

Procedure (the HRNet paper's test time, as the reference code does it):
    1. box -> region: center of the box, grown to the input aspect (W:H = 3:4), times `box_padding` (1.25)
    2. affine crop of each region to H x W, all crops of the frame stacked in one batch
    3. BGR -> RGB, ImageNet mean/std (in 0..255 units)
    4. backend.infer in chunks of `max_batch` (with the flip test the mirrored crops ride in the same batch)
    5. flip test: heatmaps of the mirrored crops mirrored back, left/right channels swapped, shifted one cell
       right, averaged with the plain heatmaps
    6. decode in paper mode (ops/heatmap.py: argmax, peaks <= 0 to cell (0, 0), the quarter-cell shift with the
       reference code's border rule) or DARK; inverse affine to image pixels
    7. keypoint score = the raw heatmap maximum (what OKS rescoring and PoseTrack's ranking expect);
       `clip_scores` clips it to [0, 1] for display

Where the work runs: on a CUDA backend, steps 2-6 stay on the GPU (crops cut there from one pinned upload of the
frame, heatmaps merged and decoded there) and only [N, K, 3] keypoints come back; nothing before the network
waits for the GPU (ops/gpu_crop.py says why that matters). The only host synchronisation of a frame is that last
copy of the keypoints. DARK decodes on the host (its smoothing is cv2's), so with `dark` the heatmaps come back.
On a CPU backend the crops are cut by cv2.warpAffine (the reference code's crop) and the rest is the same torch
code as on the GPU.

Geometry is float64 on the host: the crop matrices (the reference code builds them in float32 with
cv2.getAffineTransform; float64 moves a sample position by < 1e-4 px, which changed 1 grey level on < 0.01% of
crop pixels in a side-by-side run) and the inverse map of the decoded coordinates.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Optional, Tuple

import numpy as np
import torch

from ..ops.affine import (DEFAULT_BOX_PADDING, apply_affine, boxes_to_regions, invert_affine,
                          region_to_crop_matrices, warp_crops)
from ..ops.heatmap import DEFAULT_DARK_KERNEL, decode_heatmaps, decode_heatmaps_torch, merge_flip_test_torch
from ..skeleton import Skeleton
from ..structures import Detections, Frame, Poses
from .backends.base import DEFAULT_MAX_BATCH, HEATMAP_STRIDE, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

log = logging.getLogger(__name__)


class TopDownEstimator:
    """`estimator(frame, detections) -> Poses`; `.skeleton` is the keypoint layout of the network's channels.

    backend: a PoseBackend (backends/base.py) whose heatmaps have `skeleton.num_keypoints` channels.
    flip_test: average with the mirrored crop (doubles the network work). flip_shift_cells: the reference
    code's one-cell shift of the flipped-back heatmaps. dark: DARK decoding instead of the quarter offset.
    clip_scores: clip keypoint scores to [0, 1] (off in paper mode: raw heatmap maxima).
    device_crops: cut crops with torch on the backend's device (None: on CUDA backends; False: cv2 on the host).
    """

    def __init__(self, backend, *, skeleton: Skeleton, flip_test: bool = True, flip_shift_cells: int = 1,
                 dark: bool = False, dark_kernel: int = DEFAULT_DARK_KERNEL, clip_scores: bool = False,
                 box_padding: float = DEFAULT_BOX_PADDING, max_batch: int = DEFAULT_MAX_BATCH,
                 mean_rgb=IMAGENET_MEAN_RGB, std_rgb=IMAGENET_STD_RGB, device_crops: Optional[bool] = None):
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
        self.clip_scores = clip_scores
        self.box_padding = box_padding
        self.max_batch = max_batch
        self.input_hw: Tuple[int, int] = tuple(backend.input_hw)
        self.heatmap_hw = (self.input_hw[0] // HEATMAP_STRIDE, self.input_hw[1] // HEATMAP_STRIDE)
        self.device = torch.device(str(getattr(backend, "device", "cpu")))
        # Per-frame constants live on the device from here on: a per-frame host->device copy of them would wait
        # for the device.
        self._flip_permutation = torch.as_tensor(skeleton.flip_permutation, dtype=torch.long).to(self.device)
        # Normalisation in 0..255 units for the cv2 crops (BGR reversed to RGB before it).
        self._mean_255 = torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self._std_255 = torch.tensor(std_rgb, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        if device_crops is None:
            device_crops = self.device.type == "cuda"
        self._device_cropper = None
        if device_crops:
            from ..ops.gpu_crop import DeviceCropper
            self._device_cropper = DeviceCropper(self.input_hw[::-1], device=self.device, mean_rgb=mean_rgb,
                                                 std_rgb=std_rgb)
        # Set by the Pipeline to its StageTimer: then crop, network and decode are timed as pose.* sub-stages.
        self.timer = None

    # -- the stages, separately callable for tests and benchmarks --

    def regions(self, boxes_xyxy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(centers_xy [N, 2], region_sizes_wh_px [N, 2]) of the crops."""
        h, w = self.input_hw
        return boxes_to_regions(boxes_xyxy, w / h, self.box_padding)

    def crop_batch(self, image_bgr: np.ndarray, centers: np.ndarray, sizes: np.ndarray) -> torch.Tensor:
        """float32 [N, 3, H, W]: the crops, RGB, ImageNet-normalised (on the device with device crops, else CPU)."""
        h, w = self.input_hw
        matrices = region_to_crop_matrices(centers, sizes, (w, h))
        if self._device_cropper is not None:
            return self._device_cropper(image_bgr, matrices)
        crops = warp_crops(image_bgr, matrices, (w, h))
        batch = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).float()
        return (batch - self._mean_255) / self._std_255

    def heatmaps(self, batch: torch.Tensor) -> torch.Tensor:
        """float32 [N, K, h, w] on the backend's device for crops [N, 3, H, W], flip test merged when enabled."""
        n = batch.shape[0]
        batch = batch.to(self.device, non_blocking=True)
        if self.flip_test:
            batch = torch.cat([batch, torch.flip(batch, dims=[3])])
        outputs = [self.backend.infer(batch[s:s + self.max_batch]) for s in range(0, batch.shape[0], self.max_batch)]
        heatmaps = (outputs[0] if len(outputs) == 1 else torch.cat(outputs)).float()
        if self.flip_test:
            heatmaps = merge_flip_test_torch(heatmaps[:n], heatmaps[n:], self._flip_permutation,
                                             self.flip_shift_cells)
        return heatmaps

    def decode(self, heatmaps: torch.Tensor, centers: np.ndarray, sizes: np.ndarray
               ) -> Tuple[np.ndarray, np.ndarray]:
        """(keypoints_xy float32 [N, K, 2] image pixels, keypoint_scores float32 [N, K]) from heatmaps [N, K, h, w]
        (a torch tensor on any device, or a numpy array)."""
        if self.dark:
            host = heatmaps.cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
            coords, maxvals = decode_heatmaps(host, dark=True, dark_kernel=self.dark_kernel)
        else:
            # The frame's one host synchronisation: [N, K, 3] keypoints, not the heatmaps, cross back.
            decoded = decode_heatmaps_torch(torch.as_tensor(heatmaps)).cpu().numpy()
            coords, maxvals = decoded[..., :2].astype(np.float64), decoded[..., 2]
        hh, hw = self.heatmap_hw
        to_image = invert_affine(region_to_crop_matrices(centers, sizes, (hw, hh)))
        keypoints = apply_affine(coords, to_image).astype(np.float32)
        scores = np.clip(maxvals, 0.0, 1.0) if self.clip_scores else maxvals
        return keypoints, scores.astype(np.float32)

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
