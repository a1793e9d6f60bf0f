"""Detector backends by name (see base.py). Importing this package imports neither onnxruntime, openvino nor
tensorrt."""
from .base import AUTO_CHOICES, DETECTOR_BACKENDS, DetectorOptions, create_network, resolve_choice

__all__ = ["AUTO_CHOICES", "DETECTOR_BACKENDS", "DetectorOptions", "create_network", "resolve_choice"]
