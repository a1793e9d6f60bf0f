"""Export pose networks to ONNX (dynamic batch axis) with a manifest JSON beside each file.

Shape glossary: B crops (the dynamic axis), K keypoints, H x W network input.
    ONNX graph: input "input" float32 [B, 3, H, W] -> output "heatmaps" float32 [B, K, H/4, W/4]

The manifest says what the file was built from and for (model, keypoint layout, input size, normalisation,
weights and ONNX hashes, precision); runners compare it with their configuration before they use the file.
TensorRT engines are built from these ONNX files by backends/tensorrt_backend.EngineBuilder.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError, UserError
from ..io.atomic import check_output_path, temporary_path_for, write_json_atomic
from .backends.base import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from .backends.torch_backend import fold_batchnorm
from .checkpoint import file_sha256

log = logging.getLogger(__name__)

# The ONNX opset written; torch's exporter (torch.export based) supports 18 and newer, TensorRT 10 and
# ONNX Runtime >= 1.14 read it.
ONNX_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"
MANIFEST_SUFFIX = ".json"
# Upper bound of the symbolic batch dimension in the exported graph (the graph itself accepts any batch up to
# this; TensorRT engines get their own, smaller profile).
MAX_EXPORT_BATCH = 4096
ENGINES_DIR = Path(__file__).resolve().parent.parent.parent / "engines"


def manifest_path_for(path) -> Path:
    """engines/x.onnx -> engines/x.onnx.json (the manifest sits beside the file it describes)."""
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def read_manifest(path) -> Optional[Dict[str, Any]]:
    manifest = manifest_path_for(path)
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"manifest {manifest} is not valid JSON ({exc.msg}): delete it and export again") from None


def check_manifest(manifest: Dict[str, Any], expected: Dict[str, Any], what) -> None:
    """Raise UserError listing every field where `manifest` differs from `expected` (fields absent from
    `expected` are not compared)."""
    differences = [
        f"{key}: file {manifest.get(key)!r} vs expected {value!r}"
        for key, value in expected.items()
        if _normalise(manifest.get(key)) != _normalise(value)
    ]
    if differences:
        raise UserError(
            f"{what} was built for something else ({'; '.join(differences)}): rebuild it with "
            f"`posetrack export` for this configuration, or point pose.engine at a matching file"
        )


def _normalise(value):
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


class _FixedPrecision(nn.Module):
    """Runs `model` in `dtype` behind float32 inputs and outputs (a strongly typed fp16/bf16 graph for TensorRT
    11, which no longer lowers precision by builder flag)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        import copy

        self.model = copy.deepcopy(model).to(dtype)   # the caller's network stays in float32
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


def export_onnx(model: nn.Module, path, *, input_hw: Tuple[int, int], manifest: Dict[str, Any],
                precision: str = "fp32", opset: int = ONNX_OPSET, example_batch: int = 2) -> Path:
    """Write `model` as ONNX to `path` (atomically, one self-contained file) with a dynamic batch axis, and
    `manifest` (plus the ONNX hash, opset, precision, names) to `path`.json. Returns `path`.

    precision: "fp32", or "fp16" for a graph computing in half precision with float32 I/O.
    """
    path = check_output_path(path)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16}
    if precision not in dtypes:
        raise UserError(f"ONNX export precision must be one of {', '.join(dtypes)}, got {precision!r}")
    # BatchNorm folded into the convolutions: a third fewer graph nodes, so a faster export and a leaner graph
    # (ONNX Runtime and TensorRT would fold it themselves at load time).
    model = fold_batchnorm(model.eval(), input_hw)
    if precision != "fp32":
        model = _FixedPrecision(model, dtypes[precision]).eval()
    example = torch.zeros((example_batch, 3) + tuple(input_hw))
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    tmp = temporary_path_for(path)
    # The exporter's optimiser logs every rewrite at INFO; keep the CLI's INFO output to our own lines.
    quiet = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(max(logger.level, logging.WARNING))
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, verbose=False,
            )
        # One file, weights inline (the models are < 2 GB), so the manifest's hash covers everything.
        program.save(str(tmp), external_data=False)
        os.replace(tmp, path)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        if tmp.exists():
            tmp.unlink()
    full = dict(manifest)
    full.update({
        "format": "onnx",
        "onnx_sha256": file_sha256(path),
        "opset": opset,
        "precision": precision,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "dynamic_batch": True,
        "torch_version": torch.__version__,
    })
    write_json_atomic(manifest_path_for(path), full, indent=2)
    log.info("wrote %s (%s, opset %d, %s)", path, manifest.get("model", "model"), opset, precision)
    return path


