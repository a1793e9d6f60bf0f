"""The library API (posetrack_app.PoseTracker): plain values out, steady ids, step() == run(), reset(), a caller's
own boxes, outputs written while iterating, nothing printed; and the README's example, run as written."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posetrack_app import PoseTracker, TrackedFrame, TrackedPerson
from posetrack_app.errors import ConfigError, UserError
from scripted_people import DETECTOR_SCORE, KEYPOINT_SCORE, RectangleDetector, Walker, clip, keypoints_for

REPO = Path(__file__).resolve().parent.parent
# Two people in separate lanes, walking right; the IoU tracker keeps each box exactly as detected.
LANES = [Walker(0, 99, 10, 20), Walker(0, 99, 40, 140, speed_px=3)]
EXACT = {"tracker.kind": "iou"}


def make_tracker(overrides=EXACT, detector=None) -> PoseTracker:
    return PoseTracker.from_config(overrides=overrides, detector=detector or RectangleDetector())


def by_lane(persons):
    return sorted(persons, key=lambda p: p.box_xyxy[1])


def test_run_gives_frozen_plain_values_with_exact_boxes_times_and_steady_ids():
    tracker = make_tracker()
    results = list(tracker.run(clip(12, LANES)))
    assert len(results) == 12
    for index, (frame, persons) in enumerate(results):
        assert isinstance(frame, TrackedFrame) and all(isinstance(p, TrackedPerson) for p in persons)
        assert frame.index == index and frame.time_s == pytest.approx(index / 30.0, abs=1e-9)
        assert frame.capture_unix_s is None and frame.latency_s is None  # not a live source
        assert [p.track_id for p in by_lane(persons)] == [1, 2]
        for person, walker in zip(by_lane(persons), LANES):
            np.testing.assert_allclose(person.box_xyxy, walker.box(index), atol=1e-4)
            np.testing.assert_allclose(person.keypoints_xy, keypoints_for(np.array([walker.box(index)]))[0, :, :2],
                                       atol=1e-4)
            assert person.keypoints_xy.shape == (17, 2) and person.keypoint_scores.shape == (17,)
            assert person.box_score == pytest.approx(DETECTOR_SCORE, abs=1e-6)
            assert not person.propagated
    frame, persons = results[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        persons[0].track_id = 7
    for array in (persons[0].box_xyxy, persons[0].keypoints_xy, persons[0].keypoint_scores, frame.image_bgr):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    assert tracker.keypoint_names[0] == "nose" and len(tracker.keypoint_names) == 17


def _as_rows(persons):
    return [(p.track_id, p.box_xyxy.tolist(), p.keypoints_xy.tolist(), p.propagated) for p in persons]


def test_step_loop_gives_what_run_gives_with_the_default_tracker():
    images = clip(20, [Walker(0, 19, 10, 20), Walker(5, 19, 200, 120, speed_px=-4)])
    tracker = make_tracker(overrides={})
    by_run = [_as_rows(persons) for _, persons in tracker.run(images)]
    tracker.reset()
    by_step = [_as_rows(tracker.step(image)) for image in images]
    assert by_step == by_run
    assert {row[0] for rows in by_run for row in rows} == {1, 2}


def test_reset_restarts_ids_and_without_it_a_new_person_gets_a_new_id():
    tracker = make_tracker()
    first = clip(5, [Walker(0, 4, 10, 20)])
    second = clip(5, [Walker(0, 4, 200, 140)])
    ids = [p.track_id for image in first for p in tracker.step(image)]
    assert set(ids) == {1}
    # Same tracker, no reset: the person of the next clip is someone else, far away: a new, larger id.
    assert {p.track_id for image in second for p in tracker.step(image)} == {2}
    tracker.reset()
    assert {p.track_id for image in second for p in tracker.step(image)} == {1}


def test_step_timestamps_drive_the_trackers_time_limits():
    """max_lost_s is in seconds: a person missing for 0.5 s keeps the id under a 1-s limit, and loses it when the
    caller's timestamps say 5 s went by."""
    tracker = make_tracker()
    person = [Walker(0, 99, 10, 20, speed_px=0)]
    seen, empty = clip(1, person)[0], np.zeros_like(clip(1, person)[0])
    for gap_s, expected_id in ((0.5, 1), (5.0, 2)):
        tracker.reset()
        assert [p.track_id for p in tracker.step(seen, timestamp_s=0.0)] == [1]
        for time_s in (0.1, 0.9 * gap_s):  # lost from 0.1 s on
            tracker.step(empty, timestamp_s=time_s)
        assert [p.track_id for p in tracker.step(seen, timestamp_s=gap_s)] == [expected_id]


