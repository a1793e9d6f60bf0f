"""TensorRT backend: EngineBuilder (ONNX -> serialized engine + manifest) and TensorRTRunner (engine -> heatmaps).

Shape glossary: B crops, K keypoints, H x W network input; infer: [B, 3, H, W] -> [B, K, H/4, W/4] float32.

Written against the name-based TensorRT 10/11 API: tensors are addressed by name (num_io_tensors,
get_tensor_name, get_tensor_mode, set_input_shape, set_tensor_address, execute_async_v3); buffers are torch CUDA
tensors and work is enqueued on torch's current CUDA stream, so no pycuda is needed and torch's stream
ordering protects the buffers. Engines have one optimisation profile for a dynamic batch 1..max_batch.

Precision: TensorRT 10 lowers precision by builder flag (BuilderFlag.FP16; INT8 with an entropy calibrator
and a calibration cache). TensorRT 11 removed those flags (networks are strongly typed): there fp16 comes from
an fp16 ONNX graph (`export_onnx(precision="fp16")`), and int8 needs a Q/DQ-quantised ONNX, which this module
does not make. The builder detects which API it has by attribute, not by version number.

Every engine gets a manifest JSON beside it (ONNX hash, TensorRT version, GPU name, precision, input size,
keypoint layout, mean/std, max batch). TensorRTRunner refuses an engine without a manifest or whose manifest
does not match the configuration, the installed TensorRT, or the GPU. `tensorrt` is imported only in here,
and only when a builder or runner is made, so the pure manifest checks run anywhere.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...errors import ConfigError, UserError
from ...io.atomic import atomic_write, write_json_atomic
from .base import DEFAULT_MAX_BATCH, BackendBase, BackendOptions

log = logging.getLogger(__name__)

# Builder workspace (GiB) for tactic selection.
DEFAULT_WORKSPACE_GIB = 4.0
# Images per calibration batch for INT8 (TensorRT 10 only).
DEFAULT_CALIBRATION_BATCH = 8
CALIBRATION_CACHE_NAME = "calibration.cache"
CALIBRATION_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PRECISIONS = ("fp32", "fp16", "int8")


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("the TensorRT Python package is not installed: install TensorRT 10 or 11 for your CUDA "
                        "version (pip install tensorrt), or use pose.backend=torch / onnxruntime") from None
    return trt


def _require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise UserError(f"{what} needs a CUDA GPU and torch sees none: use pose.backend=torch or onnxruntime")


def gpu_name(device: str = "cuda") -> str:
    return torch.cuda.get_device_name(torch.device(device))


def default_engine_path(onnx_path, precision: str, max_batch: int) -> Path:
    """engines/x.onnx -> engines/x_fp16_b32.engine."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}_{precision}_b{max_batch}.engine")


def engine_manifest(onnx_manifest: Dict[str, Any], *, onnx_sha256: str, tensorrt_version: str, gpu: str,
                    precision: str, max_batch: int) -> Dict[str, Any]:
    """The engine's manifest: the ONNX manifest's pose fields plus what the engine is bound to."""
    from ..export import MATCHED_FIELDS

    manifest = {k: onnx_manifest.get(k) for k in MATCHED_FIELDS + ("weights_sha256",)}
    manifest.update({
        "format": "tensorrt",
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu,
        "precision": precision,
        "max_batch": int(max_batch),
    })
    return manifest


def verify_engine_manifest(manifest: Optional[Dict[str, Any]], engine_path, *, expected: Dict[str, Any],
                           tensorrt_version: str, gpu: str) -> None:
    """Refuse (UserError) an engine whose manifest is missing or does not match `expected` (pose fields of the
    config), the installed TensorRT version or the GPU: engines are specific to all three."""
    if manifest is None:
        raise UserError(f"TensorRT engine {engine_path} has no manifest ({Path(str(engine_path) + '.json').name}) "
                        f"beside it, so what it was built for is unknown: rebuild it with `posetrack export "
                        f"--format tensorrt`")
    from ..export import check_manifest

    check_manifest(manifest, dict(expected, tensorrt_version=tensorrt_version, gpu_name=gpu),
                   f"TensorRT engine {engine_path}")


def _calibration_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in CALIBRATION_IMAGE_SUFFIXES)


