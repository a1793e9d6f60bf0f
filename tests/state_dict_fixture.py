"""The outside key lists (tests/fixtures/state_dict_keys.json.gz, made by fixtures/make_state_dict_keys.py from
the official HRNet code and from mmpose 0.29.0 / 1.3.2) and checkpoints built from them.

Networks recorded: "hrnet_w32", "hrnet_w48", "resnet50" (SimpleBaseline R-50), 17 keypoints.
Naming schemes: "official", "mmpose_0x" (backbone. + keypoint_head.), "mmpose_1x" (backbone. + head.).
"""
from __future__ import annotations

import functools
import gzip
import json
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "state_dict_keys.json.gz"
SCHEMES = ("official", "mmpose_0x", "mmpose_1x")
# Registry model for each recorded network.
MODEL_FOR = {"hrnet_w32": "hrnet_w32_256x192", "hrnet_w48": "hrnet_w48_384x288", "resnet50": "simple_baseline_r50_256x192"}


@functools.lru_cache(maxsize=None)
def _data() -> dict:
    with gzip.open(FIXTURE, "rt") as handle:
        return json.load(handle)


def keys(scheme: str, network: str) -> Dict[str, List[int]]:
    """name -> shape, in the order the outside code's state_dict lists them."""
    return _data()[scheme]["keys"][network]


def official_parameter_count(network: str) -> int:
    return _data()["official"]["parameters"][network]


def mmpose_version(scheme: str) -> str:
    return _data()[scheme]["version"]


def labelled_state(scheme: str, network: str) -> "OrderedDict[str, torch.Tensor]":
    """A state_dict with the scheme's keys and shapes where every element of the i-th tensor equals i (so a test
    can tell after loading which file key each model tensor came from). Cheap: each tensor is one number expanded
    to its shape (stride 0), which torch.save writes as that one number."""
    state = OrderedDict()
    for index, (key, shape) in enumerate(keys(scheme, network).items()):
        dtype = torch.long if key.endswith("num_batches_tracked") else torch.float32
        state[key] = torch.tensor(index, dtype=dtype).expand(shape)
    return state


def save_as_released(scheme: str, network: str, path: Path) -> Path:
    """The file as that code base releases it: official = bare state_dict; mmpose = {'meta', 'state_dict'}, the 1.x
    meta carrying numpy arrays as mmengine writes them (dataset_meta's sigmas and colours)."""
    state = labelled_state(scheme, network)
    if scheme == "official":
        payload = state
    else:
        meta = {"epoch": 210, "iter": 100, "mmcv_version": "1.3.8", "time": "Tue Nov 30 12:00:00 2021"}
        if scheme == "mmpose_1x":
            meta["dataset_meta"] = {"dataset_name": "coco", "num_keypoints": 17,
                                    "sigmas": np.linspace(0.025, 0.107, 17),
                                    "keypoint_colors": np.zeros((17, 3), np.uint8), "flip_indices": list(range(17))}
        payload = {"meta": meta, "state_dict": state}
    torch.save(payload, path)
    return path
