"""Detector network backends by name, and the "auto" choice.

A backend runs the YOLO-pose network on a letterboxed input and returns its raw output [1, 5 + 3K, A]. Host
backends (`host_io = True`: onnxruntime, openvino) take and return numpy arrays and leave letterbox and decoding to
numpy on the host; device backends (torch, tensorrt) take and return torch tensors on their `device`, so the
detector letterboxes, decodes and runs NMS there too (detection/device_ops.py). `runs_windows`: the detector may
run it on windows of the letterboxed input (detector.schedule=roi), each a new input shape, at no extra cost.

The registry maps a name to "module:factory", so choosing one backend never imports another's runtime
(onnxruntime, openvino, tensorrt are imported only inside their modules).
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ...errors import ConfigError
from ...onnx_providers import DEFAULT_PROVIDERS
from ...registry import load_target

log = logging.getLogger(__name__)

# name -> "module:factory"; each factory is a callable (DetectorOptions) -> backend.
DETECTOR_BACKENDS: Dict[str, str] = {
    "onnxruntime": "posetrack_app.detection.backends.onnxruntime_backend:OnnxRuntimeNetwork.from_options",
    "openvino": "posetrack_app.detection.backends.openvino_backend:OpenVinoNetwork.from_options",
    "torch": "posetrack_app.detection.backends.torch_backend:TorchScriptNetwork.from_options",
    "tensorrt": "posetrack_app.detection.backends.tensorrt_backend:TensorRTNetwork.from_options",
}
# The Python module each backend needs, checked before "auto" picks it.
RUNTIME_MODULES: Dict[str, str] = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch",
                                   "tensorrt": "tensorrt"}
# "auto": the first (backend, device) whose runtime is installed and whose device is there. A GPU runs the
# TorchScript export (needs only torch); a CPU runs ONNX Runtime (always installed). TensorRT is never automatic:
# its engine takes minutes to build.
AUTO_CHOICES: Tuple[Tuple[str, str], ...] = (("torch", "cuda"), ("onnxruntime", "cpu"), ("openvino", "cpu"))
# Model files the torch backend cannot run (it needs the TorchScript export of a .pt checkpoint).
TORCH_UNRUNNABLE_SUFFIXES = (".onnx",)
# Precisions per backend; "auto" is fp16 on a GPU, fp32 on a CPU.
PRECISIONS: Dict[str, Tuple[str, ...]] = {
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "int8"),
    "torch": ("fp32", "fp16", "bf16"),
    "tensorrt": ("fp32", "fp16"),
}


@dataclass(frozen=True)
class DetectorOptions:
    """What a backend factory may need; each reads the fields that concern it (see DetectorConfig)."""

    model: str
    device: str = "cpu"
    precision: str = "fp32"
    input_size: int = 960
    cache_dir: str = ""
    providers: Tuple[str, ...] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0
    ort_spinning: bool = False
    split_head: bool = True
    engine: str = ""
    cuda_graphs: bool = True
    int8_calibration: str = ""
    int8_calibration_frames: int = 64


# Libraries a CUDA-capable torch needs on each platform (the NVIDIA driver's), and the device node of ROCm, whose
# torch builds also answer torch.cuda.is_available().
CUDA_DRIVER_LIBRARIES = {"win32": ("nvcuda.dll",), "linux": ("libcuda.so.1", "libcuda.so")}
ROCM_DEVICE = "/dev/kfd"


def _gpu_driver_present() -> bool:
    """Whether a GPU driver torch could use is installed. Asked before importing torch: on a small CPU-only
    machine the import alone takes about 4 s, most of the start-up of a default run, only to learn there is no
    GPU."""
    import ctypes
    import os
    import sys

    for name in CUDA_DRIVER_LIBRARIES.get(sys.platform, ()):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return os.path.exists(ROCM_DEVICE)


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None or not _gpu_driver_present():
        return False
    import torch
    return torch.cuda.is_available()


def _onnxruntime_has_cuda() -> bool:
    """onnxruntime-gpu's CUDA provider is there (only asked when a CUDA GPU is)."""
    from ...onnx_providers import CUDA_PROVIDER

    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime
    return CUDA_PROVIDER in onnxruntime.get_available_providers()


def _installed(backend: str) -> bool:
    return importlib.util.find_spec(RUNTIME_MODULES[backend]) is not None


