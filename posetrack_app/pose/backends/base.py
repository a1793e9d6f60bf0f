"""Pose backend protocol and the registry of backends by name.

Shape glossary:
    B  crops in one call
    K  keypoints
    H x W  network input; heatmaps are H/4 x W/4

A backend maps a float batch [B, 3, H, W] (RGB, ImageNet-normalised, any device) to heatmaps [B, K, H/4, W/4]
(float32 torch tensor). Backends are context managers (`with create_backend(...) as backend:`); `close()` frees
sessions, engines and CUDA graphs. The registry maps a name to "module:Class" so that choosing one backend
never imports another's runtime (onnxruntime, tensorrt are imported only inside their modules).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Dict, Optional, Protocol, Tuple, runtime_checkable

from ...errors import ConfigError

# ImageNet statistics (RGB, 0..1 scale) the HRNet checkpoints were trained with.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
# Heatmap resolution relative to the network input.
HEATMAP_STRIDE = 4


@runtime_checkable
class PoseBackend(Protocol):
    input_hw: Tuple[int, int]
    num_keypoints: int
    # torch device the backend wants its input on ("cpu", "cuda", "cuda:1"); the estimator puts crops there.
    device: str

    def infer(self, batch):  # torch.Tensor [B, 3, H, W] -> torch.Tensor [B, K, H/4, W/4] float32
        ...

    def close(self) -> None:
        ...

    def __enter__(self):
        ...

    def __exit__(self, *exc) -> None:
        ...


class BackendBase:
    """Context-manager plumbing and input checks shared by the backends."""

    input_hw: Tuple[int, int]
    num_keypoints: int
    device: str = "cpu"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    def check_batch(self, batch) -> None:
        shape = tuple(batch.shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != tuple(self.input_hw):
            raise ValueError(
                f"{type(self).__name__} expects a batch [B, 3, {self.input_hw[0]}, {self.input_hw[1]}], got {shape}"
            )


@dataclass(frozen=True)
class BackendOptions:
    """Everything a backend factory may need; each backend reads the fields that concern it.

    model_name: registry name (e.g. "hrnet_w48_384x288"); weights_path: .pth or None (random init);
    engine_path: .onnx for onnxruntime, .engine for tensorrt ("" = derive / export into engines_dir).
    """

    model_name: str
    num_keypoints: int
    input_hw: Tuple[int, int]
    keypoint_layout: str = "coco17"
    weights_path: Optional[str] = None
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    cuda_graph_batches: Tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    max_batch: int = 32
    engine_path: str = ""
    engines_dir: str = ""
    providers: Tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    intra_op_threads: int = 0
    mean_rgb: Tuple[float, float, float] = IMAGENET_MEAN_RGB
    std_rgb: Tuple[float, float, float] = IMAGENET_STD_RGB
    extra: Dict[str, object] = field(default_factory=dict)


# name -> "module:factory"; each factory is a callable (BackendOptions) -> PoseBackend.
BACKENDS: Dict[str, str] = {
    "torch": "posetrack_app.pose.backends.torch_backend:TorchBackend.from_options",
    "onnxruntime": "posetrack_app.pose.backends.onnxruntime_backend:OnnxRuntimeBackend.from_options",
    "tensorrt": "posetrack_app.pose.backends.tensorrt_backend:TensorRTRunner.from_options",
}


def _resolve(target: str):
    module_name, _, attribute_path = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attribute_path.split("."):
        obj = getattr(obj, part)
    return obj


def create_backend(name: str, options: BackendOptions) -> PoseBackend:
    """The backend registered under `name`, built from `options`."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown pose.backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    return _resolve(BACKENDS[name])(options)
