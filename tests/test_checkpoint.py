"""Strict checkpoint loading: released layouts load; every misfit is a clear UserError naming what the file is."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from posetrack_app.errors import UserError
from posetrack_app.pose.checkpoint import (CheckpointCorruptError, CheckpointMismatchError, CheckpointNotFoundError,
                                           describe_state_dict, load_checkpoint, load_pose_network, read_state_dict,
                                           save_official_format)
from posetrack_app.pose.models import build_model
from state_dict_fixture import MODEL_FOR, SCHEMES, keys, labelled_state, save_as_released
from test_hrnet import tiny_hrnet


def _zero_state(name: str, num_keypoints: int) -> "OrderedDict[str, torch.Tensor]":
    """The full network's state_dict shapes, zero-filled (cheap to make and save; values do not matter here)."""
    with torch.device("meta"):
        state = build_model(name, num_keypoints).state_dict()
    return OrderedDict((k, torch.zeros(v.shape, dtype=v.dtype)) for k, v in state.items())


def _meta_model(name: str, num_keypoints: int = 17):
    """The configured network without memory: mismatches are diagnosed before any tensor is copied."""
    with torch.device("meta"):
        return build_model(name, num_keypoints)


@pytest.fixture(scope="module")
def w32_17(tmp_path_factory):
    """A full-size HRNet-W32 (17 keypoints) checkpoint saved as a bare state_dict."""
    path = tmp_path_factory.mktemp("ckpt") / "pose_hrnet_w32_256x192.pth"
    state = _zero_state("hrnet_w32_256x192", 17)
    torch.save(state, path)
    return state, path


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrap,dataparallel", [
    (None, False),            # bare state_dict, as the model zoo releases it
    ("state_dict", False),    # a training snapshot
    (None, True),             # saved from nn.DataParallel: module. prefixes
    ("state_dict", True),
])
def test_released_layouts_load_strictly(tmp_path, wrap, dataparallel):
    torch.manual_seed(0)
    source = tiny_hrnet(17)
    for buffer in source.buffers():   # non-default BN statistics, so that buffers are checked too
        buffer.copy_(torch.randint_like(buffer, 1, 5) if buffer.dtype == torch.long else torch.rand_like(buffer))
    path = tmp_path / "weights.pth"
    save_official_format(source, path, wrap=wrap, dataparallel=dataparallel)
    target = tiny_hrnet(17)
    load_checkpoint(target, path, model_name="tiny")
    assert _same_state(source, target)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_full_size_w32_file_fits_both_input_sizes(w32_17):
    """Every key and shape of a full HRNet-W32 file fits (values were checked on the small network above)."""
    _, path = w32_17
    for name in ("hrnet_w32_256x192", "hrnet_w32_384x288"):
        load_checkpoint(_meta_model(name), path, model_name=name)


def test_missing_batchnorm_counters_are_tolerated(tmp_path):
    """Checkpoints from torch < 0.4.1 have no num_batches_tracked (unused at inference)."""
    torch.manual_seed(2)
    source = tiny_hrnet(17)
    state = OrderedDict((k, v) for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked"))
    path = tmp_path / "old.pth"
    torch.save(state, path)
    target = load_checkpoint(tiny_hrnet(17), path, model_name="tiny")
    assert torch.equal(target.final_layer.weight, source.final_layer.weight)


def test_w32_file_into_w48_model_names_the_variant(w32_17):
    _, path = w32_17
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(_meta_model("hrnet_w48_384x288"), path, model_name="hrnet_w48_384x288")
    message = str(info.value)
    assert "looks like HRNet-W32 with 17 keypoints" in message
    assert "hrnet_w48_384x288 (HRNet-W48 with 17 keypoints)" in message
    assert "hrnet_w32_*" in message
    assert "shape mismatches" in message and "file [32, 256, 3, 3] vs model [48, 256, 3, 3]" in message
    assert "... and" in message   # hundreds of mismatches: a few listed, the rest counted


def test_15_keypoint_file_into_17_keypoint_config(tmp_path):
    state = _zero_state("hrnet_w32_256x192", 15)
    path = tmp_path / "posetrack15.pth"
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in state.items())}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(_meta_model("hrnet_w32_256x192"), path, model_name="hrnet_w32_256x192")
    message = str(info.value)
    assert "looks like HRNet-W32 with 15 keypoints" in message
    assert "predicts 15 keypoints, the config expects 17" in message
    assert "2 shape mismatches (final_layer.weight: file [15, 32, 1, 1] vs model [17, 32, 1, 1], final_layer.bias" in message
    assert "missing" not in message and "unexpected" not in message


