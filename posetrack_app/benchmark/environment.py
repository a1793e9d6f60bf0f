"""The environment record of a benchmark: machine (CPU, cores, memory, GPU, driver), software versions (torch, CUDA,
ONNX Runtime, TensorRT, OpenCV), git revision, load average, the command as typed, and what the pipeline built
(`describe_setup`)."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np


def load_average_1min() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide which kernels the detector's runtime picks: int8 convolutions are fast only with VNNI
# (AVX-512 VNNI or AVX-VNNI) or AMX, so CPU figures from machines with and without them are not comparable.
VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_vector_extensions() -> List[str]:
    """Which of VECTOR_EXTENSIONS this CPU reports (Linux /proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [name for name in VECTOR_EXTENSIONS if name in flags]
    except OSError:
        pass
    return []


def cpu_record() -> Dict[str, object]:
    """The CPU facts that CPU speed and int8 results depend on (also part of `capture_environment()`)."""
    return {"cpu_model": _cpu_model(),
            "cpu_count_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_vector_extensions": cpu_vector_extensions()}


def cpu_summary(env: Dict[str, object]) -> str:
    """One line for a CPU result file: model, usable cores and vector extensions, from `cpu_record()`."""
    extensions = " ".join(env.get("cpu_vector_extensions") or []) or "no listed vector extensions"
    return f"{env.get('cpu_model')}, {env.get('cpu_count_usable')} usable cores, {extensions}"


def _package_version(*names: str) -> Optional[str]:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _nvidia_smi() -> List[Dict[str, str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            gpus.append(dict(zip(("name", "driver", "memory_total", "max_sm_clock", "power_limit"), parts)))
    return gpus


def _git_revision() -> Dict[str, object]:
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def capture_environment() -> Dict[str, object]:
    """Machine and software facts for a benchmark record (no config: see `describe_setup`)."""
    env: Dict[str, object] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **cpu_record(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "git": _git_revision(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        env["memory_total_gib"] = round(int(meminfo[0].split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        env["memory_total_gib"] = None
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["cuda_build"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        env["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        env["gpus_torch"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                             if torch.cuda.is_available() else [])
    except ImportError:
        env["torch"] = None
    gpus = _nvidia_smi()
    env["gpus"] = gpus
    env["gpu_name"] = gpus[0]["name"] if gpus else (env.get("gpus_torch") or [None])[0]
    env["gpu_driver"] = gpus[0]["driver"] if gpus else None
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    # Never import tensorrt here (it is imported only inside its backend); its version is package metadata.
    env["tensorrt"] = _package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs")
    return env


def describe_setup(cfg, pipeline) -> Dict[str, object]:
    """What ran: detector, pose stage actually built (HRNet or the detector's keypoints), backend, precision,
    batch, input sizes, tracker."""
    pose_stage = pipeline.pose_stage
    detector = pipeline.detector_that_ran
    network = getattr(detector, "network", detector)
    setup = {
        "detector": type(detector).__name__,
        "detector_model": cfg.detector.model,
        "detector_input_size": cfg.detector.input_size,
        "detector_providers": list(getattr(network, "providers", []) or []),
        "detect_every": cfg.detector.detect_every,
        "detection_schedule": type(pipeline.schedule).__name__,
        "pose_stage": type(pose_stage).__name__,
        "pose_model": cfg.pose.model,
        "pose_weights": cfg.pose.weights or None,
        "pose_backend": cfg.pose.backend,
        "pose_device": cfg.pose.device,
        "pose_precision": cfg.pose.precision,
        "pose_max_batch": cfg.pose.max_batch,
        "pose_flip_test": cfg.pose.flip_test,
        "pose_input_hw": list(getattr(getattr(pose_stage, "backend", None), "input_hw", []) or []) or None,
        "tracker": cfg.tracker.kind,
        "detect_ahead": pipeline.detect_ahead,
    }
    if setup["pose_stage"] == "DetectorKeypointPoses":
        setup["pose_note"] = "no HRNet weights configured: poses are the detector's keypoints, no pose network ran"
    return setup


def command_line(subcommand: str = "bench") -> List[str]:
    """The command as typed, with the program shown as `posetrack` (whether run as posetrack or python -m)."""
    argv = sys.argv[1:]
    if subcommand in argv:
        return ["posetrack"] + argv[argv.index(subcommand):]
    return [Path(sys.argv[0]).name] + argv
