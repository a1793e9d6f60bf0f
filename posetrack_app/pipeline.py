"""The per-frame pipeline and the threaded runner around it (build.py turns a config into one).

    frame -> detector -> (+ tracker proposals, merged by box NMS) -> pose stage -> tracker -> Tracks

Stage protocols (plain duck typing):
    detector(frame: Frame) -> Detections
    pose_stage(frame: Frame, detections: Detections) -> Poses        (.skeleton: the keypoint layout)
    tracker.propose(frame) -> Detections; tracker.update(frame, poses) -> Tracks; tracker.reset()
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

from .config import TrackerConfig
from .structures import Detections, Frame, Tracks
from .timing import SmoothedFps, StageTimer
from .tracking.merge import merge_detections

log = logging.getLogger(__name__)


class Pipeline:
    """Runs the stages on one frame at a time and times each stage.

    detect_every: run the detector on every k-th frame only; the tracker's proposals carry the frames between.
    schedule: decides per frame whether the detector runs (detection/schedule.py); replaces detect_every.
    box_merge_iou_threshold: IoU above which a propagated box is a duplicate of a detected one.
    """

    def __init__(self, detector, pose_stage, tracker, *, detect_every: int = 1, schedule=None,
                 box_merge_iou_threshold: float = TrackerConfig.box_merge_iou_threshold,
                 timer: Optional[StageTimer] = None):
        from .detection.schedule import FixedSchedule

        self.detector = detector
        self.pose_stage = pose_stage
        self.tracker = tracker
        self.schedule = schedule if schedule is not None else FixedSchedule(detect_every)
        self.box_merge_iou_threshold = box_merge_iou_threshold
        self.timer = timer or StageTimer()
        # Stages that time their own parts (e.g. TopDownEstimator: pose.crop / pose.network / pose.decode)
        # report them to the pipeline's timer.
        if hasattr(pose_stage, "timer"):
            pose_stage.timer = self.timer
        self._frames_since_reset = 0

    @property
    def skeleton(self):
        return self.pose_stage.skeleton

    def reset(self) -> None:
        """Call at every sequence boundary: track ids restart."""
        self.tracker.reset()
        self._frames_since_reset = 0

    def step(self, frame: Frame) -> Tracks:
        timer = self.timer
        detected = self.schedule.should_detect(frame, self._frames_since_reset)
        if detected:
            with timer.stage("detect"):
                detections = self.detector(frame)
        else:
            detections = Detections.empty()
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

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def run_stream(pipeline: Pipeline, source, sinks: Sequence = (), *, max_frames: Optional[int] = None,
               queue_size: int = 8, on_frame: Optional[Callable[[Frame, Tracks], None]] = None) -> RunSummary:
    """Reads `source` in a thread, steps the pipeline on each frame, and hands results to `sinks` in another.

    Ctrl-C ends the run cleanly: the outputs written so far are closed and kept (summary.interrupted is set).
    Any other error discards the outputs (no half-written files) and propagates.
    """
    from .interrupts import deferred
    from .io.sinks import SinkWriter
    from .io.sources import ThreadedReader

    summary = RunSummary()
    reader = ThreadedReader(source, queue_size=queue_size)
    writer = SinkWriter(sinks)
    track_ids = set()
    fps = SmoothedFps()
    keep = False
    start = time.perf_counter()
    try:
        try:
            for frame in reader:
                if max_frames is not None and summary.frames >= max_frames:
                    break
                step_start = time.perf_counter()
                tracks = pipeline.step(frame)
                writer.put(frame, tracks, fps.update(time.perf_counter() - step_start))
                track_ids.update(int(t) for t in tracks.track_ids)
                summary.frames += 1
                if on_frame is not None:
                    on_frame(frame, tracks)
                if writer.stop_requested:
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("interrupted after %d frames: closing the outputs written so far", summary.frames)
        keep = True
    finally:
        # A signal while closing waits until the outputs are closed (see interrupts.py).
        with deferred():
            reader.close()
            writer.close(keep=keep)
    summary.wall_s = time.perf_counter() - start
    summary.tracks = len(track_ids)
    summary.stage_mean_ms = pipeline.timer.mean_ms()
    summary.dropped_frames = reader.dropped_frames
    summary.truncated = source.truncated
    return summary
