"""Output files get a late-confirmed person's first frames back (tracking/backfill.py): the Backfill buffer on
scripted tracker reports with exact expectations, the sink writer (files back-filled, a live view never), and the
library run end to end with FlowTrack, a person first detected weakly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posetrack_app import PoseTracker
from posetrack_app.io.sinks import SinkWriter
from posetrack_app.structures import LATE_POSES, PENDING_SINCE, Detections, Frame, Poses, Tracks
from posetrack_app.tracking.backfill import Backfill, with_late_poses
from scripted_people import RectangleDetector, Walker, clip

K = 17


def _person(track_id: int, x: float) -> Tracks:
    keypoints = np.full((1, K, 2), x, np.float32)
    return Tracks(np.array([track_id]), Poses(keypoints, np.full((1, K), 0.8, np.float32),
                                              np.array([[x, 0, x + 10, 30]], np.float32), np.array([0.4])))


def _report(ids, late=None, pending_since=None) -> Tracks:
    """A tracker's report: people `ids` (each at x = 10 * id); late = {frame: [ids]} handed over now."""
    tracks = (Tracks.empty(K) if not ids else
              Tracks(np.array(ids), Poses.concatenate([_person(i, 10.0 * i).poses for i in ids])))
    if late:
        tracks.info[LATE_POSES] = {f: Tracks(np.array(people), Poses.concatenate([_person(i, 10.0 * i).poses
                                                                                  for i in people]))
                                   for f, people in late.items()}
    if pending_since is not None:
        tracks.info[PENDING_SINCE] = pending_since
    return tracks


# Each case: per frame (reported ids, late {frame: ids}, pending_since); expected per frame: (ids in the file,
# frames released after that frame's push).
CASES = {
    "nothing pending: each frame goes out at once": (
        [([1], None, None), ([1], None, None)],
        [[1], [1]], [[0], [1]]),
    "confirmed at frame 2: frames 0 and 1 get it back": (
        [([], None, 0), ([], None, 0), ([7], {0: [7], 1: [7]}, None)],
        [[7], [7], [7]], [[], [], [0, 1, 2]]),
    "pending from frame 1, dropped unconfirmed (the bag): nothing added": (
        [([1], None, 1), ([1], None, None)],
        [[1], [1]], [[0], [1]]),
    "two pending at once, confirmed in turn": (
        [([1], None, 0), ([1], None, 0), ([1, 2], {0: [2], 1: [2]}, 1), ([1, 2, 3], {1: [3], 2: [3]}, None)],
        [[1, 2], [1, 2, 3], [1, 2, 3], [1, 2, 3]], [[], [], [0], [1, 2, 3]]),
    "still pending at the end: flush releases them as they are": (
        [([1], None, None), ([1], None, 1), ([1], None, 1)],
        [[1], [1], [1]], [[0], [], []]),
}


@pytest.mark.parametrize("reports, file_ids, released", CASES.values(), ids=list(CASES))
def test_backfill_puts_late_poses_in_their_frames_and_keeps_the_order(reports, file_ids, released):
    backfill = Backfill()
    out, live = [], []
    for index, (ids, late, pending) in enumerate(reports):
        tracks = _report(ids, late, pending)
        live.append(tracks)
        ready = backfill.push(Frame(index, np.zeros((4, 4, 3), np.uint8)), tracks, f"extra {index}")
        assert [f.index for f, _, _ in ready] == released[index], f"after frame {index}"
        out += ready
    out += backfill.flush()
    assert [f.index for f, _, _ in out] == list(range(len(reports)))
    assert [extra for _, _, extra in out] == [f"extra {i}" for i in range(len(reports))]
    assert [sorted(t.track_ids.tolist()) for _, t, _ in out] == file_ids
    for _, tracks, _ in out:  # each late pose is that person's own, in its frame
        np.testing.assert_allclose(tracks.poses.keypoints[:, 0, 0], 10.0 * tracks.track_ids)
    # What a live view was given is never changed.
    assert [sorted(t.track_ids.tolist()) for t in live] == [sorted(ids) for ids, _, _ in reports]


