"""Detecting ahead (Pipeline(detect_ahead=k)): the detector works on frames t+1 .. t+k while the rest of frame t runs.

Oracles: the sequential `step()` loop (the overlapped run must give the same tracks, frame by frame, under each
detection schedule and look-ahead), and threads that wait for each other (the detector of frame t+1 and the pose
stage of frame t each wait until the other has started; two detector calls each wait for the other: they finish
only if they really run at the same time, however slow the machine, and fail within the timeout if they do not)."""
import threading

import numpy as np
import pytest

from posetrack_app.benchmark.synthetic import SyntheticClip, SyntheticDetector
from posetrack_app.build import _detector_threads_shared, build_tracker, resolve_detect_ahead
from posetrack_app.config import AppConfig, load_config
from posetrack_app.detection.schedule import AdaptiveSchedule, FixedSchedule, RegionSchedule
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
        self.region_calls = 0
        self._lock = threading.Lock()

    def __call__(self, frame, regions=None):
        with self._lock:
            self.calls.append(frame.index)
        found = super().__call__(frame)
        if regions is None:
            return found
        with self._lock:
            self.region_calls += 1
        # With regions, only the people whose box centre lies in one of them.
        centres = (found.boxes_xyxy[:, :2] + found.boxes_xyxy[:, 2:]) / 2
        inside = [any(r[0] <= x <= r[2] and r[1] <= y <= r[3] for r in regions) for x, y in centres]
        return found.select(np.flatnonzero(inside))


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

    def regions(self, frame, frames_since_reset):
        return self.schedule.regions(frame, frames_since_reset)

    def observe(self, frame, tracks, detected):
        assert detected == self.last_answer[frame.index]
        self.decisions.append((frame.index, detected))
        self.schedule.observe(frame, tracks, detected)


def _pipeline(clip, schedule, detect_ahead):
    tracker = build_tracker(AppConfig(), COCO17)  # FlowTrack: it carries the frames the schedule skips
    return Pipeline(CountingDetector(clip), DetectorKeypointPoses(), tracker, schedule=RecordingSchedule(schedule),
                    detect_ahead=detect_ahead)


def _same_tracks(a, b):
    assert a.track_ids.tolist() == b.track_ids.tolist()
    np.testing.assert_array_equal(a.poses.keypoints, b.poses.keypoints)
    np.testing.assert_array_equal(a.poses.keypoint_scores, b.poses.keypoint_scores)
    np.testing.assert_array_equal(a.poses.boxes_xyxy, b.poses.boxes_xyxy)


@pytest.mark.parametrize("make_schedule", [
    lambda: FixedSchedule(1),
    lambda: FixedSchedule(3),
    lambda: AdaptiveSchedule(max_interval_s=0.2, min_reliable_fraction=0.95),
    lambda: RegionSchedule(full_interval_s=0.25, margin=0.2),
], ids=["every frame", "every 3rd frame", "adaptive", "roi"])
@pytest.mark.parametrize("detect_ahead", [1, 2, 3, 8])
def test_overlapped_run_gives_the_sequential_tracks(make_schedule, detect_ahead):
    clip = SyntheticClip(4, 320, 240, 24, seed=11)
    sequential = _pipeline(clip, make_schedule(), detect_ahead=0)
    expected = [sequential.step(frame) for frame in clip.frames()]
    overlapped = _pipeline(clip, make_schedule(), detect_ahead=detect_ahead)
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
    if isinstance(overlapped.schedule.schedule, RegionSchedule):
        # Whole frames ran ahead and windows at their frame's turn: nothing ran twice, and as many looked at windows.
        assert discarded == 0 and overlapped.detector.region_calls > 0
        assert overlapped.detector.region_calls == sequential.detector.region_calls
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
                        build_tracker(AppConfig(), COCO17), detect_ahead=1)
    assert len(list(pipeline.run(clip.frames()))) == len(clip)
    assert rendezvous.detector_started.is_set() and rendezvous.pose_started.is_set()