# What a runner compares between an exported file's manifest and its configuration (besides, for TensorRT engines,
# the TensorRT version and the GPU).
MATCHED_FIELDS = ("model", "num_keypoints", "keypoint_layout", "input_hw", "mean_rgb", "std_rgb")


def manifest_fields(*, model_name: str, num_keypoints: int, keypoint_layout: str, input_hw: Tuple[int, int],
                    mean_rgb=IMAGENET_MEAN_RGB, std_rgb=IMAGENET_STD_RGB) -> Dict[str, Any]:
    """The MATCHED_FIELDS of a pose configuration, in the manifest's JSON form."""
    return {
        "model": model_name,
        "num_keypoints": int(num_keypoints),
        "keypoint_layout": keypoint_layout,
        "input_hw": [int(input_hw[0]), int(input_hw[1])],
        "mean_rgb": [float(v) for v in mean_rgb],
        "std_rgb": [float(v) for v in std_rgb],
    }


def pose_manifest(*, model_name: str, num_keypoints: int, keypoint_layout: str, input_hw: Tuple[int, int],
                  weights_path=None, mean_rgb=IMAGENET_MEAN_RGB, std_rgb=IMAGENET_STD_RGB) -> Dict[str, Any]:
    """The fields that tie an exported file to a pose configuration and to the weights it was made from."""
    fields = manifest_fields(model_name=model_name, num_keypoints=num_keypoints, keypoint_layout=keypoint_layout,
                             input_hw=input_hw, mean_rgb=mean_rgb, std_rgb=std_rgb)
    fields["weights_sha256"] = file_sha256(weights_path) if weights_path else None
    return fields


def onnx_for_options(options) -> Path:
    """The ONNX file a BackendOptions asks onnxruntime to run, checked against its manifest: options.engine_path,
    or options.weights_path exported into engines/ on first use (one file per weights file and layout, reused
    while the weights stay the same)."""
    from .checkpoint import load_pose_network

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
                                 weights_path=options.weights_path, mean_rgb=options.mean_rgb, std_rgb=options.std_rgb)
        onnx_path = default_onnx_path(ENGINES_DIR, options.model_name, options.keypoint_layout,
                                      expected["weights_sha256"])
        if not onnx_path.is_file():
            log.info("exporting %s to %s for onnxruntime (once per weights file)", options.model_name, onnx_path)
            onnx_path.parent.mkdir(parents=True, exist_ok=True)
            model = load_pose_network(options.model_name, options.weights_path, options.num_keypoints)
            export_onnx(model, onnx_path, input_hw=options.input_hw, manifest=expected)
    manifest = read_manifest(onnx_path)
    if manifest is not None:
        check_manifest(manifest, options.manifest_fields(), f"ONNX file {onnx_path}")
    elif onnx_path.is_file():
        log.warning("%s has no manifest beside it: its keypoint layout and normalisation are assumed to match the "
                    "config", onnx_path)
    return onnx_path


def default_onnx_path(engines_dir: Path, model_name: str, keypoint_layout: str, weights_sha256: Optional[str],
                      precision: str = "fp32") -> Path:
    """engines/<model>_<layout>_<weights hash prefix>[_fp16].onnx: one file per weights file and layout."""
    tag = weights_sha256[:12] if weights_sha256 else "random"
    suffix = "" if precision == "fp32" else f"_{precision}"
    return Path(engines_dir) / f"{model_name}_{keypoint_layout}_{tag}{suffix}.onnx"
