"""Load pose checkpoints as released (.pth), strictly, with errors that say what the file is and what to do.

Accepted layouts: a bare state_dict; {'state_dict': state_dict} (training snapshots); keys prefixed with
`module.` (saved from nn.DataParallel); and OpenMMLab's mmpose checkpoints ({'meta': ..., 'state_dict': ...}),
whose keys are converted to the official names on load (`convert_mmpose_keys`). Anything that does not fit the
model exactly is an error listing missing keys, unexpected keys and shape mismatches (a few of each, with counts)
and saying which model (HRNet width, SimpleBaseline ResNet depth, Hourglass stacks) and keypoint count the file
looks like. Files are read with torch.load(weights_only=True): no code runs (numpy arrays in mmpose's metadata
are the one kind of non-tensor data allowed, `_NUMPY_DATA_GLOBALS`).

mmpose names: 0.x files hold `backbone.*` and `keypoint_head.*`, 1.x files `backbone.*` and `head.*`. Under
those prefixes the names are the official ones, key for key, shape for shape and in the same order: mmpose 0.29.0
(TopdownHeatmapSimpleHead) and 1.3.2 (HeatmapHead) HRNet-W32/W48 and ResNet-50 models were built and compared
with the official code's (leoxiaobin/deep-high-resolution-net.pytorch); tests/fixtures/state_dict_keys.json.gz
holds the three key lists and tests/test_checkpoint.py checks the conversion against them.

Shape glossary: K keypoints (heatmap channels, the rows of final_layer.weight, or of score.0.weight for the
Hourglass).
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import pickle
import zipfile
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import UserError

log = logging.getLogger(__name__)

# How many keys of each kind an error message lists before "... and N more".
KEYS_SHOWN_PER_KIND = 5
DATAPARALLEL_PREFIX = "module."
# BatchNorm's step counter: absent from checkpoints saved by torch < 0.4.1 and unused at inference;
# torch's own BatchNorm loader tolerates its absence for such files, and so do we.
_OPTIONAL_KEY_SUFFIX = ".num_batches_tracked"
# mmpose checkpoints: the backbone's prefix, the heatmap head's prefix in 0.x and in 1.x, and the head layers
# whose names below the prefix are the official ones (1x1 final conv; SimpleBaseline's deconvolutions).
MMPOSE_BACKBONE_PREFIX = "backbone."
MMPOSE_HEAD_PREFIXES = {"keypoint_head.": "mmpose 0.x", "head.": "mmpose 1.x"}
MMPOSE_HEAD_LAYERS = ("final_layer.", "deconv_layers.")


def _numpy_data_globals() -> list:
    """What unpickling numpy arrays needs (mmpose 1.x keeps keypoint colours and sigmas as arrays in its 'meta'):
    the array reconstructor under its numpy 1 and numpy 2 names, ndarray, dtype and the numeric dtype classes.
    Data only, no code."""
    reconstruct = np.zeros(1).__reduce__()[0]
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"}
    return [(reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype] + sorted(dtype_classes, key=lambda c: c.__name__)


_NUMPY_DATA_GLOBALS = _numpy_data_globals()


class CheckpointError(UserError):
    """A checkpoint file that cannot be used as given."""


class CheckpointNotFoundError(CheckpointError):
    pass


class CheckpointCorruptError(CheckpointError):
    """Truncated, not a torch file, or not a mapping of tensors."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose keys or shapes do not fit the configured network."""


