"""HRNet architecture: exact parameter counts, FLOPs against the paper, official parameter names, shapes."""
from __future__ import annotations

import pytest
import torch

from posetrack_app.pose.models import build_model, get_model_spec, model_names
from posetrack_app.pose.models.flops import PAPER_GIGA, model_multiply_adds
from posetrack_app.pose.models.hrnet import HRNet, HRNetSpec, StageSpec

# The HRNet paper, Table 1 (COCO val): parameters for K = 17.
PAPER_PARAMS = {"hrnet_w32_256x192": 28_536_113, "hrnet_w48_256x192": 63_595_745,
                "hrnet_w32_384x288": 28_536_113, "hrnet_w48_384x288": 63_595_745}
# The paper's "GFLOPs": multiply-adds of the convolutions divided by 2**30 (the reference code's model summary
# divides by 1024**3), per crop.
PAPER_GFLOPS = {"hrnet_w32_256x192": 7.1, "hrnet_w48_256x192": 14.6,
                "hrnet_w32_384x288": 16.0, "hrnet_w48_384x288": 32.9}
FLOPS_RELATIVE_TOLERANCE = 0.03


def tiny_hrnet(num_keypoints: int = 17) -> HRNet:
    """Same structure, minimal widths and depths: fast forward passes for tests."""
    spec = HRNetSpec(name="tiny", stem_width=8, stage1_blocks=1, stage1_width=4, stages=(
        StageSpec(1, 1, (4, 8)), StageSpec(1, 1, (4, 8, 16)), StageSpec(2, 1, (4, 8, 16, 32))))
    return HRNet(spec, num_keypoints)


def test_registry_names():
    assert {"hrnet_w32_256x192", "hrnet_w32_384x288", "hrnet_w48_256x192", "hrnet_w48_384x288"} <= set(model_names())
    assert get_model_spec("hrnet_w48_384x288").input_hw == (384, 288)
    assert get_model_spec("hrnet_w32_256x192").input_hw == (256, 192)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_count_exact(name):
    with torch.device("meta"):
        model = build_model(name, 17)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[name]


@pytest.mark.parametrize("name", sorted(PAPER_GFLOPS))
def test_flops_within_3_percent_of_paper(name):
    gmacs_binary = model_multiply_adds(name) / PAPER_GIGA
    assert abs(gmacs_binary - PAPER_GFLOPS[name]) / PAPER_GFLOPS[name] < FLOPS_RELATIVE_TOLERANCE


@pytest.mark.parametrize("num_keypoints", [17, 15])
def test_keypoint_count_sets_final_layer(num_keypoints):
    with torch.device("meta"):
        model = build_model("hrnet_w32_256x192", num_keypoints)
    assert tuple(model.final_layer.weight.shape) == (num_keypoints, 32, 1, 1)
    assert tuple(model.final_layer.bias.shape) == (num_keypoints,)


# Keys of the reference implementation's state_dict (from its module structure), one per kind of layer.
OFFICIAL_KEYS = [
    "conv1.weight", "bn1.running_var", "conv2.weight", "bn2.num_batches_tracked",
    "layer1.0.conv3.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean", "layer1.3.bn3.bias",
    "transition1.0.0.weight", "transition1.0.1.weight",          # 256 -> C re-width (3x3 conv, BN)
    "transition1.1.0.0.weight", "transition1.1.0.1.bias",        # new branch: Sequential(Sequential(conv, BN, ReLU))
    "transition2.2.0.0.weight", "transition3.3.0.0.weight",
    "stage2.0.branches.0.3.conv2.weight", "stage2.0.branches.1.0.bn1.weight",
    "stage2.0.fuse_layers.0.1.0.weight", "stage2.0.fuse_layers.0.1.1.running_var",   # up: 1x1 conv, BN, upsample
    "stage2.0.fuse_layers.1.0.0.0.weight", "stage2.0.fuse_layers.1.0.0.1.weight",     # down: strided conv, BN
    "stage3.3.fuse_layers.2.0.0.0.weight", "stage3.3.fuse_layers.2.0.1.0.weight",     # two steps down
    "stage4.0.fuse_layers.3.0.2.1.weight", "stage4.2.fuse_layers.0.3.0.weight",
    "stage4.2.branches.3.3.bn2.running_mean",
    "final_layer.weight", "final_layer.bias",
]


@pytest.mark.parametrize("name,width", [("hrnet_w32_256x192", 32), ("hrnet_w48_384x288", 48)])
def test_official_parameter_names_and_shapes(name, width):
    with torch.device("meta"):
        state = build_model(name, 17).state_dict()
    missing = [k for k in OFFICIAL_KEYS if k not in state]
    assert missing == []
    # Identity positions of the reference code hold no parameters, and the last module fuses into branch 0 only.
    assert not any(k.startswith("transition2.0.") or k.startswith("transition2.1.") for k in state)
    assert not any(k.startswith("stage2.0.fuse_layers.0.0.") for k in state)
    assert not any(k.startswith("stage4.2.fuse_layers.1.") for k in state)
    assert any(k.startswith("stage4.1.fuse_layers.3.") for k in state)
    assert tuple(state["transition1.0.0.weight"].shape) == (width, 256, 3, 3)
    assert tuple(state["transition3.3.0.0.weight"].shape) == (8 * width, 4 * width, 3, 3)
    assert tuple(state["stage2.0.fuse_layers.0.1.0.weight"].shape) == (width, 2 * width, 1, 1)


@pytest.mark.parametrize("batch,input_hw", [(1, (256, 192)), (3, (128, 96)), (2, (384, 288))])
def test_heatmap_shape_is_quarter_resolution(batch, input_hw):
    torch.manual_seed(0)
    model = tiny_hrnet(17).eval()
    with torch.no_grad():
        heatmaps = model(torch.randn((batch, 3) + input_hw))
    assert tuple(heatmaps.shape) == (batch, 17, input_hw[0] // 4, input_hw[1] // 4)
    assert torch.isfinite(heatmaps).all()
