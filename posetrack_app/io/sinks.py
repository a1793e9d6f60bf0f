"""Outputs of a tracking run: annotated video, live window, JSON Lines, per-person CSV, MOTChallenge box file,
PoseTrack 2018 file.

A sink gets `write(frame, tracks, fps)` per frame and `close(keep)` once. File sinks write to a temporary name
and, on `close(keep=True)` (a finished or interrupted run), first `finish()` the file (flush, fsync, check that
it is complete) and then rename it into place; `close(keep=False)` (a failed run) deletes the temporary file, so
no half-written output ever appears under the final name. Every write is checked: a failed one raises
OutputError naming the file. `SinkWriter` runs the sinks in a thread so rendering and encoding never block
inference; when one output fails it discards them all, as any failed run does.

`open_sinks` is the one place that turns output paths into sinks (the track and bench commands use it).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import OutputError, UserError
from ..interrupts import deferred, interruptible
from ..posetrack_layout import check_head_rule, tracks_to_persons
from ..skeleton import Skeleton
from ..structures import Frame, Tracks
from .atomic import (DISK_FULL_HINT, check_distinct_outputs, check_output_path, output_error, remove_stale_parts,
                     temporary_path_for)
from .posetrack_json import FrameAnnotation, Sequence, sequence_to_2018
from .render import draw_tracks
from ..tracking.backfill import Backfill

log = logging.getLogger(__name__)

# Accepted extensions per output kind (checked before the run starts).
VIDEO_FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
VIDEO_SUFFIXES = tuple(VIDEO_FOURCC)
JSON_LINES_SUFFIXES = (".jsonl", ".json")
CSV_SUFFIXES = (".csv",)
POSETRACK_SUFFIXES = (".json",)


class Sink:
    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the output (flush, close, verify) without publishing it; raises OutputError if it is not."""

    def close(self, keep: bool = True) -> None:
        pass

    # Set by a sink that wants the run to end (the live window's `q`).
    stop_requested = False
    # A live sink gets each frame as soon as it is tracked; the others (files) get it once no track still waiting
    # for confirmation can add to it (tracking/backfill.py), a few frames later.
    live = False


class _AtomicFileSink(Sink):
    """Writes to a temporary file beside `path`; renames it to `path` on close(keep=True) once finish() passed."""

    suffixes: Optional[Sequence[str]] = None
    what = "output"

    def __init__(self, path):
        self.path = check_output_path(path, self.suffixes, self.what)
        remove_stale_parts(self.path)
        self.tmp_path = temporary_path_for(self.path)
        self._finished = False
        try:
            self._open()
        except BaseException:  # an error or an interrupt: the half-made sink is never closed, so clean up here
            self.tmp_path.unlink(missing_ok=True)
            raise

    def _open(self) -> None:
        """Open the temporary file for writing (where the writer does not open it itself)."""

    def _finish(self) -> None:
        """Flush and close the file; raise OSError or OutputError when it is incomplete."""

    def _release(self) -> None:
        """Let go of the file without completing it (a discarded output)."""

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            self._finish()
        except OSError as exc:
            raise output_error(self.path, exc) from None

    def _discard(self) -> None:
        try:
            self._release()
        except OSError:  # the file is deleted anyway
            pass
        self.tmp_path.unlink(missing_ok=True)

    def close(self, keep: bool = True) -> None:
        if not keep:
            self._discard()
            return
        try:
            self.finish()
        except OutputError:
            self.tmp_path.unlink(missing_ok=True)
            raise
        with deferred():
            os.replace(self.tmp_path, self.path)
        log.info("wrote %s", self.path)


