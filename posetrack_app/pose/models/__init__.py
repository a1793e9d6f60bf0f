"""Pose networks by name, e.g. "hrnet_w48_384x288".

Each model module defines MODEL_SPECS: {name: ModelSpec}; this registry merges them. Importing this package
imports torch (the networks are torch modules); the rest of posetrack_app does not need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # build(num_keypoints) -> torch.nn.Module mapping [B, 3, H, W] to heatmaps [B, K, H/4, W/4].
    build: Callable[[int], "object"]
    # Network input (height, width) in pixels.
    input_hw: Tuple[int, int]


def _collect() -> Dict[str, ModelSpec]:
    from . import hourglass, hrnet, simple_baseline

    specs: Dict[str, ModelSpec] = {}
    for module in (hrnet, simple_baseline, hourglass):
        specs.update(module.MODEL_SPECS)
    return specs


def model_names() -> Tuple[str, ...]:
    return tuple(sorted(_collect()))


def get_model_spec(name: str) -> ModelSpec:
    specs = _collect()
    if name not in specs:
        from ...errors import ConfigError
        raise ConfigError(f"unknown pose model {name!r}; choose one of: {', '.join(sorted(specs))}")
    return specs[name]


def build_model(name: str, num_keypoints: int = 17):
    return get_model_spec(name).build(num_keypoints)
