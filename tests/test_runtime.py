"""The stream runner, reader thread and sinks, with synthetic stages (no detector needed)."""
import json
import time

import cv2
import numpy as np
import pytest

from posetrack_app.io.sinks import JsonLinesSink, MotChallengeSink, VideoSink
from posetrack_app.io.sources import FrameSource, ThreadedReader
from posetrack_app.pipeline import Pipeline, run_stream
from posetrack_app.pose.detector_keypoints import DetectorKeypointPoses
from posetrack_app.skeleton import COCO17
from posetrack_app.structures import Detections, Frame
from posetrack_app.tracking.iou_tracker import IouTracker


class SyntheticSource(FrameSource):
    """`count` frames of a person-sized white box moving right; optionally live and slow to produce."""

    def __init__(self, count, live=False, delay_s=0.0):
        self.count, self.live, self.delay_s = count, live, delay_s
        self.name, self.fps, self.frame_count = "synthetic", 10.0, count

    def frames(self):
        for i in range(self.count):
            if self.delay_s:
                time.sleep(self.delay_s)
            image = np.zeros((120, 160, 3), np.uint8)
            image[30:90, 10 + 2 * i:30 + 2 * i] = 255
            yield Frame(i, image, i / self.fps)


class BoxDetector:
    """Finds the white box of SyntheticSource exactly; keypoints down its middle."""

    def __call__(self, frame):
        ys, xs = np.nonzero(frame.image_bgr[..., 0] > 0)
        if len(xs) == 0:
            return Detections.empty(17)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        kpts = np.zeros((1, 17, 3), np.float32)
        kpts[0, :, 0] = (box[0, 0] + box[0, 2]) / 2
        kpts[0, :, 1] = np.linspace(box[0, 1], box[0, 3], 17)
        kpts[0, :, 2] = 0.9
        return Detections(box, [0.9], kpts)


class InterruptAt:
    def __init__(self, detector, frame_index):
        self.detector, self.frame_index = detector, frame_index

    def __call__(self, frame):
        if frame.index == self.frame_index:
            raise KeyboardInterrupt
        return self.detector(frame)


def _pipeline(detector=None):
    return Pipeline(detector or BoxDetector(), DetectorKeypointPoses(),
                    IouTracker(skeleton=COCO17, match_iou_threshold=0.3, max_lost_s=0.5, new_track_min_score=0.4))


def _sinks(tmp_path):
    return [VideoSink(tmp_path / "v.avi", COCO17, 10.0, {}), JsonLinesSink(tmp_path / "p.jsonl", COCO17),
            MotChallengeSink(tmp_path / "m.txt")]


def test_run_stream_tracks_one_person_through_all_frames(tmp_path):
    summary = run_stream(_pipeline(), SyntheticSource(20), _sinks(tmp_path))
    assert (summary.frames, summary.tracks, summary.interrupted) == (20, 1, False)
    assert set(summary.stage_mean_ms) >= {"detect", "pose", "track"}
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["persons"][0]["track_id"] for r in records] == [1] * 20
    np.testing.assert_allclose(records[5]["persons"][0]["box_xyxy"], [20, 30, 40, 90])
    mot = np.loadtxt(tmp_path / "m.txt", delimiter=",")
    np.testing.assert_allclose(mot[5], [6, 1, 20, 30, 20, 60, 0.9, -1, -1, -1])


def test_ctrl_c_keeps_cleanly_closed_outputs(tmp_path):
    summary = run_stream(_pipeline(InterruptAt(BoxDetector(), 7)), SyntheticSource(20), _sinks(tmp_path))
    assert summary.interrupted and summary.frames == 7
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 7
    capture = cv2.VideoCapture(str(tmp_path / "v.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.txt", "p.jsonl", "v.avi"]


def test_failing_run_leaves_no_output(tmp_path):
    class Broken:
        def __call__(self, frame):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_stream(_pipeline(Broken()), SyntheticSource(5), _sinks(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_max_frames():
    assert run_stream(_pipeline(), SyntheticSource(20), [], max_frames=4).frames == 4


def test_file_reader_never_drops_and_live_reader_drops_stale_frames():
    reader = ThreadedReader(SyntheticSource(30), queue_size=2)
    indices = []
    for frame in reader:
        time.sleep(0.002)  # a consumer slower than the decoder
        indices.append(frame.index)
    reader.close()
    assert indices == list(range(30)) and reader.dropped_frames == 0

    reader = ThreadedReader(SyntheticSource(30, live=True, delay_s=0.002), queue_size=2)
    indices = []
    for frame in reader:
        time.sleep(0.02)
        indices.append(frame.index)
    reader.close()
    assert reader.dropped_frames > 0
    assert len(indices) + reader.dropped_frames == 30
    assert indices == sorted(indices) and indices[-1] == 29  # order kept, newest frame delivered


def test_reader_errors_reach_the_consumer():
    class Failing(SyntheticSource):
        def frames(self):
            yield from super().frames()
            raise OSError("disk gone")

    reader = ThreadedReader(Failing(3))
    with pytest.raises(OSError, match="disk gone"):
        list(reader)
    reader.close()
