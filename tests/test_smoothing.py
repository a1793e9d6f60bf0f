"""Keypoint smoothing after the tracker (tracking/smoothing.py): a One-Euro filter per track id, timed in seconds.

Most cases drive SmoothedTracker with a scripted tracker (exact truth: the keypoints it reports are the test's), then
FlowTracker and the IoU tracker through build_tracker, and the outputs (JSON Lines, CSV, API) through PoseTracker on
scripted people."""
from __future__ import annotations

import json

import numpy as np
import pandas
import pytest

from posetrack_app import PoseTracker
from posetrack_app.build import build_tracker
from posetrack_app.config import AppConfig, SmoothingConfig, replace
from posetrack_app.errors import ConfigError
from posetrack_app.skeleton import COCO17
from posetrack_app.structures import Detections, Frame, Poses, Tracks
from posetrack_app.tracking.flowtrack import FlowTracker
from posetrack_app.tracking.iou_tracker import IouTracker
from posetrack_app.tracking.smoothing import MAX_ABSENT_S, SmoothedTracker
from scripted_people import RectangleDetector, Walker, clip

K = COCO17.num_keypoints
IMAGE = np.zeros((48, 64, 3), np.uint8)
# The person's joints, as fractions of its box: a column of joints, so every joint moves with the box.
JOINT_FRACTIONS = np.stack([np.full(K, 0.5), np.linspace(0.05, 0.95, K)], axis=1)


def person(x, y, height_px):
    """(box_xyxy [4], keypoints [K, 2]) of a person of this height whose box's top-left corner is at (x, y)."""
    width_px = height_px * 0.4
    box = np.array([x, y, x + width_px, y + height_px], np.float32)
    return box, (np.array([x, y]) + JOINT_FRACTIONS * [width_px, height_px]).astype(np.float32)