class _TextLinesSink(_AtomicFileSink):
    def _open(self) -> None:
        self._handle = open(self.tmp_path, "w", encoding="utf-8")

    def _write_text(self, text: str) -> None:
        try:
            self._handle.write(text)
        except OSError as exc:
            raise output_error(self.path, exc) from None

    def _finish(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            finally:
                self._handle.close()

    def _release(self) -> None:
        self._handle.close()


def propagated_flags(tracks: Tracks) -> np.ndarray:
    """bool [N]: the pose was carried by propagation (its box was proposed by a track, not found by the detector in
    this frame; Poses.proposed_by >= 0)."""
    return tracks.poses.proposed_by >= 0


class JsonLinesSink(_TextLinesSink):
    """One JSON object per frame:
    {"frame": 0, "time_s": 0.0, "layout": "coco17", "persons": [{"track_id": 1, "box_xyxy": [x1, y1, x2, y2],
     "score": 0.9, "keypoints": [[x, y, score], ...], "propagated": false}]} with coordinates and scores rounded to
    0.01. Frames of a live source also carry "capture_unix_s" (wall-clock capture time). With keypoint smoothing on
    (tracker.smoothing.enabled), "keypoints" are the smoothed ones and each person also carries "raw_keypoints":
    [[x, y], ...], the tracker's keypoints before smoothing."""

    suffixes = JSON_LINES_SUFFIXES
    what = "--out-json"

    def __init__(self, path, skeleton: Skeleton):
        super().__init__(path)
        self.layout = skeleton.name

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        poses = tracks.poses
        # float64 before rounding, so the JSON holds 12.34 rather than float32's 12.340000152587891.
        keypoints = np.concatenate([poses.keypoints, poses.keypoint_scores[..., None]], axis=2).astype(np.float64)
        boxes = poses.boxes_xyxy.astype(np.float64)
        propagated = propagated_flags(tracks)
        persons = [
            {
                "track_id": int(track_id),
                "box_xyxy": np.round(boxes[i], 2).tolist(),
                "score": round(float(poses.box_scores[i]), 4),
                "keypoints": np.round(keypoints[i], 2).tolist(),
                "propagated": bool(propagated[i]),
            }
            for i, track_id in enumerate(tracks.track_ids)
        ]
        if tracks.raw_keypoints is not None:
            raw = np.round(tracks.raw_keypoints.astype(np.float64), 2).tolist()
            for person, raw_xy in zip(persons, raw):
                person["raw_keypoints"] = raw_xy
        record = {"frame": frame.index, "time_s": round(frame.timestamp_s, 4)}
        if frame.capture_unix_s is not None:
            record["capture_unix_s"] = round(frame.capture_unix_s, 6)
        record.update(layout=self.layout, persons=persons)
        self._write_text(json.dumps(record, separators=(",", ":")) + "\n")


@dataclass(frozen=True)
class CsvColumns:
    """A block of CSV columns: their header names, a printf format each, and their values for the N persons of a
    frame (`values(frame, tracks)` -> float64 [N, len(names)]). The CSV is the concatenation of its blocks, so an
    output with more columns (e.g. raw keypoints beside smoothed ones) adds a block rather than a new writer."""

    names: Tuple[str, ...]
    formats: Tuple[str, ...]
    values: Callable[[Frame, Tracks], np.ndarray]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.formats):
            raise ValueError(f"{len(self.names)} column names but {len(self.formats)} formats")


def joint_columns(skeleton: Skeleton, keypoints_xy: Callable[[Tracks], np.ndarray],
                  keypoint_scores: Optional[Callable[[Tracks], np.ndarray]], prefix: str = "") -> CsvColumns:
    """`{prefix}{joint}_x, _y, _score` for every joint of `skeleton` in its order (no `_score` column when
    keypoint_scores is None). keypoints_xy(tracks) -> [N, K, 2] pixels, keypoint_scores(tracks) -> [N, K]."""
    names, formats = [], []
    for joint in skeleton.keypoint_names:
        names += [f"{prefix}{joint}_x", f"{prefix}{joint}_y"]
        formats += ["%.2f", "%.2f"]
        if keypoint_scores is not None:
            names.append(f"{prefix}{joint}_score")
            formats.append("%.4f")

    def values(frame: Frame, tracks: Tracks) -> np.ndarray:
        columns = np.asarray(keypoints_xy(tracks), np.float64)
        if keypoint_scores is not None:
            columns = np.concatenate([columns, np.asarray(keypoint_scores(tracks), np.float64)[..., None]], axis=2)
        return columns.reshape(len(tracks), -1)

    return CsvColumns(tuple(names), tuple(formats), values)


