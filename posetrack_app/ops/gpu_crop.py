"""Batched affine crops with torch (GPU or CPU): all person crops of a frame in one grid_sample call.

Shape glossary:
    B  crops;  C  channels (3);  H x W  frame;  h x w  crop (network input)

Matrices are the [B, 2, 3] image -> crop maps that cv2.warpAffine takes (ops/affine.py builds them): a crop
pixel (x, y) samples the frame at inverse(M) @ (x, y, 1), bilinearly, with 0 outside the frame
(INTER_LINEAR, BORDER_CONSTANT 0). Pixel coordinates are pixel-index coordinates (pixel i has its centre at i),
as cv2 uses them. The result matches cv2.warpAffine to within its fixed-point rounding (cv2 quantises sample
positions to 1/32 pixel and rounds to uint8); tests/test_gpu_crop.py asserts the tolerance.

The frame (uint8 BGR [H, W, 3]) crosses to the GPU once per frame, through a reused pinned host buffer and a
non-blocking copy (`FrameUploader`); it is converted to float once, on the device.

No host synchronisation: a host-to-device copy from ordinary (pageable) memory makes torch wait for everything
queued on the stream before it returns, so a per-frame `torch.as_tensor(..., device="cuda")` stalls the CPU
until the GPU has caught up, and with another Python thread busy (reader, writer) each such wait can also cost a
GIL hand-over. Everything per frame that crosses here (frame, sampling matrices) goes through pinned memory with
`non_blocking=True`; constants (normalisation) live on the device from construction (`DeviceCropper`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .affine import invert_affine


def sampling_grid(matrices, image_hw: Tuple[int, int], output_wh: Tuple[int, int],
                  device="cpu") -> torch.Tensor:
    """grid_sample grid [B, h, w, 2] (align_corners=False normalisation) for image -> crop maps `matrices`.

    Composes, in float64 on the host, crop pixel -> image pixel (inverse map) -> normalised coordinate
    ((2 x + 1) / W - 1, which puts pixel i's centre where grid_sample with align_corners=False reads pixel i);
    the result is the affine `theta` of F.affine_grid in crop-normalised coordinates.
    """
    out_w, out_h = int(output_wh[0]), int(output_wh[1])
    img_h, img_w = int(image_hw[0]), int(image_hw[1])
    if out_w < 1 or out_h < 1:
        raise ValueError(f"crop size must be positive, got {output_wh}")
    if isinstance(matrices, torch.Tensor):
        matrices = matrices.detach().cpu().numpy()
    inverse = invert_affine(matrices)  # crop px -> image px
    # crop-normalised u (align_corners=False) -> crop pixel x: x = ((u + 1) * w - 1) / 2
    from_crop_norm = np.array([[out_w / 2.0, 0.0, (out_w - 1) / 2.0],
                               [0.0, out_h / 2.0, (out_h - 1) / 2.0],
                               [0.0, 0.0, 1.0]])
    # image pixel -> image-normalised: u = (2 x + 1) / W - 1
    to_image_norm = np.array([[2.0 / img_w, 0.0, 1.0 / img_w - 1.0],
                              [0.0, 2.0 / img_h, 1.0 / img_h - 1.0]])
    inverse_h = np.concatenate([inverse, np.broadcast_to([[[0.0, 0.0, 1.0]]], (len(inverse), 1, 3))], axis=1)
    theta = np.einsum("ij,njk,kl->nil", to_image_norm, inverse_h, from_crop_norm)
    theta_t = to_device_async(torch.from_numpy(theta.astype(np.float32)), device)
    return F.affine_grid(theta_t, [len(theta), 1, out_h, out_w], align_corners=False)


def to_device_async(host: torch.Tensor, device) -> torch.Tensor:
    """A small host tensor on `device` without a host synchronisation: through pinned memory and a non-blocking copy
    on CUDA (torch's pinned allocator keeps the staging block alive until the copy has run); as is on the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def warp_crops_torch(image_chw: torch.Tensor, matrices, output_wh: Tuple[int, int]) -> torch.Tensor:
    """Float crops [B, C, h, w] of a float image [C, H, W] (any device): bilinear, 0 outside the image."""
    if image_chw.dim() != 3:
        raise ValueError(f"image must be [C, H, W], got {tuple(image_chw.shape)}")
    if not image_chw.is_floating_point():
        raise ValueError(f"image must be a float tensor (grid_sample does not take {image_chw.dtype})")
    num = int(matrices.shape[0]) if isinstance(matrices, torch.Tensor) else len(matrices)
    out_w, out_h = int(output_wh[0]), int(output_wh[1])
    if num == 0:
        return image_chw.new_zeros((0, image_chw.shape[0], out_h, out_w))
    grid = sampling_grid(matrices, image_chw.shape[1:], output_wh, device=image_chw.device).to(image_chw.dtype)
    # expand() is a view: the frame is not copied B times.
    source = image_chw.unsqueeze(0).expand(num, -1, -1, -1)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class FrameUploader:
    """uint8 HWC frames -> float32 CHW tensors on `device`, one host->device copy per frame.

    On CUDA the frame goes through a pinned host buffer that is reused while the frame size stays the same; an
    event guards the buffer so it is not overwritten while the previous asynchronous copy still reads it.
    On CPU the frame is wrapped without a copy.
    """

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self._pinned: Dict[tuple, torch.Tensor] = {}
        self._copy_done: Optional[torch.cuda.Event] = None

    def upload(self, image_hwc_uint8: np.ndarray) -> torch.Tensor:
        """[H, W, C] uint8 -> float32 [C, H, W] on the device, values 0..255, channel order unchanged."""
        image = np.ascontiguousarray(image_hwc_uint8)
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"frame must be uint8 [H, W, C], got {image.dtype} {image.shape}")
        if self.device.type == "cuda":
            buffer = self._pinned.get(image.shape)
            if buffer is None:
                self._pinned.clear()
                buffer = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
                self._pinned[image.shape] = buffer
            # The previous frame's copy out of the buffer finished long ago in a running pipeline: query() says so
            # without blocking; synchronize() would release the GIL, and getting it back behind a busy reader or
            # writer thread costs up to the interpreter's switch interval (5 ms).
            if self._copy_done is not None and not self._copy_done.query():
                self._copy_done.synchronize()
            # numpy's copy into the pinned buffer keeps the GIL (a torch copy of 2.7 MB releases it, same cost).
            np.copyto(buffer.numpy(), image)
            on_device = buffer.to(self.device, non_blocking=True)
            self._copy_done = torch.cuda.Event()
            self._copy_done.record(torch.cuda.current_stream(self.device))
        else:
            on_device = torch.from_numpy(image)
        return on_device.permute(2, 0, 1).float()


class DeviceCropper:
    """All person crops of a frame as the network input, on `device`: `cropper(image_bgr, matrices)` ->
    float [B, 3, h, w], RGB, (x - 255 mean) / (255 std) (the arithmetic of the cv2 path in TopDownEstimator).

    Built once per estimator: the uploader's pinned buffer and the normalisation constants stay on the device, so
    a frame costs one frame upload, one matrix upload (both non-blocking), and five device ops.
    output_wh: crop (width, height); mean_rgb / std_rgb: 0..1 scale, RGB order, or None for 0..255 values;
    to_rgb: reorder BGR -> RGB; dtype: output dtype (computed in float32).
    """

    def __init__(self, output_wh: Tuple[int, int], *, device="cpu", mean_rgb: Optional[Sequence[float]] = None,
                 std_rgb: Optional[Sequence[float]] = None, to_rgb: bool = True,
                 dtype: torch.dtype = torch.float32):
        if (mean_rgb is None) != (std_rgb is None):
            raise ValueError("give both mean_rgb and std_rgb, or neither")
        self.output_wh = (int(output_wh[0]), int(output_wh[1]))
        self.device = torch.device(device)
        self.uploader = FrameUploader(self.device)
        self.to_rgb = to_rgb
        self.dtype = dtype
        self._mean_255 = self._std_255 = None
        if mean_rgb is not None:
            mean = torch.tensor(mean_rgb, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
            std = torch.tensor(std_rgb, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
            if not to_rgb:
                mean, std = mean.flip(1), std.flip(1)
            # Copied once here (blocking is fine at construction).
            self._mean_255, self._std_255 = mean.to(self.device), std.to(self.device)

    def __call__(self, image_bgr: np.ndarray, matrices) -> torch.Tensor:
        image = self.uploader.upload(image_bgr)
        if self.to_rgb:
            image = image.flip(0)
        crops = warp_crops_torch(image, matrices, self.output_wh)
        if self._mean_255 is not None:
            crops = (crops - self._mean_255) / self._std_255
        return crops.to(self.dtype)


def crop_batch(image_bgr: np.ndarray, matrices, output_wh: Tuple[int, int], *, device="cpu",
               to_rgb: bool = True, mean_rgb: Optional[Sequence[float]] = None,
               std_rgb: Optional[Sequence[float]] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Network input [B, 3, h, w] for all crops of one frame, in one call (a throw-away DeviceCropper: per-frame
    code keeps one DeviceCropper instead).

    image_bgr: uint8 [H, W, 3]; matrices: [B, 2, 3] image -> crop (cv2.warpAffine convention).
    to_rgb: reorder BGR -> RGB. mean_rgb / std_rgb (0..1 scale, RGB order): when given, the output is
    (x - 255 mean) / (255 std), else 0..255 values. dtype: output dtype (computed in float32).
    """
    cropper = DeviceCropper(output_wh, device=device, mean_rgb=mean_rgb, std_rgb=std_rgb, to_rgb=to_rgb, dtype=dtype)
    return cropper(image_bgr, matrices)