class ScriptedTracker:
    """Reports, per call, the persons it was given: {track_id: (box_xyxy, keypoints)} per frame, in list order."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0
        self.resets = 0

    def reset(self):
        self.calls = 0
        self.resets += 1

    def propose(self, frame):
        return Detections.empty(K)

    def update(self, frame, poses):
        persons = self.script[self.calls]
        self.calls += 1
        ids = list(persons)
        if not ids:
            return Tracks.empty(K)
        boxes = np.stack([persons[i][0] for i in ids])
        keypoints = np.stack([persons[i][1] for i in ids])
        return Tracks(np.array(ids), Poses(keypoints, np.full((len(ids), K), 0.9), boxes, np.full(len(ids), 0.9)),
                      info={"scripted": True})


def smooth(script, fps, **kw):
    """Runs SmoothedTracker over the script at `fps`; returns the Tracks of every frame."""
    wrapper = SmoothedTracker(ScriptedTracker(script), **kw)
    return [wrapper.update(Frame(i, IMAGE, i / fps), Poses.empty(K)) for i in range(len(script))]


def frame_to_frame_px(series):
    """Mean joint motion between consecutive frames (pixels) of a [T, K, 2] series."""
    return float(np.linalg.norm(np.diff(series, axis=0), axis=-1).mean())


# ----------------------------------------------------------------------------------------------------- config

def test_smoothing_is_off_by_default_and_the_default_tracker_is_not_wrapped():
    assert AppConfig().tracker.smoothing.enabled is False
    assert isinstance(build_tracker(AppConfig(), COCO17), FlowTracker)


@pytest.mark.parametrize("kind, inner", [("flowtrack", FlowTracker), ("iou", IouTracker)])
def test_enabled_wraps_either_tracker_with_the_configured_filter(kind, inner):
    cfg = replace(AppConfig(), **{"tracker.kind": kind, "tracker.smoothing.enabled": True,
                                  "tracker.smoothing.min_cutoff_hz": 2.5, "tracker.smoothing.beta": 3.0})
    tracker = build_tracker(cfg, COCO17)
    assert isinstance(tracker, SmoothedTracker) and isinstance(tracker.tracker, inner)
    assert (tracker.min_cutoff_hz, tracker.beta) == (2.5, 3.0)


@pytest.mark.parametrize("overrides, message", [
    ({"tracker.smoothing.min_cutoff_hz": 0}, "min_cutoff_hz"),
    ({"tracker.smoothing.beta": -1}, "beta"),
    # The old per-tracker option is gone: one way to smooth, for both trackers.
    ({"tracker.flow.smoothing": "one_euro"}, "smoothing"),
])
def test_bad_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        PoseTracker.from_config(overrides=overrides, detector=RectangleDetector())


def test_a_wrapper_built_by_hand_is_range_checked_like_the_config():
    with pytest.raises(ConfigError, match="min_cutoff_hz"):
        SmoothedTracker(ScriptedTracker([]), min_cutoff_hz=-1.0)
    with pytest.raises(ValueError, match="max_absent_s"):
        SmoothedTracker(ScriptedTracker([]), max_absent_s=-1.0)


# ------------------------------------------------------------------------------------------------ the filter

@pytest.mark.parametrize("fps, noise_px, height_px, min_factor", [
    # White noise of 2% and 3.3% of the height. At the 1 Hz minimum cutoff alone the frame-to-frame motion would
    # shrink 2.6x at 7 fps and 8x at 30 fps; the noise also looks like speed and raises the cutoff (beta), so the
    # defaults give 2.0x, 4.7x and 3.8x (seeds 0-4 agree to 0.03). Asserted with a margin.
    (7, 2.0, 100, 1.8),
    (30, 2.0, 100, 4.0),
    (30, 10.0, 300, 3.3),
])
def test_the_jitter_of_a_still_noisy_person_shrinks_by_a_stated_factor(fps, noise_px, height_px, min_factor):
    rng = np.random.default_rng(0)
    box, truth = person(100, 50, height_px)
    frames = 6 * fps
    noisy = truth + rng.normal(0, noise_px, (frames, K, 2)).astype(np.float32)
    out = smooth([{1: (box, noisy[t])} for t in range(frames)], fps)
    settled = slice(fps, None)  # after the first second
    smoothed = np.stack([tracks.poses.keypoints[0] for tracks in out])
    raw = np.stack([tracks.raw_keypoints[0] for tracks in out])
    np.testing.assert_array_equal(raw, noisy)
    assert frame_to_frame_px(smoothed[settled]) * min_factor <= frame_to_frame_px(raw[settled])
    # Less jitter also means nearer the truth.
    assert np.abs(smoothed[settled] - truth).mean() < np.abs(raw[settled] - truth).mean()


def _walk(fps, height_px, speed_heights_per_s, seconds=3.0):
    """Script of one person walking right at a constant speed; returns (script, true keypoints [T, K, 2])."""
    frames = int(round(seconds * fps)) + 1
    script, truth = [], []
    for t in range(frames):
        box, keypoints = person(20 + speed_heights_per_s * height_px * t / fps, 40, height_px)
        script.append({7: (box, keypoints)})
        truth.append(keypoints)
    return script, np.stack(truth)


# Lag bound: at steady state a One-Euro filter trails a constant-speed joint by speed / (2 pi cutoff), with
# cutoff = min_cutoff_hz + beta * speed; at the defaults (1 Hz, 5 per height/s) and 1 height/s that is 1 / (2 pi 6)
# = 2.7% of the height. The 30-px and 300-px people must lag by the same fraction of their height.
@pytest.mark.parametrize("height_px", [30, 300])
@pytest.mark.parametrize("speed_heights_per_s", [0.5, 1.0, 2.0])
def test_a_moving_person_is_followed_with_a_bounded_lag_relative_to_its_size(height_px, speed_heights_per_s):
    cfg = SmoothingConfig()
    script, truth = _walk(30, height_px, speed_heights_per_s)
    out = smooth(script, 30)
    lag_px = np.linalg.norm(out[-1].poses.keypoints[0] - truth[-1], axis=-1)
    speed = speed_heights_per_s
    expected_fraction = speed / (2 * np.pi * (cfg.min_cutoff_hz + cfg.beta * speed))
    np.testing.assert_allclose(lag_px / height_px, expected_fraction, rtol=0.05)
    assert (lag_px / height_px < 0.05).all()


def test_the_time_step_comes_from_timestamps_so_the_lag_is_the_same_at_any_frame_rate():
    """The same walk in seconds, at 7, 15 and 30 fps: the same lag in pixels after 3 s (a filter stepped per frame
    would lag about four times more at 7 fps than at 30)."""
    lags = {}
    for fps in (7, 15, 30):
        script, truth = _walk(fps, 100, 1.0)
        out = smooth(script, fps)
        lags[fps] = float(np.linalg.norm(out[-1].poses.keypoints[0] - truth[-1], axis=-1).mean())
    assert lags[30] > 1.0  # there is a lag to compare
    np.testing.assert_allclose([lags[7], lags[15]], lags[30], rtol=0.03)


def test_frames_without_advancing_time_are_taken_a_thirtieth_of_a_second_apart():
    """Frames made by hand (all at 0 s) are smoothed as 30-fps frames, not with a zero time step."""
    script, truth = _walk(30, 100, 1.0)
    wrapper = SmoothedTracker(ScriptedTracker(script))
    out = [wrapper.update(Frame(i, IMAGE, 0.0), Poses.empty(K)) for i in range(len(script))]
    timed = smooth(script, 30)
    np.testing.assert_allclose(out[-1].poses.keypoints, timed[-1].poses.keypoints, atol=1e-3)


def test_each_track_id_is_filtered_on_its_own():
    """Two people, reported in a changing row order: each one's output is what it would be alone."""
    rng = np.random.default_rng(1)
    box_a, still = person(10, 10, 80)
    walk, _ = _walk(30, 120, 1.0, seconds=2.0)
    frames = len(walk)
    noisy = still + rng.normal(0, 2.0, (frames, K, 2)).astype(np.float32)
    both = []
    for t in range(frames):
        a, b = (3, (box_a, noisy[t])), (7, walk[t][7])
        both.append(dict([a, b] if t % 2 else [b, a]))
    together = smooth(both, 30)
    alone_a = smooth([{3: (box_a, noisy[t])} for t in range(frames)], 30)
    alone_b = smooth(walk, 30)
    for t in range(frames):
        ids = together[t].track_ids.tolist()
        np.testing.assert_array_equal(together[t].poses.keypoints[ids.index(3)], alone_a[t].poses.keypoints[0])
        np.testing.assert_array_equal(together[t].poses.keypoints[ids.index(7)], alone_b[t].poses.keypoints[0])