def _gpu_usable(backend: str) -> bool:
    """Whether `backend` can run on a CUDA GPU here."""
    return backend in GPU_BACKENDS and _cuda_available() and (backend != "onnxruntime" or _onnxruntime_has_cuda())


# Backends that can run on a CUDA GPU (onnxruntime only with onnxruntime-gpu installed).
GPU_BACKENDS = ("torch", "tensorrt", "onnxruntime")


def _auto_backend(device: str, model: str) -> Tuple[str, str]:
    """The first of AUTO_CHOICES that fits `device` ("auto", "cpu", "cuda[:N]") and can run here."""
    for backend, kind in AUTO_CHOICES:
        if device != "auto" and kind != device.partition(":")[0]:
            continue
        if backend == "torch" and model.endswith(TORCH_UNRUNNABLE_SUFFIXES):
            continue
        if _installed(backend) and (kind == "cpu" or _gpu_usable(backend)):
            return backend, (kind if device == "auto" else device)
    raise ConfigError(f"no detector backend can run on detector.device={device} here: set detector.device=auto")


def resolve_choice(backend: str, device: str, precision: str, model: str = "") -> Tuple[str, str, str]:
    """Config values (each may be "auto") -> (backend, device, precision) to build."""
    if backend != "auto" and backend not in DETECTOR_BACKENDS:
        raise ConfigError(f"unknown detector.backend {backend!r}; choose auto or one of: "
                          f"{', '.join(sorted(DETECTOR_BACKENDS))}")
    if device not in ("auto", "cpu") and device.partition(":")[0] != "cuda":
        raise ConfigError(f"detector.device {device!r} is not auto, cpu, cuda or cuda:N")
    if backend == "auto":
        backend, device = _auto_backend(device, model)
    elif device == "auto":
        device = "cuda" if _gpu_usable(backend) else "cpu"
    if backend == "tensorrt" and device == "cpu":
        raise ConfigError("detector.backend=tensorrt needs a CUDA GPU and torch sees none: set detector.backend=auto")
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") and "fp16" in PRECISIONS[backend] else "fp32"
    if precision not in PRECISIONS[backend]:
        raise ConfigError(f"detector.precision={precision} is not available with detector.backend={backend}; "
                          f"choose one of: {', '.join(PRECISIONS[backend])}")
    return backend, device, precision


def create_network(name: str, options: DetectorOptions):
    """The backend registered under `name`, built from `options` (device and precision already resolved)."""
    if name not in DETECTOR_BACKENDS:
        raise ConfigError(f"unknown detector.backend {name!r}; choose one of: {', '.join(sorted(DETECTOR_BACKENDS))}")
    return load_target(DETECTOR_BACKENDS[name])(options)


def onnx_model(options: DetectorOptions):
    """Path of the ONNX file these options run: the fp32 export, or its int8 Q/DQ version (made once)."""
    from pathlib import Path

    from ..yolo_onnx import default_cache_dir, resolve_model

    onnx_path = resolve_model(options.model, options.cache_dir)
    if options.precision != "int8":
        return onnx_path
    from ..quantize import int8_model

    cache = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    return int8_model(onnx_path, calibration=options.int8_calibration, frame_count=options.int8_calibration_frames,
                      input_size=options.input_size, cache_dir=cache)


def check_pose_io(input_shape, output_shape, where) -> None:
    """Refuse a network that is not YOLO-pose with 17 keypoints: input [B, 3, H, W], output [B, 56, A] (symbolic
    dimensions, given as strings or None, pass)."""
    from ...errors import UserError
    from ..yolo_onnx import NUM_KEYPOINTS

    channels = output_shape[1] if len(output_shape) == 3 else None
    if len(input_shape) != 4 or input_shape[1] != 3 \
            or not (channels is None or isinstance(channels, str) or channels == 5 + 3 * NUM_KEYPOINTS):
        raise UserError(
            f"{where} has input {list(input_shape)} and output {list(output_shape)}: not a YOLO-pose model with "
            f"{NUM_KEYPOINTS} keypoints (expected input [B, 3, H, W], output [B, {5 + 3 * NUM_KEYPOINTS}, A]); "
            "point detector.model at a YOLO*-pose export"
        )


def fixed_input_hw(input_shape) -> Optional[Tuple[int, int]]:
    """(H, W) of a network with a fixed input size, None when either is symbolic."""
    dims = tuple(input_shape[2:])
    return tuple(int(d) for d in dims) if all(isinstance(d, int) for d in dims) else None
