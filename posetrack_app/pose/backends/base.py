"""Pose backend protocol, the shared `infer` of every backend, and the registry of backends by name.

Shape glossary:
    B  crops in one call
    K  keypoints
    H x W  network input; heatmaps are H/HEATMAP_STRIDE x W/HEATMAP_STRIDE

A backend maps a float batch [B, 3, H, W] (RGB, ImageNet-normalised, any device) to heatmaps [B, K, H/4, W/4]
(float32 torch tensor). `BackendBase.infer` is the one entry: it checks the batch, answers an empty batch itself,
and hands a non-empty batch to the backend's own `_infer` (runner template: infer -> _infer). Backends are context
managers (`with create_backend(...) as backend:`); `close()` frees sessions, engines and CUDA graphs. The registry
maps a name to "module:factory" so that choosing one backend never imports another's runtime (onnxruntime and
tensorrt are imported only inside their modules). This module imports neither torch nor any runtime, so that
config.py can take its defaults from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Protocol, Tuple, runtime_checkable

from ...errors import ConfigError
from ...onnx_providers import DEFAULT_PROVIDERS
from ...registry import load_target

# ImageNet statistics (RGB, 0..1 scale) the HRNet checkpoints were trained with.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
# Heatmap resolution relative to the network input.
HEATMAP_STRIDE = 4
# Crops per network call, and the batch sizes the torch backend captures CUDA graphs for (a batch runs in the
# smallest bucket that holds it): up to 64, so 30 people with the flip test (60 crops) are one call. Steps of
# 1.5x as well as 2x between 4 and 64: a padded crop costs as much as a real one (HRNet-W48 fp16 on an H200 ran
# 12 crops, 6 people with the flip test, in the 16 bucket: a quarter of its network time on padding).
DEFAULT_MAX_BATCH = 64
DEFAULT_CUDA_GRAPH_BATCHES: Tuple[int, ...] = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)


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
    """What every backend shares: context-manager plumbing and `infer` (input check, empty batch, heatmap size);
    a backend implements `_infer` for a checked, non-empty batch."""

    input_hw: Tuple[int, int]
    num_keypoints: int
    device: str = "cpu"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass

    @property
    def heatmap_hw(self) -> Tuple[int, int]:
        return self.input_hw[0] // HEATMAP_STRIDE, self.input_hw[1] // HEATMAP_STRIDE

    def infer(self, batch: "torch.Tensor") -> "torch.Tensor":
        """[B, 3, H, W] -> float32 heatmaps [B, K, H/4, W/4] (on the backend's device for torch and TensorRT, on the
        CPU for onnxruntime)."""
        import torch

        shape = tuple(batch.shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != tuple(self.input_hw):
            raise ValueError(
                f"{type(self).__name__} expects a batch [B, 3, {self.input_hw[0]}, {self.input_hw[1]}], got {shape}"
            )
        if shape[0] == 0:
            return torch.zeros((0, self.num_keypoints) + self.heatmap_hw, dtype=torch.float32, device=self.device)
        return self._infer(batch)

    def _infer(self, batch: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError


@dataclass(frozen=True)
class BackendOptions:
    """Everything a backend factory may need; each backend reads the fields that concern it.

    model_name: registry name (e.g. "hrnet_w48_384x288"); weights_path: .pth or None (random init);
    engine_path: .onnx for onnxruntime, .engine for tensorrt ("" = onnxruntime exports weights_path into engines/).
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
    cuda_graph_batches: Tuple[int, ...] = DEFAULT_CUDA_GRAPH_BATCHES
    max_batch: int = DEFAULT_MAX_BATCH
    engine_path: str = ""
    providers: Tuple[str, ...] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0
    mean_rgb: Tuple[float, float, float] = IMAGENET_MEAN_RGB
    std_rgb: Tuple[float, float, float] = IMAGENET_STD_RGB

    def manifest_fields(self) -> Dict[str, object]:
        """The fields an exported file's manifest (ONNX or TensorRT) must carry to be run with these options."""
        from ..export import manifest_fields
        return manifest_fields(model_name=self.model_name, num_keypoints=self.num_keypoints,
                               keypoint_layout=self.keypoint_layout, input_hw=self.input_hw, mean_rgb=self.mean_rgb,
                               std_rgb=self.std_rgb)


# name -> "module:factory"; each factory is a callable (BackendOptions) -> PoseBackend.
BACKENDS: Dict[str, str] = {
    "torch": "posetrack_app.pose.backends.torch_backend:TorchBackend.from_options",
    "onnxruntime": "posetrack_app.pose.backends.onnxruntime_backend:OnnxRuntimeBackend.from_options",
    "tensorrt": "posetrack_app.pose.backends.tensorrt_backend:TensorRTRunner.from_options",
}


def create_backend(name: str, options: BackendOptions) -> PoseBackend:
    """The backend registered under `name`, built from `options`."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown pose.backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    return load_target(BACKENDS[name])(options)
