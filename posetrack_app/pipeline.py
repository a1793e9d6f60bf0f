"""The per-frame pipeline and the threaded runner around it (build.py turns a config into one).

    frame -> detector -> (+ tracker proposals, merged by box NMS) -> pose stage -> tracker -> Tracks

Stage protocols (plain duck typing):
    detector(frame: Frame) -> Detections
    pose_stage(frame: Frame, detections: Detections) -> Poses        (.skeleton: the keypoint layout)
    tracker.propose(frame) -> Detections; tracker.update(frame, poses) -> Tracks; tracker.reset()

Detecting ahead (`Pipeline(detect_ahead=k)`, k >= 1, used by `Pipeline.run` and so by `run_stream`): the detector
works on frames t+1 .. t+k in k worker threads while propagation, the pose stage and the tracker work on frame t,
so a frame costs about its slowest stage instead of their sum. With k >= 2 the detector also runs on several frames
at once, each call on its share of the cores: on a small CPU that keeps every core busy through the detector's
serial parts and through the other threads' work (reader, writer, tracker), where one call spread over all cores
waits at each operator for its slowest thread. The detector sees nothing but its own frame, and the schedule still
decides for each frame after the frame before it was tracked, so the tracks are those of `step()` frame by frame.
A detector on a GPU launches on its thread's own CUDA stream (detection/device_ops.own_stream), so its kernels
overlap the pose network's too.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

from .config import TrackerConfig
from .detection.schedule import UNDECIDED, run_detector
from .structures import Detections, Frame, Tracks
from .timing import SmoothedFps, StageTimer
from .tracking.merge import merge_detections

log = logging.getLogger(__name__)


class Pipeline:
    """Runs the stages on one frame at a time and times each stage.

    detect_every: run the detector on every k-th frame only; the tracker's proposals carry the frames between.
    schedule: decides per frame whether the detector runs (detection/schedule.py); replaces detect_every.
    box_merge_iou_threshold: IoU above which a propagated box is a duplicate of a detected one.
    detect_ahead: `run()` detects this many frames ahead, each in its own worker thread, while this one is finished
        (see the module docstring); 0 = the detector runs inline. `step()` always runs one frame start to end.
    ahead_detector: what the worker threads call (default: `detector`): the same network built for that many calls
        at once, each on its share of the cores; `step()` keeps `detector`, on all of them.
    """

    def __init__(self, detector, pose_stage, tracker, *, detect_every: int = 1, schedule=None,
                 box_merge_iou_threshold: float = TrackerConfig.box_merge_iou_threshold,
                 timer: Optional[StageTimer] = None, detect_ahead: int = 0, ahead_detector=None):
        from .detection.schedule import FixedSchedule

        self.detector = detector
        self.ahead_detector = ahead_detector if ahead_detector is not None else detector
        self.pose_stage = pose_stage
        self.tracker = tracker
        self.schedule = schedule if schedule is not None else FixedSchedule(detect_every)
        self.box_merge_iou_threshold = box_merge_iou_threshold
        if detect_ahead < 0:
            raise ValueError(f"detect_ahead must be 0 or more, got {detect_ahead}")
        self.detect_ahead = detect_ahead
        self.timer = timer or StageTimer()
        # Stages that time their own parts (e.g. TopDownEstimator: pose.crop / pose.network / pose.decode)
        # report them to the pipeline's timer.
        if hasattr(pose_stage, "timer"):
            pose_stage.timer = self.timer
        self._frames_since_reset = 0

    @property
    def skeleton(self):
        return self.pose_stage.skeleton

    @property
    def detector_that_ran(self):
        """The detector that has run the frames: a run that detects ahead may build only the worker threads' one,
        and one built on demand (input_size.OnDemandDetector) stands for the network built for the frames. Before
        any frame, the main detector."""
        for detector in (self.detector, self.ahead_detector):
            built = getattr(detector, "built", detector)
            if built is not None:
                return built
        return self.detector

    @property
    def detector_description(self) -> Optional[str]:
        """What runs the detector (backend, precision, device, input size); None until a frame has built it."""
        return getattr(self.detector_that_ran, "description", None)

    def reset(self) -> None:
        """Call at every sequence boundary: track ids restart."""
        self.tracker.reset()
        self._frames_since_reset = 0

    def step(self, frame: Frame, detections: Optional[Detections] = None) -> Tracks:
        """One frame start to end. `detections`: a caller's own boxes for this frame (its own detector); then the
        detector does not run and the schedule is not asked."""
        if detections is not None:
            return self._finish(frame, detections, True)
        detected = self.schedule.should_detect(frame, self._frames_since_reset)
        if detected:
            with self.timer.stage("detect"):
                detections = run_detector(self.detector, frame, self.schedule.regions(frame, self._frames_since_reset))
        else:
            detections = Detections.empty()
        return self._finish(frame, detections, detected)

    def _finish(self, frame: Frame, detections: Detections, detected: bool) -> Tracks:
        """Everything after the detector: propagation + box merge, pose stage, tracker, and the schedule told."""
        timer = self.timer
        self._frames_since_reset += 1
        with timer.stage("propagate"):
            proposals = self.tracker.propose(frame)
            boxes = merge_detections(detections, proposals, self.box_merge_iou_threshold)
        with timer.stage("pose"):
            poses = self.pose_stage(frame, boxes)
        with timer.stage("track"):
            tracks = self.tracker.update(frame, poses)
        self.schedule.observe(frame, tracks, detected)
        return tracks

    def run(self, frames: Iterable[Frame]) -> Iterator[Tuple[Frame, Tracks]]:
        """(frame, tracks) for each frame, as `step()` gives them; with detect_ahead k >= 1 the detector runs k
        frames ahead in k worker threads, reading k frames ahead of the one it yields."""
        if not self.detect_ahead:
            for frame in frames:
                yield frame, self.step(frame)
            return
        with ThreadPoolExecutor(max_workers=self.detect_ahead, thread_name_prefix="detect-ahead") as worker:
            yield from _DetectAhead(self, worker).run(iter(frames))


class _DetectAhead:
    """The overlapped loop of `Pipeline.run`.

    The decision that counts for a frame is the schedule's answer when that frame's turn comes (after the frame
    before it was tracked), as in `step()`. To start the detector early, the schedule is also asked about each
    upcoming frame up to `detect_ahead` frames sooner: a guess, exact for a fixed stride, possibly stale for a
    schedule that looks at the tracks; the regions to look at (schedule.regions) are guessed with it, or left
    UNDECIDED by a schedule that needs the frame before tracked (the detector then runs at the frame's turn). A guess
    of "detect" that the real decision overrules, or regions that differ, cost a discarded detection (timed as
    "detect_discarded"); a guess of "skip" that is overruled runs the detector then, without overlap. Either way the
    detections used are the detector's output for that very frame and regions, so results equal `step()`'s.
    """

    def __init__(self, pipeline: Pipeline, worker: ThreadPoolExecutor):
        self.pipeline, self.worker = pipeline, worker

    def _timed_detect(self, frame: Frame, regions: Optional[np.ndarray]) -> Tuple[Detections, float]:
        # Timed here and recorded by the consumer, which alone knows whether the result is used. The detector
        # returns host arrays, so its device work is done when it returns.
        clock = self.pipeline.timer.clock
        start = clock()
        detections = run_detector(self.pipeline.ahead_detector, frame, regions)
        return detections, clock() - start

    def _launch(self, frame: Frame, frames_since_reset: int) -> Optional[Tuple[Future, Optional[np.ndarray]]]:
        """The detection of `frame` started on a worker thread, and the regions it looks at; None: not started."""
        schedule = self.pipeline.schedule
        if not schedule.should_detect(frame, frames_since_reset):
            return None
        regions = schedule.regions(frame, frames_since_reset)
        if regions is UNDECIDED:  # where to look depends on frames not tracked yet: decided at the frame's turn
            return None
        return self.worker.submit(self._timed_detect, frame, regions), regions

    def run(self, frames: Iterator[Frame]) -> Iterator[Tuple[Frame, Tracks]]:
        pipeline, timer = self.pipeline, self.pipeline.timer
        first = next(frames, None)
        if first is None:
            return
        second = next(frames, None)
        # (frame, its detection launched ahead or None), the frame to finish next first. With more frames to come,
        # the first one is detected ahead too, beside the second: a run then builds and uses only the worker threads'
        # detector (its start-up was a second network built on the clock). A lone frame gets all the cores.
        start = pipeline._frames_since_reset
        pending = deque([(first, None if second is None else self._launch(first, start))])
        if second is not None:
            pending.append((second, self._launch(second, start + 1)))
        while pending:
            frame, ahead = pending.popleft()
            n = pipeline._frames_since_reset
            detected = pipeline.schedule.should_detect(frame, n)
            regions = pipeline.schedule.regions(frame, n) if detected else None
            if ahead is not None:
                future, launched_regions = ahead
                detections, seconds = future.result()
                # Started on a guess of what the frame's turn decides now: used only where the guess held.
                used = detected and _same_regions(regions, launched_regions)
                timer.add("detect" if used else "detect_discarded", seconds)
                if detected and not used:
                    ahead = None
            if ahead is None and detected:
                with timer.stage("detect"):
                    detections = run_detector(pipeline.detector, frame, regions)
            if not detected:
                detections = Detections.empty()
            while len(pending) < pipeline.detect_ahead:
                upcoming = next(frames, None)
                if upcoming is None:
                    break
                # pending[k] will be finished (k + 1) frames after this one.
                pending.append((upcoming, self._launch(upcoming, pipeline._frames_since_reset + 1 + len(pending))))
            yield frame, pipeline._finish(frame, detections, detected)


def _same_regions(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


@dataclass
class RunSummary:
    frames: int = 0
    # Distinct track ids output over the run.
    tracks: int = 0
    wall_s: float = 0.0
    # Mean milliseconds per frame, per stage.
    stage_mean_ms: Dict[str, float] = field(default_factory=dict)
    dropped_frames: int = 0
    truncated: bool = False
    interrupted: bool = False
    # Live sources: end-to-end latency (capture -> tracked result) over the run's frames, in milliseconds;
    # None for files and folders (their frames wait in the reader's queue by design).
    latency_median_ms: Optional[float] = None
    latency_p95_ms: Optional[float] = None
    # Live sources: connections restored after a drop, and whether the source gave up on one.
    reconnects: int = 0
    connection_lost: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


class TrackingRun:
    """One source through the pipeline: reader thread -> pipeline (`Pipeline.run`) -> writer thread with `sinks`.

    Iterate it for (frame, tracks), one pair per frame, as they are ready; use it as a context manager so the
    outputs are settled however the block ends:

        with TrackingRun(pipeline, source, sinks) as run:
            for frame, tracks in run:
                ...
        run.summary

    The outputs are kept when the block ends normally, early (`break`, max_frames, a window's `q`) or by Ctrl-C /
    SIGTERM / SIGHUP (summary.interrupted; the interrupt propagates); any other error discards them (no
    half-written files) and propagates. Without `with`, the outputs are closed and kept when the iteration ends.
    For live sources each frame's capture -> result latency goes to tracks.info["latency_s"] (the overlay shows it)
    and its median and p95 to the summary.
    """

    def __init__(self, pipeline: Pipeline, source, sinks: Sequence = (), *, max_frames: Optional[int] = None,
                 queue_size: int = 8):
        self.pipeline, self.source, self.sinks = pipeline, source, list(sinks)
        self.max_frames, self.queue_size = max_frames, queue_size
        self.summary = RunSummary()
        self._reader = self._writer = self._results = None
        self._closed = False
        self._in_with_block = False
        self._track_ids: set = set()
        self._latencies_s: list = []
        self._start_s = 0.0

    def __enter__(self) -> "TrackingRun":
        self._open()
        self._in_with_block = True
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.close(keep=exc_type is None or interrupted, interrupted=interrupted)
        return False

    def _open(self) -> None:
        from .io.sinks import SinkWriter
        from .io.sources import ThreadedReader

        if self._reader is not None:
            return
        if self._closed:
            raise RuntimeError("this TrackingRun has finished: start a new one")
        self._start_s = time.perf_counter()
        try:
            self._reader = ThreadedReader(self.source, queue_size=self.queue_size)
            self._writer = SinkWriter(self.sinks)
        except BaseException:  # the run never started: nothing of it is kept
            self._closed = True
            if self._reader is not None:
                self._reader.close()
            else:
                self.source.close()
            for sink in self.sinks:
                sink.close(keep=False)
            raise
        frames = self._reader if self.max_frames is None else islice(self._reader, self.max_frames)
        # Capped before the pipeline: with overlapping stages it reads a frame ahead, and must not read past the last.
        self._results = self.pipeline.run(frames)

    def __iter__(self) -> Iterator[Tuple[Frame, Tracks]]:
        from .io.sinks import LATENCY_INFO_KEY

        self._open()
        fps = SmoothedFps()
        try:
            while not self._closed:
                # The time to the next result: the processing of a frame, and any wait for the source.
                asked = time.perf_counter()
                result = next(self._results, None)
                if result is None:
                    break
                frame, tracks = result
                if frame.capture_unix_s is not None:
                    latency_s = time.time() - frame.capture_unix_s
                    tracks.info[LATENCY_INFO_KEY] = latency_s
                    self._latencies_s.append(latency_s)
                self._writer.put(frame, tracks, fps.update(time.perf_counter() - asked))
                self._track_ids.update(int(t) for t in tracks.track_ids)
                self.summary.frames += 1
                yield frame, tracks
                if self._writer.stop_requested:
                    break
        except KeyboardInterrupt:
            self.close(keep=True, interrupted=True)
            raise
        except GeneratorExit:
            # The caller stopped iterating: a break, or an error in its loop (Python closes the generator while
            # that error propagates). Inside a with block, __exit__ tells the two apart and settles the outputs;
            # without one, a break is the likely cause, and what was written is complete.
            if not self._in_with_block:
                self.close(keep=True)
            raise
        except BaseException:
            self.close(keep=False)
            raise
        self.close(keep=True)

    @property
    def stop_requested(self) -> bool:
        return self._writer is not None and self._writer.stop_requested

    def close(self, keep: bool = True, interrupted: bool = False) -> None:
        """Stop reading and settle the outputs (kept or discarded); idempotent. Raises the first output error."""
        from .interrupts import deferred

        if self._closed:
            return
        self._closed = True
        summary = self.summary
        if interrupted:
            summary.interrupted = True
            log.warning("interrupted after %d frames: closing the outputs written so far", summary.frames)
        try:
            # A signal while closing waits until the outputs are closed (see interrupts.py).
            with deferred():
                if self._results is not None:
                    self._results.close()  # waits for a detection still running ahead
                if self._reader is not None:
                    self._reader.close()
                if self._writer is not None:
                    self._writer.close(keep=keep)
        finally:
            self._fill_summary()

    def _fill_summary(self) -> None:
        summary = self.summary
        summary.wall_s = time.perf_counter() - self._start_s
        summary.tracks = len(self._track_ids)
        summary.stage_mean_ms = self.pipeline.timer.mean_ms()
        summary.dropped_frames = self._reader.dropped_frames if self._reader is not None else 0
        summary.truncated = bool(getattr(self.source, "truncated", False))
        summary.reconnects = int(getattr(self.source, "reconnects", 0))
        summary.connection_lost = bool(getattr(self.source, "connection_lost", False))
        if self._latencies_s:
            latencies_ms = 1000.0 * np.asarray(self._latencies_s)
            summary.latency_median_ms = float(np.median(latencies_ms))
            summary.latency_p95_ms = float(np.percentile(latencies_ms, 95))


def run_stream(pipeline: Pipeline, source, sinks: Sequence = (), *, max_frames: Optional[int] = None,
               queue_size: int = 8, on_frame: Optional[Callable[[Frame, Tracks], None]] = None) -> RunSummary:
    """Reads `source` in a thread, steps the pipeline on each frame, and hands results to `sinks` in another
    (a TrackingRun to its end).

    Ctrl-C ends the run cleanly: the outputs written so far are closed and kept (summary.interrupted is set).
    Any other error discards the outputs (no half-written files) and propagates.
    """
    run = TrackingRun(pipeline, source, sinks, max_frames=max_frames, queue_size=queue_size)
    try:
        with run:
            for frame, tracks in run:
                if on_frame is not None:
                    on_frame(frame, tracks)
    except KeyboardInterrupt:
        # Also a signal held while the outputs closed (interrupts.deferred raises it there): they are complete.
        run.summary.interrupted = True
    return run.summary