@pytest.mark.parametrize("gap_s, restarts", [(0.5, False), (MAX_ABSENT_S, False), (MAX_ABSENT_S + 0.2, True)])
def test_a_track_keeps_its_filter_through_a_short_absence_and_restarts_after_the_limit(gap_s, restarts):
    fps = 10
    gap_frames = int(round(gap_s * fps))
    box, home = person(30, 30, 100)
    away = home + 25.0  # where the person is when it comes back
    script = [{5: (box, home)}] * 20 + [{}] * (gap_frames - 1) + [{5: (box, away)}]
    wrapper = SmoothedTracker(ScriptedTracker(script))
    out = [wrapper.update(Frame(i, IMAGE, i / fps), Poses.empty(K)) for i in range(len(script))]
    back = out[-1].poses.keypoints[0]
    if restarts:
        np.testing.assert_array_equal(back, away)  # a fresh filter starts at the measurement
    else:
        assert np.abs(back - away).min() > 0.5  # the old state still pulls toward `home`


def test_filters_of_absent_tracks_are_dropped_so_memory_stays_bounded():
    """A long stream of people who each stay one second: the filters held never exceed those of the last
    MAX_ABSENT_S, however many ids the stream has seen."""
    fps, stay_frames = 10, 10
    script = []
    for t in range(600):
        track_id = 1 + t // stay_frames  # a new person every second; ids never reused
        script.append({track_id: person(t % 40, 10, 50)})
    wrapper = SmoothedTracker(ScriptedTracker(script))
    held = []
    for i in range(len(script)):
        wrapper.update(Frame(i, IMAGE, i / fps), Poses.empty(K))
        held.append(wrapper.num_filters)
    assert max(held) <= 2 + int(MAX_ABSENT_S * fps / stay_frames)
    assert held[-1] >= 1


