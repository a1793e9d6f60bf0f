"""SimpleBaseline (Xiao et al., ECCV 2018): a ResNet backbone followed by three deconvolution layers.

Shapes (B batch, K keypoints, H x W network input, both divisible by 32):
    input    [B, 3, H, W]          normalised RGB crop
    layer4   [B, 2048, H/32, W/32]
    deconvs  [B, 256, H/4, W/4]    three x2 transposed convolutions (4x4, stride 2, padding 1)
    output   [B, K, H/4, W/4]      heatmaps (1x1 convolution)

Parameter names follow the official implementation (pose_resnet.py of microsoft/human-pose-estimation.pytorch,
also shipped in the HRNet repository), so its released checkpoints (pose_resnet_50_256x192.pth, ...) load with
strict=True: conv1, bn1, layer1..layer4 with torchvision-style bottlenecks (conv1/bn1/conv2/bn2/conv3/bn3,
downsample.0 conv, downsample.1 BN), deconv_layers.{0,1,3,4,6,7} (transposed conv, BN) and final_layer.

A variant is data: the number of bottlenecks per ResNet stage and the deconvolution widths.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Dict, Tuple

from torch import nn

from . import ModelSpec

STEM_CHANNELS = 64
BOTTLENECK_EXPANSION = 4
# Bottleneck width (before expansion) of ResNet stages 1..4; stages 2..4 halve the resolution.
STAGE_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class SimpleBaselineArch:
    """One SimpleBaseline variant. blocks_per_stage: bottlenecks in ResNet stages 1..4."""
    blocks_per_stage: Tuple[int, int, int, int]
    deconv_channels: Tuple[int, ...] = (256, 256, 256)
    deconv_kernel: int = 4


ARCHS: Dict[int, SimpleBaselineArch] = {
    50: SimpleBaselineArch(blocks_per_stage=(3, 4, 6, 3)),
    101: SimpleBaselineArch(blocks_per_stage=(3, 4, 23, 3)),
    152: SimpleBaselineArch(blocks_per_stage=(3, 8, 36, 3)),
}

INPUT_SIZES_HW: Tuple[Tuple[int, int], ...] = ((256, 192), (384, 288))


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv): 1x1 -> 3x3 -> 1x1 (x4 channels), post-activation.

    [B, in_channels, h, w] -> [B, 4 * width, h / stride, w / stride]
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _deconv_padding(kernel: int) -> Tuple[int, int]:
    """(padding, output_padding) that make a stride-2 transposed conv exactly double the size."""
    paddings = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
    if kernel not in paddings:
        raise ValueError(f"deconvolution kernel must be one of {sorted(paddings)}, got {kernel}")
    return paddings[kernel]


class PoseResNet(nn.Module):
    """SimpleBaseline network: [B, 3, H, W] -> heatmaps [B, K, H/4, W/4]."""

    def __init__(self, arch: SimpleBaselineArch, num_keypoints: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = STEM_CHANNELS
        for stage_index, (width, num_blocks) in enumerate(zip(STAGE_WIDTHS, arch.blocks_per_stage)):
            stride = 1 if stage_index == 0 else 2
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(Bottleneck(channels, width, stride if block_index == 0 else 1))
                channels = width * BOTTLENECK_EXPANSION
            setattr(self, f"layer{stage_index + 1}", nn.Sequential(*blocks))

        padding, output_padding = _deconv_padding(arch.deconv_kernel)
        deconv_layers = []
        for out_channels in arch.deconv_channels:
            deconv_layers += [
                nn.ConvTranspose2d(channels, out_channels, arch.deconv_kernel, stride=2, padding=padding,
                                   output_padding=output_padding, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.deconv_layers = nn.Sequential(*deconv_layers)
        self.final_layer = nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


def build_simple_baseline(depth: int, num_keypoints: int = 17) -> PoseResNet:
    """SimpleBaseline with a ResNet-`depth` backbone (50, 101 or 152), randomly initialised."""
    if depth not in ARCHS:
        raise ValueError(f"SimpleBaseline ResNet depth must be one of {sorted(ARCHS)}, got {depth}")
    return PoseResNet(ARCHS[depth], num_keypoints)


MODEL_SPECS: Dict[str, ModelSpec] = {
    f"simple_baseline_r{depth}_{height}x{width}": ModelSpec(
        name=f"simple_baseline_r{depth}_{height}x{width}",
        build=partial(build_simple_baseline, depth),
        input_hw=(height, width),
    )
    for depth in ARCHS
    for height, width in INPUT_SIZES_HW
}
