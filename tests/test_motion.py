"""FlowTrack's box-centre motion filter: seconds and person heights, so frame rate and size do not change it."""
from __future__ import annotations

import numpy as np
import pytest

from posetrack_app.tracking.motion import CenterMotion


def _follow(fps, height_px, velocity_heights_s, seen_s=1.0, ahead_s=0.5, start=(100.0, 50.0)):
    """Feed exact centres of a person walking at a constant velocity for `seen_s`, then predict `ahead_s` further.
    Returns (predicted centre, true centre) in pixels."""
    velocity = np.asarray(velocity_heights_s, float) * height_px
    start = np.asarray(start, float)
    motion = CenterMotion(start, height_px, 0.0)
    steps = int(round(seen_s * fps))
    for i in range(1, steps + 1):
        t = i / fps
        motion.predict(t, height_px)
        motion.update(start + velocity * t, height_px)
    end_s = steps / fps + ahead_s
    motion.predict(end_s, height_px)
    return motion.center.copy(), start + velocity * end_s


@pytest.mark.parametrize("fps", [7.0, 25.0, 30.0])
@pytest.mark.parametrize("velocity", [(0.8, 0.0), (0.0, 0.3), (-3.0, 1.0)])
def test_a_steady_walker_is_predicted_half_a_second_ahead_at_any_frame_rate(fps, velocity):
    height = 120.0
    predicted, truth = _follow(fps, height, velocity)
    # Within a hundredth of the person's height after a 0.5 s gap, starting from a standstill prior.
    assert np.linalg.norm(predicted - truth) < 0.01 * height


@pytest.mark.parametrize("fps", [7.0, 30.0])
def test_the_filter_scales_with_the_person(fps):
    """The same walk seen 10x larger (positions and height) is predicted 10x larger: no pixel constant inside."""
    small, _ = _follow(fps, 40.0, (0.8, 0.2), start=(10.0, 5.0))
    large, _ = _follow(fps, 400.0, (0.8, 0.2), start=(100.0, 50.0))
    np.testing.assert_allclose(large, 10.0 * small, rtol=1e-9)


def _overshoot_after_stopping(fps, height_px=100.0):
    """A person walks 1 height/s for 1 s and stands still for 0.3 s; heights the filter places them past where they
    stopped, 0.5 s later."""
    motion = CenterMotion(np.zeros(2), height_px, 0.0)
    steps = int(round(1.3 * fps))
    for i in range(1, steps + 1):
        t = i / fps
        motion.predict(t, height_px)
        motion.update(np.array([height_px * min(t, 1.0), 0.0]), height_px)
    motion.predict(steps / fps + 0.5, height_px)
    return motion.center[0] / height_px - 1.0


def test_a_change_of_pace_is_followed_in_seconds_not_frames():
    """After the walker stops, the 7-fps and 30-fps filters overshoot alike (0.39 and 0.45 heights). A filter whose
    noise is counted per frame (1 px/frame^2, as FlowTrack's was) gives 0.43 and -0.02: at 30 fps it takes 4x as
    many updates in the same 0.3 s."""
    assert abs(_overshoot_after_stopping(7.0) - _overshoot_after_stopping(30.0)) < 0.1


@pytest.mark.parametrize("time_s", [0.0, -0.5])
def test_predicting_to_a_time_not_after_the_filters_own_changes_nothing(time_s):
    motion = CenterMotion(np.array([10.0, 20.0]), 100.0, 0.0)
    motion.predict(0.1, 100.0)
    motion.update(np.array([12.0, 20.0]), 100.0)
    before = (motion.center, motion.velocity, motion.covariance, motion.time_s)
    motion.predict(motion.time_s + time_s, 100.0)
    np.testing.assert_array_equal(motion.center, before[0])
    np.testing.assert_array_equal(motion.velocity, before[1])
    np.testing.assert_array_equal(motion.covariance, before[2])
    assert motion.time_s == before[3]


def test_velocity_is_in_pixels_per_second():
    motion = CenterMotion(np.zeros(2), 100.0, 0.0)
    for i in range(1, 31):
        motion.predict(i / 30.0, 100.0)
        motion.update(np.array([60.0 * i / 30.0, 0.0]), 100.0)
    assert motion.velocity[0] == pytest.approx(60.0, rel=0.02)
    assert abs(motion.velocity[1]) < 1e-6