def test_without_overlap_the_stages_take_turns():
    # The same meeting, sequentially, cannot happen whatever the timeout: the pose stage's wait runs out.
    clip = SyntheticClip(2, 160, 120, 6, seed=3)
    rendezvous = Rendezvous(timeout_s=0.2)
    pipeline = Pipeline(MeetingDetector(clip, rendezvous, meet_index=3), MeetingPose(rendezvous, meet_index=2),
                        build_tracker(AppConfig(), COCO17), detect_ahead=0)
    with pytest.raises(AssertionError, match="never ran beside the detector"):
        list(pipeline.run(clip.frames()))
    assert pipeline.detector.calls == [0, 1, 2]  # frame 3's detector had not started


class ClipSource(FrameSource):
    def __init__(self, clip):
        self.clip, self.name, self.fps, self.frame_count = clip, "clip", clip.fps, len(clip)

    def frames(self):
        return self.clip.frames()


@pytest.mark.parametrize("max_frames", [None, 1, 5])
@pytest.mark.parametrize("detect_ahead", [1, 8])
def test_run_stream_overlapped_reads_no_frame_past_max_frames(max_frames, detect_ahead):
    clip = SyntheticClip(2, 160, 120, 8, seed=5)
    pipeline = _pipeline(clip, FixedSchedule(1), detect_ahead=detect_ahead)
    summary = run_stream(pipeline, ClipSource(clip), [], max_frames=max_frames)
    expected = len(clip) if max_frames is None else max_frames
    assert summary.frames == expected
    assert sorted(pipeline.detector.calls) == list(range(expected))


class FailingDetector(CountingDetector):
    def __call__(self, frame):
        if frame.index == 4:
            raise RuntimeError("detector failed on frame 4")
        return super().__call__(frame)


@pytest.mark.parametrize("detect_ahead", [1, 8])
def test_a_detector_error_in_the_worker_reaches_the_caller(detect_ahead):
    clip = SyntheticClip(2, 160, 120, 8, seed=5)
    pipeline = Pipeline(FailingDetector(clip), DetectorKeypointPoses(), build_tracker(AppConfig(), COCO17),
                        detect_ahead=detect_ahead)
    seen = []
    with pytest.raises(RuntimeError, match="frame 4"):
        for frame, _ in pipeline.run(clip.frames()):
            seen.append(frame.index)
    assert seen == [0, 1, 2, 3]


class PairDetector(CountingDetector):
    """Frames 2 and 3 each wait until the other's detection has started: both return only if they run at once."""

    def __init__(self, clip, timeout_s=RENDEZVOUS_TIMEOUT_S):
        super().__init__(clip)
        self.started = {2: threading.Event(), 3: threading.Event()}
        self.timeout_s = timeout_s

    def __call__(self, frame):
        if frame.index in self.started:
            self.started[frame.index].set()
            other = 5 - frame.index
            if not self.started[other].wait(self.timeout_s):
                raise AssertionError(f"the detector of frame {frame.index} never ran beside frame {other}'s")
        return super().__call__(frame)


def test_two_frames_ahead_detects_two_frames_at_once():
    clip = SyntheticClip(2, 160, 120, 6, seed=3)
    pipeline = Pipeline(PairDetector(clip), DetectorKeypointPoses(), build_tracker(AppConfig(), COCO17),
                        detect_ahead=2)
    assert len(list(pipeline.run(clip.frames()))) == len(clip)


def test_one_frame_ahead_detects_one_frame_at_a_time():
    clip = SyntheticClip(2, 160, 120, 6, seed=3)
    pipeline = Pipeline(PairDetector(clip, timeout_s=0.2), DetectorKeypointPoses(),
                        build_tracker(AppConfig(), COCO17), detect_ahead=1)
    with pytest.raises(AssertionError, match="never ran beside"):
        list(pipeline.run(clip.frames()))


class TurnRecordingDetector(CountingDetector):
    """Records, for each call, how many frames its pipeline (set once built) had tracked when the call started."""

    pipeline = None

    def __init__(self, clip):
        super().__init__(clip)
        self.started_at = {}

    def __call__(self, frame, regions=None):
        self.started_at.setdefault(frame.index, self.pipeline._frames_since_reset)
        return super().__call__(frame, regions)