@pytest.mark.parametrize("raw", [None, "smoothed"])
def test_late_poses_keep_their_own_keypoints_as_raw(raw):
    held = _person(1, 10.0)
    if raw:
        held = Tracks(held.track_ids, held.poses, raw_keypoints=held.poses.keypoints + 1.0)
    merged = with_late_poses(held, _person(2, 20.0))
    assert merged.track_ids.tolist() == [1, 2]
    if raw is None:
        assert merged.raw_keypoints is None
    else:
        np.testing.assert_allclose(merged.raw_keypoints[:, 0, 0], [11.0, 20.0])


class _Recorder:
    def __init__(self, live: bool):
        self.live, self.seen, self.finished = live, [], False

    def write(self, frame, tracks, fps):
        self.seen.append((frame.index, sorted(tracks.track_ids.tolist())))

    def finish(self):
        self.finished = True

    def close(self, keep=True):
        pass


@pytest.mark.parametrize("keep", [True, False])
def test_sink_writer_back_fills_files_but_never_a_live_view(keep):
    live, file = _Recorder(live=True), _Recorder(live=False)
    writer = SinkWriter([live, file])
    reports = [([], None, 0), ([], None, 0), ([5], {0: [5], 1: [5]}, None), ([5], None, 3)]
    for index, (ids, late, pending) in enumerate(reports):
        writer.put(Frame(index, np.zeros((4, 4, 3), np.uint8)), _report(ids, late, pending), None)
    writer.close(keep=keep)
    assert live.seen == [(0, []), (1, []), (2, [5]), (3, [5])]
    # The last frame was held for a track still pending; a kept run writes it at the end, a discarded one need not.
    assert file.seen == ([(0, [5]), (1, [5]), (2, [5]), (3, [5])] if keep else [(0, [5]), (1, [5]), (2, [5])])
    assert file.finished == keep


class _ScoredDetector:
    """RectangleDetector with the box score of each frame taken from `scores` (a weakly detected person)."""

    def __init__(self, scores):
        self.detector, self.scores = RectangleDetector(), scores

    def __call__(self, frame) -> Detections:
        found = self.detector(frame)
        return Detections(found.boxes_xyxy, np.full(len(found), self.scores[frame.index], np.float32),
                          found.keypoints)


def test_a_person_first_detected_weakly_is_in_the_files_from_their_first_frame(tmp_path):
    """FlowTrack reports a person whose detections start at 0.36 (under confirm_score) only once their scores add up
    to 0.8, at frame 2; the live iteration shows them from frame 2, the files from frame 0, under the same id."""
    scores = [0.36, 0.36, 0.36, 0.9, 0.9, 0.9]
    walker = Walker(0, 99, 60, 40, speed_px=2.0)
    tracker = PoseTracker.from_config(detector=_ScoredDetector(scores))
    live = []
    with tracker.run(clip(len(scores), [walker], textured=True), out_mot=tmp_path / "t.txt",
                     out_json=tmp_path / "t.jsonl") as run:
        for frame, persons in run:
            live.append([p.track_id for p in persons])
    assert live == [[], [], [1], [1], [1], [1]]
    mot = [line.split(",") for line in (tmp_path / "t.txt").read_text().splitlines()]
    assert [(int(row[0]), int(row[1])) for row in mot] == [(i + 1, 1) for i in range(len(scores))]
    for row in mot:  # each frame's own detection, where the walker was
        x = float(row[2])
        assert x == pytest.approx(walker.box(int(row[0]) - 1)[0], abs=1e-3)
    frames = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [[p["track_id"] for p in f["persons"]] for f in frames] == [[1]] * len(scores)
    assert not any(p["propagated"] for f in frames for p in f["persons"])


def test_a_single_weak_detection_is_never_written(tmp_path):
    """The bag of issue 12: one detection at 0.36, then nothing: no frame of any file has it."""
    scores = [0.36, 0.0, 0.0, 0.0]
    tracker = PoseTracker.from_config(detector=_ScoredDetector(scores))
    images = clip(len(scores), [Walker(0, 0, 60, 40)], textured=True)
    tracker.process(images, out_mot=tmp_path / "t.txt", out_json=tmp_path / "t.jsonl")
    assert (tmp_path / "t.txt").read_text() == ""
    frames = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [f["persons"] for f in frames] == [[]] * len(scores)
