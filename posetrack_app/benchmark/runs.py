"""The two measured run loops: the sequential loop (decode, pipeline, render/write one after the other on one
thread) and the app's threaded runner (`pipeline.run_stream`), each giving a BenchRun.

What is timed (stage names, in pipeline order; whichever exist are reported):
    decode      reading + decoding one frame from the source (reader thread when pipelined)
    detect      the person detector (pipeline.step)
    propagate   tracker proposals + box merge (pipeline.step)
    pose        the pose stage (HRNet top-down or the detector's keypoints), with sub-stages "pose.*" if the
                estimator times them
    track       association (pipeline.step)
    render      drawing the tracks on a copy of the frame, when no video is written (writer thread when pipelined)
    write       all output sinks of a frame, when outputs are requested; "write.video" (render + encode),
                "write.jsonlines" each

Every clock read goes through the pipeline timer's clock, so a test can run a loop on a fake clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..io.sources import FrameSource
from ..structures import Tracks
from ..timing import SmoothedFps, StageStats, StageTimer
from .timed import TimedSource, wrap_sinks

STAGE_ORDER = ("decode", "detect", "propagate", "pose", "track", "render", "write")
# The order in which TopDownEstimator runs its timed parts.
POSE_SUBSTAGE_ORDER = ("pose.crop", "pose.network", "pose.decode")


@dataclass
class BenchRun:
    """One measured run. frame_interval_ms: per measured frame, the time from the previous frame's completion
    (or the end of warm-up) to this one's; wall_s also holds the writer's drain at the end."""

    mode: str
    warmup_frames: int
    frames_measured: int
    wall_s: float
    frame_interval_ms: np.ndarray
    persons_per_frame: List[int]
    stage_stats: Dict[str, StageStats]
    timer_mode: str = "wall"
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames_measured / self.wall_s if self.wall_s > 0 else 0.0


def ordered_stage_names(names: Sequence[str]) -> List[str]:
    """Pipeline order (STAGE_ORDER), each nested stage right after its parent; unknown stages last."""
    def key(name: str):
        root = name.split(".")[0]
        rank = STAGE_ORDER.index(root) if root in STAGE_ORDER else len(STAGE_ORDER)
        sub_rank = POSE_SUBSTAGE_ORDER.index(name) if name in POSE_SUBSTAGE_ORDER else len(POSE_SUBSTAGE_ORDER)
        return rank, name != root, sub_rank, name
    return sorted(names, key=key)


def _merge_stats(*timers: StageTimer) -> Dict[str, StageStats]:
    merged: Dict[str, StageStats] = {}
    for timer in timers:
        merged.update(timer.stats())
    return {name: merged[name] for name in ordered_stage_names(list(merged))}


def _prepare_run(pipeline, source, sinks, warmup: int, frames: int, render_options):
    """Fresh timers and tracker, a timed source and timed writers: the common start of both run modes."""
    side_timer = StageTimer(clock=pipeline.timer.clock)
    timed_source = TimedSource(source, side_timer, first_index=warmup, max_frames=warmup + frames)
    writers = wrap_sinks(sinks, side_timer, warmup, pipeline.skeleton, render_options or {})
    pipeline.reset()
    pipeline.timer.reset()
    return side_timer, timed_source, writers


class _FrameClock:
    """Per measured frame, the interval since the previous frame completed, and persons per frame; resets the
    pipeline's timer when the last warm-up frame completes (so its statistics hold measured frames only)."""

    def __init__(self, pipeline, warmup: int):
        self.pipeline, self.warmup = pipeline, warmup
        self.count = 0
        self.intervals_ms: List[float] = []
        self.persons: List[int] = []
        self.start = self.last_done = pipeline.timer.clock()

    def frame_done(self, tracks: Tracks) -> None:
        now = self.pipeline.timer.clock()
        self.count += 1
        if self.count == self.warmup:
            self.pipeline.timer.reset()
            self.start = now
        elif self.count > self.warmup:
            self.intervals_ms.append(1000.0 * (now - self.last_done))
            self.persons.append(len(tracks))
        self.last_done = now

    def run(self, mode: str, side_timer: StageTimer, timed_source: TimedSource) -> BenchRun:
        """The BenchRun of the frames seen so far, wall time until now."""
        wall_s = self.pipeline.timer.clock() - self.start
        run = BenchRun(mode, self.warmup, max(self.count - self.warmup, 0), wall_s, np.asarray(self.intervals_ms),
                       self.persons, _merge_stats(side_timer, self.pipeline.timer), self.pipeline.timer.mode)
        run.extra["frame_wh"] = list(timed_source.frame_wh or ())
        return run


def run_sequential(pipeline, source: FrameSource, sinks: Sequence = (), *, warmup: int, frames: int,
                   render_options: Optional[dict] = None) -> BenchRun:
    """decode -> pipeline.step -> render/write, one frame after the other on one thread (no overlap).

    The pipeline's own timer collects detect/propagate/pose/track; it is reset at the end of warm-up.
    Sinks are closed here (kept on success and on an interrupt, which propagates; discarded on error).
    """
    side_timer, timed_source, writers = _prepare_run(pipeline, source, sinks, warmup, frames, render_options)
    clock = pipeline.timer.clock
    frame_clock = _FrameClock(pipeline, warmup)
    fps = SmoothedFps()
    keep = False
    try:
        for frame in timed_source.frames():
            step_start = clock()
            tracks = pipeline.step(frame)
            smoothed_fps = fps.update(clock() - step_start)
            for writer in writers:
                writer.write(frame, tracks, smoothed_fps)
            frame_clock.frame_done(tracks)
        keep = True
    except KeyboardInterrupt:
        keep = True  # as `posetrack track`: what was written is complete and kept
        raise
    finally:
        for writer in writers:
            writer.close(keep=keep)
        source.close()
    return frame_clock.run("sequential", side_timer, timed_source)


def run_pipelined(pipeline, source: FrameSource, sinks: Sequence = (), *, warmup: int, frames: int,
                  render_options: Optional[dict] = None, queue_size: int = 8) -> BenchRun:
    """The app's threaded runner (`pipeline.run_stream`: reader thread -> pipeline -> writer thread), timed.

    Wall time runs from the completion of the last warm-up frame until run_stream returns (the writer has
    drained and the outputs are closed). An interrupt (Ctrl-C, SIGTERM) keeps the outputs and propagates: the
    frames seen so far are no measurement.
    """
    from ..pipeline import run_stream

    side_timer, timed_source, writers = _prepare_run(pipeline, source, sinks, warmup, frames, render_options)
    frame_clock = _FrameClock(pipeline, warmup)
    summary = run_stream(pipeline, timed_source, writers, max_frames=warmup + frames, queue_size=queue_size,
                         on_frame=lambda frame, tracks: frame_clock.frame_done(tracks))
    if summary.interrupted:
        raise KeyboardInterrupt
    run = frame_clock.run("pipelined", side_timer, timed_source)
    run.extra["dropped_frames"] = summary.dropped_frames
    return run