@pytest.mark.parametrize("detect_ahead", [1, 8])
def test_roi_whole_frames_start_as_far_ahead_as_the_look_ahead_allows(detect_ahead):
    # 10 fps and a whole frame every 0.3 s: frames 0, 3, 6, ... are whole, the others windows. A whole frame can be
    # started when it is read, up to detect_ahead frames before its turn; a window only at its turn.
    clip = SyntheticClip(3, 320, 240, 24, seed=5, fps=10)
    detector = TurnRecordingDetector(clip)
    pipeline = Pipeline(detector, DetectorKeypointPoses(), build_tracker(AppConfig(), COCO17),
                        schedule=RegionSchedule(full_interval_s=0.3, margin=0.5), detect_ahead=detect_ahead)
    detector.pipeline = pipeline
    assert len(list(pipeline.run(clip.frames()))) == len(clip)
    whole = [i for i in range(3, len(clip), 3)]
    windows = [i for i in range(len(clip)) if i % 3]
    assert all(detector.started_at[i] == i for i in windows)  # at their turn: the frame before tracked
    # Frames tracked when each whole frame started: one frame before its turn at most with 1, up to its look-ahead
    # with 8 (it is read once the frame that many before it has been detected).
    lead = [i - detector.started_at[i] for i in whole]
    if detect_ahead == 1:
        assert max(lead) <= 1
    else:
        assert min(lead) >= 3 and max(lead) <= detect_ahead


class NetworkPoseStage:
    """Stands in for a pose network (anything but the detector's keypoints)."""


ORT_CPU = ["detector.backend=onnxruntime", "detector.device=cpu"]


@pytest.mark.parametrize("input_size", ["640", "auto"])
def test_build_pipeline_builds_the_all_cores_detector_only_when_called(monkeypatch, input_size):
    from posetrack_app.build import build_pipeline
    from posetrack_app.detection.detector import YoloPoseDetector

    clip = SyntheticClip(2, 160, 120, 4, seed=3)
    threads_built = []

    def fake_build(model, *, intra_op_threads, input_size, **options):
        threads_built.append(intra_op_threads)
        detector = SyntheticDetector(clip)
        detector.description = f"stand-in, input {input_size}"
        return detector

    monkeypatch.setattr(YoloPoseDetector, "build", fake_build)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    # The fixed schedule, whose frames all go ahead two at a time (the roi schedule's windows cannot).
    pipeline = build_pipeline(load_config(None, ORT_CPU + ["detector.schedule=fixed", f"detector.input_size={input_size}"]))
    assert pipeline.detect_ahead == 2
    assert len(list(pipeline.run(clip.frames()))) == len(clip)
    assert threads_built == [1]  # only the worker threads' detector, one thread each
    assert pipeline.detector_description == "stand-in, input 640"
    pipeline.reset()
    pipeline.step(next(iter(clip.frames())))
    assert threads_built == [1, 0]  # step() built the one with all the cores


@pytest.mark.parametrize("overrides, pose_stage, expected", [
    (["pose.device=cuda"], NetworkPoseStage(), 1),
    (["pose.device=cuda:1"], NetworkPoseStage(), 1),
    (["pose.device=cpu"], NetworkPoseStage(), 0),
    (ORT_CPU + ["detector.schedule=fixed"], DetectorKeypointPoses(), 2),
    (ORT_CPU + ["detector.schedule=adaptive"], DetectorKeypointPoses(), 2),
    (ORT_CPU, DetectorKeypointPoses(), 8),  # schedule auto = roi: only its whole frames go ahead, several frames early
    (ORT_CPU + ["detector.schedule=roi"], DetectorKeypointPoses(), 8),
    (ORT_CPU + ["detector.detect_every=2"], DetectorKeypointPoses(), 2),  # auto = fixed with detect_every > 1
    (ORT_CPU + ["detector.schedule=roi", "pipeline.detect_ahead=2"], DetectorKeypointPoses(), 2),
    (["detector.backend=openvino", "detector.device=cpu"], DetectorKeypointPoses(), 0),
    (["detector.backend=torch", "detector.device=cpu"], DetectorKeypointPoses(), 0),
    (ORT_CPU + ["pipeline.detect_ahead=0"], DetectorKeypointPoses(), 0),
    (ORT_CPU + ["pipeline.detect_ahead=1", "pose.device=cpu"], NetworkPoseStage(), 1),
    (ORT_CPU + ["pipeline.detect_ahead=3"], DetectorKeypointPoses(), 3),
    (["detector.backend=openvino", "detector.device=cpu", "pipeline.detect_ahead=1"], DetectorKeypointPoses(), 1),
])
def test_detect_ahead_setting(overrides, pose_stage, expected):
    assert resolve_detect_ahead(load_config(None, overrides), pose_stage) == expected


