"""The YOLO-pose head's box and keypoint branches evaluated only where the person score passes, for ONNX Runtime.

The pose head has three branches per scale s (stride 8, 16, 32), each on the neck's feature map F_s:
    cv2.s  box: Conv3x3 + SiLU, Conv3x3 + SiLU, Conv1x1 -> 4 x 16 distance bins per position
    cv3.s  person score logit (1 channel)
    cv4.s  keypoints: Conv3x3 + SiLU, Conv3x3 + SiLU, Conv1x1 -> 17 x (x, y, visibility) per position
and the detector keeps only the positions (anchors) whose score passes its threshold: a few dozen of the 14,490
anchors of a 960x736 input (29 on a PETS09 frame at 0.1; 41 on Ultralytics' bus.jpg). The box and keypoint branches over every position are 28% of the network's
time (onnxruntime profiling on this 2-core CPU, one thread: 73 of 264 ms at 960x736, 26 of 90 ms at 640x480), and
their decoding another 2.5-3%.

So the network is split in two:
    trunk  image -> F_s and the score logits, the part every position needs;
    heads  the box and keypoint branches at the chosen anchors only: each anchor's 5x5 window of F_s through the
           same two 3x3 convolutions without padding (5x5 -> 3x3 -> 1x1), then the 1x1 convolution.
The first convolution's output is zeroed at positions outside the map (`masks`), as the original's zero padding
of that output does, so anchors on the border get the same numbers too. The decoding of boxes and keypoints (DFL
expectation, anchor offsets, strides) runs in numpy on those anchors. The result equals the full network's output
at the kept anchors up to float rounding (tests/test_sparse_head.py: the shipped YOLO11n-pose export, and a
YOLOv8n-pose exported by Ultralytics from its YAML).

The windows cost more per anchor than the dense branches per position (the first convolution runs at 9 positions
of each window), so when more than DENSE_FRACTION of the anchors pass (a very low threshold, a crowd), the branches
run over the whole maps instead, still without the dense decoding.

Graphs that do not have this exact structure (another head; an int8 Q/DQ export whose box and keypoint branches
are quantized, which quantize.py's recipe no longer makes) are not split: the caller runs the file whole.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .onnx_graph import node_attribute

log = logging.getLogger(__name__)

# The branch each head output comes from, by Ultralytics' module name (Pose head: cv2 box, cv3 score, cv4 keypoints).
BOX_BRANCH, SCORE_BRANCH, KEYPOINT_BRANCH = "cv2", "cv3", "cv4"
# The node pattern of a box or keypoint branch: (op, kernel size, padding) per node; SiLU is Sigmoid then Mul.
BRANCH_PATTERN = (("Conv", 3, 1), ("Sigmoid",), ("Mul",), ("Conv", 3, 1), ("Sigmoid",), ("Mul",), ("Conv", 1, 0))
# Two 3x3 convolutions: an anchor's output depends on the 5x5 window around it.
WINDOW = 5
# Above this fraction of anchors passing, the dense branches are cheaper than the windows. Measured at 960x736, one
# thread (gathering included): 72 anchors 4.7 ms, 724 (5%) 32 ms, 1,449 (10%) 63 ms, against 66 ms for the dense
# maps; 8% leaves a margin.
DENSE_FRACTION = 0.08
# Ultralytics' anchor points are the cell centres; keypoint offsets are predicted from the cell's corner at 2x.
CELL_CENTRE = 0.5
KEYPOINT_OFFSET_SCALE = 2.0


def _matches_pattern(nodes) -> bool:
    """The nodes of one branch, in graph order, are BRANCH_PATTERN chained each into the next: stride 1, one group,
    no dilation, square kernels and pads."""
    if [node.op_type for node in nodes] != [step[0] for step in BRANCH_PATTERN]:
        return False
    for index, (node, step) in enumerate(zip(nodes, BRANCH_PATTERN)):
        if step[0] == "Conv":
            kernel, pad = step[1], step[2]
            if (list(node_attribute(node, "kernel_shape", [])) != [kernel, kernel]
                    or list(node_attribute(node, "pads", [0] * 4)) != [pad] * 4
                    or any(s != 1 for s in node_attribute(node, "strides", [1, 1]))
                    or any(d != 1 for d in node_attribute(node, "dilations", [1, 1]))
                    or node_attribute(node, "group", 1) != 1
                    or node_attribute(node, "auto_pad", b"NOTSET") != b"NOTSET"):
                return False
        if index == 0:
            continue
        previous = nodes[index - 1].output[0]
        if step[0] == "Mul":  # SiLU: x * sigmoid(x), x being the convolution before the Sigmoid
            if sorted(node.input) != sorted([nodes[index - 2].output[0], previous]):
                return False
        elif node.input[0] != previous:
            return False
    return True


@dataclass(frozen=True)
class Scale:
    """One output scale of the head: its feature map, score logit and the two branches' nodes."""

    features: str
    score_logits: str
    box_nodes: tuple
    keypoint_nodes: tuple
    box_channels: int
    keypoint_channels: int


