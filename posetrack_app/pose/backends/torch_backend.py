"""PyTorch backend: the network in eval mode on CPU or CUDA, fp32 / fp16 / bf16, optional channels_last,
torch.compile and CUDA-graph capture per fixed batch bucket.

Shape glossary: B crops, K keypoints, H x W network input; infer: [B, 3, H, W] -> [B, K, H/4, W/4] float32.

CUDA graphs: a graph is captured lazily for each bucket size in `cuda_graph_batches` (1, 2, 4, 6, 8, 12, ..., 64 by
default); a batch of B crops runs in the smallest bucket >= B (padded; the padding rows are ignored), larger batches
in chunks of the largest bucket. Static input/output buffers belong to the graph, so outputs are cloned before they
are returned. `warmup()` captures (and with torch.compile, compiles) every bucket up front and returns what that
cost, so a stream does not stall the first time a new number of people appears; the pipeline's builder calls it
(build.build_pose_stage). With CUDA graphs cuDNN also times its algorithms for each bucket (see __init__).

torch.compile (inductor, static shapes) compiles once per bucket shape. On an H200, W48 384x288 fp16 + CUDA graphs
ran at 1,304 / 1,353 crops/s (batch 32 / 64) without it and 1,782 / 1,933 with it, at 20-23 s of compiling per
bucket; cuDNN's timing alone later reached 1,839 / 1,946 (RESULTS.md, GPU), which is why compile stays off by
default. On a CPU, BatchNorm folding (below) is what pays.
"""
from __future__ import annotations

import bisect
import logging
import time
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ...errors import ConfigError
from ...ops import cuda_graph
from .base import DEFAULT_CUDA_GRAPH_BATCHES, BackendBase, BackendOptions

log = logging.getLogger(__name__)

