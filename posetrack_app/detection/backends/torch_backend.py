"""Torch detector backend: the TorchScript export of the YOLO-pose checkpoint (made by Ultralytics together with the
ONNX file), so a machine with a CUDA build of torch runs the detector on its GPU with nothing else installed.
Device I/O: the input is a torch tensor on `device` and so is the output; the detector letterboxes, decodes and
runs NMS on that device as well.

precision: fp32, fp16 (CUDA) or bf16. The network's weights and input are cast; its anchor grid stays float32
(traced as such), and the output is promoted to float32 where the two meet.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from ...errors import ConfigError, UserError
from .base import DetectorOptions

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchScriptNetwork:
    """`path`: a .torchscript file of a YOLO-pose model exported with a dynamic input size, traced on `device`
    (the trace makes its anchor grid on the device it was traced on; see yolo_onnx.artefact_path)."""

    name = "torch"
    host_io = False
    fixed_hw = None

    def __init__(self, path, *, device: str = "cpu", precision: str = "fp32"):
        if precision not in DTYPES:
            raise ConfigError(f"detector.precision {precision!r} is not one of {', '.join(DTYPES)} for the torch backend")
        self.device = str(torch.device(device))
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"detector.device is {device!r} but torch sees no CUDA GPU: set detector.device=cpu")
        if precision == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError("detector.precision=fp16 needs a CUDA device; on the CPU use fp32 or bf16")
        path = Path(path)
        try:
            # torch.jit is deprecated in favour of torch.export, but TorchScript is what Ultralytics exports with a
            # dynamic input size; the warning says nothing the user can act on.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location=self.device)
        except RuntimeError as exc:
            raise UserError(f"cannot load detector TorchScript {path}: {str(exc).splitlines()[0]}; delete it to "
                            "export it again") from None
        self.dtype = DTYPES[precision]
        self.module = module.eval().to(dtype=self.dtype)
        self.precision = precision
        self.providers = (f"torch {torch.__version__}",)
        self.path = path

    @classmethod
    def from_options(cls, options: DetectorOptions) -> "TorchScriptNetwork":
        from ..yolo_onnx import resolve_model

        return cls(resolve_model(options.model, options.cache_dir, fmt="torchscript", device=options.device),
                   device=options.device, precision=options.precision)

    @property
    def description(self) -> str:
        return f"torch (TorchScript) {self.precision} on {self.device}"

    @property
    def input_dtype(self) -> torch.dtype:
        return self.dtype

    def run(self, blob: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            output = self.module(blob)
        # Ultralytics' pose export returns (predictions, feature maps) unless told otherwise.
        return output[0] if isinstance(output, (tuple, list)) else output

    def close(self) -> None:
        self.module = None
