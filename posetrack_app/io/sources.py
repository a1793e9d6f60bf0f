"""Frame sources: video file, webcam index, folder of images, RTSP/HTTP stream; and a threaded reader.

`open_source(spec)` picks the kind from the string. Files and folders deliver every frame; live sources
(webcam, stream) are read in a thread that drops the oldest frame when the pipeline falls behind, so what is
processed is always recent (the drops are counted).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import cv2
import numpy as np

from ..errors import UserError
from ..structures import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class FrameSource:
    """Base: `frames()` yields Frame objects in order; attributes describe the source."""

    live = False
    name = ""
    fps = 0.0
    frame_count: Optional[int] = None  # None when unknown (live sources)
    # Set when a file ended before its declared length (truncated or corrupt); what was read is kept.
    truncated = False

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _CaptureSource(FrameSource):
    """A cv2.VideoCapture-backed source (file, webcam, stream)."""

    def __init__(self, capture: cv2.VideoCapture, name: str, live: bool):
        self.capture = capture
        self.name = name
        self.live = live
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if (not live and count > 0) else None

    def frames(self) -> Iterator[Frame]:
        index = 0
        start = time.perf_counter()
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                break
            timestamp = time.perf_counter() - start if self.live else index / self.fps
            yield Frame(index, np.ascontiguousarray(image), timestamp)
            index += 1
        if not self.live and self.frame_count is not None and index < self.frame_count:
            self.truncated = True
            log.warning("%s ended after %d of its %d declared frames: the file looks truncated or corrupt; "
                        "keeping what was read", self.name, index, self.frame_count)
        if index == 0:
            raise UserError(f"no frame could be decoded from {self.name}: the file is empty or corrupt")

    def close(self) -> None:
        self.capture.release()


class FolderSource(FrameSource):
    """Images of a folder in sorted file-name order, e.g. a PoseTrack sequence."""

    def __init__(self, folder: Path, fps: float = 30.0):
        self.name = str(folder)
        self.paths: List[Path] = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise UserError(f"folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
                            "give a video file or a folder of frames")
        self.fps = fps
        self.frame_count = len(self.paths)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise UserError(f"cannot read image {path}: the file is corrupt or not an image")
            yield Frame(index, image, index / self.fps)


def open_video_file(path: Path) -> FrameSource:
    if not path.is_file():
        raise UserError(f"video file {path} not found: check the path")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"cannot open {path} as a video: the file is corrupt or in a format OpenCV cannot decode")
    return _CaptureSource(capture, str(path), live=False)


def open_webcam(index: int) -> FrameSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise UserError(f"cannot open webcam {index}: check that it is connected and free (ls /dev/video*), "
                        "or give a video file instead")
    return _CaptureSource(capture, f"webcam {index}", live=True)


def open_stream(url: str, timeout_s: float) -> FrameSource:
    timeout_ms = int(timeout_s * 1000)
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
    if not capture.isOpened():
        raise UserError(f"cannot open stream {url} within {timeout_s:g} s: check the address and that the "
                        "camera/server is reachable (raise source.open_timeout_s for slow networks)")
    return _CaptureSource(capture, url, live=True)


def open_source(spec: str, *, open_timeout_s: float = 10.0) -> FrameSource:
    """'0' -> webcam 0; 'rtsp://...' -> stream; a folder -> its images; anything else -> a video file."""
    spec = str(spec)
    if spec.isdigit():
        return open_webcam(int(spec))
    if spec.lower().startswith(STREAM_PREFIXES):
        return open_stream(spec, open_timeout_s)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path)
    return open_video_file(path)


_END = object()


class ThreadedReader:
    """Decodes frames in a background thread into a bounded queue.

    Files block the reader when the queue is full, so no frame is lost. Live sources drop the oldest queued frame
    instead (`dropped_frames` counts them), so the pipeline always works on a recent frame.
    Errors in the reader thread are raised in the consuming thread.
    """

    def __init__(self, source: FrameSource, queue_size: int = 8):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self.dropped_frames = 0
        self._queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._read, name="frame-reader", daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        drop_when_full = self.source.live and item is not _END
        while not self._stop.is_set():
            try:
                if drop_when_full:
                    self._queue.put_nowait(item)
                else:
                    self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if drop_when_full:
                    # The camera does not wait for us: discard the oldest frame rather than fall behind.
                    try:
                        self._queue.get_nowait()
                        self.dropped_frames += 1
                    except queue.Empty:
                        pass

    def _read(self) -> None:
        try:
            for frame in self.source.frames():
                if self._stop.is_set():
                    break
                self._put(frame)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._error = exc
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.source.close()
