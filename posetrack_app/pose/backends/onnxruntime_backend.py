"""ONNX Runtime backend: an exported pose network (pose/export.py) in an InferenceSession.

Shape glossary: B crops, K keypoints, H x W network input; infer: [B, 3, H, W] -> [B, K, H/4, W/4] float32.

Execution providers are taken in the configured order among those the installed onnxruntime offers
(TensorRT / CUDA builds add theirs; the CPU provider is always last). `onnxruntime` is imported only here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import onnxruntime as ort
import torch

from ...errors import ConfigError, UserError
from .base import BackendBase, BackendOptions

log = logging.getLogger(__name__)


def select_providers(preferred: Sequence[str]) -> Tuple[str, ...]:
    """`preferred` filtered to the installed providers, CPUExecutionProvider appended as the last resort."""
    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available]
    skipped = [p for p in preferred if p not in available]
    if skipped:
        log.debug("onnxruntime providers not installed, skipped: %s", ", ".join(skipped))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return tuple(chosen)


class OnnxRuntimeBackend(BackendBase):
    """`onnx_path`: a pose ONNX file with input [B, 3, H, W] and one output [B, K, H/4, W/4]."""

    def __init__(self, onnx_path, *, input_hw: Tuple[int, int], num_keypoints: int,
                 providers: Sequence[str] = ("CPUExecutionProvider",), intra_op_threads: int = 0):
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
        """Use options.engine_path (a .onnx, checked against its manifest), or export the configured weights
        into engines/ once and reuse that file while the weights stay the same."""
        from ..export import check_manifest, default_onnx_path, pose_manifest, read_manifest

        if options.engine_path:
            onnx_path = Path(options.engine_path)
            if onnx_path.suffix != ".onnx":
                raise ConfigError(f"pose.backend=onnxruntime needs an .onnx file in pose.engine, got {onnx_path}")
        else:
            if not options.weights_path:
                raise ConfigError("pose.backend=onnxruntime needs pose.weights (exported on first use) or "
                                  "pose.engine=PATH.onnx")
            expected = pose_manifest(model_name=options.model_name, num_keypoints=options.num_keypoints,
                                     keypoint_layout=options.keypoint_layout, input_hw=options.input_hw,
                                     weights_path=options.weights_path, mean_rgb=options.mean_rgb,
                                     std_rgb=options.std_rgb)
            onnx_path = default_onnx_path(options.engines_dir, options.model_name, options.keypoint_layout,
                                          expected["weights_sha256"])
            if not onnx_path.is_file():
                from ..checkpoint import load_pose_network
                from ..export import export_onnx

                log.info("exporting %s to %s for onnxruntime (once per weights file)", options.model_name, onnx_path)
                onnx_path.parent.mkdir(parents=True, exist_ok=True)
                model = load_pose_network(options.model_name, options.weights_path, options.num_keypoints)
                export_onnx(model, onnx_path, input_hw=options.input_hw, manifest=expected)
        manifest = read_manifest(onnx_path)
        if manifest is not None:
            check_manifest(manifest, {
                "model": options.model_name, "num_keypoints": options.num_keypoints,
                "keypoint_layout": options.keypoint_layout, "input_hw": list(options.input_hw),
                "mean_rgb": list(options.mean_rgb), "std_rgb": list(options.std_rgb),
            }, f"ONNX file {onnx_path}")
        else:
            log.warning("%s has no manifest beside it: its keypoint layout and normalisation are assumed to "
                        "match the config", onnx_path)
        return cls(onnx_path, input_hw=options.input_hw, num_keypoints=options.num_keypoints,
                   providers=options.providers, intra_op_threads=options.intra_op_threads)

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        self.check_batch(batch)
        if batch.shape[0] == 0:
            h, w = self.input_hw
            return torch.zeros((0, self.num_keypoints, h // 4, w // 4), dtype=torch.float32)
        array = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        (heatmaps,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(np.asarray(heatmaps, dtype=np.float32))

    def close(self) -> None:
        self.session = None
