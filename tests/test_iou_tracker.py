"""The greedy IoU baseline on synthetic scenes with exact truth."""
import numpy as np
import pytest

from posetrack_app.skeleton import COCO17
from posetrack_app.structures import Frame, Poses
from posetrack_app.tracking.iou_tracker import IouTracker

IMAGE = np.zeros((8, 8, 3), np.uint8)
FRAME = Frame(0, IMAGE)  # timestamps that do not advance: the tracker counts 1/30 s per frame


def _poses(boxes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    centres = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    return Poses(np.repeat(centres, 17, axis=1), np.ones((n, 17)), boxes,
                 np.full(n, 0.9) if scores is None else scores)


def _tracker(**kw):
    args = dict(skeleton=COCO17, match_iou_threshold=0.3, max_lost_s=5 / 30, new_track_min_score=0.4)
    args.update(kw)
    return IouTracker(**args)


def _box(x, y=100, w=40, h=100):
    return [x, y, x + w, y + h]


def test_two_walkers_keep_ids():
    tracker = _tracker()
    ids_over_time = []
    for t in range(30):
        tracks = tracker.update(FRAME, _poses([_box(10 + 3 * t), _box(300 - 3 * t, y=150)]))
        ids_over_time.append(dict(zip(tracks.poses.boxes_xyxy[:, 1].tolist(), tracks.track_ids.tolist())))
    assert all(d == {100.0: 1, 150.0: 2} for d in ids_over_time)


@pytest.mark.parametrize("fps", [7.0, 25.0, 30.0])
def test_short_occlusion_keeps_id_long_one_retires_it(fps):
    """max_lost_s is seconds of the source's clock: 0.5 s is 3 frames at 7 fps and 15 at 30 fps."""
    tracker = _tracker(max_lost_s=0.5)
    frames = iter(Frame(i, IMAGE, i / fps) for i in range(1000))
    kept = int(np.floor(0.5 * fps + 1e-9)) + 1  # missed frames after which the id can still come back (ages 0 .. 0.5 s)
    assert tracker.update(next(frames), _poses([_box(10)])).track_ids.tolist() == [1]
    for _ in range(kept):
        assert len(tracker.update(next(frames), _poses([]))) == 0
    assert tracker.update(next(frames), _poses([_box(12)])).track_ids.tolist() == [1]
    for _ in range(kept + 1):
        tracker.update(next(frames), _poses([]))
    assert tracker.update(next(frames), _poses([_box(12)])).track_ids.tolist() == [2]


def test_fast_motion_breaks_identity():
    """The IoU baseline's known weakness (what FlowTrack fixes): a jump with no overlap gets a new id."""
    tracker = _tracker()
    tracker.update(FRAME, _poses([_box(10)]))
    assert tracker.update(FRAME, _poses([_box(60)])).track_ids.tolist() == [2]


def test_low_score_detection_does_not_start_a_track_but_continues_one():
    tracker = _tracker()
    assert len(tracker.update(FRAME, _poses([_box(10)], scores=np.array([0.2])))) == 0
    assert tracker.update(FRAME, _poses([_box(10)], scores=np.array([0.9]))).track_ids.tolist() == [1]
    assert tracker.update(FRAME, _poses([_box(11)], scores=np.array([0.2]))).track_ids.tolist() == [1]


def test_greedy_prefers_highest_iou():
    tracker = _tracker()
    tracker.update(FRAME, _poses([_box(0), _box(45)]))  # ids 1 and 2
    tracks = tracker.update(FRAME, _poses([_box(40), _box(2)]))
    assert dict(zip(tracks.poses.boxes_xyxy[:, 0].tolist(), tracks.track_ids.tolist())) == {40.0: 2, 2.0: 1}


def test_reset_restarts_ids():
    tracker = _tracker()
    tracker.update(FRAME, _poses([_box(10), _box(100)]))
    tracker.reset()
    assert tracker.update(FRAME, _poses([_box(300)])).track_ids.tolist() == [1]
