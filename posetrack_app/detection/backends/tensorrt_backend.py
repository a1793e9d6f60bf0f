"""TensorRT detector backend: an engine built from the same YOLO-pose ONNX file, with a dynamic input size up to
input_size x input_size. Device I/O: torch CUDA tensors in and out, enqueued on torch's current stream (no
pycuda), so the detector's letterbox, decoding and NMS run on the GPU around it.

Written against the name-based TensorRT 10/11 API (num_io_tensors, get_tensor_name, get_tensor_mode,
set_input_shape, get_tensor_shape, set_tensor_address, execute_async_v3). The engine is built once (minutes) into
the cache folder with a manifest beside it (ONNX hash, TensorRT version, GPU, precision, largest input); a runner
refuses an engine whose manifest does not match. fp16 uses the FP16 builder flag of TensorRT 10; TensorRT 11 builds
strongly typed networks only, and this backend then offers fp32 (the torch backend runs fp16 there).
`tensorrt` is imported only here.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict

import torch

from ...errors import ConfigError, UserError
from ...io.atomic import atomic_write, write_json_atomic
from .base import DetectorOptions

log = logging.getLogger(__name__)

# Builder workspace (GiB) for tactic selection.
WORKSPACE_GIB = 2.0
# Smallest input side the optimisation profile accepts (one stride-32 cell).
MIN_INPUT_SIDE_PX = 32


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("detector.backend=tensorrt needs the TensorRT Python package (pip install "
                        "'posetrack_app[tensorrt]'), or set detector.backend=auto to run the TorchScript export") from None
    return trt


def engine_manifest(*, onnx_sha256: str, tensorrt_version: str, gpu: str, precision: str, input_size: int
                    ) -> Dict[str, Any]:
    return {"format": "tensorrt-detector", "onnx_sha256": onnx_sha256, "tensorrt_version": tensorrt_version,
            "gpu_name": gpu, "precision": precision, "max_input_size": int(input_size)}


def build_engine(onnx_path: Path, engine_path: Path, *, precision: str, input_size: int, device: str) -> Path:
    """ONNX (dynamic H, W) -> serialized engine for inputs [1, 3, 32..input_size, 32..input_size], optimised for a
    4:3 frame at input_size, written atomically with its manifest."""
    from ...pose.checkpoint import file_sha256
    from ...pose.export import manifest_path_for

    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(WORKSPACE_GIB * (1 << 30)))
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise UserError(f"TensorRT {trt.__version__} builds strongly typed networks only, so the fp32 detector "
                            "ONNX gives an fp32 engine: set detector.precision=fp32, or detector.backend=torch for fp16")
        config.set_flag(trt.BuilderFlag.FP16)
    name = network.get_input(0).name
    opt_h = max(MIN_INPUT_SIDE_PX, (input_size * 3 // 4) // 32 * 32)
    profile = builder.create_optimization_profile()
    profile.set_shape(name, (1, 3, MIN_INPUT_SIDE_PX, MIN_INPUT_SIDE_PX), (1, 3, opt_h, input_size),
                      (1, 3, input_size, input_size))
    config.add_optimization_profile(profile)
    log.info("building a TensorRT %s detector engine from %s (once; minutes)", precision, onnx_path.name)
    with torch.cuda.device(device):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path}; run with -v for its log")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(engine_path, "wb") as handle:
        handle.write(bytes(serialized))
    write_json_atomic(manifest_path_for(engine_path), engine_manifest(
        onnx_sha256=file_sha256(onnx_path), tensorrt_version=trt.__version__,
        gpu=torch.cuda.get_device_name(torch.device(device)), precision=precision, input_size=input_size), indent=2)
    return engine_path


class TensorRTNetwork:
    """Runs a built detector engine. `expected`: the manifest fields the engine must carry."""

    name = "tensorrt"
    host_io = False
    fixed_hw = None
    runs_windows = False

    def __init__(self, engine_path, *, expected: Dict[str, Any], device: str = "cuda"):
        from ...pose.export import check_manifest, read_manifest

        trt = _import_tensorrt()
        if not torch.cuda.is_available():
            raise ConfigError("detector.backend=tensorrt needs a CUDA GPU and torch sees none: set "
                              "detector.backend=auto")
        engine_path = Path(engine_path)
        self.device = str(torch.device(device))
        manifest = read_manifest(engine_path)
        if manifest is None:
            raise UserError(f"detector engine {engine_path} has no manifest beside it: delete it (it is rebuilt) "
                            "or point detector.engine at an engine this app built")
        check_manifest(manifest, dict(expected, tensorrt_version=trt.__version__,
                                      gpu_name=torch.cuda.get_device_name(torch.device(self.device))),
                       f"detector engine {engine_path}")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self.engine is None:
                raise UserError(f"TensorRT could not load {engine_path}: delete it so that it is rebuilt")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{engine_path} has inputs {inputs} and outputs {outputs}; a YOLO-pose engine has one each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self.input_dtype = dtypes[self.engine.get_tensor_dtype(self.input_name)]
        self.output_dtype = dtypes[self.engine.get_tensor_dtype(self.output_name)]
        self.precision = manifest.get("precision", "fp32")
        self.providers = (f"TensorRT {trt.__version__}",)
        self.engine_path = engine_path
        # One execution context for every calling thread, each of which enqueues on its own CUDA stream
        # (device_ops.own_stream): the lock keeps one caller's shapes and addresses from mixing with another's,
        # and the event keeps a second stream from running the context while the first still uses its memory.
        self._lock = threading.Lock()
        self._context_free = torch.cuda.Event()

    @classmethod
    def from_options(cls, options: DetectorOptions) -> "TensorRTNetwork":
        from ...pose.checkpoint import file_sha256
        from ..yolo_onnx import default_cache_dir, resolve_model

        onnx_path = resolve_model(options.model, options.cache_dir)
        expected = {"format": "tensorrt-detector", "onnx_sha256": file_sha256(onnx_path),
                    "precision": options.precision, "max_input_size": options.input_size}
        if options.engine:
            engine_path = Path(options.engine).expanduser()
            if not engine_path.is_file():
                raise UserError(f"detector.engine {engine_path} not found: leave it empty to build one in the cache")
        else:
            cache = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
            engine_path = cache / f"{onnx_path.stem}_{options.precision}_{options.input_size}.engine"
            if not engine_path.is_file():
                build_engine(onnx_path, engine_path, precision=options.precision, input_size=options.input_size,
                             device=options.device)
        return cls(engine_path, expected=expected, device=options.device)

    @property
    def description(self) -> str:
        return f"tensorrt {self.precision} on {self.device}"

    def run(self, blob: torch.Tensor) -> torch.Tensor:
        inputs = blob.to(device=self.device, dtype=self.input_dtype).contiguous()
        stream = torch.cuda.current_stream(self.device)
        with self._lock:
            if not self.context.set_input_shape(self.input_name, tuple(inputs.shape)):
                raise ValueError(f"the detector engine rejects input {tuple(inputs.shape)}: its profile ends at "
                                 "detector.input_size; rebuild it for a larger size")
            outputs = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                                  device=self.device)
            self.context.set_tensor_address(self.input_name, inputs.data_ptr())
            self.context.set_tensor_address(self.output_name, outputs.data_ptr())
            stream.wait_event(self._context_free)
            # On torch's current stream: the decoding that follows is ordered after the engine, and the caching
            # allocator does not reuse `inputs` before the engine has read it.
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed for the detector; run with -v for TensorRT's log")
            self._context_free.record(stream)
        return outputs

    def close(self) -> None:
        self.context = None
        self.engine = None
