"""Stacked Hourglass network (Newell, Yang and Deng, ECCV 2016).

Shapes (B batch, K keypoints, F = 256 features, H x W network input, both divisible by 64):
    input      [B, 3, H, W]
    stem       [B, F, H/4, W/4]    7x7 stride-2 conv, residual 64->128, 2x2 max pool, residuals 128->128->F
    hourglass  [B, F, H/4, W/4]    4 levels of pool + residuals down to [H/64, W/64] (4x4 for a 256x256
                                   input), nearest x2 upsampling back up, plus a residual skip branch per level
    output     [B, K, H/4, W/4]    heatmaps of the last stack

Every stack predicts heatmaps; except in the last, the stack's features (1x1 conv) and its heatmaps (1x1 conv
back to F channels) are added to the stack's input, which feeds the next stack. Training supervises every
stack; top-down inference uses the last one, so forward returns only that.

The original implementation is Lua Torch; parameter names here follow the widely used PyTorch port
(bearpaw/pytorch-pose, models/hourglass.py: conv1, bn1, layer1..3, hg.S.hg.L.B.N, res, fc, score, fc_,
score_) so its checkpoints can be loaded strictly. In hg.S.hg.L.B: L = level, 0 innermost (lowest
resolution); B = branch: 0 skip, 1 after pooling, 2 before upsampling, 3 the bottom (level 0 only).

A variant is data: number of stacks, feature width, hourglass depth, residual blocks per module.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import ModelSpec

STEM_CHANNELS = 64


@dataclass(frozen=True)
class HourglassArch:
    """One Stacked Hourglass variant.

    num_stacks: hourglasses in sequence. num_features: channels inside every hourglass (F).
    depth: pooling levels per hourglass (4: H/4 -> H/64). blocks_per_module: residual blocks chained at
    every place the paper puts one residual module.
    residual_after_hourglass: the released code (and its PyTorch ports) runs one residual module on each
    hourglass's output before the 1x1 convs; the paper's text goes straight to the 1x1 convs. The HRNet paper's
    Hourglass GFLOPs (14.3 at 256x192, 19.1 at 256x256) count the network without it (docs/models.md).
    """
    num_stacks: int = 8
    num_features: int = 256
    depth: int = 4
    blocks_per_module: int = 1
    residual_after_hourglass: bool = True


class PreActResidual(nn.Module):
    """Pre-activation bottleneck residual module of the paper: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 with half
    the output channels inside; a 1x1 conv on the skip path when the channel count changes.

    [B, in_channels, h, w] -> [B, out_channels, h, w]
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid_channels = out_channels // 2
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity


def residual_module(in_channels: int, out_channels: int, num_blocks: int) -> nn.Sequential:
    """num_blocks residuals in a row; only the first changes the channel count."""
    blocks = [PreActResidual(in_channels, out_channels)]
    blocks += [PreActResidual(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


SKIP, DOWN, UP, BOTTOM = range(4)


class Hourglass(nn.Module):
    """One hourglass: [B, F, h, w] -> [B, F, h, w]; h and w divisible by 2 ** depth."""

    def __init__(self, num_features: int, depth: int, blocks_per_module: int):
        super().__init__()
        levels = []
        for level in range(depth):
            branch_count = 4 if level == 0 else 3
            levels.append(nn.ModuleList(
                residual_module(num_features, num_features, blocks_per_module) for _ in range(branch_count)))
        self.hg = nn.ModuleList(levels)

    def forward(self, x):
        skips: List[torch.Tensor] = []
        for level in reversed(range(len(self.hg))):  # outermost (highest resolution) first
            skips.append(self.hg[level][SKIP](x))
            x = self.hg[level][DOWN](F.max_pool2d(x, 2, stride=2))
        x = self.hg[0][BOTTOM](x)
        for level in range(len(self.hg)):  # innermost first, so skips pop in reverse order
            x = self.hg[level][UP](x)
            x = skips.pop() + F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x


class StackedHourglass(nn.Module):
    """[B, 3, H, W] -> heatmaps of the last stack [B, K, H/4, W/4]."""

    def __init__(self, arch: HourglassArch, num_keypoints: int):
        super().__init__()
        features, blocks = arch.num_features, arch.blocks_per_module
        half_features = features // 2
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = residual_module(STEM_CHANNELS, half_features, 1)
        self.maxpool = nn.MaxPool2d(2, stride=2)
        self.layer2 = residual_module(half_features, half_features, 1)
        self.layer3 = residual_module(half_features, features, 1)

        stacks = range(arch.num_stacks)
        self.hg = nn.ModuleList(Hourglass(features, arch.depth, blocks) for _ in stacks)
        self.res = nn.ModuleList(
            residual_module(features, features, blocks) if arch.residual_after_hourglass else nn.Identity()
            for _ in stacks)
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Conv2d(features, features, 1), nn.BatchNorm2d(features), nn.ReLU(inplace=True))
            for _ in stacks)
        self.score = nn.ModuleList(nn.Conv2d(features, num_keypoints, 1) for _ in stacks)
        # Remap features and heatmaps of every stack but the last and add them to the next stack's input.
        self.fc_ = nn.ModuleList(nn.Conv2d(features, features, 1) for _ in stacks[:-1])
        self.score_ = nn.ModuleList(nn.Conv2d(num_keypoints, features, 1) for _ in stacks[:-1])

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.maxpool(x)))
        last = len(self.hg) - 1
        for stack in range(last + 1):
            features = self.fc[stack](self.res[stack](self.hg[stack](x)))
            heatmaps = self.score[stack](features)
            if stack < last:
                x = x + self.fc_[stack](features) + self.score_[stack](heatmaps)
        return heatmaps


def build_hourglass(arch: HourglassArch, num_keypoints: int = 17) -> StackedHourglass:
    """Stacked Hourglass of the given variant, randomly initialised."""
    return StackedHourglass(arch, num_keypoints)


# name -> (variant, input (height, width)). 8 stacks is the paper's network; 256x192 is the COCO crop of the
# HRNet comparison, 256x256 the paper's MPII input. 2 and 4 stacks (one block per module, like the PyTorch
# port's hg_s2_b1 / hg_s4_b1 checkpoints) cost about 1/4 and 1/2 of the 8-stack network.
VARIANTS: Dict[str, Tuple[HourglassArch, Tuple[int, int]]] = {
    "hourglass_8s_256x256": (HourglassArch(num_stacks=8), (256, 256)),
    "hourglass_8s_256x192": (HourglassArch(num_stacks=8), (256, 192)),
    "hourglass_4s_256x192": (HourglassArch(num_stacks=4), (256, 192)),
    "hourglass_2s_256x192": (HourglassArch(num_stacks=2), (256, 192)),
}

MODEL_SPECS: Dict[str, ModelSpec] = {
    name: ModelSpec(name=name, build=partial(build_hourglass, arch), input_hw=input_hw)
    for name, (arch, input_hw) in VARIANTS.items()
}
