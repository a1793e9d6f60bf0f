"""detector.input_size "auto": the rule, the lazily built detector, and the config value."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from posetrack_app.config import load_config
from posetrack_app.errors import ConfigError
from posetrack_app.input_size import OnDemandDetector, auto_input_size
from posetrack_app.structures import Detections, Frame


@pytest.mark.parametrize("frame_wh, expected", [
    ((640, 480), 640),      # 640x480 pedestrian video: never upscaled
    ((320, 240), 640),      # small frames: at least YOLO's training size
    ((768, 576), 960),      # PETS09: small people in a mid-size frame
    ((704, 576), 960),      # PAL
    ((960, 540), 960),      # the 960x540 pose-tracking video
    ((1000, 700), 1024),    # rounded up to the stride
    ((641, 480), 960),      # just above 640
    ((1920, 1080), 1280),   # clamped
    ((1080, 1920), 1280),   # portrait: the long side counts
])
def test_auto_rule(frame_wh, expected):
    assert auto_input_size(frame_wh) == expected


def test_auto_detector_is_built_once_per_input_size():
    built = []

    def build(size):
        built.append(size)
        return lambda frame: Detections.empty()

    detector = OnDemandDetector(build)
    for wh in [(640, 480), (640, 480), (1920, 1080), (1920, 1080), (1280, 720), (640, 480)]:
        detector(Frame(0, np.zeros((wh[1], wh[0], 3), np.uint8)))
        assert detector.input_size == auto_input_size(wh)
    assert built == [640, 1280]      # 1280x720 also resolves to 1280; back to 640x480 reuses the first


def test_fixed_size_detector_is_built_on_its_first_frame_only():
    built = []

    def build(size):
        built.append(size)
        return lambda frame: Detections.empty()

    detector = OnDemandDetector(build, fixed_size=960)
    with pytest.raises(AttributeError, match="built on the first frame"):
        detector.description
    assert built == []
    for wh in [(640, 480), (1920, 1080), (640, 480)]:
        detector(Frame(0, np.zeros((wh[1], wh[0], 3), np.uint8)))
        assert detector.input_size == 960
    assert built == [960]


def test_auto_detector_under_concurrent_calls_builds_each_size_once_and_detects_each_frame_at_its_size():
    # Several frames in the detector at once (pipeline.detect_ahead >= 2), of mixed sizes: each frame must be
    # detected by the detector of its own size, as one call at a time would.
    built, lock = [], threading.Lock()

    def build(size):
        with lock:
            built.append(size)
        time.sleep(0.05)  # a slow build: the other threads arrive while it runs

        def detect(frame):
            return Detections(np.zeros((1, 4), np.float32), np.array([size], np.float32))
        return detect

    detector = OnDemandDetector(build)
    sizes = [(640, 480), (1920, 1080), (768, 576)] * 8
    frames = [Frame(i, np.zeros((h, w, 3), np.uint8)) for i, (w, h) in enumerate(sizes)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(detector, frames))
    assert [int(r.scores[0]) for r in results] == [auto_input_size(wh) for wh in sizes]
    assert sorted(built) == [640, 960, 1280]


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("1280", 1280), ("640", 640)])
def test_config_accepts_auto_and_sizes(text, expected):
    assert load_config(None, [f"detector.input_size={text}"]).detector.input_size == expected


def test_config_default_is_auto_and_source_fps_defaults_to_the_header():
    cfg = load_config(None, [])
    assert cfg.detector.input_size == "auto" and cfg.source.fps == 0.0
    with pytest.raises(ConfigError, match="source.fps must be in"):
        load_config(None, ["source.fps=-1"])
