"""Cross-model checks: the HRNet paper's Table 1 (parameters, GFLOPs), the registry, config presets, and that
SimpleBaseline / Hourglass go through the same checkpoint loader, ONNX export and runtime as HRNet.

GFLOPs convention of the paper (reproduced here for all its rows, HRNet included): multiply-adds of the
convolutions of one forward pass at batch 1, a transposed convolution counted at its *output* resolution (as if
it were the stride-1 convolution of a zero-upsampled input), in units of 2**30. The counts come from torch's
FlopCounterMode (2 per multiply-add, so halved) on the meta device: no memory, no arithmetic.

`python tests/test_model_zoo.py` prints the table of docs/models.md from the same measurements.
"""
from __future__ import annotations

import functools
from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from posetrack_app.config import CONFIG_DIR, load_config
from posetrack_app.pose.models import build_model, get_model_spec, hourglass, model_names, simple_baseline
from posetrack_app.pose.models.flops import PAPER_GIGA, count_multiply_adds

# Ours: SimpleBaseline and Hourglass variants registered by this project.
OUR_MODELS = tuple(sorted({**simple_baseline.MODEL_SPECS, **hourglass.MODEL_SPECS}))


@functools.lru_cache(maxsize=None)
def meta_model(name: str, num_keypoints: int = 17):
    """Shared, read-only: meta-device networks have no values to change, and eval-mode forwards change nothing."""
    with torch.device("meta"):
        return build_model(name, num_keypoints).eval()


def measure(name: str) -> Dict[str, float]:
    spec = get_model_spec(name)
    model = meta_model(name)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "paper_gflops": count_multiply_adds(model, spec.input_hw) / PAPER_GIGA,
        "gmacs": count_multiply_adds(model, spec.input_hw, transposed_at_output=False) / 1e9,
    }


# HRNet paper, Table 1 (COCO val2017; 8-stage Hourglass from Newell et al.). (model, #params, GFLOPs, AP).
# The 8-stage Hourglass row's GFLOPs are checked separately below.
PAPER_TABLE_1 = [
    ("hourglass_8s_256x192", 25.1e6, 14.3, 66.9),
    ("simple_baseline_r50_256x192", 34.0e6, 8.90, 70.4),
    ("simple_baseline_r101_256x192", 53.0e6, 12.4, 71.4),
    ("simple_baseline_r152_256x192", 68.6e6, 15.7, 72.0),
    ("hrnet_w32_256x192", 28.5e6, 7.10, 74.4),
    ("hrnet_w48_256x192", 63.6e6, 14.6, 75.1),
    ("simple_baseline_r152_384x288", 68.6e6, 35.6, 74.3),
    ("hrnet_w32_384x288", 28.5e6, 16.0, 75.8),
    ("hrnet_w48_384x288", 63.6e6, 32.9, 76.3),
]
PARAMS_REL_TOL = 0.02
GFLOPS_REL_TOL = 0.03


@pytest.mark.parametrize("name, paper_params, paper_gflops, paper_ap", PAPER_TABLE_1)
def test_parameters_match_paper_table_1(name, paper_params, paper_gflops, paper_ap):
    params = sum(p.numel() for p in meta_model(name).parameters())
    assert params == pytest.approx(paper_params, rel=PARAMS_REL_TOL)


@pytest.mark.parametrize("name, paper_params, paper_gflops, paper_ap",
                         [row for row in PAPER_TABLE_1 if not row[0].startswith("hourglass")])
def test_gflops_match_paper_table_1(name, paper_params, paper_gflops, paper_ap):
    model = meta_model(name)
    gflops = count_multiply_adds(model, get_model_spec(name).input_hw) / PAPER_GIGA
    assert gflops == pytest.approx(paper_gflops, rel=GFLOPS_REL_TOL)


# The Hourglass GFLOPs of the HRNet paper (Table 1: 14.3 at 256x192; Table 4: 19.1 at 256x256) are those of the
# 8-stack network *without* the residual module the released code runs after every hourglass (the paper's text
# omits it); with it (the released network, ~25.4M parameters) the count is larger by one 256-channel residual
# module per stack at H/4 x W/4.
@functools.lru_cache(maxsize=None)
def eight_stack_hourglass_macs(residual_after_hourglass: bool, input_hw: Tuple[int, int]) -> int:
    arch = hourglass.HourglassArch(num_stacks=8, residual_after_hourglass=residual_after_hourglass)
    with torch.device("meta"):
        return count_multiply_adds(hourglass.build_hourglass(arch), input_hw)


