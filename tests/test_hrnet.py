"""HRNet architecture against outside oracles: parameter names, shapes and counts of the official code
(tests/fixtures/state_dict_keys.json.gz), the paper's printed parameter counts and FLOPs; heatmap shapes."""
from __future__ import annotations

import pytest
import torch

from posetrack_app.pose.models import build_model, get_model_spec, model_names
from posetrack_app.pose.models.flops import PAPER_GIGA, model_multiply_adds
from posetrack_app.pose.models.hrnet import HRNet, HRNetSpec, StageSpec
from state_dict_fixture import keys, official_parameter_count

# The HRNet paper, Table 1 (COCO val), prints parameters in millions, one decimal, for K = 17; the official code
# (fixture) gives the exact count.
PAPER_PARAMS_M = {"hrnet_w32_256x192": 28.5, "hrnet_w48_256x192": 63.6, "hrnet_w32_384x288": 28.5,
                  "hrnet_w48_384x288": 63.6}
OFFICIAL_NETWORK = {"hrnet_w32_256x192": "hrnet_w32", "hrnet_w48_256x192": "hrnet_w48",
                    "hrnet_w32_384x288": "hrnet_w32", "hrnet_w48_384x288": "hrnet_w48"}
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


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_parameter_count_is_the_official_codes_and_rounds_to_the_papers(name):
    with torch.device("meta"):
        model = build_model(name, 17)
    count = sum(p.numel() for p in model.parameters())
    assert count == official_parameter_count(OFFICIAL_NETWORK[name])
    assert round(count / 1e6, 1) == PAPER_PARAMS_M[name]


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


@pytest.mark.parametrize("name", sorted(OFFICIAL_NETWORK))
def test_state_dict_is_the_official_codes_key_for_key(name):
    """Names, shapes and order of every tensor equal those of the official PoseHighResolutionNet (fixture)."""
    with torch.device("meta"):
        state = build_model(name, 17).state_dict()
    expected = keys("official", OFFICIAL_NETWORK[name])
    assert list(state) == list(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected


@pytest.mark.parametrize("batch,input_hw", [(1, (256, 192)), (3, (128, 96)), (2, (384, 288))])
def test_heatmap_shape_is_quarter_resolution(batch, input_hw):
    torch.manual_seed(0)
    model = tiny_hrnet(17).eval()
    with torch.no_grad():
        heatmaps = model(torch.randn((batch, 3) + input_hw))
    assert tuple(heatmaps.shape) == (batch, 17, input_hw[0] // 4, input_hw[1] // 4)
    assert torch.isfinite(heatmaps).all()
