"""Stacked Hourglass: layout of the paper (stem, residual modules, 4x4 bottom, nearest upsampling, skip branches,
intermediate heatmaps remapped and added back), parameter names, parameter count, output of the last stack.

Structural checks run on the meta device; numeric checks use a narrow network (few features) so they are fast.
Paper GFLOPs are checked in test_model_zoo.py.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from posetrack_app.pose.models.hourglass import (
    BOTTOM, MODEL_SPECS, DOWN, HourglassArch, PreActResidual, StackedHourglass, build_hourglass,
)

RESIDUAL_PARTS = ("bn1", "conv1", "bn2", "conv2", "bn3", "conv3")
BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
PAPER_PARAMS_8_STACKS = 25.1e6


def build_on_meta(arch: HourglassArch, num_keypoints: int = 17) -> StackedHourglass:
    with torch.device("meta"):
        return build_hourglass(arch, num_keypoints)


def port_keys(num_stacks: int, depth: int = 4, blocks: int = 1):
    """State_dict keys of the common PyTorch port's HourglassNet (bearpaw/pytorch-pose), from its naming scheme."""
    def residual(prefix, with_skip_conv=False):
        keys = []
        for part in RESIDUAL_PARTS:
            tensors = ("weight", "bias") if part.startswith("conv") else BN_TENSORS
            keys += [f"{prefix}.{part}.{t}" for t in tensors]
        if with_skip_conv:
            keys += [f"{prefix}.downsample.0.weight", f"{prefix}.downsample.0.bias"]
        return keys

    keys = ["conv1.weight", "conv1.bias"] + [f"bn1.{t}" for t in BN_TENSORS]
    keys += residual("layer1.0", True) + residual("layer2.0") + residual("layer3.0", True)
    for stack in range(num_stacks):
        for level in range(depth):
            for branch in range(4 if level == 0 else 3):
                for block in range(blocks):
                    keys += residual(f"hg.{stack}.hg.{level}.{branch}.{block}")
    for stack in range(num_stacks):
        for block in range(blocks):
            keys += residual(f"res.{stack}.{block}")
    for stack in range(num_stacks):
        keys += [f"fc.{stack}.0.weight", f"fc.{stack}.0.bias"] + [f"fc.{stack}.1.{t}" for t in BN_TENSORS]
    keys += [f"score.{stack}.{t}" for stack in range(num_stacks) for t in ("weight", "bias")]
    keys += [f"fc_.{stack}.{t}" for stack in range(num_stacks - 1) for t in ("weight", "bias")]
    keys += [f"score_.{stack}.{t}" for stack in range(num_stacks - 1) for t in ("weight", "bias")]
    return keys


@pytest.mark.parametrize("arch", [
    HourglassArch(num_stacks=8),
    HourglassArch(num_stacks=2),
    HourglassArch(num_stacks=4, blocks_per_module=2),
])
def test_state_dict_keys_follow_the_pytorch_port(arch):
    model = build_on_meta(arch)
    assert sorted(model.state_dict()) == sorted(port_keys(arch.num_stacks, arch.depth, arch.blocks_per_module))


def test_eight_stacks_parameter_count_is_within_2_percent_of_the_paper():
    count = sum(p.numel() for p in build_on_meta(HourglassArch(num_stacks=8)).parameters())
    assert count == pytest.approx(PAPER_PARAMS_8_STACKS, rel=0.02)


def test_residual_module_is_pre_activation_bottleneck_with_half_width_inside():
    block = PreActResidual(128, 256)
    assert [block.conv1.kernel_size, block.conv2.kernel_size, block.conv3.kernel_size] == [(1, 1), (3, 3), (1, 1)]
    assert (block.conv1.out_channels, block.conv2.out_channels, block.conv3.out_channels) == (128, 128, 256)
    assert block.bn1.num_features == 128  # normalises the block's input: pre-activation
    assert isinstance(block.downsample[0], nn.Conv2d) and block.downsample[0].kernel_size == (1, 1)
    assert PreActResidual(256, 256).downsample is None