def test_callers_own_boxes_with_keypoints_skip_our_detector():
    detector = RectangleDetector()
    tracker = make_tracker(detector=detector)
    image = clip(1, LANES)[0]
    boxes = np.array([[100, 50, 130, 150, 0.7], [10, 10, 40, 90, 0.95]])
    keypoints = keypoints_for(boxes[:, :4])
    persons = tracker.step(image, boxes=boxes, keypoints=keypoints)
    assert detector.calls == 0
    assert [p.track_id for p in persons] == [1, 2]
    for person, box, joints in zip(persons, boxes, keypoints):
        np.testing.assert_allclose(person.box_xyxy, box[:4], atol=1e-4)
        assert person.box_score == pytest.approx(box[4], abs=1e-6)
        np.testing.assert_allclose(person.keypoints_xy, joints[:, :2], atol=1e-4)
        np.testing.assert_allclose(person.keypoint_scores, KEYPOINT_SCORE, atol=1e-6)
    # The next frame with our detector again: the same people keep their ids.
    assert {p.track_id for p in tracker.step(image)} <= {1, 2, 3, 4}
    assert detector.calls == 1


def test_callers_own_boxes_get_poses_from_our_pose_network(tmp_path, monkeypatch):
    """With a pose network configured (a tiny random HRNet stands in for the checkpoint), boxes alone are enough:
    each gets a pose estimated inside it."""
    from posetrack_app.pose import checkpoint
    from test_hrnet import tiny_hrnet

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(checkpoint, "load_pose_network", lambda model, path, k: tiny_hrnet(k).eval())
    detector = RectangleDetector()
    tracker = PoseTracker.from_config("configs/hrnet_w32_256x192.yaml", [f"pose.weights={weights}",
                                                                         "pose.flip_test=false"], detector=detector)
    boxes = np.array([[100, 50, 130, 150], [10, 10, 40, 90]], np.float32)
    persons = tracker.step(clip(1, LANES)[0], boxes=boxes)
    assert detector.calls == 0 and len(persons) == 2
    for person, box in zip(persons, boxes):
        np.testing.assert_allclose(person.box_xyxy, box, atol=1e-4)
        assert person.box_score == 1.0  # no score column: 1.0
        # Joints lie in the box's padded 4:3 region (width 100 / 0.75 * 1.25 at most around its centre).
        centre = (box[:2] + box[2:]) / 2
        assert (np.abs(person.keypoints_xy - centre) <= 1.25 * 100 / 2 / 0.75 + 1).all()


@pytest.mark.parametrize("boxes, keypoints, message", [
    ([[0, 0, 10, 10]], None, "boxes without keypoints need a pose network"),
    ([[0, 0, 10]], None, r"boxes must be an array \[N, 4\]"),
    ([[10, 0, 0, 10]], None, "x2 >= x1"),
    ([[0, 0, np.nan, 10]], None, "NaN"),
    ([[0, 0, 10, 10]], np.zeros((1, 5, 3)), r"keypoints must be an array \[N, 17, 3\]"),
])
def test_bad_caller_boxes_say_what_to_do(boxes, keypoints, message):
    tracker = make_tracker()
    with pytest.raises(UserError, match=message):
        tracker.step(clip(1, LANES)[0], boxes=boxes, keypoints=keypoints)


@pytest.mark.parametrize("call, message", [
    (lambda t: t.step(np.zeros((10, 10, 3), np.float32)), "BGR uint8 numpy array"),
    (lambda t: t.step(np.zeros((10, 10), np.uint8)), r"shape \[H, W, 3\]"),
    (lambda t: t.run(np.zeros((10, 10, 3), np.uint8)), "for one image call step"),
    (lambda t: list(t.run([np.zeros((10, 10, 4), np.uint8)])), "image 0 of images must be a BGR uint8"),
    (lambda t: t.run(clip(2, LANES), max_frames=0), "max_frames must be >= 1"),
    (lambda t: t.step(clip(1, LANES)[0], timestamp_s=float("nan")), "finite"),
])
def test_bad_images_say_what_to_do(call, message):
    with pytest.raises(UserError, match=message):
        call(make_tracker())