DTYPES: Dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Largest difference (relative to the output's largest magnitude) a BatchNorm-folded copy may show against the
# original on a random input before folding is abandoned. Why 1e-4: folding reorders float32 arithmetic
# (w * (gamma / sigma) once, instead of normalising every output), so each folded layer moves its output by a few
# float32 ulps (eps = 1.2e-7) and the moves add up over the 53-292 folded layers. benchmarks/bn_fold_error.py
# measured 1.2e-7 .. 8.2e-7 on HRNet-W32/W48 and SimpleBaseline, with default and with randomised
# BatchNorm statistics (benchmarks/results/bn_fold_error.txt); issue 14 reports 6.5e-5 for R-50 in its own run.
# 1e-4 leaves room for trained statistics (small running variances scale weights up, and their rounding with
# them), while a wrong fold (a BatchNorm folded into a convolution it does not follow) moves outputs by O(1) of
# their range and is caught.
FOLD_CHECK_RELATIVE_TOLERANCE = 1e-4


def _fold_pairs(module: nn.Module) -> int:
    folded = 0
    for child in module.children():
        folded += _fold_pairs(child)
    names = list(module._modules)
    for first, second in zip(names, names[1:]):
        conv, bn = module._modules[first], module._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            module._modules[first] = fuse_conv_bn_eval(conv, bn)
            module._modules[second] = nn.Identity()
            folded += 1
    return folded


# Side of the square probe input for the folding check: small (the check is about the weights, not the size),
# divisible by 64 so that every registered network accepts it.
FOLD_PROBE_SIDE_PX = 64


def fold_batchnorm(model: nn.Module, input_hw: Tuple[int, int]) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm that directly follows a Conv2d (registered next to it,
    as in HRNet's conv/bn pairs and Sequentials) folded into the convolution's weights and bias: fewer ops for
    inference and export. The copy is checked against the original on a random probe input (64 x 64, or
    `input_hw` if the network refuses that size); if it differs (a network whose registration order is not its
    execution order), the original is returned."""
    import copy

    model = model.eval()
    folded_model = copy.deepcopy(model)
    count = _fold_pairs(folded_model)
    if count == 0:
        return model
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    for probe_hw in ((FOLD_PROBE_SIDE_PX, FOLD_PROBE_SIDE_PX), tuple(input_hw)):
        probe = torch.randn((1, 3) + probe_hw, generator=generator).to(device)
        try:
            with torch.no_grad():
                reference, candidate = model(probe), folded_model(probe)
            break
        except RuntimeError:
            if probe_hw == tuple(input_hw):
                raise
    error = (reference - candidate).abs().max().item()
    if error > FOLD_CHECK_RELATIVE_TOLERANCE * max(reference.abs().max().item(), 1e-6):
        log.warning("BatchNorm folding changed the output (max abs diff %.3g): keeping the unfolded network", error)
        return model
    log.debug("folded %d BatchNorm layers into their convolutions", count)
    return folded_model


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class TorchBackend(BackendBase):
    """`model`: nn.Module [B, 3, H, W] -> [B, K, H/4, W/4] (weights already loaded).

    fold_bn: fold BatchNorm into the preceding convolutions (checked; see fold_batchnorm) before casting.
    """

    def __init__(self, model: nn.Module, *, input_hw: Tuple[int, int], num_keypoints: int, device: str = "cpu",
                 precision: str = "fp32", channels_last: bool = False, compile: bool = False,
                 cuda_graphs: bool = False, cuda_graph_batches: Sequence[int] = DEFAULT_CUDA_GRAPH_BATCHES,
                 fold_bn: bool = True):
        if precision not in DTYPES:
            raise ConfigError(f"pose.precision {precision!r} is not one of {', '.join(DTYPES)} for the torch backend")
        self.device = str(torch.device(device))
        is_cuda = self.device.startswith("cuda")
        if is_cuda and not torch.cuda.is_available():
            raise ConfigError(f"pose.device is {device!r} but torch sees no CUDA GPU: set pose.device=cpu")
        if precision == "fp16" and not is_cuda:
            raise ConfigError("pose.precision=fp16 needs pose.device=cuda; on CPU use fp32 or bf16")
        if cuda_graphs and not is_cuda:
            raise ConfigError("pose.cuda_graphs needs pose.device=cuda; set pose.cuda_graphs=false on CPU")
        self.input_hw = tuple(input_hw)
        self.num_keypoints = num_keypoints
        self.dtype = DTYPES[precision]
        self.precision = precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if fold_bn:
            # Folded in float32 on the CPU, before any cast: exact up to rounding, one op less per conv.
            model = fold_batchnorm(model.float().cpu(), self.input_hw)
        model = model.eval().to(device=self.device, dtype=self.dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = model
        self._run = torch.compile(model, dynamic=False) if compile else model
        self.cuda_graphs = cuda_graphs
        self.cuda_graph_batches = tuple(sorted(set(int(b) for b in cuda_graph_batches)))
        if cuda_graphs and (not self.cuda_graph_batches or self.cuda_graph_batches[0] < 1):
            raise ConfigError(f"pose.cuda_graph_batches must be positive batch sizes, got {cuda_graph_batches}")
        if cuda_graphs:
            # With CUDA graphs the network only ever sees the buckets' fixed shapes, so letting cuDNN time its
            # algorithms for each shape (once, before the capture) costs a second or two per bucket and no stalls
            # later. It paid 1.13-1.44x on an H200 (HRNet-W48 fp16, channels_last, batch 12 / 16 / 64: 1,176 /
            # 1,146 / 1,355 -> 1,334 / 1,506 / 1,954 crops/s; RESULTS.md, GPU). Process-wide: the detector's
            # fixed-size convolutions get the same. Without graphs every new batch size would be timed mid-stream.
            torch.backends.cudnn.benchmark = True
        self._graphs: Dict[int, cuda_graph.CapturedGraph] = {}

    @classmethod
    def from_options(cls, options: BackendOptions) -> "TorchBackend":
        from ..checkpoint import load_pose_network

        model = load_pose_network(options.model_name, options.weights_path, options.num_keypoints)
        return cls(model, input_hw=options.input_hw, num_keypoints=options.num_keypoints, device=options.device,
                   precision=options.precision, channels_last=options.channels_last, compile=options.compile,
                   cuda_graphs=options.cuda_graphs, cuda_graph_batches=options.cuda_graph_batches)

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device=self.device, dtype=self.dtype, non_blocking=True)
        return batch.contiguous(memory_format=self.memory_format)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._run(batch)

    def _bucket(self, size: int) -> Optional[int]:
        index = bisect.bisect_left(self.cuda_graph_batches, size)
        return self.cuda_graph_batches[index] if index < len(self.cuda_graph_batches) else None

    def _capture(self, bucket: int, example: torch.Tensor) -> None:
        started = time.perf_counter()
        # Capture outside inference_mode: inference tensors cannot be graph-static buffers that are written in
        # place later.
        static_input = torch.zeros((bucket,) + tuple(example.shape[1:]), dtype=example.dtype,
                                   device=example.device).contiguous(memory_format=_memory_format(example))
        with torch.no_grad():
            self._graphs[bucket] = cuda_graph.CapturedGraph(self._run, static_input)
        log.debug("pose network: CUDA graph for batch %d captured in %.1f s%s", bucket, time.perf_counter() - started,
                  " (torch.compile included)" if self._run is not self.model else "")

    def _graph_forward(self, batch: torch.Tensor) -> torch.Tensor:
        largest = self.cuda_graph_batches[-1]
        outputs = []
        for start in range(0, batch.shape[0], largest):
            chunk = batch[start:start + largest]
            bucket = self._bucket(chunk.shape[0])
            if bucket not in self._graphs:
                self._capture(bucket, chunk)
            with torch.no_grad():
                outputs.append(self._graphs[bucket](chunk))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def warmup(self, batch_sizes: Optional[Sequence[int]] = None) -> Dict[int, float]:
        """Run (CUDA graphs: capture) each batch size once so that no later call pays for compilation, autotuning
        or capture. batch_sizes: default the CUDA-graph buckets, else (1,). Returns seconds per batch size."""
        sizes = tuple(batch_sizes or (self.cuda_graph_batches if self.cuda_graphs else (1,)))
        costs = {}
        for size in sizes:
            example = torch.zeros((size, 3) + self.input_hw, device=self.device)
            started = time.perf_counter()
            self.infer(example)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize(self.device)
            costs[size] = time.perf_counter() - started
        return costs

    def _infer(self, batch: torch.Tensor) -> torch.Tensor:
        prepared = self._prepare(batch)
        heatmaps = self._graph_forward(prepared) if self.cuda_graphs else self._forward(prepared)
        return heatmaps.float()

    def close(self) -> None:
        self._graphs.clear()
