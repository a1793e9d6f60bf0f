"""Timed wrappers for the reader and writer side of a benchmark run: decoding ("decode"), the output sinks
("write", "write.<kind>") and, when no output is written, the rendering a live window would pay ("render").

Each wrapper records into a StageTimer with that timer's clock, and only for frames with index >= `first_index`
(warm-up frames run but are not recorded).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

from ..errors import OutputError
from ..io.sinks import RenderOnlySink
from ..io.sources import FrameSource
from ..skeleton import Skeleton
from ..structures import Frame, Tracks
from ..timing import StageTimer


class TimedSource(FrameSource):
    """Wraps a FrameSource; times each frame's read+decode under "decode" for frames with index >= `first_index`
    (warm-up frames are not recorded), and stops after `max_frames` frames."""

    def __init__(self, source: FrameSource, timer: StageTimer, *, first_index: int = 0,
                 max_frames: Optional[int] = None, stage: str = "decode"):
        self.source, self.timer, self.first_index, self.max_frames, self.stage_name = (
            source, timer, first_index, max_frames, stage)
        self.live, self.name, self.fps, self.frame_count = source.live, source.name, source.fps, source.frame_count
        self.frame_wh: Optional[tuple] = None

    @property
    def truncated(self) -> bool:
        return self.source.truncated

    def frames(self) -> Iterator[Frame]:
        iterator = iter(self.source.frames())
        count = 0
        while self.max_frames is None or count < self.max_frames:
            start = self.timer.clock()
            frame = next(iterator, None)
            elapsed_s = self.timer.clock() - start
            if frame is None:
                return
            if self.frame_wh is None:
                self.frame_wh = (frame.width, frame.height)
            if frame.index >= self.first_index:
                self.timer.add(self.stage_name, elapsed_s)
            count += 1
            yield frame

    def close(self) -> None:
        self.source.close()


class TimedSink:
    """Wraps a sink (io/sinks.py protocol); times `write` under `stage` for frames with index >= `first_index`."""

    def __init__(self, sink, timer: StageTimer, stage: str, *, first_index: int = 0):
        self.sink, self.timer, self.stage_name, self.first_index = sink, timer, stage, first_index

    @property
    def stop_requested(self) -> bool:
        return bool(getattr(self.sink, "stop_requested", False))

    @property
    def live(self) -> bool:
        return bool(getattr(self.sink, "live", False))

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        start = self.timer.clock()
        self.sink.write(frame, tracks, fps)
        if frame.index >= self.first_index:
            self.timer.add(self.stage_name, self.timer.clock() - start)

    def finish(self) -> None:
        self.sink.finish()

    def close(self, keep: bool = True) -> None:
        self.sink.close(keep=keep)


def sink_stage_name(sink) -> str:
    """'write.video' for a VideoSink, 'write.jsonlines' for a JsonLinesSink, ... (class name without 'Sink')."""
    name = type(sink).__name__
    name = name[:-len("Sink")] if name.endswith("Sink") and len(name) > 4 else name
    return "write." + name.lower()


class TimedSinkGroup:
    """All output sinks as one sink: "write" times them together (one call per frame), "write.<kind>" each."""

    def __init__(self, sinks: Sequence, timer: StageTimer, *, first_index: int = 0):
        self.sinks, self.timer, self.first_index = list(sinks), timer, first_index
        self.stage_names = [sink_stage_name(s) for s in self.sinks]

    @property
    def stop_requested(self) -> bool:
        return any(getattr(s, "stop_requested", False) for s in self.sinks)

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        record = frame.index >= self.first_index
        total_start = self.timer.clock()
        for sink, name in zip(self.sinks, self.stage_names):
            start = self.timer.clock()
            sink.write(frame, tracks, fps)
            if record:
                self.timer.add(name, self.timer.clock() - start)
        if record:
            self.timer.add("write", self.timer.clock() - total_start)

    def finish(self) -> None:
        for sink in self.sinks:
            sink.finish()

    def close(self, keep: bool = True) -> None:
        """As io.sinks.SinkWriter closes its sinks: every output is finished and checked before any is published,
        and one that fails discards them all; the first failure is raised after all are closed."""
        error: Optional[BaseException] = None
        if keep:
            try:
                self.finish()
            except OutputError as exc:
                error, keep = exc, False
        for sink in self.sinks:
            try:
                sink.close(keep=keep)
            except Exception as exc:  # close the others before re-raising the first failure
                error = error or exc
        if error is not None:
            raise error


def wrap_sinks(sinks: Sequence, timer: StageTimer, warmup: int, skeleton: Skeleton, render_options: dict) -> list:
    """Writer-side stages: "write" (+ "write.<kind>" per sink) for real sinks, or "render" alone when none."""
    if sinks:
        return [TimedSinkGroup(sinks, timer, first_index=warmup)]
    return [TimedSink(RenderOnlySink(skeleton, render_options), timer, "render", first_index=warmup)]
