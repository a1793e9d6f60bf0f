"""OpenVINO detector backend (CPU): the same YOLO-pose ONNX file (fp32, or its int8 Q/DQ version, which OpenVINO
runs with int8 kernels) compiled by OpenVINO. Host I/O: numpy in, numpy out. `openvino` (the [openvino] extra)
is imported only here.

The network is compiled once per input shape (a video keeps one letterbox shape), with a static shape: OpenVINO's
CPU plugin plans memory and picks kernels for it, which a dynamic shape would leave to run time.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from ...errors import UserError
from .base import DetectorOptions, check_pose_io, fixed_input_hw, onnx_model

log = logging.getLogger(__name__)

# Letterbox shapes kept compiled at once (a stream has one; a folder of mixed images may have a few).
MAX_COMPILED_SHAPES = 4


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise UserError("detector.backend=openvino needs OpenVINO: pip install 'posetrack_app[openvino]', or set "
                        "detector.backend=onnxruntime") from None
    return openvino


class OpenVinoNetwork:
    """`onnx_path`: a YOLO-pose ONNX file. threads: 0 = OpenVINO's default (one per core)."""

    name = "openvino"
    host_io = True
    device = "cpu"
    # Each input shape is compiled on its own (2.5 s for a new one at 960 here), so no windows of varying shapes.
    runs_windows = False

    def __init__(self, onnx_path, *, threads: int = 0, precision: str = "fp32"):
        ov = _import_openvino()
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(onnx_path))
        except RuntimeError as exc:
            raise UserError(f"OpenVINO cannot read detector model {onnx_path}: {str(exc).splitlines()[0]}") from None
        if len(self._model.inputs) != 1 or len(self._model.outputs) != 1:
            raise UserError(f"{onnx_path} has {len(self._model.inputs)} inputs and {len(self._model.outputs)} "
                            "outputs: not a YOLO-pose export; point detector.model at one")

        def dims(port):
            return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

        check_pose_io(dims(self._model.inputs[0]), dims(self._model.outputs[0]), onnx_path)
        self.fixed_hw = fixed_input_hw(dims(self._model.inputs[0]))
        # Latency (one request at a time) and f32 arithmetic: on CPUs with bf16 units OpenVINO would otherwise
        # lower fp32 models to bf16 on its own, which changes the detections.
        self._config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads > 0:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._requests: Dict[Tuple[int, ...], object] = {}
        self.precision = precision
        self.providers = ("OpenVINO CPU",)
        self.onnx_path = Path(onnx_path)

    @classmethod
    def from_options(cls, options: DetectorOptions) -> "OpenVinoNetwork":
        if options.device != "cpu":
            raise UserError(f"detector.backend=openvino runs on the CPU here; detector.device={options.device} "
                            "needs detector.backend=torch, tensorrt or onnxruntime")
        return cls(onnx_model(options), threads=options.intra_op_threads, precision=options.precision)

    @property
    def description(self) -> str:
        return f"openvino {self.precision} on cpu"

    def _request(self, shape: Tuple[int, ...]):
        request = self._requests.get(shape)
        if request is None:
            if len(self._requests) >= MAX_COMPILED_SHAPES:
                self._requests.clear()
            model = self._model.clone()
            model.reshape({model.inputs[0].get_any_name(): list(shape)})
            log.debug("compiling the detector for input %s with OpenVINO", shape)
            request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            self._requests[shape] = request
        return request

    def run(self, blob: np.ndarray, min_score: float = 0.0) -> np.ndarray:
        """[1, 5 + 3K, A] output at every anchor (min_score is for backends that can skip anchors)."""
        request = self._request(tuple(blob.shape))
        request.infer({0: blob})
        # The output buffer belongs to the request and is overwritten by its next run.
        return request.get_output_tensor(0).data.copy()

    def close(self) -> None:
        self._requests.clear()
