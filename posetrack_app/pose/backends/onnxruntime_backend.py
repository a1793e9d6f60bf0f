"""ONNX Runtime backend: an exported pose network (pose/export.py) in an InferenceSession.

Shape glossary: B crops, K keypoints, H x W network input; infer: [B, 3, H, W] -> [B, K, H/4, W/4] float32.

Execution providers are taken in the configured order among those the installed onnxruntime offers
(TensorRT / CUDA builds add theirs; the CPU provider is always last). `onnxruntime` is imported only here.
The runner only runs a file: which file, and exporting it on first use, is pose/export.py's `onnx_for_options`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import onnxruntime as ort
import torch

from ...errors import UserError
from ...onnx_providers import CPU_PROVIDER
from ...onnx_providers import select_providers as _select_among
from .base import BackendBase, BackendOptions

log = logging.getLogger(__name__)


def select_providers(preferred: Sequence[str]) -> Tuple[str, ...]:
    """`preferred` filtered to the providers this onnxruntime offers, the CPU provider last (onnx_providers.py)."""
    return _select_among(preferred, ort.get_available_providers())


class OnnxRuntimeBackend(BackendBase):
    """`onnx_path`: a pose ONNX file with input [B, 3, H, W] and one output [B, K, H/4, W/4]."""

    def __init__(self, onnx_path, *, input_hw: Tuple[int, int], num_keypoints: int,
                 providers: Sequence[str] = (CPU_PROVIDER,), intra_op_threads: int = 0):
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise UserError(f"ONNX file {onnx_path} not found: export one with "
                            f"`posetrack export --format onnx` or set pose.engine")
        self.input_hw = tuple(input_hw)
        self.num_keypoints = num_keypoints
        self.onnx_path = onnx_path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        self.providers = select_providers(providers)
        self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=list(self.providers))
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{onnx_path} has {len(inputs)} inputs and {len(outputs)} outputs; a pose network "
                            f"has one of each: export it with `posetrack export`")
        shape = inputs[0].shape
        if len(shape) != 4 or tuple(shape[2:]) != self.input_hw:
            raise UserError(f"{onnx_path} takes input {shape}, the configured model expects "
                            f"[B, 3, {self.input_hw[0]}, {self.input_hw[1]}]: export it for this model")
        out_k = outputs[0].shape[1]
        if isinstance(out_k, int) and out_k != num_keypoints:
            raise UserError(f"{onnx_path} predicts {out_k} keypoints, the config expects {num_keypoints}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.device = "cpu"
        log.debug("onnxruntime session on %s with %s", onnx_path, ", ".join(self.providers))

    @classmethod
    def from_options(cls, options: BackendOptions) -> "OnnxRuntimeBackend":
        """Run the file pose/export.py's onnx_for_options names (pose.engine, or the weights exported once)."""
        from ..export import onnx_for_options

        return cls(onnx_for_options(options), input_hw=options.input_hw, num_keypoints=options.num_keypoints,
                   providers=options.providers, intra_op_threads=options.intra_op_threads)

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        (heatmaps,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(np.asarray(heatmaps, dtype=np.float32))

    def close(self) -> None:
        self.session = None