def find_scales(model) -> Optional[List[Scale]]:
    """The head's scales in output order (stride 8 first), or None when the graph is not a one-class YOLO-pose head
    of BRANCH_PATTERN branches."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    by_branch: Dict[Tuple[str, str, int], list] = {}
    for node in graph.node:
        found = re.match(r"^(/model\.\d+)/(cv[234])\.(\d+)/", node.name)
        if found:
            by_branch.setdefault((found.group(1), found.group(2), int(found.group(3))), []).append(node)
    heads = {key[0] for key in by_branch if key[1] == KEYPOINT_BRANCH}
    if len(heads) != 1:
        return None
    head = heads.pop()
    count = 1 + max(key[2] for key in by_branch if key[0] == head)
    scales = []
    for index in range(count):
        box = by_branch.get((head, BOX_BRANCH, index), [])
        keypoints = by_branch.get((head, KEYPOINT_BRANCH, index), [])
        score = by_branch.get((head, SCORE_BRANCH, index), [])
        if not (_matches_pattern(box) and _matches_pattern(keypoints) and score) or box[0].input[0] != keypoints[0].input[0]:
            return None
        last_score, weights = score[-1], [initializers.get(node.input[1]) for node in (box[-1], keypoints[-1])]
        score_weight = initializers.get(last_score.input[1]) if last_score.op_type == "Conv" else None
        if score_weight is None or score_weight.dims[0] != 1 or any(w is None for w in weights):
            return None  # not one person class, or weights computed in the graph
        scales.append(Scale(features=box[0].input[0], score_logits=last_score.output[0], box_nodes=tuple(box),
                            keypoint_nodes=tuple(keypoints), box_channels=int(weights[0].dims[0]),
                            keypoint_channels=int(weights[1].dims[0])))
    if not scales or scales[0].box_channels % 4 or scales[0].keypoint_channels % 3:
        return None
    return scales


def _model(model, nodes, inputs, outputs, initializer_names):
    from onnx import helper

    initializers = [tensor for tensor in model.graph.initializer if tensor.name in initializer_names]
    graph = helper.make_graph(nodes, model.graph.name, inputs, outputs, initializers)
    made = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return made.SerializeToString()


def trunk_model(model, scales: Sequence[Scale]) -> bytes:
    """The original graph cut after the feature maps and score logits: nodes nothing of these needs are dropped."""
    from onnx import TensorProto, helper

    wanted = [name for scale in scales for name in (scale.features, scale.score_logits)]
    needed, kept = set(wanted), []
    for node in reversed(model.graph.node):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in wanted]
    return _model(model, list(reversed(kept)), list(model.graph.input), outputs, needed)


def _branch_copy(nodes, prefix: str, source: str, output: str, mask: Optional[str]):
    """A branch's nodes reading `source` and writing `output`, intermediate tensors renamed under `prefix`; with a
    mask: 3x3 convolutions unpadded and the first SiLU's output multiplied by the mask."""
    from onnx import helper

    renamed = {nodes[0].input[0]: source, nodes[-1].output[0]: output}
    copies = []
    for index, node in enumerate(nodes):
        inputs = [renamed.get(name, name) for name in node.input]
        outputs = [renamed.setdefault(name, f"{prefix}/{index}") for name in node.output]
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        if mask is not None and node.op_type == "Conv" and attributes.get("kernel_shape") == [3, 3]:
            attributes["pads"] = [0, 0, 0, 0]
        copies.append(helper.make_node(node.op_type, inputs, outputs, name=f"{prefix}/{index}", **attributes))
        if mask is not None and index == 2:  # after the first SiLU
            masked = f"{prefix}/masked"
            copies.append(helper.make_node("Mul", [outputs[0], mask], [masked], name=masked))
            renamed[node.output[0]] = masked
    return copies


