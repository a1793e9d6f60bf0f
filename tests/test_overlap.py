"""Stage overlap (Pipeline(overlap_stages=True)): the detector works on frame t+1 while the rest of frame t runs.

Oracles: the sequential `step()` loop (the overlapped run must give the same tracks, frame by frame, under each
detection schedule), and two threads that wait for each other (the detector of frame t+1 and the pose stage of frame
t each wait until the other has started: they finish only if they really run at the same time, however slow the
machine, and fail within the timeout if they do not)."""
import threading

import numpy as np
import pytest

from posetrack_app.benchmark.synthetic import SyntheticClip, SyntheticDetector
from posetrack_app.build import build_tracker, resolve_overlap_stages
from posetrack_app.config import AppConfig, load_config
from posetrack_app.detection.schedule import AdaptiveSchedule, FixedSchedule
from posetrack_app.errors import ConfigError
from posetrack_app.io.sources import FrameSource
from posetrack_app.pipeline import Pipeline, run_stream
from posetrack_app.pose.detector_keypoints import DetectorKeypointPoses
from posetrack_app.skeleton import COCO17

# Long enough to never fire when the other thread is there, short enough that a failure is quick.
RENDEZVOUS_TIMEOUT_S = 20.0


class CountingDetector(SyntheticDetector):
    """The clip's known persons; records which frames it was called on (from any thread)."""

    def __init__(self, clip):
        super().__init__(clip)
        self.calls = []
        self._lock = threading.Lock()

    def __call__(self, frame):
        with self._lock:
            self.calls.append(frame.index)
        return super().__call__(frame)


