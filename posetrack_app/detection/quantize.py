"""Static int8 quantization of the YOLO-pose ONNX file (Q/DQ format, per-channel weights), calibrated on real
frames, for the CPU backends (ONNX Runtime and OpenVINO both run Q/DQ graphs with int8 kernels).

Dynamic quantization (`quantize_dynamic`) was measured 2.3x slower than fp32 on the development CPU (its
ConvInteger kernels); static Q/DQ fuses into QLinearConv and keeps activations in 8 bits between layers.

What stays in float: the head's box and keypoint branches, its decoding tail (anchor arithmetic, DFL, concatenation
of pixel coordinates with 0..1 scores, which share no useful 8-bit scale) and the score branch's last 1x1
convolution. Everything before, and the score branch's hidden convolutions, run in int8.

The box and keypoint branches stay in float because ONNX Runtime runs them only at the anchors that score
(sparse_head.py: a graph whose branches are quantized is not split). Quantizing them (recipe 1) saved little and
cost the joints' precision. Recipe 2 against recipe 1 (dev suite, calibrated on mot17_mini; RESULTS.md section 8):
pose mAP against fp32 on syn7 -1.5 -> +0.2, syn25 0.0 -> +0.2, syn30 -0.7 -> -0.4 (medians over 16 noise seeds); detector CPU per frame 216 -> 168 ms at 960
and 88 -> 64 ms at 640 with ONNX Runtime. OpenVINO runs the file whole, 6% slower than recipe 1 (261 -> 276 ms at
960).
"""
from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Iterable, List, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..io.atomic import write_json_atomic
from .yolo_onnx import letterbox_params, network_input

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Node names of the detection head (Ultralytics' export names its last module /model.<n>/); the score branch's
# hidden convolutions (cv3 . level . 0 or 1) and their SiLU are quantized, the rest of the head is not.
HEAD_NODE_PATTERN = re.compile(r"^/model\.(\d+)/")
HEAD_HIDDEN_PATTERN = re.compile(r"/cv3\.\d\.[01]")
QUANTIZED_OP_TYPES = ("Conv", "Mul", "Sigmoid", "Add", "Concat", "MaxPool", "Resize", "Split")
# Bump when the recipe above changes, so cached int8 files made by an older recipe are not reused.
RECIPE_VERSION = 2


def default_calibration_images() -> List[Path]:
    """The two photos Ultralytics ships (people at several scales), used when no calibration source is given."""
    try:
        import ultralytics
    except ImportError:
        raise UserError("int8 calibration needs frames: set detector.int8_calibration to a video or image folder "
                        "(or install ultralytics, whose sample photos are the default)") from None
    folder = Path(ultralytics.__file__).parent / "assets"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_calibration_frames(source: str, count: int) -> List[np.ndarray]:
    """Up to `count` BGR frames spread evenly over a video file or an image folder ("" = the default photos)."""
    if not source:
        paths = default_calibration_images()
        return [cv2.imread(str(p)) for p in paths[:count]]
    path = Path(source).expanduser()
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise UserError(f"detector.int8_calibration folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        picks = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(count, len(paths)))]
        frames = [cv2.imread(str(p)) for p in picks]
        return [f for f in frames if f is not None]
    if not path.is_file():
        raise UserError(f"detector.int8_calibration {path} is neither a video file nor an image folder")
    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not capture.isOpened() or total <= 0:
        raise UserError(f"detector.int8_calibration {path} cannot be read as a video: give a video or image folder")
    wanted = set(int(i) for i in np.linspace(0, total - 1, min(count, total)))
    frames = []
    for index in range(total):
        ok, image = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(image)
    capture.release()
    return frames


def excluded_nodes(node_names: Iterable[str]) -> List[str]:
    """The nodes that stay in float: every node of the last module (the head) except the score branch's hidden
    convolutions."""
    names = list(node_names)
    modules = [int(m.group(1)) for m in map(HEAD_NODE_PATTERN.match, names) if m]
    if not modules:
        raise UserError("the detector ONNX does not have Ultralytics' node names (/model.N/...): int8 quantization "
                        "needs the export made by this app (detector.model = yolo11n-pose or a .pt checkpoint)")
    head = f"/model.{max(modules)}/"
    return [n for n in names if n.startswith(head) and not HEAD_HIDDEN_PATTERN.search(n)]


def calibration_blob(image_bgr: np.ndarray, input_size: int) -> np.ndarray:
    """A frame as the network sees it at `input_size`: [1, 3, S, T] float32 RGB in 0..1."""
    return network_input(image_bgr, letterbox_params(image_bgr.shape[:2], input_size))


def quantize_int8(onnx_path: Path, out_path: Path, frames: Sequence[np.ndarray], input_size: int,
                  manifest: dict) -> Path:
    """Write the static int8 Q/DQ model of `onnx_path` to `out_path` (atomically, with `manifest` beside it as
    out_path + .json), calibrated by min/max on `frames` letterboxed at `input_size`."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not frames:
        raise UserError("int8 calibration got no frames: check detector.int8_calibration")
    log.info("quantizing %s to int8 on %d calibration frames (once; cached at %s)", onnx_path.name, len(frames),
             out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as workdir:
        prepared = Path(workdir) / "prepared.onnx"
        # Symbolic shape inference cannot follow the head's dynamic anchor arithmetic; ONNX shape inference and
        # graph optimisation (BatchNorm folding, constant folding) are what quantization needs.
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        input_name = model.graph.input[0].name

        class FrameReader(CalibrationDataReader):
            def __init__(self):
                self._blobs = (calibration_blob(f, input_size) for f in frames)

            def get_next(self):
                blob = next(self._blobs, None)
                return None if blob is None else {input_name: blob}

        staged = Path(workdir) / out_path.name
        quantize_static(
            str(prepared), str(staged), FrameReader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            nodes_to_exclude=excluded_nodes(n.name for n in model.graph.node),
        )
        staged.replace(out_path)
    write_json_atomic(Path(str(out_path) + ".json"), manifest, indent=2)
    return out_path


def int8_model(onnx_path: Path, *, calibration: str, frame_count: int, input_size: int, cache_dir: Path) -> Path:
    """The int8 file for `onnx_path` calibrated on `calibration` ("" = default photos): made once and cached in
    `cache_dir` under a name keyed by everything that shapes it (source model, frames, size, recipe)."""
    import hashlib

    from ..pose.checkpoint import file_sha256

    source = str(Path(calibration).expanduser().resolve()) if calibration else "default-photos"
    key_text = f"{RECIPE_VERSION}|{file_sha256(onnx_path)}|{source}|{frame_count}|{input_size}"
    key = hashlib.sha1(key_text.encode()).hexdigest()[:12]
    out_path = Path(cache_dir) / f"{onnx_path.stem}_int8_{key}.onnx"
    if out_path.is_file():
        return out_path
    frames = read_calibration_frames(calibration, frame_count)
    manifest = {"format": "onnx-int8-qdq", "source_onnx": onnx_path.name, "calibration": source,
                "calibration_frames": len(frames), "input_size": input_size, "recipe_version": RECIPE_VERSION}
    return quantize_int8(onnx_path, out_path, frames, input_size, manifest)