def _calibration_batches(paths: Sequence[Path], input_hw: Tuple[int, int], batch_size: int,
                         mean_rgb, std_rgb):
    """Yields float32 [batch_size, 3, H, W] arrays: each image's central person-shaped region (the whole image
    taken as the box), cropped and normalised exactly as the estimator prepares crops."""
    import cv2

    from ...ops.affine import boxes_to_regions, region_to_crop_matrices, warp_crops

    h, w = input_hw
    mean = np.asarray(mean_rgb, np.float32) * 255.0
    std = np.asarray(std_rgb, np.float32) * 255.0
    batch: List[np.ndarray] = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("calibration image %s cannot be read; skipped", path)
            continue
        box = np.array([[0, 0, image.shape[1], image.shape[0]]], np.float32)
        centers, sizes = boxes_to_regions(box, w / h, padding=1.0)
        crop = warp_crops(image, region_to_crop_matrices(centers, sizes, (w, h)), (w, h))[0]
        rgb = crop[:, :, ::-1].astype(np.float32)
        batch.append(((rgb - mean) / std).transpose(2, 0, 1))
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []


def _make_calibrator(trt, *, cache_path: Path, image_paths: Sequence[Path], input_hw, batch_size: int,
                     mean_rgb, std_rgb):
    """An IInt8EntropyCalibrator2 that reads `cache_path` when it exists (then no image is needed) and otherwise
    feeds the images from a CUDA buffer and writes the cache for the next build."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = _calibration_batches(image_paths, input_hw, batch_size, mean_rgb, std_rgb)
            self._device_batch: Optional[torch.Tensor] = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):
            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            self._device_batch = torch.from_numpy(batch).cuda().contiguous()
            torch.cuda.synchronize()
            return [int(self._device_batch.data_ptr())]

        def read_calibration_cache(self):
            if cache_path.is_file():
                log.info("using INT8 calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            with atomic_write(cache_path, "wb") as handle:
                handle.write(bytes(cache))
            log.info("wrote INT8 calibration cache %s", cache_path)

    return EntropyCalibrator()


class EngineBuilder:
    """ONNX (pose/export.py, dynamic batch) -> TensorRT engine file + manifest.

    precision: "fp32", "fp16" or "int8" (int8 also enables fp16 kernels; TensorRT 10 only, needs
    `int8_calibration_dir` holding images or a calibration.cache).
    """

    def __init__(self, onnx_path, *, max_batch: int = DEFAULT_MAX_BATCH, opt_batch: Optional[int] = None, precision: str = "fp16",
                 int8_calibration_dir=None, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                 calibration_batch: int = DEFAULT_CALIBRATION_BATCH, device: str = "cuda"):
        if precision not in PRECISIONS:
            raise ConfigError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {max_batch}")
        if precision == "int8" and not int8_calibration_dir:
            raise UserError("INT8 needs calibration data: pass --int8-calib DIR with person images "
                            f"(or a {CALIBRATION_CACHE_NAME} from an earlier build)")
        self.onnx_path = Path(onnx_path)
        self.max_batch = int(max_batch)
        self.opt_batch = int(opt_batch) if opt_batch else self.max_batch
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"opt batch {self.opt_batch} must lie in 1..{self.max_batch}")
        self.precision = precision
        self.int8_calibration_dir = Path(int8_calibration_dir) if int8_calibration_dir else None
        self.workspace_gib = workspace_gib
        self.calibration_batch = calibration_batch
        self.device = device

    def build(self, engine_path=None) -> Path:
        """Build and write the engine (atomically) and its manifest. Returns the engine path."""
        from ..checkpoint import file_sha256

        trt = _import_tensorrt()
        _require_cuda("building a TensorRT engine")
        onnx_manifest = self._read_onnx_manifest()
        engine_path = Path(engine_path) if engine_path else default_engine_path(
            self.onnx_path, self.precision, self.max_batch)
        input_hw = tuple(onnx_manifest["input_hw"])
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, parser = self._parse_onnx(trt, builder, logger)   # the parser owns the weights until the build
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_gib * (1 << 30)))
        input_name = network.get_input(0).name
        self._add_batch_profile(builder, config, input_name, input_hw)
        self._set_precision(trt, config, onnx_manifest.get("precision", "fp32"))
        if self.precision == "int8":
            self._set_int8_calibration(trt, builder, config, input_name, input_hw, onnx_manifest)
        log.info("building TensorRT %s engine from %s (batch 1..%d; this takes minutes)", self.precision,
                 self.onnx_path, self.max_batch)
        serialized = builder.build_serialized_network(network, config)
        del parser
        if serialized is None:
            raise UserError(f"TensorRT failed to build an engine from {self.onnx_path}; run with -v for its log, "
                            f"or try a smaller --max-batch")
        manifest = engine_manifest(onnx_manifest, onnx_sha256=file_sha256(self.onnx_path),
                                   tensorrt_version=trt.__version__, gpu=gpu_name(self.device),
                                   precision=self.precision, max_batch=self.max_batch)
        self._write(engine_path, serialized, manifest)
        return engine_path

    # -- the steps of build() --

    def _read_onnx_manifest(self) -> Dict[str, Any]:
        from ..export import read_manifest

        if not self.onnx_path.is_file():
            raise UserError(f"ONNX file {self.onnx_path} not found: export it first (posetrack export --format onnx)")
        onnx_manifest = read_manifest(self.onnx_path)
        if onnx_manifest is None:
            raise UserError(f"{self.onnx_path} has no manifest beside it: export it with `posetrack export`")
        return onnx_manifest

    def _parse_onnx(self, trt, builder, logger):
        """(network, parser) of the ONNX file; explicit batch is the only mode since TensorRT 10 (flags 0)."""
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"TensorRT cannot parse {self.onnx_path}: {errors}")
        return network, parser

    def _add_batch_profile(self, builder, config, input_name: str, input_hw) -> None:
        """One optimisation profile: batch 1..max_batch, tuned for opt_batch."""
        h, w = input_hw
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, (1, 3, h, w), (self.opt_batch, 3, h, w), (self.max_batch, 3, h, w))
        config.add_optimization_profile(profile)

    def _set_precision(self, trt, config, onnx_precision: str) -> None:
        """fp16 / int8 by builder flag (TensorRT 10), or from an fp16 graph (TensorRT 11, strongly typed)."""
        if self.precision not in ("fp16", "int8"):
            return
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        elif onnx_precision != "fp16":
            raise UserError(
                f"TensorRT {trt.__version__} builds strongly typed networks only: for fp16 export an fp16 ONNX "
                f"(posetrack export --format tensorrt --fp16 does this) instead of {self.onnx_path} ({onnx_precision})"
            )

    def _set_int8_calibration(self, trt, builder, config, input_name: str, input_hw, onnx_manifest) -> None:
        """INT8 with an entropy calibrator fed from the calibration folder (or its cache), TensorRT 10 only."""
        if not (hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8")
                and hasattr(config, "int8_calibrator")):
            raise UserError(
                f"TensorRT {trt.__version__} removed calibration-based INT8: quantise the ONNX with Q/DQ nodes "
                f"(e.g. NVIDIA ModelOpt) and build that, or use --fp16"
            )
        folder = self.int8_calibration_dir
        if not folder.is_dir():
            raise UserError(f"--int8-calib {folder} is not a folder of calibration images")
        cache_path = folder / CALIBRATION_CACHE_NAME
        images = _calibration_images(folder)
        if not cache_path.is_file() and len(images) < self.calibration_batch:
            raise UserError(f"--int8-calib {folder} holds {len(images)} images and no {CALIBRATION_CACHE_NAME}; "
                            f"INT8 calibration needs at least {self.calibration_batch} (a few hundred is typical)")
        config.set_flag(trt.BuilderFlag.INT8)
        # Calibration runs at one batch size: a profile fixed at the calibration batch.
        calibration_profile = builder.create_optimization_profile()
        shape = (self.calibration_batch, 3) + tuple(input_hw)
        calibration_profile.set_shape(input_name, shape, shape, shape)
        config.set_calibration_profile(calibration_profile)
        config.int8_calibrator = _make_calibrator(
            trt, cache_path=cache_path, image_paths=images, input_hw=tuple(input_hw),
            batch_size=self.calibration_batch, mean_rgb=onnx_manifest["mean_rgb"], std_rgb=onnx_manifest["std_rgb"])

    @staticmethod
    def _write(engine_path: Path, serialized, manifest: Dict[str, Any]) -> None:
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(engine_path, "wb") as handle:
            handle.write(bytes(serialized))
        write_json_atomic(Path(str(engine_path) + ".json"), manifest, indent=2)
        log.info("wrote %s", engine_path)


class TensorRTRunner(BackendBase):
    """Runs a built engine. `expected`: the pose fields the engine's manifest must carry (model, num_keypoints,
    keypoint_layout, input_hw, mean_rgb, std_rgb)."""

    def __init__(self, engine_path, *, expected: Dict[str, Any], device: str = "cuda"):
        from ..export import read_manifest

        trt = _import_tensorrt()
        _require_cuda("the TensorRT backend")
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise UserError(f"TensorRT engine {engine_path} not found: build it with "
                            f"`posetrack export --format tensorrt --model {expected.get('model')} --weights F`")
        self.device = str(torch.device(device))
        verify_engine_manifest(read_manifest(engine_path), engine_path, expected=expected,
                               tensorrt_version=trt.__version__, gpu=gpu_name(self.device))
        self.input_hw = tuple(expected["input_hw"])
        self.num_keypoints = int(expected["num_keypoints"])
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self.engine is None:
                raise UserError(f"TensorRT could not load {engine_path} (corrupt, or built by another version): "
                                f"rebuild it with `posetrack export --format tensorrt`")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{engine_path} has inputs {inputs} and outputs {outputs}; a pose engine has one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        min_shape, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(min_shape[0]), int(max_shape[0])
        if tuple(max_shape[2:]) != self.input_hw:
            raise UserError(f"{engine_path} takes {tuple(max_shape)} inputs, the config expects "
                            f"[B, 3, {self.input_hw[0]}, {self.input_hw[1]}]: rebuild it")
        self.input_dtype = self._torch_dtype(self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = self._torch_dtype(self.engine.get_tensor_dtype(self.output_name))

    def _torch_dtype(self, trt_dtype) -> torch.dtype:
        trt = self._trt
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        if hasattr(trt.DataType, "BF16"):
            table[trt.DataType.BF16] = torch.bfloat16
        if trt_dtype not in table:
            raise UserError(f"engine I/O type {trt_dtype} is not supported: export the ONNX with float32 I/O")
        return table[trt_dtype]

    @classmethod
    def from_options(cls, options: BackendOptions) -> "TensorRTRunner":
        if not options.engine_path:
            raise ConfigError("pose.backend=tensorrt needs pose.engine=PATH.engine: build one with "
                              f"`posetrack export --format tensorrt --model {options.model_name} --weights F --fp16`")
        device = options.device if options.device.startswith("cuda") else "cuda"
        return cls(options.engine_path, expected=options.manifest_fields(), device=device)

    def check_profile(self, batch_size: int) -> None:
        if not self.min_batch <= batch_size <= self.max_batch:
            raise ValueError(f"batch {batch_size} is outside the engine's profile {self.min_batch}..{self.max_batch}")

    def _run_chunk(self, chunk: torch.Tensor) -> torch.Tensor:
        self.check_profile(chunk.shape[0])
        inputs = chunk.to(device=self.device, dtype=self.input_dtype, non_blocking=True).contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(inputs.shape)):
            raise ValueError(f"TensorRT rejected input shape {tuple(inputs.shape)}")
        output_shape = tuple(self.context.get_tensor_shape(self.output_name))
        outputs = torch.empty(output_shape, dtype=self.output_dtype, device=self.device)
        self.context.set_tensor_address(self.input_name, inputs.data_ptr())
        self.context.set_tensor_address(self.output_name, outputs.data_ptr())
        # Enqueued on torch's stream: later torch work on `outputs` is ordered after the engine, and the
        # caching allocator will not hand `inputs` to other streams before it has run.
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; run with -v for TensorRT's log")
        return outputs

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):
            chunks = [self._run_chunk(batch[s:s + self.max_batch]) for s in range(0, batch.shape[0], self.max_batch)]
            return torch.cat(chunks).float()

    def close(self) -> None:
        self.context = None
        self.engine = None
