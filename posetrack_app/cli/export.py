"""`posetrack export`: a pose checkpoint -> ONNX (dynamic batch) or TensorRT engine, with manifests, in engines/."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..pose.backends.base import DEFAULT_MAX_BATCH

COMMAND = "export"
HELP = "export a pose network to ONNX or a TensorRT engine (written into engines/ with a manifest)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="hrnet_w48_384x288", help="pose model name (default: %(default)s)")
    parser.add_argument("--weights", required=True, metavar="FILE|NAME",
                        help="checkpoint (.pth, official or mmpose names) or a published name (`posetrack weights "
                             "list`, downloaded on first use)")
    parser.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx", help="default: %(default)s")
    parser.add_argument("--keypoints", default="coco17", help="keypoint layout of the checkpoint (default: %(default)s)")
    parser.add_argument("--fp16", action="store_true", help="TensorRT: half-precision engine")
    parser.add_argument("--int8-calib", metavar="DIR",
                        help="TensorRT 10: INT8 engine calibrated on the images in DIR (or DIR/calibration.cache)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                        help="TensorRT: largest batch of the engine's profile (ONNX is exported with a free batch "
                             "axis); default: %(default)s")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: engines/ of the repository)")


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..pose.checkpoint import load_pose_network
    from ..pose.export import ENGINES_DIR, default_onnx_path, export_onnx, pose_manifest
    from ..pose.models import get_model_spec
    from ..pose.weights import resolve, terminal_progress
    from ..skeleton import get_skeleton

    spec = get_model_spec(args.model)
    try:
        skeleton = get_skeleton(args.keypoints)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    if args.max_batch < 1:
        raise UserError(f"--max-batch must be >= 1, got {args.max_batch}")
    precision = "int8" if args.int8_calib else ("fp16" if args.fp16 else "fp32")
    if args.format == "onnx" and (args.fp16 or args.int8_calib):
        raise UserError("--fp16 and --int8-calib apply to --format tensorrt; ONNX is exported in fp32")

    onnx_precision = "fp32"
    if args.format == "tensorrt":
        # Fail before the slow export when TensorRT or the GPU is missing.
        from ..pose.backends.tensorrt_backend import _import_tensorrt, _require_cuda

        trt = _import_tensorrt()
        _require_cuda("building a TensorRT engine")
        if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
            onnx_precision = "fp16"  # TensorRT 11: strongly typed, so the graph itself carries fp16

    out_dir = Path(args.out) if args.out else ENGINES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = resolve(args.weights, model=args.model, keypoints=skeleton.name,
                      progress=terminal_progress(f"pose weights {args.weights}"))
    model = load_pose_network(args.model, weights, skeleton.num_keypoints)
    manifest = pose_manifest(model_name=args.model, num_keypoints=skeleton.num_keypoints,
                             keypoint_layout=skeleton.name, input_hw=spec.input_hw, weights_path=weights)
    onnx_path = default_onnx_path(out_dir, args.model, skeleton.name, manifest["weights_sha256"], onnx_precision)
    export_onnx(model, onnx_path, input_hw=spec.input_hw, manifest=manifest, precision=onnx_precision)
    print(f"ONNX: {onnx_path}")
    if args.format == "tensorrt":
        from ..pose.backends.tensorrt_backend import EngineBuilder, default_engine_path

        builder = EngineBuilder(onnx_path, max_batch=args.max_batch, precision=precision,
                                int8_calibration_dir=args.int8_calib)
        engine_path = builder.build(default_engine_path(onnx_path, precision, args.max_batch))
        print(f"TensorRT engine: {engine_path}")
        print(f"use it with: --set pose.backend=tensorrt --set pose.engine={engine_path} "
              f"--set pose.model={args.model} --set pose.device=cuda")
    else:
        print(f"use it with: --set pose.backend=onnxruntime --set pose.engine={onnx_path} --set pose.model={args.model}")
    return 0