def heads_model(model, scales: Sequence[Scale], windows: bool) -> bytes:
    """The box and keypoint branches of every scale. windows=True: inputs windows_s [K, C, 5, 5] and masks_s
    [K, 1, 3, 3], outputs [K, channels, 1, 1]; False: input features_s [1, C, h, w], outputs [1, channels, h, w]."""
    from onnx import TensorProto, helper

    nodes, inputs, outputs, weights = [], [], [], set()
    for index, scale in enumerate(scales):
        source, mask = (f"windows_{index}", f"masks_{index}") if windows else (f"features_{index}", None)
        # Symbolic sizes are per scale: ONNX Runtime plans its buffers assuming equal names mean equal sizes.
        anchors = f"anchors_{index}"
        shape = [anchors, None, WINDOW, WINDOW] if windows else [1, None, f"height_{index}", f"width_{index}"]
        inputs.append(helper.make_tensor_value_info(source, TensorProto.FLOAT, shape))
        if mask:
            inputs.append(helper.make_tensor_value_info(mask, TensorProto.FLOAT, [anchors, 1, 3, 3]))
        for branch, branch_nodes in (("box", scale.box_nodes), ("keypoints", scale.keypoint_nodes)):
            output = f"{branch}_{index}"
            nodes += _branch_copy(branch_nodes, output, source, output, mask)
            outputs.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))
            weights.update(name for node in branch_nodes for name in node.input[1:])
    return _model(model, nodes, inputs, outputs, weights)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_anchors(box: np.ndarray, keypoints: np.ndarray, logits: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                   stride: float) -> np.ndarray:
    """[N, 4 x bins] distance logits, [N, 3K] keypoint outputs and [N] score logits of anchors at (rows, cols) ->
    [5 + 3K, N] rows as the full network writes them: cx, cy, w, h, score, K x (x, y, visibility) in input pixels."""
    bins = box.shape[1] // 4
    logits_by_side = box.reshape(len(box), 4, bins)
    shifted = np.exp(logits_by_side - logits_by_side.max(axis=2, keepdims=True))
    distance = (shifted @ np.arange(bins, dtype=np.float32)) / shifted.sum(axis=2)  # [N, 4]: left, top, right, bottom
    anchor_x, anchor_y = cols + CELL_CENTRE, rows + CELL_CENTRE
    x1, y1 = anchor_x - distance[:, 0], anchor_y - distance[:, 1]
    x2, y2 = anchor_x + distance[:, 2], anchor_y + distance[:, 3]
    points = keypoints.reshape(len(keypoints), -1, 3)
    x = (points[:, :, 0] * KEYPOINT_OFFSET_SCALE + (anchor_x - CELL_CENTRE)[:, None]) * stride
    y = (points[:, :, 1] * KEYPOINT_OFFSET_SCALE + (anchor_y - CELL_CENTRE)[:, None]) * stride
    decoded = np.stack([x, y, _sigmoid(points[:, :, 2])], axis=2).reshape(len(points), -1)
    boxes = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1) * stride
    return np.concatenate([boxes, _sigmoid(logits)[:, None], decoded], axis=1).T.astype(np.float32)