def test_missing_and_unexpected_keys_are_listed_with_counts(tmp_path, w32_17):
    state = OrderedDict(w32_17[0])
    removed = [k for k in state if k.startswith("stage4.2.")]
    for k in removed:
        del state[k]
    state["head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(_meta_model("hrnet_w32_256x192"), path, model_name="hrnet_w32_256x192")
    message = str(info.value)
    expected_missing = len([k for k in removed if not k.endswith("num_batches_tracked")])
    assert f"{expected_missing} missing keys (stage4.2." in message
    assert "1 unexpected keys (head.extra.weight)" in message


@pytest.mark.parametrize("keep_fraction", [0.0, 0.01, 0.5, 0.99])
def test_truncated_file(tmp_path, w32_17, keep_fraction):
    _, good = w32_17
    data = good.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CheckpointCorruptError, match="truncated or not a .pth file: download it again"):
        read_state_dict(path)


@pytest.mark.parametrize("payload,match", [
    ([1, 2, 3], "holds list, not a state_dict"),
    ({}, "holds dict, not a state_dict"),
    ({"conv1.weight": torch.zeros(1), "epoch": 3}, "1 entries are not tensors"),
])
def test_not_a_state_dict(tmp_path, payload, match):
    path = tmp_path / "odd.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointCorruptError, match=match):
        read_state_dict(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found: download the official checkpoint"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(CheckpointNotFoundError, match="it is a folder"):
        read_state_dict(tmp_path)


def test_errors_are_user_errors():
    for cls in (CheckpointNotFoundError, CheckpointCorruptError, CheckpointMismatchError):
        assert issubclass(cls, UserError)


@pytest.mark.parametrize("keys,expected", [
    ({"final_layer.weight": torch.zeros(17, 48, 1, 1), "transition1.0.0.weight": torch.zeros(48, 256, 3, 3)},
     "HRNet-W48 with 17 keypoints"),
    ({"final_layer.weight": torch.zeros(17, 256, 1, 1), "deconv_layers.0.weight": torch.zeros(1)},
     "a pose network with 17 keypoints of no known family"),
    ({"fc.weight": torch.zeros(1000, 2048)}, "not a pose network checkpoint"),
])
def test_describe_state_dict(keys, expected):
    assert describe_state_dict(keys).startswith(expected)


# -- released files in each naming scheme, built from the outside key lists (tests/state_dict_fixture.py) --

def _expected_source_key(scheme: str, official_name: str, file_keys) -> str:
    """The file key that must land in `official_name`, by the documented rule (not by the converter's code)."""
    if scheme == "official":
        return official_name
    head = {"mmpose_0x": "keypoint_head.", "mmpose_1x": "head."}[scheme]
    is_head = official_name.startswith(("final_layer.", "deconv_layers."))
    return (head if is_head else "backbone.") + official_name


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
@pytest.mark.parametrize("scheme,network", [(s, "hrnet_w32") for s in SCHEMES] + [("mmpose_1x", "resnet50"),
                                                                                  ("mmpose_0x", "resnet50")])
def test_released_files_of_every_naming_scheme_load_tensor_for_tensor(tmp_path, scheme, network):
    """Official, mmpose 0.x and mmpose 1.x files (keys from the outside code, mmpose's numpy metadata included)
    load strictly, and every tensor lands in the official name the rule says."""
    path = save_as_released(scheme, network, tmp_path / f"{scheme}.pth")
    file_keys = list(keys(scheme, network))
    loaded = read_state_dict(path)
    assert list(loaded) == list(keys("official", network))
    model = _meta_model(MODEL_FOR[network])
    load_checkpoint(model, path, model_name=MODEL_FOR[network])
    for name, tensor in loaded.items():
        assert int(tensor.flatten()[0]) == file_keys.index(_expected_source_key(scheme, name, file_keys)), name


@pytest.mark.parametrize("extra_key,match", [
    ("head.conv_layers.0.weight", "key 'head.conv_layers.0.weight', which is neither 'backbone.\\*' nor a heatmap head"),
    ("neck.reduce.weight", "key 'neck.reduce.weight'"),
    ("keypoint_head.final_layer.weight", "mixes mmpose 0.x \\('keypoint_head.'\\) and 1.x"),
])
def test_mmpose_files_with_other_keys_are_refused_naming_the_key(tmp_path, extra_key, match):
    state = labelled_state("mmpose_1x", "hrnet_w32")
    state[extra_key] = torch.zeros(1)
    path = tmp_path / "odd_mmpose.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError, match=match):
        read_state_dict(path)


def test_mmpose_file_for_another_width_gets_the_usual_diagnosis(tmp_path):
    path = save_as_released("mmpose_0x", "hrnet_w32", tmp_path / "w32_mmpose.pth")
    with pytest.raises(CheckpointMismatchError, match="looks like HRNet-W32 with 17 keypoints"):
        load_checkpoint(_meta_model("hrnet_w48_384x288"), path, model_name="hrnet_w48_384x288")