def default_csv_columns(skeleton: Skeleton, wall_clock: bool = False,
                        raw_keypoints: bool = False) -> List[CsvColumns]:
    """track_id, frame, time_s[, capture_unix_s], box_x1, box_y1, box_x2, box_y2, box_score, propagated, then
    `<joint>_x, <joint>_y, <joint>_score` per joint[, then `raw_<joint>_x, raw_<joint>_y` per joint].
    `wall_clock`: the capture_unix_s column (live sources). `raw_keypoints`: keypoint smoothing is on; the joint
    columns are then the smoothed keypoints and the raw_ block the tracker's keypoints before smoothing
    (Tracks.raw_keypoints, required in every frame written)."""
    def identity(frame: Frame, tracks: Tracks) -> np.ndarray:
        n = len(tracks)
        columns = [tracks.track_ids.astype(np.float64), np.full(n, frame.index, np.float64),
                   np.full(n, frame.timestamp_s, np.float64)]
        if wall_clock:
            columns.append(np.full(n, np.nan if frame.capture_unix_s is None else frame.capture_unix_s, np.float64))
        return np.stack(columns, axis=1)

    def box(frame: Frame, tracks: Tracks) -> np.ndarray:
        poses = tracks.poses
        return np.concatenate([poses.boxes_xyxy.astype(np.float64), poses.box_scores.astype(np.float64)[:, None],
                               propagated_flags(tracks).astype(np.float64)[:, None]], axis=1)

    identity_names = ("track_id", "frame", "time_s") + (("capture_unix_s",) if wall_clock else ())
    identity_formats = ("%d", "%d", "%.4f") + (("%.6f",) if wall_clock else ())
    return [
        CsvColumns(identity_names, identity_formats, identity),
        CsvColumns(("box_x1", "box_y1", "box_x2", "box_y2", "box_score", "propagated"),
                   ("%.2f", "%.2f", "%.2f", "%.2f", "%.4f", "%d"), box),
        joint_columns(skeleton, lambda tracks: tracks.poses.keypoints, lambda tracks: tracks.poses.keypoint_scores),
    ] + ([joint_columns(skeleton, _raw_keypoints, None, prefix="raw_")] if raw_keypoints else [])


def _raw_keypoints(tracks: Tracks) -> np.ndarray:
    """Tracks.raw_keypoints, the keypoints before smoothing, for the CSV's raw_ columns."""
    if tracks.raw_keypoints is None:
        raise ValueError("the CSV has raw_ keypoint columns but these tracks carry no raw_keypoints: open the "
                         "CSV with raw_keypoints=True only when the tracker smooths (tracker.smoothing.enabled)")
    return tracks.raw_keypoints


class CsvSink(_TextLinesSink):
    """One row per person per frame, with a header row of named columns (`default_csv_columns`): loads straight
    into pandas (`pandas.read_csv`), a spreadsheet or R. `propagated` is 1 for a pose carried by propagation (not
    seen by the detector in that frame), else 0. Frames without persons have no row. `raw_keypoints`: smoothing is
    on; the rows also carry `raw_<joint>_x, raw_<joint>_y`, the keypoints before smoothing."""

    suffixes = CSV_SUFFIXES
    what = "--out-csv"

    def __init__(self, path, skeleton: Skeleton, *, wall_clock: bool = False, raw_keypoints: bool = False,
                 columns: Optional[Sequence[CsvColumns]] = None):
        self.columns = (list(columns) if columns is not None
                        else default_csv_columns(skeleton, wall_clock, raw_keypoints=raw_keypoints))
        self.names = [name for block in self.columns for name in block.names]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"CSV column names must be unique, got {self.names}")
        self._row_format = ",".join(f for block in self.columns for f in block.formats) + "\n"
        super().__init__(path)

    def _open(self) -> None:
        super()._open()
        self._write_text(",".join(self.names) + "\n")

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        if len(tracks) == 0:
            return
        values = np.concatenate([block.values(frame, tracks) for block in self.columns], axis=1)
        self._write_text("".join(self._row_format % tuple(row) for row in values.tolist()))


