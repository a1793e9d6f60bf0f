"""ONNX Runtime detector backend: the YOLO-pose ONNX file (fp32, or its int8 Q/DQ version) in an InferenceSession,
on the CPU or, with `onnxruntime-gpu` installed, on CUDA. Host I/O: numpy in, numpy out. `onnxruntime` is
imported only here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ...errors import UserError
from ...onnx_providers import CPU_PROVIDER, CUDA_PROVIDER, DEFAULT_PROVIDERS, providers_for_device, select_providers
from ..onnx_graph import inline_initializer_identities, rewrite_softmax_expectation, split_channel_split_convs
from ..sparse_head import SplitPoseHead
from .base import DetectorOptions, check_pose_io, fixed_input_hw, onnx_model

log = logging.getLogger(__name__)


def _io_shapes(values, initializers):
    """Shapes of a graph's inputs or outputs (initializers listed as inputs by old exporters left out): each
    dimension an int, or its symbolic name."""
    return [[dim.dim_value if dim.HasField("dim_value") else dim.dim_param
             for dim in value.type.tensor_type.shape.dim]
            for value in values if value.name not in initializers]


class OnnxRuntimeNetwork:
    """`onnx_path`: a YOLO-pose ONNX file, input [1, 3, S, T], output [1, 5 + 3K, A].

    intra_op_threads: 0 = one per core. spinning: worker threads busy-wait between operators (lower latency
    when the cores are free; off leaves them to the reader and writer threads). split_head: run the box and
    keypoint branches only at the anchors that score (detection/sparse_head.py) when the graph allows it; False
    runs the file whole (for measuring the two against each other)."""

    name = "onnxruntime"
    host_io = True

    def __init__(self, onnx_path, *, device: str = "cpu", providers: Sequence[str] = DEFAULT_PROVIDERS,
                 intra_op_threads: int = 0, spinning: bool = False, precision: str = "fp32",
                 split_head: bool = True):
        chosen = select_providers(providers_for_device(device, providers), ort.get_available_providers())
        if device.startswith("cuda") and CUDA_PROVIDER not in chosen:
            raise UserError("detector.device is cuda but this onnxruntime has no CUDA provider: pip install "
                            "'posetrack_app[cuda]', or set detector.backend=auto to run the TorchScript "
                            "export on the GPU")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        provider_options = [{"device_id": int(device.partition(":")[2] or 0)} if p == CUDA_PROVIDER else {}
                            for p in chosen]

        def make_session(model_bytes: bytes):
            return ort.InferenceSession(model_bytes, sess_options=options, providers=list(chosen),
                                        provider_options=provider_options)

        try:
            model = onnx.load(str(onnx_path))
        except Exception as exc:  # onnx raises its own exception types for unreadable files
            raise UserError(f"cannot load detector ONNX {onnx_path}: {str(exc).splitlines()[0]}") from None
        initializers = {tensor.name for tensor in model.graph.initializer}
        inputs, outputs = _io_shapes(model.graph.input, initializers), _io_shapes(model.graph.output, initializers)
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{onnx_path} has {len(inputs)} inputs and {len(outputs)} outputs: not a YOLO-pose "
                            "export; point detector.model at one")
        check_pose_io(inputs[0], outputs[0], onnx_path)
        inline_initializer_identities(model)
        # On the CPU, the backbone's channel Splits as one convolution per part, so the tensors stay in the CPU
        # provider's blocked layout (detection/onnx_graph.py); the same numbers, and the head split below still finds
        # its pattern. A GPU has no such layout change to save, only more kernel launches, so it gets the file's form.
        if chosen[0] == CPU_PROVIDER:
            split_channel_split_convs(model)
        # Both forms in memory: the file, which may be the user's, is left as it is. The split is for the CPU, where
        # the dense branches cost 28% of the network; on a GPU they are cheap and the split would bring the feature
        # maps to the host instead of the output (not measured there), so a GPU runs the whole graph.
        self.split_head = None
        if split_head and chosen[0] == CPU_PROVIDER:
            try:
                self.split_head = SplitPoseHead.split(model, make_session)
            except Exception as exc:  # onnx / onnxruntime errors on a graph the split misread: the whole one still runs
                log.warning("%s: the detector head could not be split (%s); running the whole graph", onnx_path,
                            str(exc).splitlines()[0])
        if self.split_head is not None:
            self.session = self.split_head.trunk
        else:
            # The whole graph, its box decoder's Softmax in a cheaper equivalent form (detection/onnx_graph.py).
            rewrite_softmax_expectation(model)
            try:
                self.session = make_session(model.SerializeToString())
            except Exception as exc:  # onnxruntime raises its own exception types for models it cannot load
                raise UserError(f"cannot load detector ONNX {onnx_path}: {str(exc).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_hw = fixed_input_hw(inputs[0])
        self.providers = tuple(self.session.get_providers())
        # Windows of the input (detector.schedule=roi) are new input shapes: free on the CPU provider; a GPU provider
        # may tune its kernels per shape, and a fixed-shape file takes one shape only.
        self.runs_windows = self.providers[0] == CPU_PROVIDER and self.fixed_hw is None
        self.device = device if self.providers[0] == CUDA_PROVIDER else "cpu"
        self.precision = precision
        self.onnx_path = Path(onnx_path)

    @classmethod
    def from_options(cls, options: DetectorOptions) -> "OnnxRuntimeNetwork":
        return cls(onnx_model(options), device=options.device, providers=options.providers,
                   intra_op_threads=options.intra_op_threads, spinning=options.ort_spinning,
                   precision=options.precision, split_head=options.split_head)

    @property
    def description(self) -> str:
        return f"onnxruntime {self.precision} on {self.device} ({self.providers[0]})"

    def run(self, blob: np.ndarray, min_score: float = 0.0) -> np.ndarray:
        """[1, 5 + 3K, A'] network output: every anchor of the whole graph, or with the split head only those
        scoring above min_score (the others the detector would drop anyway)."""
        if self.split_head is not None:
            return self.split_head.run(blob, min_score)
        return self.session.run(None, {self.input_name: blob})[0]

    def close(self) -> None:
        self.session = self.split_head = None