def windows_at(features: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """[1, C, h, w] map -> each anchor's [C, 5, 5] window (zeros outside the map) and [1, 3, 3] mask of which
    positions of the first convolution's 3x3 output lie inside the map."""
    _, _, height, width = features.shape
    offsets = np.arange(WINDOW) - WINDOW // 2
    ys, xs = rows[:, None] + offsets, cols[:, None] + offsets  # [N, 5] each
    inside = ((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None, :]  # [N, 5, 5]
    # Gathered from the map itself (indices clamped, then zeroed outside): padding the whole map first cost more
    # than the windows (3 ms at 960x736).
    gathered = features[0][:, np.clip(ys, 0, height - 1)[:, :, None], np.clip(xs, 0, width - 1)[:, None, :]]
    windows = np.ascontiguousarray(gathered.transpose(1, 0, 2, 3)) * inside[:, None]
    return windows.astype(np.float32, copy=False), inside[:, None, 1:-1, 1:-1].astype(np.float32)


class SplitPoseHead:
    """A YOLO-pose ONNX model run as trunk + heads (module docstring). `make_session(model_bytes)` builds an
    ONNX Runtime session with the caller's options. Use `split(model, make_session)`, which returns None for
    graphs it cannot split."""

    def __init__(self, scales: Sequence[Scale], trunk, windows, dense):
        self.scales = list(scales)
        self.trunk, self.windows, self.dense = trunk, windows, dense
        self.trunk_input = trunk.get_inputs()[0].name

    @classmethod
    def split(cls, model, make_session: Callable[[bytes], object]) -> Optional["SplitPoseHead"]:
        scales = find_scales(model)
        if scales is None:
            log.debug("the detector graph's head is not split: not a one-class YOLO-pose head of the expected form")
            return None
        return cls(scales, make_session(trunk_model(model, scales)), make_session(heads_model(model, scales, True)),
                   make_session(heads_model(model, scales, False)))

    def run(self, blob: np.ndarray, min_score: float) -> np.ndarray:
        """[1, 3, S, T] input -> [1, 5 + 3K, N]: the full network's output at the N anchors scoring above
        min_score, in the full output's anchor order."""
        maps = self.trunk.run(None, {self.trunk_input: blob})
        features, logits = maps[0::2], maps[1::2]
        # score > min_score  <=>  logit > log(min_score / (1 - min_score)), without a sigmoid over every anchor
        threshold = -np.inf if min_score <= 0 else (np.inf if min_score >= 1 else np.log(min_score / (1 - min_score)))
        chosen = [np.nonzero(scale_logits[0, 0] > threshold) for scale_logits in logits]
        total = sum(scale_logits[0, 0].size for scale_logits in logits)
        count = sum(len(rows) for rows, _ in chosen)
        if count == 0:
            channels = 5 + self.scales[0].keypoint_channels
            return np.zeros((1, channels, 0), np.float32)
        if count > DENSE_FRACTION * total:
            outputs = self.dense.run(None, {f"features_{i}": f for i, f in enumerate(features)})
            box = [out[0][:, rows, cols].T for out, (rows, cols) in zip(outputs[0::2], chosen)]
            keypoints = [out[0][:, rows, cols].T for out, (rows, cols) in zip(outputs[1::2], chosen)]
        else:
            feeds = {}
            for index, (scale_features, (rows, cols)) in enumerate(zip(features, chosen)):
                if len(rows) == 0:  # a batch of one empty window keeps every input's shape valid
                    rows, cols = np.zeros(1, np.int64), np.zeros(1, np.int64)
                feeds[f"windows_{index}"], feeds[f"masks_{index}"] = windows_at(scale_features, rows, cols)
            outputs = self.windows.run(None, feeds)
            box = [out[:len(rows), :, 0, 0] for out, (rows, _) in zip(outputs[0::2], chosen)]
            keypoints = [out[:len(rows), :, 0, 0] for out, (rows, _) in zip(outputs[1::2], chosen)]
        input_height = blob.shape[2]
        columns = [decode_anchors(b, k, scale_logits[0, 0][rows, cols], rows, cols,
                                  input_height / scale_logits.shape[2])
                   for b, k, scale_logits, (rows, cols) in zip(box, keypoints, logits, chosen) if len(rows)]
        return np.concatenate(columns, axis=1)[None]
