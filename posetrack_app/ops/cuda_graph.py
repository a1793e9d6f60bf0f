"""CUDA-graph capture shared by the pose network's batch buckets and the detector network.

A captured graph replays a network's kernels with one launch: on a fast GPU, small networks are bound by the
host launching their kernels one by one, not by the kernels (issue 17: YOLO11n-pose in fp16 on an H200 took
4.2-5.4 ms a frame launched eagerly and 1.3-1.5 ms replayed as a graph; in the pipeline, beside the pose network,
its stage went from 24.4 to 6.3 ms a frame at 1280).
"""
from __future__ import annotations

from typing import Callable

import torch

# Eager runs before the capture, on the capture's stream, so that lazy initialisation (cuDNN's choice of
# algorithm, torch.compile) happens outside the graph.
WARMUP_RUNS = 3


class CapturedGraph:
    """`run(static_input)` captured once as a CUDA graph. Calling it with a batch of at most `static_input`'s rows
    copies them in, replays the graph on the current stream and returns a copy of the output's rows (the next replay
    overwrites the static output). Build and call it without autograd (torch.no_grad, not inference_mode: the
    static input is written in place after the capture).

    The capture runs on a side stream that first waits for the caller's stream, and in "thread_local" mode: the
    pipeline captures while other threads keep launching work and allocating on the same GPU (the detector ahead
    of the pose network), which "global" mode would turn into a capture error. It neither synchronises the device
    nor empties the allocator's cache, as torch.cuda.graph does, so the other threads' work is not stalled."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], static_input: torch.Tensor):
        device = static_input.device
        caller = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(caller)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                run(static_input)
            self.graph.capture_begin(capture_error_mode="thread_local")
            try:
                self.static_output = run(static_input)
            finally:
                self.graph.capture_end()
        caller.wait_stream(side)
        self.static_input = static_input

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        rows = batch.shape[0]
        self.static_input[:rows].copy_(batch)
        self.graph.replay()
        return self.static_output[:rows].clone()
