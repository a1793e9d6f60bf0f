"""CUDA-graph capture shared by the pose network's batch buckets and the detector network.

A captured graph replays a network's kernels with one launch: on a fast GPU, small networks are bound by the
host launching their kernels one by one, not by the kernels (issue 17: YOLO11n-pose in fp16 on an H200 took
4.2-5.4 ms a frame launched eagerly and 1.3-1.5 ms replayed as a graph; in the pipeline, beside the pose network,
its stage went from 24.4 to 6.3 ms a frame at 1280).
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

# Eager runs before the capture, on the capture's stream, so that lazy initialisation (cuDNN's choice of
# algorithm, torch.compile) happens outside the graph.
WARMUP_RUNS = 3


def capture(run: Callable[[torch.Tensor], torch.Tensor], static_input: torch.Tensor
            ) -> Tuple["torch.cuda.CUDAGraph", torch.Tensor]:
    """Capture `run(static_input)` as a CUDA graph; returns (graph, static_output). To use it: copy a new input
    into `static_input`, `graph.replay()` on the stream that should run it, and read `static_output` (the next
    replay overwrites it). Call it without autograd (torch.no_grad, not inference_mode: the static input is
    written in place after the capture).

    The capture runs on a side stream that first waits for the caller's stream, and in "thread_local" mode: the
    pipeline captures while other threads keep launching work and allocating on the same GPU (the detector ahead
    of the pose network), which "global" mode would turn into a capture error. It neither synchronises the device
    nor empties the allocator's cache, as torch.cuda.graph does, so the other threads' work is not stalled."""
    device = static_input.device
    caller = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(caller)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            run(static_input)
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            static_output = run(static_input)
        finally:
            graph.capture_end()
    caller.wait_stream(side)
    return graph, static_output
