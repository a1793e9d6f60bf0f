"""Multiply-add counts of pose networks, counted by torch's FlopCounterMode (no hand-written formulas).

Counting runs on the meta device: no memory, no arithmetic, so even HRNet-W48 384x288 counts in well under a second.
"""
from __future__ import annotations

from math import prod
from typing import Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import build_model, get_model_spec

# The HRNet paper's "GFLOPs" are multiply-adds in units of 2^30 (its code divides by 1024^3).
PAPER_GIGA = 2 ** 30


def _conv_flops_at_output(x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, *args,
                          out_shape=None, **kwargs) -> int:
    """FLOPs (2 per multiply-add) of any convolution, the kernel applied once per output pixel."""
    return 2 * out_shape[0] * prod(w_shape) * prod(out_shape[2:])


def count_multiply_adds(model: torch.nn.Module, input_hw: Tuple[int, int], *,
                        transposed_at_output: bool = True) -> int:
    """Multiply-adds of one forward pass of a [1, 3, H, W] input. `model` may live on the meta device.

    transposed_at_output=True is the HRNet paper's convention (a transposed convolution counted once per *output*
    pixel, which reproduces its Table 1); False counts it once per *input* pixel, the arithmetic actually done.
    The two differ only for networks with transposed convolutions (SimpleBaseline).
    """
    device = next(model.parameters()).device
    mapping = {torch.ops.aten.convolution: _conv_flops_at_output} if transposed_at_output else {}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        model(torch.empty(1, 3, *input_hw, device=device))
    return counter.get_total_flops() // 2


def model_multiply_adds(name: str, num_keypoints: int = 17, *, transposed_at_output: bool = True) -> int:
    """Multiply-adds of one crop through the registered network `name`."""
    with torch.device("meta"):
        model = build_model(name, num_keypoints).eval()
    return count_multiply_adds(model, get_model_spec(name).input_hw, transposed_at_output=transposed_at_output)