@pytest.mark.parametrize("input_hw, features_hw, bottom_hw", [
    ((256, 256), (64, 64), (4, 4)),
    ((256, 192), (64, 48), (4, 3)),
])
def test_stem_and_hourglass_resolutions(input_hw, features_hw, bottom_hw):
    model = build_on_meta(HourglassArch(num_stacks=2))
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    seen = {}

    def record(key, use_input=False):
        def hook(module, inputs, output):  # returns None: a forward hook's return value replaces the output
            seen.setdefault(key, tuple((inputs[0] if use_input else output).shape))
        return hook

    hourglass = model.hg[0]
    hooks = [
        hourglass.register_forward_hook(record("hourglass_in", use_input=True)),
        hourglass.hg[0][BOTTOM].register_forward_hook(record("bottom")),
        hourglass.hg[3][DOWN].register_forward_hook(record("first_pool")),
    ]
    with torch.device("meta"):
        heatmaps = model(torch.empty(1, 3, *input_hw))
    for hook in hooks:
        hook.remove()
    assert seen["hourglass_in"] == (1, 256, *features_hw)
    assert seen["first_pool"] == (1, 256, features_hw[0] // 2, features_hw[1] // 2)
    assert seen["bottom"] == (1, 256, *bottom_hw)
    assert tuple(heatmaps.shape) == (1, 17, *features_hw)


def _zero_residual_paths(hourglass):
    """Make every residual block of one hourglass an identity (zero its last conv)."""
    for module in hourglass.modules():
        if isinstance(module, PreActResidual):
            nn.init.zeros_(module.conv3.weight)
            nn.init.zeros_(module.conv3.bias)


def test_hourglass_with_identity_residuals_is_skip_plus_nearest_upsampled_pooled_input():
    # With identity residuals the hourglass computes x + up(pool(x)) + up(up(pool(pool(x)))) + ... (once per
    # level, plus the bottom path): this pins max pooling, nearest upsampling and the skip additions.
    model = build_hourglass(HourglassArch(num_stacks=1, num_features=8, depth=2), 5).eval()
    hourglass = model.hg[0]
    _zero_residual_paths(hourglass)
    x = torch.randn(1, 8, 16, 12)
    pool = nn.functional.max_pool2d
    up = lambda t: nn.functional.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    expected = x + up(pool(x, 2) + up(pool(pool(x, 2), 2)))
    with torch.no_grad():
        assert torch.allclose(hourglass(x), expected, atol=1e-6)


def _narrow(num_stacks):
    torch.manual_seed(0)
    return build_hourglass(HourglassArch(num_stacks=num_stacks, num_features=32), 5).eval()


def test_forward_returns_the_last_stacks_heatmaps():
    model = _narrow(3)
    scores = []
    hooks = [head.register_forward_hook(lambda m, i, o: scores.append(o) and None) for head in model.score]
    with torch.no_grad():
        heatmaps = model(torch.randn(2, 3, 128, 64))
    for hook in hooks:
        hook.remove()
    assert len(scores) == 3
    assert heatmaps.shape == (2, 5, 32, 16)
    assert torch.equal(heatmaps, scores[-1])
    assert not torch.allclose(scores[0], scores[-1])


@pytest.mark.parametrize("remap", ["fc_", "score_"])
def test_intermediate_features_and_heatmaps_are_added_back(remap):
    model = _narrow(2)
    crops = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        before = model(crops)
        nn.init.zeros_(getattr(model, remap)[0].weight)
        nn.init.zeros_(getattr(model, remap)[0].bias)
        after = model(crops)
    assert (before - after).abs().max() > 1e-4


def test_residual_after_hourglass_is_optional_and_parameter_free_when_off():
    with_res = build_on_meta(HourglassArch(num_stacks=2))
    without = build_on_meta(HourglassArch(num_stacks=2, residual_after_hourglass=False))
    assert not any(k.startswith("res.") for k in without.state_dict())
    removed = sum(p.numel() for p in with_res.res.parameters())
    assert sum(p.numel() for p in without.parameters()) == sum(p.numel() for p in with_res.parameters()) - removed


@pytest.mark.parametrize("name, num_stacks, input_hw", [
    ("hourglass_8s_256x256", 8, (256, 256)),
    ("hourglass_8s_256x192", 8, (256, 192)),
    ("hourglass_4s_256x192", 4, (256, 192)),
    ("hourglass_2s_256x192", 2, (256, 192)),
])
def test_registered_variants(name, num_stacks, input_hw):
    # Output shapes of every registered model are checked in test_model_zoo.py.
    spec = MODEL_SPECS[name]
    assert spec.name == name and spec.input_hw == input_hw
    with torch.device("meta"):
        model = spec.build(17)
    assert len(model.hg) == len(model.score) == num_stacks
