"""YOLO-pose pre- and post-processing in torch, on the device the network runs on (the torch and TensorRT
backends): letterbox, normalisation, box decoding and NMS stay there, and only the kept boxes, scores and
keypoints come back to the host. The same code runs on the CPU, which is how the tests check it.

Shape glossary:
    H x W  frame; S x T  letterboxed network input
    A  anchors (candidates) of the network output [1, 5 + 3K, A]; N kept persons; K keypoints
"""
from __future__ import annotations

import contextlib
import threading
from typing import ContextManager, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .yolo_onnx import PAD_VALUE, Letterbox, letterbox_size


def own_stream(device: str, streams: threading.local) -> ContextManager:
    """Runs the caller's CUDA work on a stream of its own thread (made on first use and kept in `streams`), so that
    a detector working ahead in its thread overlaps its kernels with the pose network's instead of queueing
    behind them on the default stream. A no-op on a CPU. The caller's results come back to the host inside the
    context (a blocking copy waits for this stream), so nothing else needs to wait for it."""
    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    stream = getattr(streams, "stream", None)
    if stream is None:
        stream = streams.stream = torch.cuda.Stream(device)
    return torch.cuda.stream(stream)


def upload_frame(image_bgr: np.ndarray, device: str) -> torch.Tensor:
    """uint8 [H, W, 3] on the host -> uint8 [H, W, 3] on `device` (one copy of the 8-bit frame, not of floats)."""
    return torch.from_numpy(np.ascontiguousarray(image_bgr)).to(device, non_blocking=True)


def letterbox_tensor(image_bgr: torch.Tensor, params: Letterbox, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [H, W, 3] BGR -> [1, 3, S, T] RGB in 0..1 of `dtype`, resized and padded as `letterbox_image` does.

    Bilinear with half-pixel centres and no antialiasing is what cv2.INTER_LINEAR does; the result is rounded to
    whole grey levels as OpenCV's 8-bit output is, so both paths feed the network the same pixels to within one
    grey level."""
    h, w = image_bgr.shape[:2]
    new_w, new_h = letterbox_size((h, w), params)
    x = image_bgr.permute(2, 0, 1).flip(0).unsqueeze(0).float()
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
        x = x.round_().clamp_(0, 255)
    target_h, target_w = params.input_hw
    left, top = int(params.pad_x), int(params.pad_y)
    x = F.pad(x, (left, target_w - new_w - left, top, target_h - new_h - top), value=float(PAD_VALUE))
    return x.mul_(1.0 / 255.0).to(dtype).contiguous()


def decode_tensor(output: torch.Tensor, score_threshold: float, nms_iou_threshold: float, max_detections: int
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[1, 5 + 3K, A] network output -> (boxes_xyxy [N, 4], scores [N], keypoints [N, K, 3]) in letterboxed
    pixels, float32 on the output's device, NMS applied, best first (the torch twin of `decode_yolo_pose`)."""
    from torchvision.ops import batched_nms

    if output.dim() != 3 or output.shape[0] != 1 or (output.shape[1] - 5) % 3 != 0:
        raise ValueError(f"expected a YOLO-pose output [1, 5 + 3K, A], got {list(output.shape)}")
    num_keypoints = (output.shape[1] - 5) // 3
    candidates = output[0].t().float()
    candidates = candidates[candidates[:, 4] > score_threshold]
    centre, size = candidates[:, 0:2], candidates[:, 2:4]
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    scores = candidates[:, 4]
    # One class (person): every box in the same NMS group.
    groups = torch.zeros(len(scores), dtype=torch.int64, device=scores.device)
    keep = batched_nms(boxes, scores, groups, nms_iou_threshold)[:max_detections]
    keypoints = candidates[keep, 5:].reshape(len(keep), num_keypoints, 3)
    return boxes[keep], scores[keep], keypoints


def to_image(boxes_xyxy: torch.Tensor, keypoints: torch.Tensor, params: Letterbox, image_hw: Tuple[int, int]
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Undo the letterbox on boxes [N, 4] and keypoints [N, K, 3] (x, y, visibility); boxes clipped to the frame."""
    h, w = image_hw
    pad = torch.tensor([params.pad_x, params.pad_y], dtype=boxes_xyxy.dtype, device=boxes_xyxy.device)
    boxes = ((boxes_xyxy.reshape(-1, 2, 2) - pad) / params.scale).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keypoints = keypoints.clone()
    keypoints[..., :2] = (keypoints[..., :2] - pad) / params.scale
    return boxes, keypoints
