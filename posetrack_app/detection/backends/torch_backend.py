"""Torch detector backend: the TorchScript export of the YOLO-pose checkpoint (made by Ultralytics together with the
ONNX file), so a machine with a CUDA build of torch runs the detector on its GPU with nothing else installed.
Device I/O: the input is a torch tensor on `device` and so is the output; the detector letterboxes, decodes and
runs NMS on that device as well.

precision: fp32, fp16 (CUDA) or bf16. The network's weights and input are cast; its anchor grid stays float32
(traced as such), and the output is promoted to float32 where the two meet.

cuda_graphs (CUDA only): the network is captured as a CUDA graph the first time a thread runs it on an input
shape, and replayed from then on (ops/cuda_graph.py says why). What is captured is a TorchScript export for that
one input size, made once and cached beside the dynamic one (yolo_onnx.artefact_path says why). Each thread gets
its own graph and buffers, so detector threads running ahead on their own streams never share a static buffer.
"""
from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

from ...errors import ConfigError, UserError
from ...ops import cuda_graph
from .base import DetectorOptions

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Graphs kept per thread; a source whose frame size keeps changing (images of many sizes) runs eagerly past this
# many letterbox shapes instead of holding a graph and its memory for each.
MAX_GRAPHS_PER_THREAD = 4


def load_torchscript(path, device: str, dtype: torch.dtype) -> torch.jit.ScriptModule:
    """A YOLO-pose TorchScript file on `device`, in eval mode, its weights cast to `dtype`."""
    try:
        # torch.jit is deprecated in favour of torch.export, but TorchScript is what Ultralytics exports with a
        # dynamic input size; the warning says nothing the user can act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as exc:
        raise UserError(f"cannot load detector TorchScript {path}: {str(exc).splitlines()[0]}; delete it to "
                        "export it again") from None
    return module.eval().to(dtype=dtype)


def _predictions(output) -> torch.Tensor:
    # Ultralytics' pose export returns (predictions, feature maps) unless told otherwise.
    return output[0] if isinstance(output, (tuple, list)) else output


class TorchScriptNetwork:
    """`path`: a .torchscript file of a YOLO-pose model exported with a dynamic input size, traced on `device`
    (see yolo_onnx.artefact_path).

    static_path: with cuda_graphs, (height, width) -> the TorchScript file exported for that one input size, or
    None where there is none (a user's own .torchscript file): the graphs replay that export, whose anchor grid is
    a constant on the GPU (the dynamic one makes it on the host at every call, which cannot be captured). Without
    one, or if a capture fails, that input size runs eagerly (said once)."""

    name = "torch"
    host_io = False
    fixed_hw = None
    runs_windows = False

    def __init__(self, path, *, device: str = "cpu", precision: str = "fp32", cuda_graphs: bool = False,
                 static_path: Optional[Callable[[Tuple[int, int]], Optional[Path]]] = None):
        if precision not in DTYPES:
            raise ConfigError(f"detector.precision {precision!r} is not one of {', '.join(DTYPES)} for the torch backend")
        self.device = str(torch.device(device))
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"detector.device is {device!r} but torch sees no CUDA GPU: set detector.device=cpu")
        if precision == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError("detector.precision=fp16 needs a CUDA device; on the CPU use fp32 or bf16")
        self.path = Path(path)
        self.dtype = DTYPES[precision]
        self.module = load_torchscript(self.path, self.device, self.dtype)
        self.precision = precision
        self.providers = (f"torch {torch.__version__}",)
        self.cuda_graphs = cuda_graphs and self.device.startswith("cuda")
        self._static_path = static_path
        self._static_modules: Dict[Tuple[int, int], Optional[torch.jit.ScriptModule]] = {}
        self._static_lock = threading.Lock()
        self._graphs = threading.local()  # .by_shape: {(shape, dtype): its CapturedGraph, or None: runs eagerly}
        # Over all threads: graphs captured, and captures that failed (those shapes run eagerly).
        self.graphs_captured = self.graph_failures = 0

    @classmethod
    def from_options(cls, options: DetectorOptions) -> "TorchScriptNetwork":
        from ..yolo_onnx import resolve_model

        def static_path(input_hw: Tuple[int, int]) -> Optional[Path]:
            if Path(options.model).suffix == ".torchscript":
                return None  # a user's export: nothing to export a fixed-size copy from
            return resolve_model(options.model, options.cache_dir, fmt="torchscript", device=options.device,
                                 static_hw=input_hw)

        return cls(resolve_model(options.model, options.cache_dir, fmt="torchscript", device=options.device),
                   device=options.device, precision=options.precision, cuda_graphs=options.cuda_graphs,
                   static_path=static_path)

    @property
    def description(self) -> str:
        return f"torch (TorchScript) {self.precision} on {self.device}{', CUDA graph' if self.cuda_graphs else ''}"

    @property
    def input_dtype(self) -> torch.dtype:
        return self.dtype

    def run(self, blob: torch.Tensor) -> torch.Tensor:
        if self.cuda_graphs:
            graph = self._graph_for(blob)
            if graph is not None:
                with torch.no_grad():
                    return graph(blob)
        with torch.inference_mode():
            return _predictions(self.module(blob))

    def _graph_for(self, blob: torch.Tensor) -> Optional[cuda_graph.CapturedGraph]:
        """This thread's graph for the blob's shape, captured on first use; None where that shape runs eagerly."""
        by_shape = getattr(self._graphs, "by_shape", None)
        if by_shape is None:
            by_shape = self._graphs.by_shape = {}
        key = (tuple(blob.shape), blob.dtype)
        if key in by_shape:
            return by_shape[key]
        entry = None
        module = self._static_module(tuple(blob.shape[2:])) if len(by_shape) < MAX_GRAPHS_PER_THREAD else None
        if module is not None:
            try:
                with torch.no_grad():
                    entry = cuda_graph.CapturedGraph(lambda x: _predictions(module(x)), blob.clone())
                log.debug("detector: CUDA graph captured for input %s", list(blob.shape))
                with self._static_lock:
                    self.graphs_captured += 1
            except RuntimeError as exc:
                with self._static_lock:
                    self.graph_failures += 1
                log.warning("detector: no CUDA graph for input %s (%s); it runs eagerly", list(blob.shape),
                            str(exc).splitlines()[0])
        by_shape[key] = entry
        return entry

    def _static_module(self, input_hw: Tuple[int, int]) -> Optional[torch.jit.ScriptModule]:
        """The fixed-size export for `input_hw`, exported (once, then cached on disk) and loaded on first use."""
        with self._static_lock:
            if input_hw not in self._static_modules:
                path, why = None, "none for a TorchScript file given as detector.model"
                if self._static_path is not None:
                    try:
                        path = self._static_path(input_hw)
                    except UserError as exc:  # e.g. ultralytics missing: the detector still runs, eagerly
                        why = str(exc)
                if path is None:
                    log.warning("detector: no fixed-size TorchScript for input %s (%s): it runs without a CUDA "
                                "graph", list(input_hw), why)
                self._static_modules[input_hw] = load_torchscript(path, self.device, self.dtype) if path else None
            return self._static_modules[input_hw]

    def close(self) -> None:
        self.module = None
        self._static_modules.clear()
        self._graphs = threading.local()
