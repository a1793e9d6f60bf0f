"""HRNet (Sun et al., CVPR 2019) for top-down pose estimation, with the architecture held as data.

Shape glossary:
    B  crops in a batch
    K  keypoints (heatmap channels)
    H x W  network input in pixels (256x192 or 384x288); heatmaps are H/4 x W/4

    HRNet(spec, K): float [B, 3, H, W] (RGB, ImageNet-normalised) -> heatmaps float [B, K, H/4, W/4]

Structure (all sizes from `HRNetSpec`):
    stem      two 3x3 stride-2 convs (64 channels) -> 1/4 resolution
    layer1    4 bottleneck units of width 64 (256 channels out)
    stage2-4  1, 4, 3 exchange modules; each module runs 4 basic residual units per branch, then fuses
              every branch into every other: higher-to-lower by strided 3x3 convs, lower-to-higher by a 1x1
              conv and nearest upsampling; the last module of stage 4 fuses into the highest-resolution branch
    final     1x1 conv from the highest-resolution branch to K heatmaps

Module and parameter names are those of the official implementation (conv1, bn1, layer1.0.downsample.0,
transition1.1.0.0, stage2.0.branches.0.0.conv1, stage2.0.fuse_layers.0.1.0, final_layer, ...) so its released
checkpoints load with strict=True. Positions the official code fills with `None` (identity transitions, the
diagonal of the fuse matrix) hold parameterless nn.Identity here, which keeps every index and key the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from . import ModelSpec

# The official code's BatchNorm momentum; it only matters for training, kept so that a fine-tune here behaves
# like one there.
BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class StageSpec:
    # Exchange modules in the stage.
    num_modules: int
    # Residual units per branch inside each module.
    num_blocks: int
    # Channels of each branch, highest resolution first; branch i runs at 1/(4 * 2**i) of the input.
    widths: Tuple[int, ...]


@dataclass(frozen=True)
class HRNetSpec:
    name: str
    stem_width: int = 64
    # Stage 1: bottleneck units of `stage1_width` (output 4x that).
    stage1_blocks: int = 4
    stage1_width: int = 64
    stages: Tuple[StageSpec, ...] = ()
    final_conv_kernel: int = 1


def _hrnet_spec(name: str, c: int) -> HRNetSpec:
    """The paper's family: stage k has k branches of widths c, 2c, 4c, 8c."""
    return HRNetSpec(
        name=name,
        stages=(
            StageSpec(num_modules=1, num_blocks=4, widths=(c, 2 * c)),
            StageSpec(num_modules=4, num_blocks=4, widths=(c, 2 * c, 4 * c)),
            StageSpec(num_modules=3, num_blocks=4, widths=(c, 2 * c, 4 * c, 8 * c)),
        ),
    )