class RecordingSchedule:
    """Wraps a schedule; records the decision that counted for each frame (the last answer before observe)."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.last_answer = {}
        self.decisions = []

    def should_detect(self, frame, frames_since_reset):
        answer = self.schedule.should_detect(frame, frames_since_reset)
        self.last_answer[frame.index] = answer
        return answer

    def observe(self, frame, tracks, detected):
        assert detected == self.last_answer[frame.index]
        self.decisions.append((frame.index, detected))
        self.schedule.observe(frame, tracks, detected)


def _pipeline(clip, schedule, overlap):
    tracker = build_tracker(AppConfig(), COCO17)  # FlowTrack: it carries the frames the schedule skips
    return Pipeline(CountingDetector(clip), DetectorKeypointPoses(), tracker, schedule=RecordingSchedule(schedule),
                    overlap_stages=overlap)


def _same_tracks(a, b):
    assert a.track_ids.tolist() == b.track_ids.tolist()
    np.testing.assert_array_equal(a.poses.keypoints, b.poses.keypoints)
    np.testing.assert_array_equal(a.poses.keypoint_scores, b.poses.keypoint_scores)
    np.testing.assert_array_equal(a.poses.boxes_xyxy, b.poses.boxes_xyxy)


@pytest.mark.parametrize("make_schedule", [
    lambda: FixedSchedule(1),
    lambda: FixedSchedule(3),
    lambda: AdaptiveSchedule(max_interval_s=0.2, min_reliable_fraction=0.95),
], ids=["every frame", "every 3rd frame", "adaptive"])
def test_overlapped_run_gives_the_sequential_tracks(make_schedule):
    clip = SyntheticClip(4, 320, 240, 24, seed=11)
    sequential = _pipeline(clip, make_schedule(), overlap=False)
    expected = [sequential.step(frame) for frame in clip.frames()]
    overlapped = _pipeline(clip, make_schedule(), overlap=True)
    results = list(overlapped.run(clip.frames()))

    assert [frame.index for frame, _ in results] == list(range(len(clip)))
    for (_, tracks), want in zip(results, expected):
        _same_tracks(tracks, want)
    assert overlapped.schedule.decisions == sequential.schedule.decisions
    assert any(len(t) for t in expected)  # the comparison compared people, not empty frames
    used = [index for index, detected in sequential.schedule.decisions if detected]
    # Every detection used ran on its own frame; a guess the schedule overruled ran too, and was timed apart.
    assert set(used) <= set(overlapped.detector.calls)
    stats = overlapped.timer.stats()
    assert stats["detect"].calls == len(used)
    discarded = len(overlapped.detector.calls) - len(used)
    if discarded:
        assert stats["detect_discarded"].calls == discarded
    else:
        assert "detect_discarded" not in stats


class Rendezvous:
    """Two parties that each wait for the other to have started: both return only if they overlap in time."""

    def __init__(self, timeout_s=RENDEZVOUS_TIMEOUT_S):
        self.timeout_s = timeout_s
        self.detector_started = threading.Event()
        self.pose_started = threading.Event()


class MeetingDetector(CountingDetector):
    """On frame `meet_index`, waits until the pose stage of the frame before has started."""

    def __init__(self, clip, rendezvous, meet_index):
        super().__init__(clip)
        self.rendezvous, self.meet_index = rendezvous, meet_index

    def __call__(self, frame):
        if frame.index == self.meet_index:
            self.rendezvous.detector_started.set()
            if not self.rendezvous.pose_started.wait(self.rendezvous.timeout_s):
                raise AssertionError(f"the detector of frame {frame.index} never ran beside the pose stage")
        return super().__call__(frame)


class MeetingPose(DetectorKeypointPoses):
    """On frame `meet_index`, waits until the detector of the next frame has started."""

    def __init__(self, rendezvous, meet_index):
        super().__init__()
        self.rendezvous, self.meet_index = rendezvous, meet_index

    def __call__(self, frame, detections):
        if frame.index == self.meet_index:
            self.rendezvous.pose_started.set()
            if not self.rendezvous.detector_started.wait(self.rendezvous.timeout_s):
                raise AssertionError(f"the pose stage of frame {frame.index} never ran beside the detector")
        return super().__call__(frame, detections)


def test_detector_of_the_next_frame_runs_while_the_pose_stage_works():
    clip = SyntheticClip(2, 160, 120, 6, seed=3)
    rendezvous = Rendezvous()
    pipeline = Pipeline(MeetingDetector(clip, rendezvous, meet_index=3), MeetingPose(rendezvous, meet_index=2),
                        build_tracker(AppConfig(), COCO17), overlap_stages=True)
    assert len(list(pipeline.run(clip.frames()))) == len(clip)
    assert rendezvous.detector_started.is_set() and rendezvous.pose_started.is_set()


def test_without_overlap_the_stages_take_turns():
    # The same meeting, sequentially, cannot happen whatever the timeout: the pose stage's wait runs out.
    clip = SyntheticClip(2, 160, 120, 6, seed=3)
    rendezvous = Rendezvous(timeout_s=0.2)
    pipeline = Pipeline(MeetingDetector(clip, rendezvous, meet_index=3), MeetingPose(rendezvous, meet_index=2),
                        build_tracker(AppConfig(), COCO17), overlap_stages=False)
    with pytest.raises(AssertionError, match="never ran beside the detector"):
        list(pipeline.run(clip.frames()))
    assert pipeline.detector.calls == [0, 1, 2]  # frame 3's detector had not started


class ClipSource(FrameSource):
    def __init__(self, clip):
        self.clip, self.name, self.fps, self.frame_count = clip, "clip", clip.fps, len(clip)

    def frames(self):
        return self.clip.frames()


@pytest.mark.parametrize("max_frames", [None, 1, 5])
def test_run_stream_overlapped_reads_no_frame_past_max_frames(max_frames):
    clip = SyntheticClip(2, 160, 120, 8, seed=5)
    pipeline = _pipeline(clip, FixedSchedule(1), overlap=True)
    summary = run_stream(pipeline, ClipSource(clip), [], max_frames=max_frames)
    expected = len(clip) if max_frames is None else max_frames
    assert summary.frames == expected
    assert sorted(pipeline.detector.calls) == list(range(expected))


class FailingDetector(CountingDetector):
    def __call__(self, frame):
        if frame.index == 4:
            raise RuntimeError("detector failed on frame 4")
        return super().__call__(frame)


def test_a_detector_error_in_the_worker_reaches_the_caller():
    clip = SyntheticClip(2, 160, 120, 8, seed=5)
    pipeline = Pipeline(FailingDetector(clip), DetectorKeypointPoses(), build_tracker(AppConfig(), COCO17),
                        overlap_stages=True)
    seen = []
    with pytest.raises(RuntimeError, match="frame 4"):
        for frame, _ in pipeline.run(clip.frames()):
            seen.append(frame.index)
    assert seen == [0, 1, 2, 3]


class NetworkPoseStage:
    """Stands in for a pose network (anything but the detector's keypoints)."""


@pytest.mark.parametrize("choice, device, pose_stage, expected", [
    ("auto", "cuda", NetworkPoseStage(), True),
    ("auto", "cuda:1", NetworkPoseStage(), True),
    ("auto", "cpu", NetworkPoseStage(), False),
    ("auto", "cuda", DetectorKeypointPoses(), False),
    ("true", "cpu", DetectorKeypointPoses(), True),
    ("on", "cpu", DetectorKeypointPoses(), True),  # YAML reads on / off as true / false
    ("false", "cuda", NetworkPoseStage(), False),
])
def test_overlap_setting(choice, device, pose_stage, expected):
    cfg = load_config(None, [f"pipeline.overlap_stages={choice}", f"pose.device={device}"])
    assert resolve_overlap_stages(cfg, pose_stage) is expected


def test_unknown_overlap_setting_names_the_choices():
    cfg = load_config(None, ["pipeline.overlap_stages=maybe"])
    with pytest.raises(ConfigError, match="pipeline.overlap_stages must be true, false or auto"):
        resolve_overlap_stages(cfg, NetworkPoseStage())