def test_reset_clears_every_filter_and_resets_the_wrapped_tracker():
    box, keypoints = person(30, 30, 100)
    script = [{1: (box, keypoints)}] * 10 + [{1: (box, keypoints + 30.0)}]
    inner = ScriptedTracker(script)
    wrapper = SmoothedTracker(inner)
    for i in range(10):
        wrapper.update(Frame(i, IMAGE, i / 30), Poses.empty(K))
    assert wrapper.num_filters == 1
    wrapper.reset()
    assert inner.resets == 1 and wrapper.num_filters == 0
    inner.calls = 10  # the script's next frame: the same id, elsewhere
    tracks = wrapper.update(Frame(0, IMAGE, 0.0), Poses.empty(K))
    np.testing.assert_array_equal(tracks.poses.keypoints[0], keypoints + 30.0)


def test_only_keypoints_change_and_the_trackers_info_passes_through():
    rng = np.random.default_rng(2)
    box, keypoints = person(30, 30, 100)
    out = smooth([{4: (box, keypoints + rng.normal(0, 3, keypoints.shape))} for _ in range(10)], 30)
    for tracks in out:
        assert tracks.info == {"scripted": True} and tracks.track_ids.tolist() == [4]
        np.testing.assert_array_equal(tracks.poses.boxes_xyxy[0], box)
        assert tracks.poses.keypoints.dtype == np.float32 and tracks.raw_keypoints.dtype == np.float32
    assert not np.array_equal(out[-1].poses.keypoints, out[-1].raw_keypoints)


# ---------------------------------------------------------------------------------------------- real trackers

@pytest.mark.parametrize("kind", ["flowtrack", "iou"])
def test_raw_keypoints_are_the_trackers_own_output_and_matching_is_unchanged(kind):
    """The same noisy walking people through the bare tracker and the wrapped one: equal ids, boxes and raw
    keypoints, every frame; the smoothed keypoints have less frame-to-frame jitter (the old FlowTracker test's
    still person, now for both trackers)."""
    from scripted_people import keypoints_for

    rng = np.random.default_rng(3)
    walkers = [Walker(0, 59, 10, 20, speed_px=0.0), Walker(0, 59, 40, 140, speed_px=3)]
    images = clip(60, walkers, textured=True)
    cfg = replace(AppConfig(), **{"tracker.kind": kind})
    bare = build_tracker(cfg, COCO17)
    wrapped = build_tracker(replace(cfg, **{"tracker.smoothing.enabled": True}), COCO17)
    raw_still, smooth_still = [], []
    for i, image in enumerate(images):
        boxes = np.array([w.box(i) for w in walkers], np.float32)
        joints = keypoints_for(boxes)
        joints[..., :2] += rng.normal(0, 1.5, joints[..., :2].shape)
        poses = Poses(joints[..., :2], joints[..., 2], boxes, np.full(len(boxes), 0.9))
        frame = Frame(i, image, i / 25)
        bare.propose(frame), wrapped.propose(frame)
        expected, got = bare.update(frame, poses), wrapped.update(frame, poses)
        np.testing.assert_array_equal(got.track_ids, expected.track_ids)
        np.testing.assert_array_equal(got.poses.boxes_xyxy, expected.poses.boxes_xyxy)
        np.testing.assert_array_equal(got.raw_keypoints, expected.poses.keypoints)
        assert expected.raw_keypoints is None
        still_row = np.flatnonzero(got.poses.boxes_xyxy[:, 1] < 100)
        if len(still_row):
            raw_still.append(got.raw_keypoints[still_row[0]])
            smooth_still.append(got.poses.keypoints[still_row[0]])
    assert len(raw_still) >= 50
    assert frame_to_frame_px(np.stack(smooth_still[10:])) * 2 <= frame_to_frame_px(np.stack(raw_still[10:]))


