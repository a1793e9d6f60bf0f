"""Benchmark machinery: synthetic clips with N people, per-stage statistics, the environment record, and the
sequential loop against the threaded runner (`run_stream`).

Shape glossary:
    N  persons in a frame;  K = 17 COCO keypoints;  H x W  frame size in pixels

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

"share" is a stage's total time over the wall time of the measured frames. In the sequential loop the shares
add up to about 100%; pipelined, stages in the reader and writer threads overlap the pipeline, so they can add
up to more than 100%: that excess is the overlap the threads buy.
"""
from __future__ import annotations

import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import cv2
import numpy as np

from .io.render import draw_tracks
from .io.sources import FrameSource
from .ops.boxes import clip_boxes
from .skeleton import COCO17, Skeleton
from .structures import Detections, Frame, Tracks
from .timing import StageStats, StageTimer, stats_from_ms

log = logging.getLogger(__name__)

STAGE_ORDER = ("decode", "detect", "propagate", "pose", "track", "render", "write")
RESOLUTIONS_WH = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
SYNTHETIC_DETECTIONS_NOTE = ("synthetic detections: a stub detector returns the known boxes and keypoints of the "
                             "drawn figures")

# ---------------------------------------------------------------------------------------------------------------
# Synthetic clip
# ---------------------------------------------------------------------------------------------------------------

# COCO-17 joints of a standing person, x right and y down, in units of body height, origin between the feet.
_POSE_TEMPLATE = np.array([
    [0.00, -0.93],                                # nose
    [-0.02, -0.95], [0.02, -0.95],                # eyes (left, right as seen: image left is the person's right)
    [-0.045, -0.93], [0.045, -0.93],              # ears
    [0.11, -0.81], [-0.11, -0.81],                # shoulders (left, right)
    [0.15, -0.64], [-0.15, -0.64],                # elbows
    [0.16, -0.50], [-0.16, -0.50],                # wrists
    [0.08, -0.49], [-0.08, -0.49],                # hips
    [0.09, -0.26], [-0.09, -0.26],                # knees
    [0.09, -0.02], [-0.09, -0.02],                # ankles
], dtype=np.float64)
# Which joints swing forward/back while walking, and with which sign (arms opposite to legs).
_SWING = np.zeros((17, 2))
_SWING[[7, 9], 0], _SWING[[8, 10], 0] = 0.06, -0.06      # elbows/wrists
_SWING[[13, 15], 0], _SWING[[14, 16], 0] = -0.07, 0.07   # knees/ankles
_SWING[[9, 10], 0] *= 2.0
_SWING[[15, 16], 0] *= 2.0


def parse_resolution(text: str) -> tuple:
    """'720p' or '1280x720' -> (width, height)."""
    if text in RESOLUTIONS_WH:
        return RESOLUTIONS_WH[text]
    parts = text.lower().split("x")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS_WH)} or WIDTHxHEIGHT, got {text!r}")


@dataclass
class _Walker:
    foot_xy: np.ndarray        # position of the feet, pixels
    velocity_xy: np.ndarray    # pixels per frame
    height_px: float
    phase: float
    color_bgr: tuple