def test_overrides_as_strings_or_a_dict_give_one_config_and_bad_keys_are_config_errors():
    as_dict = make_tracker({"detector.input_size": 960, "tracker.kind": "iou", "source.fps": 7}).config
    as_strings = PoseTracker.from_config(overrides=["detector.input_size=960", "tracker.kind=iou", "source.fps=7"],
                                         detector=RectangleDetector()).config
    assert as_dict == as_strings and as_dict.detector.input_size == 960 and as_dict.source.fps == 7.0
    with pytest.raises(ConfigError, match="unknown config key tracker.colour"):
        make_tracker({"tracker.colour": "red"})
    with pytest.raises(ConfigError, match="source.reconnect_timeout_s must be in"):
        make_tracker({"source.reconnect_timeout_s": -1})
    with pytest.raises(UserError, match="wrap it in a list"):
        PoseTracker.from_config(overrides="tracker.kind=iou", detector=RectangleDetector())


def test_nothing_is_printed(capsys):
    tracker = make_tracker()
    for _ in tracker.run(clip(5, LANES)):
        pass
    tracker.step(clip(1, LANES)[0])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_outputs_written_while_iterating_are_kept_on_break_and_discarded_on_error(tmp_path):
    tracker = make_tracker()
    out = tmp_path / "kept"
    out.mkdir()
    with tracker.run(clip(30, LANES), out_json=out / "p.jsonl", out_csv=out / "p.csv") as run:
        for frame, persons in run:
            if frame.index == 4:
                break
    assert run.summary.frames == 5 and run.summary.tracks == 2
    assert [json.loads(line)["frame"] for line in (out / "p.jsonl").read_text().splitlines()] == list(range(5))
    assert len((out / "p.csv").read_text().splitlines()) == 1 + 5 * 2
    assert sorted(p.name for p in out.iterdir()) == ["p.csv", "p.jsonl"]

    failed = tmp_path / "failed"
    failed.mkdir()
    with pytest.raises(RuntimeError, match="the caller's own bug"):
        with tracker.run(clip(30, LANES), out_json=failed / "p.jsonl", out_csv=failed / "p.csv") as run:
            for frame, persons in run:
                if frame.index == 4:
                    raise RuntimeError("the caller's own bug")
    assert list(failed.iterdir()) == []


def test_without_a_with_block_a_break_keeps_the_outputs_and_close_stops_a_run(tmp_path):
    tracker = make_tracker()
    for frame, _ in tracker.run(clip(30, LANES), out_json=tmp_path / "a.jsonl"):
        if frame.index == 2:
            break
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 3
    run = tracker.run(clip(30, LANES), out_json=tmp_path / "b.jsonl")
    frames = iter(run)
    next(frames), next(frames)
    run.close()
    assert run.summary.frames == 2 and len((tmp_path / "b.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]


def test_process_runs_a_source_to_the_end_with_a_callback(tmp_path):
    tracker = make_tracker()
    seen = []
    summary = tracker.process(clip(7, LANES), out_csv=tmp_path / "p.csv",
                              on_frame=lambda frame, persons: seen.append((frame.index, len(persons))))
    assert seen == [(i, 2) for i in range(7)]
    assert (summary.frames, summary.tracks, summary.interrupted) == (7, 2, False)
    assert summary.latency_median_ms is None  # not a live source


# -- the README's example, as written --

def readme_python_blocks(section: str):
    text = (REPO / "README.md").read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section {section!r}"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)


@pytest.mark.slow
def test_readme_library_example_runs_as_written(tmp_path, shared_data):
    """The first python block of "Use it as a library", in a scratch folder with ../shared beside it (as CI runs
    the README's commands), with the real default detector: it prints its rows and writes its CSV."""
    blocks = readme_python_blocks("Use it as a library")
    assert blocks, "no python example in the README's library section"
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (tmp_path / "shared").symlink_to(shared_data.parent, target_is_directory=True)
    script = checkout / "example.py"
    script.write_text(blocks[0])
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(script)], cwd=checkout, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert len(rows) >= 30, result.stdout[-2000:]  # PETS09: several walkers in each of the first frames
    csv_files = list(checkout.glob("*.csv"))
    assert csv_files, "the example writes a CSV"
    import pandas
    table = pandas.read_csv(csv_files[0])
    assert {"track_id", "frame", "time_s", "nose_x", "propagated"} <= set(table.columns) and len(table) > 0
