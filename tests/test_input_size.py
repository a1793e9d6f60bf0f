"""detector.input_size "auto": the rule, the lazily built detector, and the config value."""
import numpy as np
import pytest

from posetrack_app.config import load_config
from posetrack_app.errors import ConfigError
from posetrack_app.input_size import AutoInputSizeDetector, auto_input_size
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


def test_auto_detector_is_built_for_the_frame_size_and_rebuilt_when_it_changes():
    built = []

    def build(size):
        built.append(size)
        return lambda frame: Detections.empty()

    detector = AutoInputSizeDetector(build)
    for wh in [(640, 480), (640, 480), (1920, 1080), (1920, 1080), (1280, 720)]:
        detector(Frame(0, np.zeros((wh[1], wh[0], 3), np.uint8)))
    assert built == [640, 1280]      # 1280x720 also resolves to 1280: no rebuild
    assert detector.input_size == 1280


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("1280", 1280), ("640", 640)])
def test_config_accepts_auto_and_sizes(text, expected):
    assert load_config(None, [f"detector.input_size={text}"]).detector.input_size == expected


def test_config_default_is_auto_and_source_fps_defaults_to_the_header():
    cfg = load_config(None, [])
    assert cfg.detector.input_size == "auto" and cfg.source.fps == 0.0
    with pytest.raises(ConfigError, match="source.fps must be in"):
        load_config(None, ["source.fps=-1"])
