"""ONNX export (dynamic batch) of HRNet (full W32 and W48 in the tests marked slow), ONNX Runtime == torch, manifests, and the
`posetrack export` command's user errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from posetrack_app.cli import main
from posetrack_app.errors import UserError
from posetrack_app.pose.backends import BackendOptions, create_backend
from posetrack_app.pose.backends.onnxruntime_backend import OnnxRuntimeBackend
from posetrack_app.pose.checkpoint import load_pose_network, save_official_format
from posetrack_app.pose.export import export_onnx, manifest_path_for, pose_manifest
from posetrack_app.pose.models import build_model
from test_hrnet import tiny_hrnet

ORT_TORCH_MAX_ABS_DIFF = 1e-4
BATCHES = (1, 5)


@pytest.fixture(scope="module")
def w32_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "pose_hrnet_w32_256x192.pth"
    save_official_format(build_model("hrnet_w32_256x192", 17), path)
    return path


@pytest.fixture(scope="module")
def zero_w32_weights(tmp_path_factory):
    """A full-size W32 checkpoint with zero tensors: right keys and shapes, cheap to make (CLI error tests)."""
    from collections import OrderedDict

    with torch.device("meta"):
        state = build_model("hrnet_w32_256x192", 17).state_dict()
    path = tmp_path_factory.mktemp("zero") / "pose_hrnet_w32_256x192.pth"
    torch.save(OrderedDict((k, torch.zeros(v.shape, dtype=v.dtype)) for k, v in state.items()), path)
    return path


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """A small HRNet exported with a manifest (fast): the manifest and backend tests run on it."""
    torch.manual_seed(3)
    model = tiny_hrnet(17).eval()
    path = tmp_path_factory.mktemp("small") / "tiny_coco17.onnx"
    manifest = pose_manifest(model_name="tiny", num_keypoints=17, keypoint_layout="coco17", input_hw=(128, 96))
    export_onnx(model, path, input_hw=(128, 96), manifest=manifest)
    return model, path


@pytest.fixture(scope="module")
def w32_export(w32_weights, tmp_path_factory):
    """W32 exported through the command line, as a user would."""
    out = tmp_path_factory.mktemp("engines")
    code = main(["export", "--model", "hrnet_w32_256x192", "--weights", str(w32_weights), "--format", "onnx",
                 "--out", str(out)])
    assert code == 0
    (onnx_path,) = sorted(out.glob("*.onnx"))
    return onnx_path, out


# HRNet-W48 exported at a reduced 128x96 input: the same graph (the network is fully convolutional; only the
# fixed spatial size differs) at a quarter of the 256x192 compute, to keep the CPU test short. The full-size
# comparison (384x288) is recorded by benchmarks/pose_throughput.py --check-onnx.
W48_TEST_INPUT_HW = (128, 96)


@pytest.fixture(scope="module")
def w48_export(tmp_path_factory):
    torch.manual_seed(1)
    model = build_model("hrnet_w48_256x192", 17).eval()
    path = tmp_path_factory.mktemp("w48") / "hrnet_w48.onnx"
    manifest = pose_manifest(model_name="hrnet_w48_256x192", num_keypoints=17, keypoint_layout="coco17",
                             input_hw=W48_TEST_INPUT_HW)
    export_onnx(model, path, input_hw=W48_TEST_INPUT_HW, manifest=manifest)
    return model, path


def _ort_vs_torch(model, onnx_path, input_hw):
    """max |ORT - torch| per batch size; one torch pass at the largest batch serves all (rows are independent
    in eval mode), since full-size torch passes are the slow part on a CPU."""
    torch.manual_seed(2)
    x = torch.randn((max(BATCHES), 3) + input_hw)
    with torch.no_grad():
        reference = model(x)
    assert reference.abs().max().item() > 0.01   # not a trivially small output
    diffs = {}
    with OnnxRuntimeBackend(onnx_path, input_hw=input_hw, num_keypoints=17) as backend:
        for batch in BATCHES:
            heatmaps = backend.infer(x[:batch])
            assert heatmaps.shape == (batch, 17, input_hw[0] // 4, input_hw[1] // 4)
            diffs[batch] = (heatmaps - reference[:batch]).abs().max().item()
    return diffs


@pytest.mark.slow
def test_w32_cli_export_matches_torch_at_batch_1_and_5(w32_export, w32_weights):
    onnx_path, _ = w32_export
    from posetrack_app.pose.checkpoint import file_sha256
    manifest = json.loads(manifest_path_for(onnx_path).read_text())
    assert manifest["model"] == "hrnet_w32_256x192" and manifest["weights_sha256"] == file_sha256(w32_weights)
    assert onnx_path.name == f"hrnet_w32_256x192_coco17_{file_sha256(w32_weights)[:12]}.onnx"
    model = load_pose_network("hrnet_w32_256x192", w32_weights, 17)
    diffs = _ort_vs_torch(model, onnx_path, (256, 192))
    assert max(diffs.values()) < ORT_TORCH_MAX_ABS_DIFF, diffs


@pytest.mark.slow
def test_w48_export_matches_torch_at_batch_1_and_5(w48_export):
    model, onnx_path = w48_export
    diffs = _ort_vs_torch(model, onnx_path, W48_TEST_INPUT_HW)
    assert max(diffs.values()) < ORT_TORCH_MAX_ABS_DIFF, diffs


def test_small_export_matches_torch_at_batch_1_and_5(small_export):
    model, onnx_path = small_export
    diffs = _ort_vs_torch(model, onnx_path, (128, 96))
    assert max(diffs.values()) < ORT_TORCH_MAX_ABS_DIFF, diffs


def test_export_has_a_dynamic_batch_axis_and_a_manifest(small_export):
    _, onnx_path = small_export
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    (graph_input,) = graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input" and dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 128, 96]
    assert [o.name for o in graph.output] == ["heatmaps"]
    out = onnx_path.parent
    assert not list(out.glob("*.data")) and not list(out.glob(".*part*"))   # one file, no temp leftovers
    # BatchNorm was folded into the convolutions before export.
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]
    manifest = json.loads(manifest_path_for(onnx_path).read_text())
    from posetrack_app.pose.checkpoint import file_sha256
    assert manifest["model"] == "tiny" and manifest["num_keypoints"] == 17
    assert manifest["keypoint_layout"] == "coco17" and manifest["input_hw"] == [128, 96]
    assert manifest["onnx_sha256"] == file_sha256(onnx_path) and manifest["weights_sha256"] is None
    assert manifest["mean_rgb"] == [0.485, 0.456, 0.406] and manifest["precision"] == "fp32"
    assert manifest["dynamic_batch"] is True and manifest["opset"] >= 18


def test_onnxruntime_backend_reuses_the_export_for_the_same_weights(small_export, tmp_path, monkeypatch):
    """pose.backend=onnxruntime without pose.engine exports into engines/<model>_<layout>_<weights hash>.onnx
    once; an existing file for the same weights is used as it is."""
    from posetrack_app.pose import export
    from posetrack_app.pose.checkpoint import file_sha256
    from posetrack_app.pose.export import default_onnx_path

    monkeypatch.setattr(export, "ENGINES_DIR", tmp_path)
    _, onnx_path = small_export
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in weights")
    target = default_onnx_path(tmp_path, "tiny", "coco17", file_sha256(weights))
    target.write_bytes(onnx_path.read_bytes())
    manifest = json.loads(manifest_path_for(onnx_path).read_text())
    manifest_path_for(target).write_text(json.dumps(manifest))
    before = target.stat().st_mtime_ns
    options = BackendOptions(model_name="tiny", num_keypoints=17, input_hw=(128, 96), weights_path=str(weights),
                             providers=("CPUExecutionProvider",))
    with create_backend("onnxruntime", options) as backend:
        assert backend.onnx_path == target
    assert target.stat().st_mtime_ns == before and len(list(tmp_path.glob("*.onnx"))) == 1


@pytest.mark.parametrize("field,value,match", [
    ("keypoint_layout", "posetrack18", "keypoint_layout: file 'coco17' vs expected 'posetrack18'"),
    ("model_name", "hrnet_w32_384x288", "model: file 'tiny' vs expected 'hrnet_w32_384x288'"),
    ("std_rgb", (0.5, 0.5, 0.5), "std_rgb"),
])
def test_onnxruntime_backend_refuses_a_mismatched_manifest(small_export, field, value, match):
    _, onnx_path = small_export
    options = dict(model_name="tiny", num_keypoints=17, input_hw=(128, 96), engine_path=str(onnx_path),
                   providers=("CPUExecutionProvider",))
    options[field] = value
    with pytest.raises(UserError, match=match):
        create_backend("onnxruntime", BackendOptions(**options))


def test_fp16_export_keeps_float32_io(tmp_path):
    model = tiny_hrnet(17).eval()
    path = tmp_path / "tiny_fp16.onnx"
    export_onnx(model, path, input_hw=(128, 96), manifest={"model": "tiny"}, precision="fp16")
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_weights = [i for i in graph.initializer if len(i.dims) == 4]
    assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)
    assert json.loads(manifest_path_for(path).read_text())["precision"] == "fp16"


# -- the command's user errors: one line on stderr, exit code 2 --

def _run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_cli_missing_weights(tmp_path, capsys):
    code, err = _run_cli(["export", "--weights", str(tmp_path / "absent.pth"), "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("posetrack export: error: pose weights file") and "not found" in err[0]


def test_cli_truncated_weights(tmp_path, capsys, zero_w32_weights):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(zero_w32_weights.read_bytes()[:100_000])
    code, err = _run_cli(["export", "--model", "hrnet_w32_256x192", "--weights", str(truncated), "--out",
                          str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1 and "truncated" in err[0]
    assert not list(tmp_path.glob("*.onnx"))


def test_cli_wrong_variant(tmp_path, capsys, zero_w32_weights):
    code, err = _run_cli(["export", "--model", "hrnet_w48_384x288", "--weights", str(zero_w32_weights), "--out",
                          str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1
    assert "looks like HRNet-W32 with 17 keypoints" in err[0] and "hrnet_w32_*" in err[0]


@pytest.mark.parametrize("extra,match", [
    (["--model", "hrnet_w64_256x192"], "unknown pose model 'hrnet_w64_256x192'"),
    (["--fp16"], "--fp16 and --int8-calib apply to --format tensorrt"),
    (["--keypoints", "mpii16"], "unknown keypoint layout 'mpii16'"),
    (["--max-batch", "0"], "--max-batch must be >= 1"),
])
def test_cli_bad_arguments(tmp_path, capsys, zero_w32_weights, extra, match):
    code, err = _run_cli(["export", "--weights", str(zero_w32_weights), "--out", str(tmp_path)] + extra, capsys)
    assert code == 2 and len(err) == 1 and match in err[0]


def test_cli_tensorrt_without_tensorrt_says_what_to_do(tmp_path, capsys, zero_w32_weights):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present: test_tensorrt.py builds engines")
    code, err = _run_cli(["export", "--weights", str(zero_w32_weights), "--format", "tensorrt", "--fp16", "--out",
                          str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1
    assert "TensorRT Python package is not installed" in err[0] or "needs a CUDA GPU" in err[0]
    assert not list(tmp_path.glob("*.onnx"))   # refused before the slow export