def file_sha256(path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path) -> "OrderedDict[str, torch.Tensor]":
    """The tensors of a released .pth file, unwrapped ({'state_dict': ...}) and without `module.` prefixes."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a folder: give the .pth file inside)" if path.is_dir() else ""
        raise CheckpointNotFoundError(
            f"pose weights file {path} not found{hint}: download the official checkpoint "
            f"(e.g. pose_hrnet_w48_384x288.pth) and pass --set pose.weights=PATH"
        )
    # torch < 2.5 has no safe_globals; there an mmpose 1.x file's metadata stops the load with an UnpicklingError.
    allow_numpy = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow_numpy(_NUMPY_DATA_GLOBALS) if allow_numpy else nullcontext():
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        size = path.stat().st_size
        raise CheckpointCorruptError(
            f"pose weights file {path} ({size} bytes) cannot be read as a torch checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); it is probably "
            f"truncated or not a .pth file: download it again"
        ) from None
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not data:
        raise CheckpointCorruptError(
            f"pose weights file {path} holds {type(data).__name__}, not a state_dict of tensors: "
            f"pass the released .pth file of the pose network"
        )
    not_tensors = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointCorruptError(
            f"pose weights file {path}: {len(not_tensors)} entries are not tensors (e.g. {not_tensors[0]!r}): "
            f"pass a bare state_dict or {{'state_dict': ...}}"
        )
    keys = list(data)
    if all(k.startswith(DATAPARALLEL_PREFIX) for k in keys):
        data = OrderedDict((k[len(DATAPARALLEL_PREFIX):], v) for k, v in data.items())
    if any(k.startswith(MMPOSE_BACKBONE_PREFIX) for k in data):
        return convert_mmpose_keys(data, source=f"pose weights file {path}")
    return OrderedDict(data)


def convert_mmpose_keys(state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
                        ) -> "OrderedDict[str, torch.Tensor]":
    """An mmpose top-down heatmap checkpoint's state_dict under the official names: `backbone.` dropped, and
    `keypoint_head.` (0.x) or `head.` (1.x) dropped before `final_layer.` / `deconv_layers.`. Strict: any other
    key (another head, a neck, a data preprocessor) or both head prefixes in one file is a CheckpointMismatchError
    that names the key."""
    head_prefixes = {p for p in MMPOSE_HEAD_PREFIXES for k in state_dict if k.startswith(p)}
    if len(head_prefixes) > 1:
        raise CheckpointMismatchError(
            f"{source} mixes mmpose 0.x ('keypoint_head.') and 1.x ('head.') head names: it is not a checkpoint "
            f"mmpose saved; download the released file again")
    converted: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(MMPOSE_BACKBONE_PREFIX):
            name = key[len(MMPOSE_BACKBONE_PREFIX):]
        else:
            prefix = next((p for p in MMPOSE_HEAD_PREFIXES if key.startswith(p)), None)
            name = key[len(prefix):] if prefix else None
            if name is None or not name.startswith(MMPOSE_HEAD_LAYERS):
                raise CheckpointMismatchError(
                    f"{source} is an mmpose checkpoint with key {key!r}, which is neither 'backbone.*' nor a "
                    f"heatmap head layer ('keypoint_head.' or 'head.' + {' / '.join(MMPOSE_HEAD_LAYERS)}): only "
                    f"top-down heatmap models (HRNet, SimpleBaseline ResNet) load here; pick one of "
                    f"`posetrack weights list`")
        if name in converted:
            raise CheckpointMismatchError(f"{source}: keys {key!r} and another both become {name!r} without "
                                          f"their mmpose prefix: not a checkpoint mmpose saved")
        converted[name] = value
    log.debug("%s: %d mmpose keys converted to the official names", source, len(converted))
    return converted


# Bottlenecks per ResNet stage (layer1..layer4) -> depth, for SimpleBaseline checkpoints.
_RESNET_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def _count_indexed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of distinct integer indices i in keys 'prefix.i.*'."""
    indices = {key[len(prefix) + 1:].split(".", 1)[0] for key in state_dict if key.startswith(prefix + ".")}
    return len({i for i in indices if i.isdigit()})


def _num_keypoints(state_dict: Mapping[str, torch.Tensor]) -> Optional[int]:
    """K: rows of the heatmap head (final_layer, or the Hourglass's first score layer); None without one."""
    for key in ("final_layer.weight", "score.0.weight"):
        weight = state_dict.get(key)
        if weight is not None and weight.ndim == 4:
            return int(weight.shape[0])
    return None


def _identify(state_dict: Mapping[str, torch.Tensor]) -> Tuple[str, Optional[str]]:
    """(what the weights look like, the pose.model name pattern that fits them or None), from keys and shapes."""
    num_keypoints = _num_keypoints(state_dict)
    kp = f"{num_keypoints} keypoints" if num_keypoints is not None else "no final_layer (a backbone only)"
    # HRNet: the width of the highest-resolution branch; transition1.0 re-widths stage 1's 256 channels to it.
    branch0 = state_dict.get("transition1.0.0.weight")
    if branch0 is None:
        branch0 = state_dict.get("stage2.0.branches.0.0.conv1.weight")
    if branch0 is not None and branch0.ndim == 4:
        width = int(branch0.shape[0])
        return f"HRNet-W{width} with {kp}", f"hrnet_w{width}_*"
    if "deconv_layers.0.weight" in state_dict and "layer1.0.conv1.weight" in state_dict:
        blocks = tuple(_count_indexed(state_dict, f"layer{i}") for i in range(1, 5))
        depth = _RESNET_DEPTHS.get(blocks)
        if depth is None:
            return f"SimpleBaseline on a ResNet with {blocks} bottlenecks per stage, {kp}", None
        return f"SimpleBaseline ResNet-{depth} with {kp}", f"simple_baseline_r{depth}_*"
    if getattr(state_dict.get("score.0.weight"), "ndim", 0) == 4:
        stacks = _count_indexed(state_dict, "score")
        return f"Stacked Hourglass with {stacks} stacks and {kp}", f"hourglass_{stacks}s_*"
    if num_keypoints is not None:
        return f"a pose network with {num_keypoints} keypoints of no known family", None
    return "not a pose network checkpoint (no final_layer, no HRNet, SimpleBaseline or Hourglass layers)", None