@pytest.mark.parametrize("overrides, pose_stage, expected", [
    (ORT_CPU, DetectorKeypointPoses(), 0),  # latency first: the detector inline, on all cores
    (ORT_CPU + ["detector.schedule=roi"], DetectorKeypointPoses(), 0),
    (["pose.device=cuda"], NetworkPoseStage(), 1),
    (ORT_CPU + ["pipeline.detect_ahead=2"], DetectorKeypointPoses(), 2),  # an explicit value holds
])
def test_detect_ahead_setting_for_live_sources(overrides, pose_stage, expected):
    assert resolve_detect_ahead(load_config(None, overrides), pose_stage, live=True) == expected


@pytest.mark.parametrize("value, message", [
    ("maybe", "detect_ahead must be in"),
    ("-1", "detect_ahead must be in"),
    ("true", "expects int or str"),
    ("1.5", "expects int or str"),
])
def test_bad_detect_ahead_setting_says_what_is_valid(value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_detect_ahead(load_config(None, ORT_CPU + [f"pipeline.detect_ahead={value}"]), DetectorKeypointPoses())


def test_several_frames_at_once_needs_onnxruntime():
    cfg = load_config(None, ["detector.backend=openvino", "detector.device=cpu", "pipeline.detect_ahead=2"])
    with pytest.raises(ConfigError, match="only detector.backend=onnxruntime supports"):
        resolve_detect_ahead(cfg, DetectorKeypointPoses())


@pytest.mark.parametrize("threads, detect_ahead, cores, expected", [
    (0, 2, 2, 1),   # all cores, split in two
    (0, 2, 16, 8),
    (0, 3, 2, 1),   # never below one thread
    (4, 2, 16, 2),  # a fixed count is split too (batch workers set their share)
    (0, 1, 16, 0),  # one call at a time keeps onnxruntime's own default
    (6, 0, 16, 6),
])
def test_detector_threads_are_shared_between_frames_in_flight(monkeypatch, threads, detect_ahead, cores, expected):
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    cfg = load_config(None, [f"detector.intra_op_threads={threads}"])
    assert _detector_threads_shared(cfg, detect_ahead).detector.intra_op_threads == expected


@pytest.mark.parametrize("frames, detect_ahead, main_calls", [
    (8, 2, []),
    (2, 2, []),
    (8, 1, []),
    (1, 2, [0]),  # a lone frame (a photo) gets the detector with all the cores
    (1, 1, [0]),
])
def test_worker_threads_call_the_ahead_detector_and_step_keeps_the_main_one(frames, detect_ahead, main_calls):
    # build_pipeline gives the worker threads a detector built for calls at once (a share of the cores each). A run
    # of several frames detects every one of them there, the first too: building the main detector for the first
    # frame alone had cost the run a second network's start-up. Every step() uses the main detector, with all cores.
    clip = SyntheticClip(2, 160, 120, frames, seed=5)
    main_detector, ahead_detector = CountingDetector(clip), CountingDetector(clip)
    pipeline = Pipeline(main_detector, DetectorKeypointPoses(), build_tracker(AppConfig(), COCO17),
                        detect_ahead=detect_ahead, ahead_detector=ahead_detector)
    assert len(list(pipeline.run(clip.frames()))) == len(clip)
    assert main_detector.calls == main_calls
    assert sorted(ahead_detector.calls) == sorted(set(range(len(clip))) - set(main_calls))
    pipeline.reset()
    for frame in clip.frames():
        pipeline.step(frame)
    assert main_detector.calls == main_calls + list(range(len(clip)))
