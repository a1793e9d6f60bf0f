"""Pose backends by name (see base.py). Importing this package imports neither onnxruntime nor tensorrt."""
from .base import BACKENDS, BackendOptions, PoseBackend, create_backend

__all__ = ["BACKENDS", "BackendOptions", "PoseBackend", "create_backend"]