HRNET_W32 = _hrnet_spec("hrnet_w32", 32)
HRNET_W48 = _hrnet_spec("hrnet_w48", 48)
VARIANTS: Dict[str, HRNetSpec] = {s.name: s for s in (HRNET_W32, HRNET_W48)}


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    """Conv (no bias) + BN [+ ReLU] as an indexed Sequential: keys <prefix>.0.weight, <prefix>.1.running_mean."""
    layers: List[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut (channels unchanged in HRNet's branches)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a projection shortcut where the channels change."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _residual_layer(block, in_channels: int, width: int, num_blocks: int) -> nn.Sequential:
    """`num_blocks` units; the first projects the shortcut (1x1 conv + BN, key `.0.downsample`) when needed."""
    out_channels = width * block.expansion
    downsample = None
    if in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        )
    units = [block(in_channels, width, downsample)]
    units += [block(out_channels, width) for _ in range(1, num_blocks)]
    return nn.Sequential(*units)


def _fuse_path(source: int, target: int, widths: Sequence[int]) -> nn.Module:
    """Resample branch `source` into branch `target`'s resolution and width.

    Lower resolution to higher (source > target): 1x1 conv + BN, then nearest upsampling by 2**(source-target).
    Higher to lower: (target - source) strided 3x3 convs; all but the last keep the source width and end in ReLU.
    """
    if source == target:
        return nn.Identity()
    if source > target:
        return nn.Sequential(
            nn.Conv2d(widths[source], widths[target], 1, 1, 0, bias=False),
            nn.BatchNorm2d(widths[target]),
            nn.Upsample(scale_factor=2 ** (source - target), mode="nearest"),
        )
    steps = target - source
    return nn.Sequential(*[
        _conv_bn(widths[source], widths[target] if k == steps - 1 else widths[source], 3, 2, relu=k < steps - 1)
        for k in range(steps)
    ])


class HighResolutionModule(nn.Module):
    """One exchange unit: parallel residual branches, then all-to-all fusion (sum + ReLU per output branch).

    num_outputs: how many output branches are fused (all of them, or only the first in the last module).
    """

    def __init__(self, widths: Sequence[int], num_blocks: int, num_outputs: int):
        super().__init__()
        self.branches = nn.ModuleList(
            [_residual_layer(BasicBlock, w, w, num_blocks) for w in widths]
        )
        self.fuse_layers = nn.ModuleList([
            nn.ModuleList([_fuse_path(j, i, widths) for j in range(len(widths))])
            for i in range(num_outputs)
        ]) if len(widths) > 1 else None
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for paths in self.fuse_layers:
            total = paths[0](xs[0])
            for path, x in zip(paths[1:], xs[1:]):
                total = total + path(x)
            fused.append(self.relu(total))
        return fused


def _transition(previous: Sequence[int], current: Sequence[int]) -> nn.ModuleList:
    """Between stages: adapt existing branches whose width changes (3x3 conv), and create each new branch by
    strided 3x3 convs from the lowest-resolution existing branch (key `.<i>.0.0` for the first conv)."""
    layers: List[nn.Module] = []
    for i, width in enumerate(current):
        if i < len(previous):
            layers.append(nn.Identity() if previous[i] == width else _conv_bn(previous[i], width, 3, 1, relu=True))
        else:
            steps = i + 1 - len(previous)
            layers.append(nn.Sequential(*[
                _conv_bn(previous[-1], width if k == steps - 1 else previous[-1], 3, 2, relu=True)
                for k in range(steps)
            ]))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """See the module docstring. `spec` fixes widths and depths; `num_keypoints` the heatmap channels."""

    def __init__(self, spec: HRNetSpec, num_keypoints: int = 17):
        super().__init__()
        if len(spec.stages) != 3:
            raise ValueError(f"{spec.name}: HRNet has stages 2, 3 and 4, got {len(spec.stages)} stage specs")
        self.spec = spec
        self.num_keypoints = num_keypoints
        stem = spec.stem_width
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _residual_layer(Bottleneck, stem, spec.stage1_width, spec.stage1_blocks)

        widths: Tuple[int, ...] = (spec.stage1_width * Bottleneck.expansion,)
        for index, stage in enumerate(spec.stages, start=2):
            setattr(self, f"transition{index - 1}", _transition(widths, stage.widths))
            is_last = index == len(spec.stages) + 1
            modules = [
                HighResolutionModule(
                    stage.widths, stage.num_blocks,
                    num_outputs=1 if (is_last and m == stage.num_modules - 1) else len(stage.widths),
                )
                for m in range(stage.num_modules)
            ]
            setattr(self, f"stage{index}", nn.Sequential(*modules))
            widths = stage.widths

        kernel = spec.final_conv_kernel
        self.final_layer = nn.Conv2d(widths[0], num_keypoints, kernel, 1, kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for index in range(2, len(self.spec.stages) + 2):
            transition = getattr(self, f"transition{index - 1}")
            # Existing branches pass through (or get re-widthed); new branches grow from the lowest resolution.
            xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
            for module in getattr(self, f"stage{index}"):
                xs = module(xs)
        return self.final_layer(xs[0])


def build_hrnet(variant: str, num_keypoints: int = 17) -> HRNet:
    return HRNet(VARIANTS[variant], num_keypoints)


def _model_spec(variant: str, input_hw: Tuple[int, int]) -> ModelSpec:
    name = f"{variant}_{input_hw[0]}x{input_hw[1]}"
    return ModelSpec(name=name, build=lambda k, _v=variant: build_hrnet(_v, k), input_hw=input_hw)


MODEL_SPECS: Dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _model_spec("hrnet_w32", (256, 192)),
        _model_spec("hrnet_w32", (384, 288)),
        _model_spec("hrnet_w48", (256, 192)),
        _model_spec("hrnet_w48", (384, 288)),
    )
}
