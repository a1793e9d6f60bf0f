"""Outputs of a tracking run: annotated video, live window, JSON Lines, MOTChallenge box file.

A sink gets `write(frame, tracks, fps)` per frame and `close(keep)` once. File sinks write to a temporary name
and rename on `close(keep=True)` (a finished or interrupted run); `close(keep=False)` (a failed run) deletes
the temporary file, so no half-written output ever appears under the final name.
`SinkWriter` runs the sinks in a thread so rendering and encoding never block inference.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..skeleton import Skeleton
from ..structures import Frame, Tracks
from .atomic import check_output_path, temporary_path_for
from .render import draw_tracks

log = logging.getLogger(__name__)


class Sink:
    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        raise NotImplementedError

    def close(self, keep: bool = True) -> None:
        pass

    # Set by a sink that wants the run to end (the live window's `q`).
    stop_requested = False


class _AtomicFileSink(Sink):
    """Writes to a temporary file beside `path`; renames it to `path` on close(keep=True)."""

    def __init__(self, path):
        self.path = check_output_path(path)
        self.tmp_path = temporary_path_for(self.path)

    def _finish(self) -> None:
        pass

    def close(self, keep: bool = True) -> None:
        self._finish()
        if keep:
            os.replace(self.tmp_path, self.path)
            log.info("wrote %s", self.path)
        elif self.tmp_path.exists():
            self.tmp_path.unlink()


class _TextLinesSink(_AtomicFileSink):
    def __init__(self, path):
        super().__init__(path)
        self._handle = open(self.tmp_path, "w", encoding="utf-8")

    def _finish(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


class JsonLinesSink(_TextLinesSink):
    """One JSON object per frame:
    {"frame": 0, "time_s": 0.0, "layout": "coco17", "persons": [{"track_id": 1, "box_xyxy": [x1, y1, x2, y2],
     "score": 0.9, "keypoints": [[x, y, score], ...]}]} with coordinates and scores rounded to 0.01."""

    def __init__(self, path, skeleton: Skeleton):
        super().__init__(path)
        self.layout = skeleton.name

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        poses = tracks.poses
        # float64 before rounding, so the JSON holds 12.34 rather than float32's 12.340000152587891.
        keypoints = np.concatenate([poses.keypoints, poses.keypoint_scores[..., None]], axis=2).astype(np.float64)
        boxes = poses.boxes_xyxy.astype(np.float64)
        persons = [
            {
                "track_id": int(track_id),
                "box_xyxy": np.round(boxes[i], 2).tolist(),
                "score": round(float(poses.box_scores[i]), 4),
                "keypoints": np.round(keypoints[i], 2).tolist(),
            }
            for i, track_id in enumerate(tracks.track_ids)
        ]
        record = {"frame": frame.index, "time_s": round(frame.timestamp_s, 4), "layout": self.layout, "persons": persons}
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")


class MotChallengeSink(_TextLinesSink):
    """MOTChallenge boxes: `frame,id,left,top,width,height,score,-1,-1,-1`, frames counted from 1."""

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        boxes = tracks.poses.boxes_xyxy
        for i, track_id in enumerate(tracks.track_ids):
            x1, y1, x2, y2 = boxes[i]
            self._handle.write(f"{frame.index + 1},{int(track_id)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                               f"{float(tracks.poses.box_scores[i]):.4f},-1,-1,-1\n")


class _RenderingSink(Sink):
    def __init__(self, skeleton: Skeleton, render_options: dict):
        self.skeleton = skeleton
        self.render_options = dict(render_options)
        self.draw_fps = self.render_options.pop("draw_fps", True)

    def render(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> np.ndarray:
        return draw_tracks(frame.image_bgr.copy(), tracks, self.skeleton, fps=fps if self.draw_fps else None,
                           **self.render_options)


class VideoSink(_AtomicFileSink, _RenderingSink):
    """Annotated video (mp4v for .mp4/.mov, MJPG for .avi), at the source's frame rate."""

    FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}

    def __init__(self, path, skeleton: Skeleton, fps: float, render_options: dict):
        _AtomicFileSink.__init__(self, path)
        _RenderingSink.__init__(self, skeleton, render_options)
        suffix = self.path.suffix.lower()
        if suffix not in self.FOURCC:
            self.tmp_path.unlink()
            raise UserError(f"output video {self.path} must end in one of {', '.join(self.FOURCC)}")
        self.fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[suffix])
        self.fps = fps
        self._writer: Optional[cv2.VideoWriter] = None

    def write(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.tmp_path), self.fourcc, self.fps, (frame.width, frame.height))
            if not self._writer.isOpened():
                raise UserError(f"cannot write video {self.path}: OpenCV has no encoder for it here; try a .avi name")
        self._writer.write(self.render(frame, tracks, fps))

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class WindowSink(_RenderingSink):
    """Live window; `q` or Esc ends the run."""

    def __init__(self, skeleton: Skeleton, render_options: dict, title: str = "posetrack"):
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


_CLOSE = object()


class SinkWriter:
    """Feeds sinks from a bounded queue in a background thread.

    The queue is bounded so a slow encoder applies back-pressure instead of growing memory without limit.
    An error inside a sink is raised in the producer at its next `put` or at `close`.
    """

    def __init__(self, sinks: Sequence[Sink], queue_size: int = 16):
        self.sinks: List[Sink] = list(sinks)
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
                for sink in self.sinks:
                    sink.write(*item)
            except BaseException as exc:  # re-raised in the producer thread
                self._error = exc

    def put(self, frame: Frame, tracks: Tracks, fps: Optional[float]) -> None:
        if self._error is not None:
            raise self._error
        if self.sinks:
            self._queue.put((frame, tracks, fps))

    def close(self, keep: bool = True) -> None:
        """Finish writing what is queued, then close every sink (renaming outputs into place if `keep`)."""
        self._queue.put(_CLOSE)
        self._thread.join()
        keep = keep and self._error is None
        for sink in self.sinks:
            sink.close(keep=keep)
        if self._error is not None:
            raise self._error
