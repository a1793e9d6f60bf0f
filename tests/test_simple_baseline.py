"""SimpleBaseline (ResNet + 3 deconvolutions): official parameter names, parameter counts, shapes, layers.

Structural checks build the networks on the meta device (no memory, no arithmetic); one small real forward
pass checks the numbers flow. Paper GFLOPs are checked in test_model_zoo.py.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from posetrack_app.pose.models import simple_baseline
from posetrack_app.pose.models.simple_baseline import ARCHS, MODEL_SPECS, build_simple_baseline

BOTTLENECK_PARTS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")
BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def build_on_meta(depth: int, num_keypoints: int = 17) -> nn.Module:
    with torch.device("meta"):
        return build_simple_baseline(depth, num_keypoints)


def official_keys(blocks_per_stage, deconv_layers: int = 3):
    """The state_dict keys of the official pose_resnet.py, written out from its naming scheme (the scheme itself is
    checked against the official code's R-50 key list below)."""
    def conv(prefix):
        return [f"{prefix}.weight"]

    def bn(prefix):
        return [f"{prefix}.{t}" for t in BN_TENSORS]

    keys = conv("conv1") + bn("bn1")
    for stage, num_blocks in enumerate(blocks_per_stage, start=1):
        for block in range(num_blocks):
            prefix = f"layer{stage}.{block}"
            for part in BOTTLENECK_PARTS:
                keys += conv(f"{prefix}.{part}") if part.startswith("conv") else bn(f"{prefix}.{part}")
            if block == 0:  # every stage's first block changes width (and stride from stage 2 on)
                keys += conv(f"{prefix}.downsample.0") + bn(f"{prefix}.downsample.1")
    for index in range(deconv_layers):  # [ConvTranspose2d, BatchNorm2d, ReLU] per layer
        keys += conv(f"deconv_layers.{3 * index}") + bn(f"deconv_layers.{3 * index + 1}")
    keys += ["final_layer.weight", "final_layer.bias"]
    return keys


@pytest.mark.parametrize("depth, blocks_per_stage", [
    (50, (3, 4, 6, 3)),
    (101, (3, 4, 23, 3)),
    (152, (3, 8, 36, 3)),
])
def test_state_dict_keys_are_the_official_ones(depth, blocks_per_stage):
    model = build_on_meta(depth)
    expected = official_keys(blocks_per_stage)
    assert list(model.state_dict()) == expected


def test_written_out_scheme_and_our_r50_are_the_official_codes_r50():
    from state_dict_fixture import keys

    expected = keys("official", "resnet50")
    assert official_keys((3, 4, 6, 3)) == list(expected)
    assert {k: list(v.shape) for k, v in build_on_meta(50).state_dict().items()} == expected


# (depth, expected parameters with 17 keypoints, relative tolerance). are exact counts of the
# official network; the paper's table rounds R-101 to 53.0M.
PARAMETER_COUNTS = [
    (50, 33_999_697, 0.0),
    (152, 68_635_473, 0.0),
    (101, 53.0e6, 0.001),
]


@pytest.mark.parametrize("depth, expected, rel_tol", PARAMETER_COUNTS)
def test_parameter_count(depth, expected, rel_tol):
    count = sum(p.numel() for p in build_on_meta(depth).parameters())
    assert count == pytest.approx(expected, rel=rel_tol, abs=0)


def test_keypoint_count_only_changes_the_final_layer():
    with_17 = build_on_meta(50, 17).state_dict()
    with_15 = build_on_meta(50, 15).state_dict()
    assert list(with_17) == list(with_15)
    differing = [k for k in with_17 if with_17[k].shape != with_15[k].shape]
    assert differing == ["final_layer.weight", "final_layer.bias"]
    assert with_15["final_layer.weight"].shape == (15, 256, 1, 1)


def test_deconvolution_head_layout():
    head = build_on_meta(50).deconv_layers
    assert [type(m) for m in head] == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU] * 3
    in_channels = [2048, 256, 256]
    for index, deconv in enumerate(head[0::3]):
        assert (deconv.in_channels, deconv.out_channels) == (in_channels[index], 256)
        assert deconv.kernel_size == (4, 4)
        assert deconv.stride == (2, 2)
        assert deconv.padding == (1, 1)
        assert deconv.output_padding == (0, 0)
        assert deconv.bias is None
    final = build_on_meta(50).final_layer
    assert final.kernel_size == (1, 1) and final.bias is not None


@pytest.mark.parametrize("input_hw, heatmap_hw", [((256, 192), (64, 48)), ((384, 288), (96, 72))])
def test_input_maps_to_quarter_size_heatmaps(input_hw, heatmap_hw):
    # Every registered name's output shape is checked in test_model_zoo.py.
    with torch.device("meta"):
        heatmaps = build_simple_baseline(50, 17)(torch.empty(2, 3, *input_hw))
    assert tuple(heatmaps.shape) == (2, 17, *heatmap_hw)


def test_real_forward_is_finite_and_batch_independent():
    torch.manual_seed(0)
    model = build_simple_baseline(50, 17).eval()
    crops = torch.randn(2, 3, 128, 96)  # any size divisible by 32; small to keep the test fast
    with torch.no_grad():
        batched = model(crops)
        single = model(crops[1:])
    assert batched.shape == (2, 17, 32, 24)
    assert torch.isfinite(batched).all()
    # Eval-mode BN: a crop's heatmaps do not depend on the other crops of the batch.
    assert torch.allclose(batched[1:], single, atol=1e-5, rtol=1e-4)


def test_unknown_depth_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"50, 101, 152"):
        build_simple_baseline(34)


def test_every_arch_has_both_input_sizes_registered():
    expected = {f"simple_baseline_r{d}_{h}x{w}" for d in ARCHS for h, w in simple_baseline.INPUT_SIZES_HW}
    assert set(MODEL_SPECS) == expected
    assert all(name == spec.name for name, spec in MODEL_SPECS.items())
