"""The YOLO-pose person detector: `detector(frame) -> Detections` with COCO-17 keypoints, on any backend.

Shape glossary:
    H x W  frame; S x T  letterboxed network input; A  network anchors; N  kept persons; K = 17 keypoints

Host backends (onnxruntime, openvino) get a numpy blob letterboxed by OpenCV and their output is decoded in numpy;
device backends (torch, tensorrt) get the 8-bit frame uploaded once, and letterbox, normalisation, decoding and NMS
run on their device: only the kept boxes, scores and keypoints come back.
"""
from __future__ import annotations

import logging
import threading
from typing import Optional, Tuple

import numpy as np

from ..errors import UserError
from ..ops.boxes import clip_boxes
from ..skeleton import COCO17
from ..structures import Detections, Frame
from .backends import DetectorOptions, create_network, resolve_choice
from .windows import detection_windows, window_output_to_input
from .yolo_onnx import (NUM_KEYPOINTS, STRIDE, Letterbox, blob_from_bgr, decode_yolo_pose, letterbox_image,
                        letterbox_params, network_input)

log = logging.getLogger(__name__)

OUTPUT_CHANNELS = 5 + 3 * NUM_KEYPOINTS


class YoloPoseDetector:
    """`backend`: a network from detection.backends (run(blob) -> [1, 5 + 3K, A]); see from_config for building.

    input_size: letterbox side in pixels (multiple of 32); score_threshold, nms_iou_threshold, max_detections:
    as Ultralytics' predict (conf, iou, max_det)."""

    skeleton = COCO17

    def __init__(self, backend, *, input_size: int = 960, score_threshold: float = 0.25,
                 nms_iou_threshold: float = 0.7, max_detections: int = 100):
        if input_size % STRIDE != 0 or input_size <= 0:
            raise UserError(f"detector.input_size must be a positive multiple of {STRIDE}, got {input_size}")
        self.backend = backend
        if backend.fixed_hw and max(backend.fixed_hw) != input_size:
            log.warning("the detector network has a fixed input size %s; detector.input_size=%d is ignored",
                        backend.fixed_hw, input_size)
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.max_detections = max_detections
        self._streams = threading.local()  # device backends: each calling thread's CUDA stream (own_stream)

    @classmethod
    def build(cls, model: str = "yolo11n-pose", *, backend: str = "auto", device: str = "auto",
              precision: str = "auto", input_size: int = 960, score_threshold: float = 0.25,
              nms_iou_threshold: float = 0.7, max_detections: int = 100, **options) -> "YoloPoseDetector":
        """Resolve "auto" choices, build the backend's network and the detector around it. `options`: the other
        DetectorOptions fields (cache_dir, providers, intra_op_threads, ...)."""
        name, device, precision = resolve_choice(backend, device, precision, model)
        network = create_network(name, DetectorOptions(model=model, device=device, precision=precision,
                                                       input_size=input_size, **options))
        return cls(network, input_size=input_size, score_threshold=score_threshold,
                   nms_iou_threshold=nms_iou_threshold, max_detections=max_detections)

    @property
    def description(self) -> str:
        """Which backend and device run the network, e.g. "openvino int8 on cpu, input 960"."""
        return f"{self.backend.description}, input {self.input_size}"

    @property
    def providers(self) -> Tuple[str, ...]:
        return tuple(self.backend.providers)

    def letterbox(self, image_hw: Tuple[int, int]) -> Letterbox:
        return letterbox_params(image_hw, self.input_size, self.backend.fixed_hw)

    def __call__(self, frame: Frame, regions: Optional[np.ndarray] = None) -> Detections:
        """The persons in `frame`. regions: float [R, 4] image boxes where people are expected (detector.schedule=roi):
        a backend that `runs_windows` (ONNX Runtime on the CPU) then runs the network on windows around them only
        (detection/windows.py) and finds nobody elsewhere, unless the windows would cover most of the frame. The
        others, for which a new input shape costs a build or a tuning, always look at the whole frame."""
        if not self.backend.host_io:
            return self._on_device(frame)
        return self._on_host(frame, regions if self.backend.runs_windows else None)

    def _check_output(self, channels: int) -> None:
        if channels != OUTPUT_CHANNELS:
            raise UserError(f"detector output has {channels} channels, expected {OUTPUT_CHANNELS}: point "
                            "detector.model at a YOLO-pose export with 17 keypoints")

    def _on_host(self, frame: Frame, regions: Optional[np.ndarray]) -> Detections:
        params = self.letterbox(frame.image_bgr.shape[:2])
        windows = None
        if regions is not None:
            corners = params.to_input(np.asarray(regions, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)
            windows = detection_windows(corners, params.input_hw)
        # Host backends may return only the anchors above the threshold (onnxruntime's split head).
        if windows is None:
            output = self.backend.run(network_input(frame.image_bgr, params), self.score_threshold)
        else:
            padded = letterbox_image(frame.image_bgr, params)
            output = np.concatenate([
                window_output_to_input(self.backend.run(blob_from_bgr(padded[y0:y1, x0:x1]), self.score_threshold),
                                       (x0, y0, x1, y1), params.input_hw)
                for x0, y0, x1, y1 in windows], axis=2)
        self._check_output(output.shape[1])
        found = decode_yolo_pose(output, self.score_threshold, self.nms_iou_threshold, self.max_detections)
        boxes = clip_boxes(params.to_image(found.boxes_xyxy.reshape(-1, 2, 2)).reshape(-1, 4), frame.width, frame.height)
        keypoints = found.keypoints.copy()
        keypoints[..., :2] = params.to_image(keypoints[..., :2])
        return Detections(boxes, found.scores, keypoints)

    def _on_device(self, frame: Frame) -> Detections:
        import torch

        from .device_ops import decode_tensor, letterbox_tensor, own_stream, to_image, upload_frame

        params = self.letterbox(frame.image_bgr.shape[:2])
        with own_stream(self.backend.device, self._streams):
            image = upload_frame(frame.image_bgr, self.backend.device)
            output = self.backend.run(letterbox_tensor(image, params, self.backend.input_dtype))
            self._check_output(output.shape[1])
            boxes, scores, keypoints = decode_tensor(output, self.score_threshold, self.nms_iou_threshold,
                                                     self.max_detections)
            boxes, keypoints = to_image(boxes, keypoints, params, (frame.height, frame.width))
            # One transfer (and one synchronisation, of this thread's stream) for everything that comes back.
            rows = torch.cat([boxes, scores[:, None], keypoints.flatten(1)], dim=1).cpu().numpy()
        return Detections(rows[:, :4], rows[:, 4], rows[:, 5:].reshape(len(rows), keypoints.shape[1], 3))

    def close(self) -> None:
        self.backend.close()