def test_tracks_check_the_shape_of_raw_keypoints():
    poses = Poses(np.zeros((2, K, 2)), np.zeros((2, K)), np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(ValueError, match="raw_keypoints"):
        Tracks(np.array([1, 2]), poses, raw_keypoints=np.zeros((1, K, 2)))
    assert Tracks(np.array([1, 2]), poses, raw_keypoints=np.zeros((2, K, 2), np.float64)).raw_keypoints.dtype \
        == np.float32


# ---------------------------------------------------------------------------------------------------- outputs

WALKERS = [Walker(0, 29, 10, 20, speed_px=4), Walker(0, 29, 40, 140, speed_px=0)]


@pytest.mark.parametrize("enabled", [False, True])
def test_json_lines_csv_and_api_carry_raw_keypoints_only_when_smoothing_is_on(tmp_path, enabled):
    from scripted_people import keypoints_for

    tracker = PoseTracker.from_config(overrides={"tracker.kind": "iou", "tracker.smoothing.enabled": enabled},
                                      detector=RectangleDetector())
    jsonl, csv = tmp_path / "out.jsonl", tmp_path / "out.csv"
    persons_seen = []
    with tracker.run(clip(30, WALKERS), out_json=jsonl, out_csv=csv) as run:
        for frame, persons in run:
            persons_seen += [(frame.index, p) for p in persons]
    assert len(persons_seen) == 60

    raw_columns = [f"raw_{j}_{a}" for j in COCO17.keypoint_names for a in "xy"]
    table = pandas.read_csv(csv)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    json_persons = [p for r in records for p in r["persons"]]
    if not enabled:
        assert all(p.raw_keypoints_xy is None for _, p in persons_seen)
        assert not any("raw_keypoints" in p for p in json_persons)
        assert not any(c.startswith("raw_") for c in table.columns)
        return

    # The detector's exact joints are the raw values; the walker's smoothed joints trail them.
    moved = 0
    for index, p in persons_seen:
        walker = WALKERS[0] if p.box_xyxy[1] < 100 else WALKERS[1]
        exact = keypoints_for(np.array([walker.box(index)], np.float32))[0, :, :2]
        np.testing.assert_allclose(p.raw_keypoints_xy, exact, atol=1e-4)
        assert not p.raw_keypoints_xy.flags.writeable
        moved += not np.allclose(p.keypoints_xy, exact, atol=0.01)
    assert moved >= 25  # the walker's frames after its first
    assert list(table.columns[-len(raw_columns):]) == raw_columns
    assert all("raw_keypoints" in p and len(p["raw_keypoints"]) == K for p in json_persons)
    by_key = {(index, p.track_id): p for index, p in persons_seen}
    for row in table.itertuples(index=False):
        p = by_key[(row.frame, row.track_id)]
        raw = np.array([getattr(row, c) for c in raw_columns]).reshape(K, 2)
        np.testing.assert_allclose(raw, p.raw_keypoints_xy, atol=0.006)
        smoothed = np.array([[getattr(row, f"{j}_x"), getattr(row, f"{j}_y")] for j in COCO17.keypoint_names])
        np.testing.assert_allclose(smoothed, p.keypoints_xy, atol=0.006)
    for record in records:
        for p in record["persons"]:
            person_ = by_key[(record["frame"], p["track_id"])]
            np.testing.assert_allclose(p["raw_keypoints"], person_.raw_keypoints_xy, atol=0.006)
            np.testing.assert_allclose(np.array(p["keypoints"])[:, :2], person_.keypoints_xy, atol=0.006)
