"""--out-csv: one row per person per frame with named columns, loaded with pandas.read_csv; exact values on
scripted people; the propagated flag; ids never reused within a run; the CLI writes it atomically."""
from __future__ import annotations

import numpy as np
import pandas
import pytest

from posetrack_app import PoseTracker
from posetrack_app.cli import main
from posetrack_app.io.sinks import CsvSink
from posetrack_app.skeleton import COCO17
from posetrack_app.structures import Frame, Poses, Tracks
from scripted_people import (DETECTOR_SCORE, KEYPOINT_SCORE, MissingFrames, RectangleDetector, Walker, clip,
                             ids_by_first_appearance, keypoints_for)

LANES = [Walker(0, 99, 10, 20), Walker(3, 99, 40, 140, speed_px=3)]
JOINT_COLUMNS = [f"{joint}_{part}" for joint in COCO17.keypoint_names for part in ("x", "y", "score")]
COLUMNS = ["track_id", "frame", "time_s", "box_x1", "box_y1", "box_x2", "box_y2", "box_score", "propagated",
           *JOINT_COLUMNS]


def tracker(overrides=None, detector=None) -> PoseTracker:
    return PoseTracker.from_config(overrides=overrides if overrides is not None else {"tracker.kind": "iou"},
                                   detector=detector or RectangleDetector())


def test_csv_loads_into_pandas_with_named_columns_and_the_exact_values(tmp_path):
    out = tmp_path / "people.csv"
    tracker().process(clip(10, LANES), out_csv=out)
    table = pandas.read_csv(out)
    assert list(table.columns) == COLUMNS
    for column in ("track_id", "frame", "propagated"):
        assert table[column].dtype == np.int64, column
    # Lane 0 from frame 0, lane 1 from frame 3: 10 + 7 rows.
    assert len(table) == 17
    for row in table.itertuples(index=False):
        walker = LANES[0] if row.box_y1 < 100 else LANES[1]
        box = np.array(walker.box(row.frame), np.float64)
        assert row.track_id == (1 if walker is LANES[0] else 2)
        assert row.time_s == pytest.approx(row.frame / 30.0, abs=5e-5)  # 4 decimals
        np.testing.assert_allclose([row.box_x1, row.box_y1, row.box_x2, row.box_y2], box, atol=0.005)
        assert row.box_score == pytest.approx(DETECTOR_SCORE, abs=5e-5) and row.propagated == 0
        joints = np.array([getattr(row, c) for c in JOINT_COLUMNS]).reshape(17, 3)
        truth = keypoints_for(box[None])[0]
        np.testing.assert_allclose(joints[:, :2], truth[:, :2], atol=0.005)  # 2 decimals
        np.testing.assert_allclose(joints[:, 2], KEYPOINT_SCORE, atol=5e-5)


def test_propagated_flag_marks_poses_the_detector_did_not_see(tmp_path):
    """FlowTrack carries a person the detector misses for 3 frames (0.1 s, within max_propagation_s): those rows
    say propagated=1, all others 0."""
    missed = [10, 11, 12]
    walker = Walker(0, 29, 20, 40, speed_px=2, width=40, height=120)
    out = tmp_path / "p.csv"
    tracker({}, MissingFrames(RectangleDetector(), missed)).process(clip(30, [walker], textured=True), out_csv=out)
    table = pandas.read_csv(out)
    assert table["frame"].tolist() == list(range(30)) and set(table["track_id"]) == {1}
    assert table.loc[table["propagated"] == 1, "frame"].tolist() == missed
    # A propagated box follows the person (2 px a frame) within a few pixels.
    for row in table[table["propagated"] == 1].itertuples(index=False):
        assert abs(row.box_x1 - walker.box(row.frame)[0]) <= 3.0


