"""Frame sources: video file, webcam index, folder of images, RTSP/HTTP stream; and a threaded reader.

`open_source(spec)` picks the kind from the string. Files and folders deliver every frame; live sources
(webcam, stream) are read in a thread that drops the oldest frame when the pipeline falls behind, so what is
processed is always recent (the drops are counted).

Damaged frames (a truncated or corrupt image in a folder, a frame a video decoder cannot deliver) follow one policy
for videos and folders, `damaged_frames`: "skip" (default) leaves the frame out, warns naming the file (and the
frame), counts it in `damaged_frames`, and goes on; frame indices and timestamps keep their place in the input, so
outputs stay aligned with it. "stop" raises DamagedFrameError at the first one. Damage the video decoder hides
(it conceals a broken MJPEG frame with grey blocks and reports nothing) cannot be seen from here.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional
from urllib.parse import urlsplit

import cv2
import numpy as np

from ..errors import ConfigError, DamagedFrameError, UserError
from ..interrupts import interruptible
from ..structures import Frame

log = logging.getLogger(__name__)

# The one list of image suffixes every image reader here accepts (folder sources, PoseTrack batch sequences).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
JPEG_START = b"\xff\xd8"
STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# Where a URL names no port: the scheme's standard one (for the connection check after a failed open).
DEFAULT_STREAM_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}
DAMAGED_FRAME_POLICIES = ("skip", "stop")
# Damaged frames named one by one in the log; after that only the count (per-frame logs stay short).
MAX_NAMED_DAMAGED_FRAMES = 10
# Failed video reads in a row before the rest of the file counts as missing (a decoder usually resyncs at the
# next key frame, a few frames after a damaged one; a truncated file fails every read).
MAX_CONSECUTIVE_VIDEO_FAILURES = 25
# A container's declared frame count is an estimate for some formats (duration x fps): a file that ends one frame
# short of it is not called truncated.
FRAME_COUNT_SLACK = 1


def list_images(folder: Path) -> List[Path]:
    """The images of `folder` (IMAGE_SUFFIXES, any case), sorted by file name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _jpeg_is_complete(data: bytes) -> bool:
    """Whether JPEG data (starting with the start-of-image marker) holds its end-of-image marker after the scan
    data. OpenCV decodes a truncated JPEG without complaint (the missing rows come out grey), so this is checked
    here. The header segments are walked by their lengths so that the end marker of an embedded EXIF thumbnail is
    not taken for the image's own."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xDA:  # start of scan: entropy-coded data runs to the end-of-image marker
            return b"\xff\xd9" in data[pos + 2:]
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 [H, W, 3] of an image file; DamagedFrameError naming the file when it cannot be read or decoded,
    or is a truncated JPEG."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DamagedFrameError(f"cannot read image {path}: {exc.strerror}") from None
    # Only data that starts as a JPEG is checked as one (a misnamed PNG still decodes below).
    if data[:2] == JPEG_START and not _jpeg_is_complete(data):
        raise DamagedFrameError(f"image {path} is a truncated or corrupt JPEG (no end-of-image marker)")
    if not data:
        raise DamagedFrameError(f"image {path} is empty (0 bytes)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise DamagedFrameError(f"image {path} is corrupt or not an image")
    return image


def check_damaged_frame_policy(policy: str) -> str:
    if policy not in DAMAGED_FRAME_POLICIES:
        raise ConfigError(f"source.damaged_frames must be one of {', '.join(DAMAGED_FRAME_POLICIES)}, got {policy!r}")
    return policy


class DamagedFrames:
    """Applies the damaged-frame policy: counts skipped frames and names them in a warning (the first
    MAX_NAMED_DAMAGED_FRAMES reports), or raises at the first one under "stop"."""

    def __init__(self, policy: str = "skip"):
        self.policy = check_damaged_frame_policy(policy)
        self.count = 0
        self.reports = 0

    def report(self, message: str, frames: int = 1, consequence: str = "skipped") -> None:
        """`message` names the file and the frame(s); `frames`: how many frames it covers."""
        if self.policy == "stop":
            raise DamagedFrameError(f"{message} (source.damaged_frames=stop; set it to skip to leave such frames "
                                    "out and go on)")
        self.count += frames
        self.reports += 1
        if self.reports <= MAX_NAMED_DAMAGED_FRAMES:
            more = "; further damaged frames are counted, not named" if self.reports == MAX_NAMED_DAMAGED_FRAMES else ""
            log.warning("%s: %s%s", message, consequence, more)


class FrameSource:
    """Base: `frames()` yields Frame objects in order; attributes describe the source."""

    live = False
    name = ""
    fps = 0.0
    frame_count: Optional[int] = None  # None when unknown (live sources)
    # Set when a file ended before its declared length (truncated or corrupt); what was read is kept.
    truncated = False
    # Frames left out under the "skip" policy (the frames of a truncated file's missing end included).
    damaged_frames = 0

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def frame_name(self, index: int) -> str:
        """How output files that list frames by image name (PoseTrack) call frame `index`."""
        return f"{Path(self.name).stem or 'frames'}/{index:06d}.jpg"

    def close(self) -> None:
        pass


class _CaptureSource(FrameSource):
    """A cv2.VideoCapture-backed source (file, webcam, stream)."""

    def __init__(self, capture: cv2.VideoCapture, name: str, live: bool, damaged_frames: str = "skip"):
        self.capture = capture
        self.name = name
        self.live = live
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if (not live and count > 0) else None
        self._damage = DamagedFrames(damaged_frames)

    @property
    def damaged_frames(self) -> int:
        return self._damage.count

    def _index_after_gap(self, expected: int, failures: int) -> int:
        """The index of the frame just read after `failures` failed reads. The decoder's timestamp says where it
        resumed (one failed read can cost several frames); without one, each failed read is one frame."""
        position_ms = self.capture.get(cv2.CAP_PROP_POS_MSEC)
        by_time = int(round(position_ms * self.fps / 1000.0)) if position_ms and position_ms > 0 else -1
        return max(expected + failures, by_time)

    def frames(self) -> Iterator[Frame]:
        if self.live:
            yield from self._live_frames()
            return
        index = 0
        read = 0
        while True:
            ok, image = self.capture.read()
            failures = 0
            while (not ok or image is None) and failures < MAX_CONSECUTIVE_VIDEO_FAILURES and (
                    self.frame_count is not None and index + failures < self.frame_count - FRAME_COUNT_SLACK):
                failures += 1
                ok, image = self.capture.read()
            if not ok or image is None:
                break
            if failures:
                resumed = self._index_after_gap(index, failures)
                first, last = index, resumed - 1
                self._damage.report(f"{self.name}: frame{'s' if last > first else ''} "
                                    f"{first}{f'-{last}' if last > first else ''} could not be decoded",
                                    frames=resumed - index)
                index = resumed
            yield Frame(index, np.ascontiguousarray(image), index / self.fps)
            index += 1
            read += 1
        if self.frame_count is not None and index < self.frame_count - FRAME_COUNT_SLACK:
            self.truncated = True
            self._damage.report(f"{self.name} ended after {index} of its {self.frame_count} declared frames: the "
                                "file looks truncated or corrupt", frames=self.frame_count - index,
                                consequence=f"the last {self.frame_count - index} frames count as damaged")
        if read == 0:
            raise UserError(f"no frame could be decoded from {self.name}: the file is empty or corrupt")

    def _live_frames(self) -> Iterator[Frame]:
        index = 0
        start = time.perf_counter()
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                break
            yield Frame(index, np.ascontiguousarray(image), time.perf_counter() - start)
            index += 1
        if index == 0:
            raise UserError(f"no frame could be decoded from {self.name}")

    def close(self) -> None:
        self.capture.release()


class FolderSource(FrameSource):
    """Images of a folder in sorted file-name order, e.g. a PoseTrack sequence."""

    def __init__(self, folder: Path, fps: float = 30.0, damaged_frames: str = "skip"):
        self.name = str(folder)
        self.folder = Path(folder)
        self.paths: List[Path] = list_images(folder)
        if not self.paths:
            raise UserError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
                            "give a video file or a folder of frames")
        self.fps = fps
        self.frame_count = len(self.paths)
        self._damage = DamagedFrames(damaged_frames)

    @property
    def damaged_frames(self) -> int:
        return self._damage.count

    def frame_name(self, index: int) -> str:
        return f"{self.folder.name}/{self.paths[index].name}"

    def frames(self) -> Iterator[Frame]:
        delivered = 0
        for index, path in enumerate(self.paths):
            try:
                image = read_image(path)
            except DamagedFrameError as exc:
                self._damage.report(f"frame {index}: {exc}")
                continue
            delivered += 1
            yield Frame(index, image, index / self.fps)
        if delivered == 0:
            raise UserError(f"no image of {self.name} could be decoded: every one is damaged")


def open_video_file(path: Path, damaged_frames: str = "skip") -> FrameSource:
    check_damaged_frame_policy(damaged_frames)
    if not path.is_file():
        raise UserError(f"video file {path} not found: check the path")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"cannot open {path} as a video: the file is corrupt or in a format OpenCV cannot decode")
    return _CaptureSource(capture, str(path), live=False, damaged_frames=damaged_frames)


def open_webcam(index: int) -> FrameSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise UserError(f"cannot open webcam {index}: check that it is connected and free (ls /dev/video*), "
                        "or give a video file instead")
    return _CaptureSource(capture, f"webcam {index}", live=True)


def _why_stream_failed(url: str, timeout_s: float) -> str:
    """What stopped a stream from opening, found by connecting to its host and port ourselves (OpenCV only says
    that it failed): refused, unknown host, no answer, or a server that answers but sends no video."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_STREAM_PORTS.get(parts.scheme)
    except ValueError:
        return f"the address {url} has an invalid port"
    if not parts.hostname or port is None or parts.scheme == "udp":
        return f"nothing arrived within {timeout_s:g} s"
    where = f"{parts.hostname}:{port}"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        return f"connection refused by {where}: nothing listens there; check the address and that the server runs"
    except socket.gaierror:
        return f"unknown host {parts.hostname}: check the address"
    except socket.timeout:
        return f"no answer from {where} within {timeout_s:g} s (raise source.open_timeout_s for slow networks)"
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return (f"{where} accepts connections but sent no video within {timeout_s:g} s: check the stream path and "
            "credentials (raise source.open_timeout_s for slow networks)")


def open_stream(url: str, timeout_s: float) -> FrameSource:
    timeout_ms = int(timeout_s * 1000)
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
    if not capture.isOpened():
        raise UserError(f"cannot open stream {url}: {_why_stream_failed(url, timeout_s)}")
    return _CaptureSource(capture, url, live=True)


def open_source(spec: str, *, open_timeout_s: float = 10.0, damaged_frames: str = "skip") -> FrameSource:
    """'0' -> webcam 0; 'rtsp://...' -> stream; a folder -> its images; anything else -> a video file.
    `damaged_frames`: "skip" or "stop", for files and folders (see the module docstring)."""
    spec = str(spec)
    check_damaged_frame_policy(damaged_frames)
    if spec.isdigit():
        return open_webcam(int(spec))
    if spec.lower().startswith(STREAM_PREFIXES):
        return open_stream(spec, open_timeout_s)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, damaged_frames=damaged_frames)
    return open_video_file(path, damaged_frames)


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
            item = interruptible(lambda timeout_s: self._queue.get(timeout=timeout_s))
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.source.close()
