"""KeypointFlow on synthetic textured images moved by known translations."""
import cv2
import numpy as np
import pytest

from posetrack_app.tracking.flow import KeypointFlow


def _texture(seed=0, h=240, w=320):
    rng = np.random.default_rng(seed)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _shifted(gray, dx, dy):
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.cvtColor(cv2.warpAffine(gray, m, gray.shape[::-1], borderMode=cv2.BORDER_REFLECT), cv2.COLOR_GRAY2BGR)


POINTS = np.float32([[100, 100], [160, 120], [60, 70], [220, 180]])


@pytest.mark.parametrize("method, downscale, shift, tolerance_px", [
    ("lk", 1.0, (3.5, -2.25), 0.1),
    ("lk", 1.0, (14.0, 6.0), 0.2),
    ("lk", 0.5, (3.5, -2.25), 0.3),
    ("dis", 1.0, (3.5, -2.25), 0.5),
    ("farneback", 1.0, (3.5, -2.25), 0.3),
    ("farneback", 0.5, (3.5, -2.25), 0.5),
])
def test_known_translation_is_recovered(method, downscale, shift, tolerance_px):
    gray = _texture()
    # At full resolution a 21-px window with 3 levels reaches as far as the default 11 px and 2 levels at half size.
    reach = dict(window_px=21, pyramid_levels=3) if downscale == 1.0 else {}
    flow = KeypointFlow(method, downscale=downscale, **reach)
    flow.next_frame(_shifted(gray, 0, 0))
    flow.next_frame(_shifted(gray, *shift))
    result = flow.track(POINTS)
    assert result.reliable.all()
    np.testing.assert_allclose(result.points_px - POINTS, np.broadcast_to(shift, POINTS.shape), atol=tolerance_px)


def test_point_leaving_the_image_is_unreliable():
    gray = _texture()
    flow = KeypointFlow("lk")
    flow.next_frame(_shifted(gray, 0, 0))
    flow.next_frame(_shifted(gray, 6, 0))
    result = flow.track(np.float32([[317, 100], [100, 100]]))
    assert result.reliable.tolist() == [False, True]


def test_occluded_point_fails_forward_backward_check():
    gray = _texture()
    second = _shifted(gray, 2, 0)
    second[80:140, 80:140] = _texture(seed=9)[80:140, 80:140, None]  # unrelated texture covers the point
    flow = KeypointFlow("lk", fb_max_error_px=1.0)
    flow.next_frame(_shifted(gray, 0, 0))
    flow.next_frame(second)
    result = flow.track(np.float32([[110, 110], [220, 180]]))
    assert result.reliable.tolist() == [False, True]
    assert result.fb_error_px[0] > 1.0


def test_before_two_frames_and_empty_input():
    flow = KeypointFlow("lk")
    assert not flow.has_pair
    flow.next_frame(_shifted(_texture(), 0, 0))
    result = flow.track(POINTS)
    assert not result.reliable.any() and np.array_equal(result.points_px, POINTS)
    flow.next_frame(_shifted(_texture(), 1, 0))
    assert flow.track(np.zeros((0, 2))).points_px.shape == (0, 2)


def test_size_change_restarts_and_bad_arguments_say_what_is_allowed():
    flow = KeypointFlow("lk")
    flow.next_frame(np.zeros((240, 320, 3), np.uint8))
    flow.next_frame(np.zeros((120, 160, 3), np.uint8))
    assert not flow.has_pair
    with pytest.raises(ValueError, match="lk, dis, farneback"):
        KeypointFlow("horn-schunck")
    with pytest.raises(ValueError, match="downscale"):
        KeypointFlow("lk", downscale=2.0)