def test_csv_sink_rows_follow_the_tracks_exactly(tmp_path):
    """The sink alone, on hand-made tracks: provenance >= 0 is propagated, the wall-clock column for live sources,
    a frame without persons writes no row."""
    keypoints = np.arange(2 * 17 * 2, dtype=np.float32).reshape(2, 17, 2)
    poses = Poses(keypoints, np.full((2, 17), 0.5), [[1, 2, 3, 4], [5, 6, 7, 8]], [0.25, 0.75], proposed_by=[-1, 4])
    tracks = Tracks([4, 9], poses)
    path = tmp_path / "t.csv"
    sink = CsvSink(path, COCO17, wall_clock=True)
    sink.write(Frame(3, np.zeros((8, 8, 3), np.uint8), 0.1, capture_unix_s=1700000000.123456), tracks, None)
    sink.write(Frame(4, np.zeros((8, 8, 3), np.uint8), 0.2, capture_unix_s=1700000000.2), Tracks.empty(17), None)
    assert not path.exists()  # written under a temporary name until closed
    sink.close(keep=True)
    table = pandas.read_csv(path)
    assert list(table.columns) == COLUMNS[:3] + ["capture_unix_s"] + COLUMNS[3:]
    assert table["track_id"].tolist() == [4, 9] and table["frame"].tolist() == [3, 3]
    assert table["propagated"].tolist() == [0, 1]
    assert table["capture_unix_s"].tolist() == pytest.approx([1700000000.123456] * 2, abs=1e-6)
    np.testing.assert_allclose(table[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy(), [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_allclose(table[["nose_x", "nose_y", "left_eye_x"]].to_numpy(), [[0, 1, 2], [34, 35, 36]])


def test_a_run_without_persons_gives_a_header_that_pandas_reads(tmp_path):
    path = tmp_path / "none.csv"
    tracker().process([np.zeros((60, 80, 3), np.uint8)] * 3, out_csv=path)
    table = pandas.read_csv(path)
    assert list(table.columns) == COLUMNS and len(table) == 0


@pytest.mark.parametrize("kind", ["flowtrack", "iou"])
def test_ids_are_never_reused_within_a_run(tmp_path, kind):
    """A leaves (frame 19) and is gone long past max_lost_s (1 s; B comes 3 s later); B then appears where A walked,
    C is there throughout. Every new person gets a new, larger id: ids in order of first appearance are 1, 2, 3.
    (Within FlowTrack's default max_lost_s, 4 s, B would take A's id where A was last seen: the tracker cannot tell a
    newcomer there from A who stood still behind an occluder; tests/test_flowtrack.py.)"""
    walkers = [Walker(0, 19, 10, 20, width=30, height=90),    # A
               Walker(0, 139, 10, 130, width=30, height=90),  # C
               Walker(110, 139, -180, 20, width=30, height=90)]  # B, at A's last place (x = 50) at frame 115
    out = tmp_path / "ids.csv"
    tracker({"tracker.kind": kind, "tracker.flow.max_lost_s": 1.0, "tracker.iou.max_lost_s": 1.0}).process(
        clip(140, walkers, textured=True), out_csv=out)
    table = pandas.read_csv(out)
    order = ids_by_first_appearance(list(zip(table["frame"], table["track_id"])))
    assert order == sorted(order) and len(order) == len(set(order)) == 3
    first_frame = table.groupby("track_id")["frame"].min().to_dict()
    last_frame = table.groupby("track_id")["frame"].max().to_dict()
    a, c, b = sorted(first_frame, key=lambda t: (first_frame[t], table.loc[table.track_id == t, "box_y1"].iloc[0]))
    assert last_frame[a] == 19 and first_frame[b] == 110 and b > max(a, c)


@pytest.mark.parametrize("argv, fragments", [
    (["--out-csv", "{d}/x.txt"], ["--out-csv", "must end in one of .csv"]),
    (["--out-csv", "{d}/x.csv", "--out-mot", "{d}/x.csv"], ["--out-csv", "--out-mot", "same file"]),
    (["--out-csv", "{d}/missing/x.csv"], ["does not exist"]),
])
def test_cli_rejects_bad_csv_outputs_before_the_run(tmp_path, capsys, argv, fragments):
    image_folder = tmp_path / "frames"
    image_folder.mkdir()
    code = main(["track", str(image_folder), "--no-progress", *[a.format(d=tmp_path) for a in argv]])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