@pytest.mark.parametrize("input_hw, paper_gflops", [((256, 192), 14.3), ((256, 256), 19.1)])
def test_hourglass_paper_gflops_are_the_network_without_the_post_hourglass_residual(input_hw, paper_gflops):
    gflops = eight_stack_hourglass_macs(False, input_hw) / PAPER_GIGA
    assert gflops == pytest.approx(paper_gflops, rel=GFLOPS_REL_TOL)


def test_released_hourglass_costs_one_residual_module_per_stack_more():
    input_hw = (256, 192)
    heatmap_pixels = (input_hw[0] // 4) * (input_hw[1] // 4)
    residual_macs_per_pixel = 256 * 128 + 128 * 128 * 9 + 128 * 256  # 1x1 in, 3x3, 1x1 out
    difference = eight_stack_hourglass_macs(True, input_hw) - eight_stack_hourglass_macs(False, input_hw)
    assert difference == 8 * residual_macs_per_pixel * heatmap_pixels


def test_transposed_convolutions_are_the_only_convention_difference():
    # Hourglass has no transposed convolution: both conventions agree; SimpleBaseline's three deconvolutions
    # (kernel 4, stride 2) cost 4x more when counted at their output.
    hg = meta_model("hourglass_2s_256x192")
    assert count_multiply_adds(hg, (256, 192)) == count_multiply_adds(hg, (256, 192), transposed_at_output=False)
    sb = meta_model("simple_baseline_r50_256x192")
    deconv_at_input = sum(2048 * 256 * 16 * 48 if i == 0 else 256 * 256 * 16 * 48 * 4 ** i for i in range(3))
    difference = count_multiply_adds(sb, (256, 192)) - count_multiply_adds(sb, (256, 192), transposed_at_output=False)
    assert difference == 3 * deconv_at_input


@pytest.mark.parametrize("name", OUR_MODELS)
def test_registry_builds_every_model_by_name(name):
    assert name in model_names()
    spec = get_model_spec(name)
    assert spec.name == name
    height, width = spec.input_hw
    with torch.device("meta"):
        heatmaps = build_model(name, 15)(torch.empty(1, 3, height, width))
    assert tuple(heatmaps.shape) == (1, 15, height // 4, width // 4)


@pytest.mark.parametrize("name", OUR_MODELS)
def test_every_model_has_a_config_preset(name):
    cfg = load_config(str(CONFIG_DIR / f"{name}.yaml"))
    assert cfg.pose.model == name
    assert cfg.pose.model in model_names()


# ---- Through the HRNet engine's pieces: checkpoint loader, ONNX export, runtime ---------------------------------

# One registered model per family; the other variants differ only in block counts and input size, and their
# parameter names are pinned in test_simple_baseline.py / test_hourglass.py.
FAMILY_REPRESENTATIVES = ("simple_baseline_r50_256x192", "hourglass_2s_256x192")


def random_network(name: str, num_keypoints: int = 17, seed: int = 0) -> torch.nn.Module:
    """A registered network in eval mode with random weights *and* random BatchNorm statistics, so that a
    checkpoint or export that dropped or mixed up any tensor changes the output."""
    torch.manual_seed(seed)
    model = build_model(name, num_keypoints)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.1)
    return model.eval()


# How a released checkpoint may be laid out: a bare state_dict, DataParallel's `module.` prefix, a training
# snapshot {'state_dict': ...}.
def _bare(state):
    return state


def _dataparallel(state):
    return {f"module.{k}": v for k, v in state.items()}


def _snapshot(state):
    return {"state_dict": state, "epoch": torch.tensor(140)}


@pytest.mark.parametrize("name, layout", [
    ("simple_baseline_r50_256x192", _dataparallel),
    ("hourglass_2s_256x192", _bare),
    ("hourglass_2s_256x192", _snapshot),
])
def test_official_format_checkpoint_loads_strictly_through_the_loader(tmp_path, name, layout):
    from posetrack_app.pose.checkpoint import load_pose_network

    original = random_network(name, seed=1)
    path = tmp_path / f"{name}.pth"
    torch.save(layout(original.state_dict()), path)
    loaded = load_pose_network(name, path, num_keypoints=17)
    assert not loaded.training
    original_state, loaded_state = original.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(original_state)
    # Every tensor, BatchNorm statistics included, arrives unchanged: the outputs are then the same.
    assert all(torch.equal(loaded_state[k], original_state[k]) for k in original_state)


# (checkpoint's model, its keypoints, configured model, fragments the error must contain). Shapes are all the
# loader reads before it refuses, so these run on the meta device.
MISMATCHES = [
    ("simple_baseline_r50_256x192", 15, "simple_baseline_r50_256x192",
     ["simple_baseline_r50_256x192", "looks like SimpleBaseline ResNet-50 with 15 keypoints",
      "It predicts 15 keypoints, the config expects 17", "final_layer.weight"]),
    ("simple_baseline_r50_256x192", 17, "simple_baseline_r101_256x192",
     ["simple_baseline_r101_256x192", "looks like SimpleBaseline ResNet-50 with 17 keypoints",
      "Set pose.model to a simple_baseline_r50_* model", "missing keys", "layer3.6.conv1.weight"]),
    ("hourglass_2s_256x192", 16, "hourglass_2s_256x192",
     ["hourglass_2s_256x192", "looks like Stacked Hourglass with 2 stacks and 16 keypoints",
      "It predicts 16 keypoints, the config expects 17",
      "score.0.weight: file [16, 256, 1, 1] vs model [17, 256, 1, 1]"]),
    ("hourglass_8s_256x192", 17, "hourglass_2s_256x192",
     ["hourglass_2s_256x192", "looks like Stacked Hourglass with 8 stacks and 17 keypoints",
      "Set pose.model to a hourglass_8s_* model", "unexpected keys", "hg.2.hg.0.0.0.bn1.weight"]),
    ("simple_baseline_r152_256x192", 17, "hourglass_2s_256x192",
     ["hourglass_2s_256x192", "looks like SimpleBaseline ResNet-152 with 17 keypoints",
      "Set pose.model to a simple_baseline_r152_* model", "missing keys", "unexpected keys"]),
    ("hrnet_w48_256x192", 17, "simple_baseline_r50_256x192",
     ["looks like HRNet-W48 with 17 keypoints", "Set pose.model to a hrnet_w48_* model"]),
]


@pytest.mark.parametrize("file_model, file_keypoints, config_model, fragments", MISMATCHES)
def test_checkpoint_that_does_not_fit_is_refused_with_a_clear_error(file_model, file_keypoints, config_model,
                                                                    fragments):
    from posetrack_app.pose.checkpoint import CheckpointMismatchError, load_state_dict_strict

    file_state = meta_model(file_model, file_keypoints).state_dict()
    with pytest.raises(CheckpointMismatchError) as error:
        load_state_dict_strict(meta_model(config_model), file_state, model_name=config_model)
    for fragment in fragments:
        assert fragment in str(error.value)


ONNX_MAX_ABS_DIFF = 1e-4


def _export_with_function(model, name, weights, out_dir):
    from posetrack_app.pose.export import export_onnx, pose_manifest

    input_hw = get_model_spec(name).input_hw
    return export_onnx(model, out_dir / f"{name}.onnx", input_hw=input_hw, manifest=pose_manifest(
        model_name=name, num_keypoints=17, keypoint_layout="coco17", input_hw=input_hw, weights_path=weights))


def _export_with_cli(model, name, weights, out_dir):
    from posetrack_app.cli import main

    assert main(["export", "--model", name, "--weights", str(weights), "--format", "onnx", "--out", str(out_dir)]) == 0
    (path,) = out_dir.glob("*.onnx")
    return path


# Each family once, one through export_onnx, the other through `posetrack export` (which calls it); an export
# takes seconds, and the variants of a family share every operator.
@pytest.mark.parametrize("name, export", [
    ("simple_baseline_r50_256x192", _export_with_function),
    ("hourglass_2s_256x192", _export_with_cli),
])
def test_onnx_export_matches_torch(tmp_path, name, export):
    import onnxruntime as ort

    spec = get_model_spec(name)
    model = random_network(name, seed=2)
    weights = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), weights)
    out_dir = tmp_path / "engines"
    out_dir.mkdir()
    path = export(model, name, weights, out_dir)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch.manual_seed(3)
    crops = torch.randn(3, 3, *spec.input_hw)  # batch 3: the export's example batch is 2, the axis is dynamic
    with torch.no_grad():
        expected = model(crops).numpy()
    (heatmaps,) = session.run(None, {session.get_inputs()[0].name: crops.numpy()})
    assert heatmaps.shape == (3, 17, spec.input_hw[0] // 4, spec.input_hw[1] // 4)
    assert np.abs(expected).max() > 0.1  # the comparison below is not between near-zero maps
    assert np.abs(heatmaps - expected).max() < ONNX_MAX_ABS_DIFF


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_posetrack_track_runs_end_to_end_with_the_model(tmp_path, capsys, monkeypatch, shared_data, name):
    """`posetrack track` on real video with this network (random weights in the official layout) as the pose
    stage: the network must be the one that runs, on crops of its input size, and every person gets K joints."""
    import json

    from posetrack_app.cli import main
    from posetrack_app.pose import checkpoint

    weights = tmp_path / f"{name}.pth"
    torch.save(random_network(name, seed=4).state_dict(), weights)
    crop_shapes = []
    real_load = checkpoint.load_pose_network

    def load_and_watch(model_name, weights_path, num_keypoints):
        model = real_load(model_name, weights_path, num_keypoints)
        model.register_forward_hook(lambda module, inputs, output: crop_shapes.append(tuple(inputs[0].shape)))
        return model

    monkeypatch.setattr(checkpoint, "load_pose_network", load_and_watch)
    out_json = tmp_path / "poses.jsonl"
    code = main(["track", str(shared_data / "pets09_s2l1" / "vtest.avi"), "--out-json", str(out_json),
                 "--max-frames", "2", "--no-progress", "--set", f"pose.model={name}",
                 "--set", f"pose.weights={weights}", "--set", "pose.flip_test=false",
                 # PETS09's walkers are small: at the automatic 768 the detector finds none in the first two frames.
                 "--set", "detector.input_size=960"])
    err = capsys.readouterr().err
    assert code == 0, err
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1]
    persons = [p for r in records for p in r["persons"]]
    assert persons, "PETS09 has walkers in every frame"
    assert all(len(p["keypoints"]) == 17 and "track_id" in p for p in persons)
    from posetrack_app.pose.backends.torch_backend import FOLD_PROBE_SIDE_PX
    # The torch backend checks its BatchNorm folding once on a small probe input; every other call is a crop batch.
    probe = (FOLD_PROBE_SIDE_PX, FOLD_PROBE_SIDE_PX)
    crop_shapes = [shape for shape in crop_shapes if shape[2:] != probe]
    assert crop_shapes and all(shape[1:] == (3, *get_model_spec(name).input_hw) for shape in crop_shapes)
    assert sum(shape[0] for shape in crop_shapes) >= len(persons)  # low-score boxes get poses, not tracks


def table_rows():
    """(name, input, params M, paper GFLOPs, GMACs actually computed, paper params M, GFLOPs, AP) per model."""
    paper = {row[0]: row[1:] for row in PAPER_TABLE_1}
    rows = []
    for name in sorted(set(OUR_MODELS) | set(paper), key=lambda n: (n.split("_")[0] != "hrnet", n)):
        m = measure(name)
        height, width = get_model_spec(name).input_hw
        rows.append((name, f"{height}x{width}", m["params"] / 1e6, m["paper_gflops"], m["gmacs"],
                     *paper.get(name, (None, None, None))))
    return rows


if __name__ == "__main__":
    def show(value, fmt):
        return "-" if value is None else format(value, fmt)

    print("| model | input | params (M) | GFLOPs (paper convention) | GMACs computed | paper params | paper GFLOPs "
          "| paper COCO val AP |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, size, params, gflops, gmacs, p_params, p_gflops, p_ap in table_rows():
        p_params = None if p_params is None else p_params / 1e6
        print(f"| {name} | {size} | {params:.2f} | {gflops:.2f} | {gmacs:.2f} | {show(p_params, '.1f')} "
              f"| {show(p_gflops, '.1f')} | {show(p_ap, '.1f')} |")