class MotChallengeSink(_TextLinesSink):
    """MOTChallenge boxes: `frame,id,left,top,width,height,score,-1,-1,-1`, frames counted from 1."""

    what = "--out-mot"

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        boxes = tracks.poses.boxes_xyxy
        lines = []
        for i, track_id in enumerate(tracks.track_ids):
            x1, y1, x2, y2 = boxes[i]
            lines.append(f"{frame.index + 1},{int(track_id)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                         f"{float(tracks.poses.box_scores[i]):.4f},-1,-1,-1\n")
        self._write_text("".join(lines))


class PoseTrackSink(_AtomicFileSink):
    """A PoseTrack 2018 file of the whole run (one `images` entry per input frame, persons with track ids), made
    by the same conversion and writer as the batch command's predictions, so `posetrack eval` scores it.

    `frame_name(index)` names each frame's image (a folder source gives its file names). Frames the source left
    out (damaged) get an empty entry, so the file keeps one entry per input frame.
    """

    suffixes = POSETRACK_SUFFIXES
    what = "--out-posetrack"

    def __init__(self, path, skeleton: Skeleton, *, keypoint_score_threshold: float, head_rule: str,
                 frame_name: Callable[[int], str]):
        check_head_rule(head_rule)
        super().__init__(path)
        self.skeleton = skeleton
        self.keypoint_score_threshold = keypoint_score_threshold
        self.head_rule = head_rule
        self.frame_name = frame_name
        self._persons = {}

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        self._persons[frame.index] = tracks_to_persons(tracks, self.skeleton, self.keypoint_score_threshold,
                                                       self.head_rule)

    def _finish(self) -> None:
        count = max(self._persons) + 1 if self._persons else 0
        frames = [FrameAnnotation(file_name=self.frame_name(i), image_id=i, is_labeled=i in self._persons,
                                  persons=self._persons.get(i, [])) for i in range(count)]
        data = sequence_to_2018(Sequence(self.path.stem, frames))
        with open(self.tmp_path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())


# Key of Tracks.info under which the runner records a live frame's capture -> result latency in seconds.
LATENCY_INFO_KEY = "latency_s"


class _RenderingSink(Sink):
    """Draws the tracks on a copy of each frame; `render_options` are draw_tracks' keyword arguments plus
    draw_fps (RenderConfig's fields)."""

    def __init__(self, skeleton: Skeleton, render_options: Optional[dict] = None):
        self.skeleton = skeleton
        self.render_options = dict(render_options or {})
        self.draw_fps = self.render_options.pop("draw_fps", True)
        self.draw_latency = self.render_options.pop("draw_latency", True)

    def render(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> np.ndarray:
        # The runner puts a live frame's capture -> result latency in tracks.info (pipeline.TrackingRun).
        latency_s = tracks.info.get(LATENCY_INFO_KEY) if self.draw_latency else None
        return draw_tracks(frame.image_bgr.copy(), tracks, self.skeleton, fps=fps if self.draw_fps else None,
                           latency_s=latency_s, **self.render_options)


class RenderOnlySink(_RenderingSink):
    """Draws and drops the picture: the rendering cost of a run without a video output (what a live window would
    pay); the bench command times it."""

    live = True

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        self.render(frame, tracks, fps)


class VideoSink(_AtomicFileSink, _RenderingSink):
    """Annotated video (mp4v for .mp4/.mov/.m4v/.mkv, MJPG for .avi), at the source's frame rate.

    The rate goes to cv2.VideoWriter as the source reports it (29.97002997 for NTSC's 30000/1001); OpenCV stores it
    as a fraction of 0.001 precision (2997/100 = 29.97: 1 ppm slower, 3.6 ms an hour). File sources write every
    frame once, as read. A live source (`real_time`) delivers frames at its own pace and drops those the pipeline
    had no time for, so each frame is written at its capture time: the frame before is repeated to fill the gap,
    and the video plays in real time (a reconnect gap shows as a still picture of its length).

    OpenCV's VideoWriter reports no write error, so two checks stand in for one: every GROWTH_CHECK_FRAMES frames,
    a file that has not grown on a disk with less than LOW_SPACE_BYTES free means the disk is full (the run stops
    there); and finish() reopens the file and requires every written frame to be in it (a full disk or an
    encoder failure leaves an unreadable file or missing frames).
    """

    suffixes = VIDEO_SUFFIXES
    what = "--out-video"
    # The encoder buffers tens of kB before the file grows, so a small video may not grow for many frames. No
    # growth with little free space is only a suspicion: a probe write of PROBE_BYTES (more than the encoder's
    # 32 kB write buffer) then settles it, so a tiny video on a nearly full disk, or root writing into reserved
    # blocks, goes on.
    GROWTH_CHECK_FRAMES = 25
    LOW_SPACE_BYTES = 1 << 20
    PROBE_BYTES = 1 << 16

    def __init__(self, path, skeleton: Skeleton, fps: float, render_options: Optional[dict] = None, *,
                 real_time: bool = False):
        _AtomicFileSink.__init__(self, path)
        _RenderingSink.__init__(self, skeleton, render_options)
        self.fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.path.suffix.lower()])
        self.fps = fps
        self.real_time = real_time
        self.frames_written = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._size_at_check = 0
        self._first_time_s: Optional[float] = None
        self._last_image: Optional[np.ndarray] = None

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.tmp_path), self.fourcc, self.fps, (frame.width, frame.height))
            if not self._writer.isOpened():
                raise UserError(f"cannot write video {self.path}: OpenCV has no encoder for it here; try a .avi name")
            self._first_time_s = frame.timestamp_s
        if self.real_time and self._last_image is not None:
            slot = int(round((frame.timestamp_s - self._first_time_s) * self.fps))
            while self.frames_written < slot:
                self._write_image(self._last_image)
        image = self.render(frame, tracks, fps)
        self._write_image(image)
        if self.real_time:
            self._last_image = image

    def _write_image(self, image: np.ndarray) -> None:
        self._writer.write(image)
        self.frames_written += 1
        if self.frames_written % self.GROWTH_CHECK_FRAMES == 0:
            self._check_growth()

    def _check_growth(self) -> None:
        try:
            size = self.tmp_path.stat().st_size
            free = shutil.disk_usage(self.tmp_path.parent).free
        except OSError as exc:
            raise output_error(self.path, exc) from None
        if size <= self._size_at_check and free < self.LOW_SPACE_BYTES and self._disk_is_full():
            raise OutputError(f"cannot write {self.path}: {self._disk_full(free)}; nothing was written there")
        self._size_at_check = size

    def _disk_full(self, free_bytes: int) -> str:
        """The cause and advice for a full disk, the same from the growth check and from the read-back at close."""
        return f"the disk is full ({free_bytes} bytes free in {self.tmp_path.parent}); {DISK_FULL_HINT}"

    def _disk_is_full(self) -> bool:
        """Whether PROBE_BYTES can still be written beside the output (then the encoder's writes fit too)."""
        fd, probe = None, None
        try:
            fd, probe = tempfile.mkstemp(prefix=".posetrack-space-probe.", dir=self.tmp_path.parent)
            os.write(fd, bytes(self.PROBE_BYTES))
            os.fsync(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return True
            raise output_error(self.path, exc) from None
        finally:
            if fd is not None:
                os.close(fd)
                os.unlink(probe)
        return False

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def _finish(self) -> None:
        if self._writer is None:
            return
        self._release()
        written = self.frames_written
        capture = cv2.VideoCapture(str(self.tmp_path))
        try:
            readable = capture.isOpened()
            found = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if readable else 0
        finally:
            capture.release()
        if not readable or found != written:
            free = shutil.disk_usage(self.tmp_path.parent).free
            cause = self._disk_full(free) if free < self.LOW_SPACE_BYTES else "the encoder did not write every frame"
            state = "is unreadable" if not readable else f"holds {found} of the {written} frames written"
            raise OutputError(f"cannot write {self.path}: the video {state}, {cause}; nothing was written there")

    def close(self, keep: bool = True) -> None:
        if keep and self.frames_written == 0:
            log.warning("no frame reached %s: not written", self.path)
            keep = False
        super().close(keep)


class WindowSink(_RenderingSink):
    """Live window; `q` or Esc ends the run."""

    live = True

    def __init__(self, skeleton: Skeleton, render_options: Optional[dict] = None, title: str = "posetrack"):
        super().__init__(skeleton, render_options)
        self.title = title

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        try:
            cv2.imshow(self.title, self.render(frame, tracks, fps))
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            raise UserError("cannot open a window (no display?): drop --show and write --out-video instead") from None
        if key in (ord("q"), 27):
            self.stop_requested = True

    def close(self, keep: bool = True) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


# The command-line option that names each output kind (open_sinks' keyword -> option), in open_sinks' order.
OUTPUT_OPTIONS = {"video": "--out-video", "jsonl": "--out-json", "csv": "--out-csv", "mot": "--out-mot",
                  "posetrack": "--out-posetrack"}
OUTPUT_SUFFIXES = {"video": VIDEO_SUFFIXES, "jsonl": JSON_LINES_SUFFIXES, "csv": CSV_SUFFIXES, "mot": None,
                   "posetrack": POSETRACK_SUFFIXES}


def check_output_paths(*, video=None, jsonl=None, csv=None, mot=None, posetrack=None, inputs=None) -> None:
    """Before a run starts: each output's extension and folder, and no output on an input or on another output.
    `inputs`: label -> path of what the run reads (e.g. {"SOURCE": "video.mp4"})."""
    outputs = dict(video=video, jsonl=jsonl, csv=csv, mot=mot, posetrack=posetrack)
    # Same-file clashes first: naming both paths says more than a wrong extension on one of them.
    check_distinct_outputs({OUTPUT_OPTIONS[kind]: path for kind, path in outputs.items()}, inputs)
    for kind, path in outputs.items():
        if path:
            check_output_path(path, OUTPUT_SUFFIXES[kind], OUTPUT_OPTIONS[kind])


def open_sinks(skeleton: Skeleton, fps: float, render_options: Optional[dict] = None, *, video=None, jsonl=None,
               csv=None, mot=None, posetrack=None, posetrack_options: Optional[dict] = None, show: bool = False,
               frame_name: Optional[Callable[[int], str]] = None, live: bool = False,
               raw_keypoints: bool = False) -> List[Sink]:
    """The sinks for the given outputs (None = not written), in this order: video, JSON Lines, CSV, MOT, PoseTrack,
    window. render_options: RenderConfig's fields (dataclasses.asdict(cfg.render)); posetrack_options:
    keypoint_score_threshold and head_rule (PoseTrackOutputConfig's fields); frame_name: the source's; live: the
    source is live (the video is written in real time, the CSV gets a capture_unix_s column); raw_keypoints: the
    tracker smooths keypoints (tracker.smoothing.enabled), so the CSV gets the raw_<joint> columns (JSON Lines
    carries raw_keypoints whenever the tracks do). If one cannot be opened (or an interrupt arrives meanwhile),
    those already opened are discarded."""
    sinks: List[Sink] = []
    try:
        if video:
            sinks.append(VideoSink(video, skeleton, fps, render_options, real_time=live))
        if jsonl:
            sinks.append(JsonLinesSink(jsonl, skeleton))
        if csv:
            sinks.append(CsvSink(csv, skeleton, wall_clock=live, raw_keypoints=raw_keypoints))
        if mot:
            sinks.append(MotChallengeSink(mot))
        if posetrack:
            sinks.append(PoseTrackSink(posetrack, skeleton, frame_name=frame_name or _default_frame_name,
                                       **(posetrack_options or {})))
        if show:
            sinks.append(WindowSink(skeleton, render_options))
    except BaseException:
        for sink in sinks:
            sink.close(keep=False)
        raise
    return sinks


def _default_frame_name(index: int) -> str:
    return f"{index:06d}.jpg"


_CLOSE = object()


class SinkWriter:
    """Feeds sinks from a bounded queue in a background thread: live sinks each frame as it comes, the others (files)
    through a Backfill, so a track confirmed after its first frames is in those frames too.

    The queue is bounded so a slow encoder applies back-pressure instead of growing memory without limit.
    An error inside a sink is raised in the producer at its next `put` or at `close`.
    """

    def __init__(self, sinks: Sequence[Sink], queue_size: int = 16):
        self.sinks: List[Sink] = list(sinks)
        self._live = [s for s in self.sinks if getattr(s, "live", False)]
        self._files = [s for s in self.sinks if not getattr(s, "live", False)]
        self._backfill = Backfill()
        self._queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._thread.start()

    @property
    def stop_requested(self) -> bool:
        return any(s.stop_requested for s in self.sinks)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                return
            if self._error is not None:
                continue  # drain after a failure so the producer never blocks
            try:
                for sink in self._live:
                    sink.write(*item)
                self._write_files(self._backfill.push(*item))
            except BaseException as exc:  # re-raised in the producer thread
                self._error = exc

    def _write_files(self, items) -> None:
        for item in items:
            for sink in self._files:
                sink.write(*item)

    def put(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        if self._error is not None:
            raise self._error
        if self.sinks:
            interruptible(lambda timeout_s: self._queue.put((frame, tracks, fps), timeout=timeout_s))

    def close(self, keep: bool = True) -> None:
        """Finish writing what is queued, then close every sink. With `keep`, every output is first finished and
        checked; only when all are complete are they renamed into place, else all are discarded and the first
        failure is raised (no output of a failed run is kept)."""
        with deferred():
            self._queue.put(_CLOSE)
            self._thread.join()
            if keep and self._error is None:
                try:
                    self._write_files(self._backfill.flush())  # the frames a track still pending held back
                except BaseException as exc:
                    self._error = exc
            keep = keep and self._error is None
            if keep:
                for sink in self.sinks:
                    try:
                        sink.finish()
                    except OutputError as exc:
                        self._error, keep = exc, False
                        break
            for sink in self.sinks:
                try:
                    sink.close(keep=keep)
                except Exception as exc:  # noqa: BLE001 -- close the other sinks first, then raise the first
                    self._error = self._error or exc
        if self._error is not None:
            raise self._error