class SyntheticClip:
    """`num_frames` frames of `num_persons` stick figures walking on a textured background, with the exact boxes
    and COCO-17 keypoints of every figure (deterministic for a seed).

    Figures walk in straight lines and bounce off the frame edges, so they cross and occlude each other.
    """

    skeleton: Skeleton = COCO17

    def __init__(self, num_persons: int, width: int, height: int, num_frames: int, *, seed: int = 0,
                 fps: float = 30.0, keypoint_noise_px: float = 1.0):
        if num_persons < 0 or width < 64 or height < 64 or num_frames < 1:
            raise ValueError(f"need num_persons >= 0, a frame of at least 64x64 and num_frames >= 1; got "
                             f"{num_persons}, {width}x{height}, {num_frames}")
        self.num_persons, self.width, self.height, self.num_frames = num_persons, width, height, num_frames
        self.fps, self.seed, self.keypoint_noise_px = fps, seed, keypoint_noise_px
        rng = np.random.default_rng(seed)
        self.walkers: List[_Walker] = []
        for _ in range(num_persons):
            person_h = rng.uniform(0.25, 0.45) * height
            foot = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.45, 0.98) * height])
            foot[1] = max(foot[1], person_h + 2)
            speed = rng.uniform(0.004, 0.012) * height
            angle = rng.uniform(-0.35, 0.35) + (np.pi if rng.random() < 0.5 else 0.0)
            color = tuple(int(c) for c in rng.integers(40, 230, 3))
            self.walkers.append(_Walker(foot, speed * np.array([np.cos(angle), np.sin(angle)]), person_h,
                                        rng.uniform(0, 2 * np.pi), color))
        # Texture gives optical flow something to lock on; low-pass so it compresses like a real scene.
        noise = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        texture = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
        ramp = np.linspace(60, 160, height, dtype=np.float32)[:, None, None]
        self.background = np.clip(0.5 * texture + ramp, 0, 255).astype(np.uint8)
        self._states = self._simulate()

    def _simulate(self) -> List[np.ndarray]:
        """Per frame: keypoints [N, K, 2] of every figure (noise-free)."""
        states = []
        feet = [w.foot_xy.copy() for w in self.walkers]
        velocities = [w.velocity_xy.copy() for w in self.walkers]
        for index in range(self.num_frames):
            keypoints = np.zeros((self.num_persons, 17, 2))
            for i, walker in enumerate(self.walkers):
                direction = 1.0 if velocities[i][0] >= 0 else -1.0
                swing = np.sin(walker.phase + 0.25 * index)
                joints = _POSE_TEMPLATE + _SWING * swing * np.array([direction, 1.0])
                keypoints[i] = feet[i] + joints * walker.height_px
                feet[i] = feet[i] + velocities[i]
                # Bounce so figures stay in view (at least most of them).
                if not (0.05 * self.width < feet[i][0] < 0.95 * self.width):
                    velocities[i][0] *= -1
                if not (walker.height_px < feet[i][1] < self.height - 1):
                    velocities[i][1] *= -1
            states.append(keypoints)
        return states

    def __len__(self) -> int:
        return self.num_frames

    def detections(self, index: int) -> Detections:
        """The known persons of frame `index`: boxes (joint extent grown 10%, clipped to the frame), score 0.9,
        keypoints [N, 17, 3] with a little seeded noise and score 0.9. Figures fully outside are left out."""
        keypoints = self._states[index].copy()
        rng = np.random.default_rng((self.seed, index))
        keypoints += rng.normal(0.0, self.keypoint_noise_px, keypoints.shape)
        lo, hi = keypoints.min(axis=1), keypoints.max(axis=1)
        margin = 0.05 * (hi - lo)
        boxes = clip_boxes(np.concatenate([lo - margin, hi + margin], axis=1), self.width, self.height)
        visible = (boxes[:, 2] - boxes[:, 0] > 2) & (boxes[:, 3] - boxes[:, 1] > 2)
        scores = np.full(len(boxes), 0.9)
        kpts = np.concatenate([keypoints, np.full(keypoints.shape[:2] + (1,), 0.9)], axis=2)
        return Detections(boxes[visible], scores[visible], kpts[visible])

    def render(self, index: int) -> np.ndarray:
        """uint8 BGR [H, W, 3] of frame `index`: far figures (higher feet) drawn first."""
        image = self.background.copy()
        keypoints = self._states[index]
        order = np.argsort(keypoints[:, 15:17, 1].max(axis=1)) if self.num_persons else []
        for i in order:
            walker = self.walkers[i]
            points = np.round(keypoints[i]).astype(np.int32)
            thickness = max(2, int(walker.height_px / 14))
            torso = points[[5, 6, 12, 11]]
            cv2.fillConvexPoly(image, torso, walker.color_bgr, cv2.LINE_AA)
            for a, b in self.skeleton.limbs[:12]:
                cv2.line(image, tuple(points[a]), tuple(points[b]), walker.color_bgr, thickness, cv2.LINE_AA)
            head_radius = max(3, int(walker.height_px * 0.065))
            cv2.circle(image, tuple(points[0]), head_radius, (90, 140, 200), -1, cv2.LINE_AA)
        return image

    def frames(self) -> Iterator[Frame]:
        for index in range(self.num_frames):
            yield Frame(index, self.render(index), index / self.fps)

    def write_video(self, path) -> Path:
        """Encodes the clip (mp4v for .mp4, MJPG for .avi) so that a benchmark also times decoding."""
        path = Path(path)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
        writer = cv2.VideoWriter(str(path), fourcc, self.fps, (self.width, self.height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot encode {path}: try a .avi name")
        try:
            for frame in self.frames():
                writer.write(frame.image_bgr)
        finally:
            writer.release()
        return path


class SyntheticDetector:
    """Stub detector for a synthetic clip: returns the clip's known detections of `frame.index`.

    network: optional real detector run on the frame first and its output discarded, so that the "detect" stage
    costs what the network costs on frames of this size while the pose and tracking stages get known persons
    (a detector trained on photos need not find drawn figures).
    """

    def __init__(self, clip: SyntheticClip, network: Optional[Callable[[Frame], Detections]] = None):
        self.clip = clip
        self.network = network

    def __call__(self, frame: Frame) -> Detections:
        if self.network is not None:
            self.network(frame)
        return self.clip.detections(frame.index)


# ---------------------------------------------------------------------------------------------------------------
# Timed wrappers for the reader and writer side
# ---------------------------------------------------------------------------------------------------------------


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
            start = time.perf_counter()
            frame = next(iterator, None)
            elapsed_s = time.perf_counter() - start
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

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        start = time.perf_counter()
        self.sink.write(frame, tracks, fps)
        if frame.index >= self.first_index:
            self.timer.add(self.stage_name, time.perf_counter() - start)

    def close(self, keep: bool = True) -> None:
        self.sink.close(keep=keep)


class RenderOnlySink:
    """Draws the tracks on a copy of the frame and drops the picture: the rendering cost of a run without a
    video output (what a live window would pay)."""

    stop_requested = False

    def __init__(self, skeleton: Skeleton, render_options: Optional[dict] = None):
        self.skeleton = skeleton
        self.render_options = dict(render_options or {})
        self.draw_fps = self.render_options.pop("draw_fps", True)

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        draw_tracks(frame.image_bgr.copy(), tracks, self.skeleton, fps=fps if self.draw_fps else None,
                    **self.render_options)

    def close(self, keep: bool = True) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


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


def _ordered(names: Sequence[str]) -> List[str]:
    # The order in which TopDownEstimator runs its timed parts.
    known_substages = ["pose.crop", "pose.network", "pose.decode"]

    def key(name: str):
        root = name.split(".")[0]
        rank = STAGE_ORDER.index(root) if root in STAGE_ORDER else len(STAGE_ORDER)
        sub_rank = known_substages.index(name) if name in known_substages else len(known_substages)
        return rank, name != root, sub_rank, name
    return sorted(names, key=key)


def _merge_stats(*timers: StageTimer) -> Dict[str, StageStats]:
    merged: Dict[str, StageStats] = {}
    for timer in timers:
        merged.update(timer.stats())
    return {name: merged[name] for name in _ordered(list(merged))}


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
        total_start = time.perf_counter()
        for sink, name in zip(self.sinks, self.stage_names):
            start = time.perf_counter()
            sink.write(frame, tracks, fps)
            if record:
                self.timer.add(name, time.perf_counter() - start)
        if record:
            self.timer.add("write", time.perf_counter() - total_start)

    def close(self, keep: bool = True) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close(keep=keep)
            except Exception as exc:  # close the others before re-raising the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


def _wrap_sinks(sinks: Sequence, timer: StageTimer, warmup: int, skeleton: Skeleton, render_options: dict) -> list:
    """Writer-side stages: "write" (+ "write.<kind>" per sink) for real sinks, or "render" alone when none."""
    if sinks:
        return [TimedSinkGroup(sinks, timer, first_index=warmup)]
    return [TimedSink(RenderOnlySink(skeleton, render_options), timer, "render", first_index=warmup)]


def _prepare_run(pipeline, source, sinks, warmup: int, frames: int, render_options):
    """Fresh timers and tracker, a timed source and timed writers: the common start of both run modes."""
    side_timer = StageTimer()
    timed_source = TimedSource(source, side_timer, first_index=warmup, max_frames=warmup + frames)
    writers = _wrap_sinks(sinks, side_timer, warmup, pipeline.skeleton, render_options or {})
    pipeline.reset()
    pipeline.timer.reset()
    return side_timer, timed_source, writers


def run_sequential(pipeline, source: FrameSource, sinks: Sequence = (), *, warmup: int, frames: int,
                   render_options: Optional[dict] = None) -> BenchRun:
    """decode -> pipeline.step -> render/write, one frame after the other on one thread (no overlap).

    The pipeline's own timer collects detect/propagate/pose/track; it is reset at the end of warm-up.
    Sinks are closed here (kept on success, discarded on error).
    """
    side_timer, timed_source, writers = _prepare_run(pipeline, source, sinks, warmup, frames, render_options)
    intervals_ms: List[float] = []
    persons: List[int] = []
    count = 0
    keep = False
    smoothed_fps = None
    start = last_done = time.perf_counter()
    try:
        for frame in timed_source.frames():
            step_start = time.perf_counter()
            tracks = pipeline.step(frame)
            step_fps = 1.0 / max(time.perf_counter() - step_start, 1e-6)
            smoothed_fps = step_fps if smoothed_fps is None else 0.9 * smoothed_fps + 0.1 * step_fps
            for writer in writers:
                writer.write(frame, tracks, smoothed_fps)
            count += 1
            now = time.perf_counter()
            if count == warmup:
                pipeline.timer.reset()
                start = now
            elif count > warmup:
                intervals_ms.append(1000.0 * (now - last_done))
                persons.append(len(tracks))
            last_done = now
        keep = True
    finally:
        for writer in writers:
            writer.close(keep=keep)
        source.close()
    wall_s = time.perf_counter() - start
    run = BenchRun("sequential", warmup, max(count - warmup, 0), wall_s, np.asarray(intervals_ms), persons,
                   _merge_stats(side_timer, pipeline.timer), pipeline.timer.mode)
    run.extra["frame_wh"] = list(timed_source.frame_wh or ())
    return run


def run_pipelined(pipeline, source: FrameSource, sinks: Sequence = (), *, warmup: int, frames: int,
                  render_options: Optional[dict] = None, queue_size: int = 8) -> BenchRun:
    """The app's threaded runner (`pipeline.run_stream`: reader thread -> pipeline -> writer thread), timed.

    Wall time runs from the completion of the last warm-up frame until run_stream returns (the writer has
    drained and the outputs are closed).
    """
    from .pipeline import run_stream

    side_timer, timed_source, writers = _prepare_run(pipeline, source, sinks, warmup, frames, render_options)
    intervals_ms: List[float] = []
    persons: List[int] = []
    state = {"count": 0, "start": None, "last": None}

    def on_frame(frame: Frame, tracks: Tracks) -> None:
        now = time.perf_counter()
        state["count"] += 1
        if state["count"] == warmup:
            pipeline.timer.reset()
            state["start"] = now
        elif state["count"] > warmup:
            intervals_ms.append(1000.0 * (now - state["last"]))
            persons.append(len(tracks))
        state["last"] = now

    begin = time.perf_counter()
    if warmup == 0:
        state["start"] = state["last"] = begin
    summary = run_stream(pipeline, timed_source, writers, max_frames=warmup + frames, queue_size=queue_size,
                         on_frame=on_frame)
    end = time.perf_counter()
    start = state["start"] if state["start"] is not None else begin
    run = BenchRun("pipelined", warmup, max(state["count"] - warmup, 0), end - start, np.asarray(intervals_ms),
                   persons, _merge_stats(side_timer, pipeline.timer), pipeline.timer.mode)
    run.extra["dropped_frames"] = summary.dropped_frames
    run.extra["frame_wh"] = list(timed_source.frame_wh or ())
    return run


# ---------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------


def summarize_run(run: BenchRun) -> Dict[str, object]:
    """JSON-ready numbers of a run: per stage median/p95/mean ms and share of the wall time; frame stats."""
    wall_ms = 1000.0 * run.wall_s
    stages = {}
    for name, s in run.stage_stats.items():
        stages[name] = {
            "calls": s.calls,
            "median_ms": round(s.median_ms, 3),
            "p95_ms": round(s.p95_ms, 3),
            "mean_ms": round(s.mean_ms, 3),
            "share": round(s.total_ms / wall_ms, 4) if wall_ms > 0 else None,
        }
    out: Dict[str, object] = {
        "mode": run.mode,
        "timer_mode": run.timer_mode,
        "warmup_frames": run.warmup_frames,
        "frames_measured": run.frames_measured,
        "wall_s": round(run.wall_s, 4),
        "fps_end_to_end": round(run.fps, 3),
        "stages": stages,
    }
    if len(run.frame_interval_ms):
        f = stats_from_ms(run.frame_interval_ms)
        out["frame"] = {"median_ms": round(f.median_ms, 3), "p95_ms": round(f.p95_ms, 3),
                        "mean_ms": round(1000.0 / run.fps if run.fps else f.mean_ms, 3)}
    if run.persons_per_frame:
        p = np.asarray(run.persons_per_frame)
        out["persons_per_frame"] = {"mean": round(float(p.mean()), 3), "max": int(p.max()), "min": int(p.min())}
    out.update(run.extra)
    return out


def format_table(summary: Dict[str, object], markdown: bool = False) -> str:
    """Per-stage table of a `summarize_run` result (stdout text, or a Markdown table)."""
    rows = []
    for name, s in summary["stages"].items():
        label = ("  " + name) if "." in name else name
        share = "" if s["share"] is None else f"{100.0 * s['share']:.1f}%"
        rows.append((label, str(s["calls"]), f"{s['median_ms']:.2f}", f"{s['p95_ms']:.2f}", share,
                     f"{1000.0 / s['mean_ms']:.1f}" if s["mean_ms"] > 0 else ""))
    frame = summary.get("frame")
    if frame:
        rows.append(("frame (wall)", str(summary["frames_measured"]), f"{frame['median_ms']:.2f}",
                     f"{frame['p95_ms']:.2f}", "100.0%", f"{summary['fps_end_to_end']:.1f}"))
    header = ("stage", "calls", "median ms", "p95 ms", "share", "stage FPS")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 5) + "|"]
        lines += ["| " + " | ".join((c.strip() if i == 0 else c) for i, c in enumerate(r)) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


MODE_TITLES = {
    "sequential": "sequential (decode -> pipeline -> render/write on one thread)",
    "pipelined": "pipelined (run_stream: reader thread -> pipeline -> writer thread)",
}


def format_report(record: Dict[str, object], markdown: bool = False) -> str:
    """Human-readable report of a `bench_record` (stdout text or Markdown), rebuilt from the JSON alone."""
    source, setup, env = record["source"], record["setup"], record["environment"]
    load = record["load_average_1min"]
    size = "x".join(str(v) for v in source.get("frame_wh") or []) or "?"
    pose = setup["pose_stage"] + (" (detector keypoints, no pose network)"
                                  if setup["pose_stage"] == "DetectorKeypointPoses" else
                                  f" ({setup['pose_model']}, {setup['pose_backend']}, {setup['pose_device']}, "
                                  f"{setup['pose_precision']}, batch <= {setup['pose_max_batch']})")
    detector = setup["detector"]
    if source.get("synthetic"):
        detector += " (" + ("network run for timing, output replaced by the known persons" if
                            setup.get("detector_network_run") else "no network run") + ")"
    gpu = env.get("gpu_name") or "none"
    facts = [
        f"source: {source['name']} ({size})" + (f", synthetic clip, {source['persons']} persons, seed "
                                                f"{source['seed']}" if source.get("synthetic") else ""),
        f"detector: {detector}; providers {', '.join(setup.get('detector_providers') or []) or '-'}; "
        f"input {setup['detector_input_size']}",
        f"pose: {pose}; tracker: {setup['tracker']}",
        f"machine: {env.get('cpu_model')} ({env.get('cpu_count_usable')} usable cores), GPU {gpu}"
        + (f" (driver {env.get('gpu_driver')})" if env.get("gpu_driver") else "")
        + f"; torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, TensorRT {env.get('tensorrt') or '-'}",
        f"load average (1 min): {load['start']} at start, {load['end']} at end",
    ]
    parts = []
    for name, run in record["runs"].items():
        title = f"{MODE_TITLES.get(name, name)}: {run['frames_measured']} frames after {run['warmup_frames']} " \
                f"warm-up, timer {run['timer_mode']}"
        persons = run.get("persons_per_frame") or {}
        tail = f"end to end {run['fps_end_to_end']:.2f} FPS"
        if run.get("frame"):
            tail += f" ({1000.0 / run['fps_end_to_end']:.1f} ms per frame)" if run["fps_end_to_end"] else ""
        if persons:
            tail += f"; persons per frame {persons['mean']:.1f} mean, {persons['max']} max"
        run_load = run.get("load_average_1min")
        if run_load:
            tail += f"; load average {run_load['start']} -> {run_load['end']}"
        if markdown:
            parts.append(f"**{title}**\n\n{format_table(run, markdown=True)}\n\n{tail}")
        else:
            parts.append(f"{title}\n{format_table(run)}\n{tail}")
    if "pipelined_speedup" in record:
        parts.append(f"pipelined / sequential end-to-end FPS: {record['pipelined_speedup']:.2f}x")
    notes = list(record.get("notes") or [])
    if markdown:
        head = "\n".join(f"- {line}" for line in facts + notes)
        return f"{head}\n\n" + "\n\n".join(parts) + f"\n\nCommand: `{record['command']}`\n"
    return "\n".join(facts + [f"note: {n}" for n in notes]) + "\n\n" + "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------


def load_average_1min() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(*names: str) -> Optional[str]:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _nvidia_smi() -> List[Dict[str, str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            gpus.append(dict(zip(("name", "driver", "memory_total", "max_sm_clock", "power_limit"), parts)))
    return gpus


def _git_revision() -> Dict[str, object]:
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def capture_environment() -> Dict[str, object]:
    """Machine and software facts for a benchmark record (no config: see `describe_setup`)."""
    env: Dict[str, object] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "git": _git_revision(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        env["memory_total_gib"] = round(int(meminfo[0].split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        env["memory_total_gib"] = None
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["cuda_build"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        env["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        env["gpus_torch"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                             if torch.cuda.is_available() else [])
    except ImportError:
        env["torch"] = None
    gpus = _nvidia_smi()
    env["gpus"] = gpus
    env["gpu_name"] = gpus[0]["name"] if gpus else (env.get("gpus_torch") or [None])[0]
    env["gpu_driver"] = gpus[0]["driver"] if gpus else None
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    # Never import tensorrt here (it is imported only inside its backend); its version is package metadata.
    env["tensorrt"] = _package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs")
    return env


def describe_setup(cfg, pipeline) -> Dict[str, object]:
    """What ran: detector, pose stage actually built (HRNet or the detector's keypoints), backend, precision,
    batch, input sizes, tracker."""
    pose_stage = pipeline.pose_stage
    detector = pipeline.detector
    network = getattr(detector, "network", detector)
    setup = {
        "detector": type(detector).__name__,
        "detector_model": cfg.detector.model,
        "detector_input_size": cfg.detector.input_size,
        "detector_providers": list(getattr(network, "providers", []) or []),
        "detect_every": cfg.detector.detect_every,
        "pose_stage": type(pose_stage).__name__,
        "pose_model": cfg.pose.model,
        "pose_weights": cfg.pose.weights or None,
        "pose_backend": cfg.pose.backend,
        "pose_device": cfg.pose.device,
        "pose_precision": cfg.pose.precision,
        "pose_max_batch": cfg.pose.max_batch,
        "pose_flip_test": cfg.pose.flip_test,
        "pose_input_hw": list(getattr(getattr(pose_stage, "backend", None), "input_hw", []) or []) or None,
        "tracker": cfg.tracker.kind,
    }
    if setup["pose_stage"] == "DetectorKeypointPoses":
        setup["pose_note"] = "no HRNet weights configured: poses are the detector's keypoints, no pose network ran"
    return setup


def bench_record(*, command: Sequence[str], source: Dict[str, object], runs: Dict[str, BenchRun], setup: dict,
                 environment: dict, load_start: Optional[float], load_end: Optional[float],
                 config: Optional[dict] = None, notes: Sequence[str] = ()) -> Dict[str, object]:
    """The JSON written by `posetrack bench --json`."""
    record: Dict[str, object] = {
        "schema": "posetrack-bench/1",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(command),
        "source": source,
        "load_average_1min": {"start": load_start, "end": load_end},
        "runs": {name: summarize_run(run) for name, run in runs.items()},
        "setup": setup,
        "environment": environment,
        "notes": list(notes),
    }
    if "sequential" in runs and "pipelined" in runs and runs["sequential"].fps > 0:
        record["pipelined_speedup"] = round(runs["pipelined"].fps / runs["sequential"].fps, 3)
    if config is not None:
        record["config"] = config
    return record


def synthetic_video(clip: SyntheticClip, folder: Optional[str] = None) -> tuple:
    """Writes `clip` to a temporary .mp4 (mp4v, as the app's video output) and returns
    (path, the TemporaryDirectory holding it: keep it referenced while the file is read)."""
    tmp = tempfile.TemporaryDirectory(prefix="posetrack-bench-", dir=folder)
    path = clip.write_video(Path(tmp.name) / "synthetic.mp4")
    return path, tmp


def command_line(subcommand: str = "bench") -> List[str]:
    """The command as typed, with the program shown as `posetrack` (whether run as posetrack or python -m)."""
    argv = sys.argv[1:]
    if subcommand in argv:
        return ["posetrack"] + argv[argv.index(subcommand):]
    return [Path(sys.argv[0]).name] + argv