def describe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """What the file looks like, from its shapes: 'HRNet-W32 with 17 keypoints', 'SimpleBaseline ResNet-50 with
    17 keypoints', 'Stacked Hourglass with 8 stacks and 16 keypoints', or a plain statement that it is none."""
    return _identify(state_dict)[0]


def _listing(items: List[str]) -> str:
    shown = ", ".join(items[:KEYS_SHOWN_PER_KIND])
    more = f", ... and {len(items) - KEYS_SHOWN_PER_KIND} more" if len(items) > KEYS_SHOWN_PER_KIND else ""
    return shown + more


def compare_state_dicts(
    file_state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[str]]:
    """(missing, unexpected, shape mismatches as 'key: file [..] vs model [..]'), optional keys excepted."""
    missing = [k for k in model_state if k not in file_state and not k.endswith(_OPTIONAL_KEY_SUFFIX)]
    unexpected = [k for k in file_state if k not in model_state]
    mismatched = [
        f"{k}: file {list(file_state[k].shape)} vs model {list(v.shape)}"
        for k, v in model_state.items()
        if k in file_state and tuple(file_state[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, mismatched


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                           model_name: str, source: str = "checkpoint") -> None:
    """Copy `state_dict` into `model` with strict=True, after a diagnosis that turns any misfit into a
    CheckpointMismatchError naming the variant and keypoint count the file looks like."""
    model_state = model.state_dict()
    missing, unexpected, mismatched = compare_state_dicts(state_dict, model_state)
    if missing or unexpected or mismatched:
        looks_like, fitting_models = _identify(state_dict)
        expected = describe_state_dict(model_state)
        parts = [f"{source} does not fit pose model {model_name} ({expected}): the file looks like {looks_like}."]
        file_k, model_k = _num_keypoints(state_dict), _num_keypoints(model_state)
        if file_k is not None and model_k is not None and file_k != model_k:
            parts.append(
                f"It predicts {file_k} keypoints, the config expects {model_k}: use a checkpoint "
                f"trained for the configured layout (pose.keypoints) or a layout with {file_k} keypoints."
            )
        if fitting_models is not None and not fnmatch.fnmatch(model_name, fitting_models):
            parts.append(f"Set pose.model to a {fitting_models} model, or pass the matching weights.")
        if missing:
            parts.append(f"{len(missing)} missing keys ({_listing(missing)}).")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)}).")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_listing(mismatched)}).")
        raise CheckpointMismatchError(" ".join(parts))
    state = dict(state_dict)
    for key, value in model_state.items():
        if key.endswith(_OPTIONAL_KEY_SUFFIX) and key not in state:
            state[key] = torch.zeros_like(value)
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, path, *, model_name: str) -> nn.Module:
    """Read `path` and load it strictly into `model` (see the module docstring). Returns the model."""
    state_dict = read_state_dict(path)
    load_state_dict_strict(model, state_dict, model_name=model_name, source=f"pose weights file {path}")
    log.debug("loaded %d tensors from %s into %s", len(state_dict), path, model_name)
    return model


def load_pose_network(model_name: str, weights_path, num_keypoints: int) -> nn.Module:
    """Build `model_name` from the registry with `num_keypoints` heatmaps, load the weights strictly, eval mode.

    weights_path: the .pth file; None builds a randomly initialised network (tests, benchmarks). The file is
    checked against a memory-less (meta device) copy of the network first, so a wrong file fails before the
    real network is allocated and initialised.
    """
    from .models import build_model

    if weights_path is None:
        return build_model(model_name, num_keypoints).eval()
    state_dict = read_state_dict(weights_path)
    source = f"pose weights file {weights_path}"
    with torch.device("meta"):
        shapes_only = build_model(model_name, num_keypoints)
    missing, unexpected, mismatched = compare_state_dicts(state_dict, shapes_only.state_dict())
    if missing or unexpected or mismatched:
        load_state_dict_strict(shapes_only, state_dict, model_name=model_name, source=source)  # raises, explained
    model = build_model(model_name, num_keypoints)
    load_state_dict_strict(model, state_dict, model_name=model_name, source=source)
    log.debug("loaded %d tensors from %s into %s", len(state_dict), weights_path, model_name)
    return model.eval()


def save_official_format(model: nn.Module, path, *, wrap: Optional[str] = None, dataparallel: bool = False) -> None:
    """Save `model` the way released checkpoints are laid out (test and tool helper).

    wrap: None = bare state_dict, "state_dict" = {'state_dict': ...}; dataparallel: prefix keys with `module.`.
    """
    from ..io.atomic import atomic_write

    state: Dict[str, torch.Tensor] = OrderedDict(
        ((DATAPARALLEL_PREFIX if dataparallel else "") + k, v) for k, v in model.state_dict().items()
    )
    payload = {wrap: state} if wrap else state
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
