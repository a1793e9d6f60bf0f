"""Frame sources: video file, webcam index, folder of images, RTSP/HTTP stream, numpy images; and a threaded reader.

`open_source(spec)` picks the kind from the string. Files and folders deliver every frame; live sources
(webcam, stream) are read in a thread that keeps only the newest frame, so the pipeline always works on the most
recent picture (the frames it never saw are counted as dropped).

Timestamps (Frame.timestamp_s) are the source's own clock: a video's presentation times (CAP_PROP_POS_MSEC), the
capture time of a live frame (seconds since the first frame, plus its wall-clock time in Frame.capture_unix_s),
index / fps for image folders and numpy images.

A live source whose connection drops (a camera restarting, a network outage, a server restart) is reopened with
exponential backoff for up to `reconnect_timeout_s` seconds after its last frame, each attempt logged; frame
indices and timestamps carry on across the gap. When it gives up, the stream ends as if it had finished, so the
outputs written so far are closed and kept.

Damaged frames (a truncated or corrupt image in a folder, a frame a video decoder cannot deliver) follow one policy
for videos and folders, `damaged_frames`: "skip" (default) leaves the frame out, warns naming the file (and the
frame), counts it in `damaged_frames`, and goes on; frame indices and timestamps keep their place in the input, so
outputs stay aligned with it. "stop" raises DamagedFrameError at the first one. Damage the video decoder hides
(it conceals a broken MJPEG frame with grey blocks and reports nothing) cannot be seen from here.
"""
from __future__ import annotations

import logging
import math
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional
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
# Video files a folder of videos is searched for (`posetrack track FOLDER` with no images in it).
VIDEO_FILE_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                       ".mts", ".m2ts")
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
# Frame rate of image folders (and numpy image sequences) when source.fps is 0: the common video rate.
DEFAULT_FOLDER_FPS = 30.0
# Rate assumed for a video or live source whose header gives none (or an absurd one).
DEFAULT_VIDEO_FPS = 30.0
MAX_PLAUSIBLE_FPS = 1000.0
# Reconnect backoff of a dropped live source: the first retry after RECONNECT_FIRST_DELAY_S, each later wait
# RECONNECT_BACKOFF times longer, never more than RECONNECT_MAX_DELAY_S (a restarted camera or server is usually
# back within seconds; a long outage is then probed every few seconds without flooding the log).
RECONNECT_FIRST_DELAY_S = 0.5
RECONNECT_BACKOFF = 2.0
RECONNECT_MAX_DELAY_S = 5.0


def list_images(folder: Path) -> List[Path]:
    """The images of `folder` (IMAGE_SUFFIXES, any case), sorted by file name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_videos(folder: Path) -> List[Path]:
    """The video files of `folder` (VIDEO_FILE_SUFFIXES, any case), sorted by file name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_FILE_SUFFIXES and p.is_file())


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
    # The file or folder the frames come from (None for webcams, streams, numpy images): outputs must not be it.
    input_path: Optional[str] = None
    fps = 0.0
    frame_count: Optional[int] = None  # None when unknown (live sources)
    # Set when a file ended before its declared length (truncated or corrupt); what was read is kept.
    truncated = False
    # Frames left out under the "skip" policy (the frames of a truncated file's missing end included).
    damaged_frames = 0
    # Live sources: how often a dropped connection was restored, and whether the source gave up on one.
    reconnects = 0
    connection_lost = False

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def frame_name(self, index: int) -> str:
        """How output files that list frames by image name (PoseTrack) call frame `index`."""
        return f"{Path(self.name).stem or 'frames'}/{index:06d}.jpg"

    def cancel(self) -> None:
        """Ask a `frames()` that waits (a reconnect backoff) to return soon; called from another thread."""

    def close(self) -> None:
        pass


class _CaptureSource(FrameSource):
    """A cv2.VideoCapture-backed source (file, webcam, stream).

    fps: a positive value overrides the header's rate, and the frames' times become index / fps (for a file whose
    header is wrong). reopen: makes a new capture of the same live source (None: no reconnecting);
    reconnect_timeout_s: how long after the last frame it keeps trying.
    """

    def __init__(self, capture: cv2.VideoCapture, name: str, live: bool, damaged_frames: str = "skip", *,
                 fps: float = 0.0, reopen: Optional[Callable[[], cv2.VideoCapture]] = None,
                 reconnect_timeout_s: float = 0.0):
        self.capture = capture
        self.name = name
        self.live = live
        header_fps = capture.get(cv2.CAP_PROP_FPS)
        self._fps_overridden = fps > 0
        if self._fps_overridden:
            self.fps = float(fps)
        else:
            self.fps = float(header_fps) if header_fps and 0 < header_fps < MAX_PLAUSIBLE_FPS else DEFAULT_VIDEO_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if (not live and count > 0) else None
        self._damage = DamagedFrames(damaged_frames)
        self._reopen = reopen
        self.reconnect_timeout_s = reconnect_timeout_s
        self._cancelled = threading.Event()
        self._last_time = (-1, 0.0)  # (index, seconds) of the last frame delivered from a file

    @property
    def damaged_frames(self) -> int:
        return self._damage.count

    def _presentation_time_s(self, index: int) -> float:
        """The time of the frame just read: its presentation time in the container (OpenCV's CAP_PROP_POS_MSEC
        after a read), or index / fps when fps is overridden. A container without usable times (none, or not
        increasing) gets the last good time plus the frame interval."""
        last_index, last_s = self._last_time
        time_s = index / self.fps
        if not self._fps_overridden:
            position_ms = self.capture.get(cv2.CAP_PROP_POS_MSEC)
            by_container = position_ms / 1000.0 if position_ms is not None and math.isfinite(position_ms) else -1.0
            if by_container >= 0 and (last_index < 0 or by_container > last_s):
                time_s = by_container
            elif last_index >= 0:
                time_s = last_s + (index - last_index) / self.fps
        self._last_time = (index, time_s)
        return time_s

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
            yield Frame(index, np.ascontiguousarray(image), self._presentation_time_s(index))
            index += 1
            read += 1
        # A variable-rate file has fewer frames than its declared count (duration x average rate): where its
        # presentation times reach the end, it is complete.
        reached = max(index, int(round(self._last_time[1] * self.fps)) + 1) if read else index
        if self.frame_count is not None and reached < self.frame_count - FRAME_COUNT_SLACK:
            self.truncated = True
            self._damage.report(f"{self.name} ended after {index} of its {self.frame_count} declared frames: the "
                                "file looks truncated or corrupt", frames=self.frame_count - index,
                                consequence=f"the last {self.frame_count - index} frames count as damaged")
        if read == 0:
            raise UserError(f"no frame could be decoded from {self.name}: the file is empty or corrupt")

    def _live_frames(self) -> Iterator[Frame]:
        """Frames as they are captured, timed on one monotonic clock from the first frame (so a wall-clock step
        never reorders them); the wall-clock time of each is that of the first plus the monotonic offset."""
        index = 0
        origin_perf_s = origin_unix_s = None
        self._last_frame_perf_s = time.perf_counter()
        while not self._cancelled.is_set():
            ok, image = self.capture.read()
            if ok and image is not None:
                now_s = time.perf_counter()
                if origin_perf_s is None:
                    origin_perf_s, origin_unix_s = now_s, time.time()
                self._last_frame_perf_s = now_s
                offset_s = now_s - origin_perf_s
                yield Frame(index, np.ascontiguousarray(image), offset_s, origin_unix_s + offset_s)
                index += 1
                continue
            if index == 0:
                raise UserError(f"no frame could be decoded from {self.name}")
            if not self._reconnect(index):
                break

    def _reconnect(self, frames_so_far: int) -> bool:
        """After a failed read: reopen the source with backoff until reconnect_timeout_s after the last frame.
        True when a new capture is open; False when giving up (or cancelled)."""
        if self._cancelled.is_set():
            return False
        if self._reopen is None or self.reconnect_timeout_s <= 0:
            log.warning("%s: the stream ended or the connection dropped after %d frames (source.reconnect_timeout_s "
                        "is 0: not reconnecting)", self.name, frames_so_far)
            return False
        self.capture.release()
        deadline_s = self._last_frame_perf_s + self.reconnect_timeout_s
        log.warning("%s: the connection dropped after %d frames; reconnecting for up to %g s "
                    "(source.reconnect_timeout_s)", self.name, frames_so_far, self.reconnect_timeout_s)
        delay_s, attempt = RECONNECT_FIRST_DELAY_S, 0
        while True:
            attempt += 1
            capture = self._reopen()
            if capture.isOpened():
                self.capture = capture
                self.reconnects += 1
                log.warning("%s: reconnected after %.1f s (attempt %d); frame numbers and times carry on",
                            self.name, time.perf_counter() - self._last_frame_perf_s, attempt)
                return True
            capture.release()
            remaining_s = deadline_s - time.perf_counter()
            if remaining_s <= 0:
                break
            wait_s = min(delay_s, remaining_s)
            log.warning("%s: reconnect attempt %d failed; next in %.1f s (giving up %.1f s from now)",
                        self.name, attempt, wait_s, remaining_s)
            if self._cancelled.wait(wait_s):
                return False
            delay_s = min(delay_s * RECONNECT_BACKOFF, RECONNECT_MAX_DELAY_S)
        self.connection_lost = True
        # The capture is released; close() releasing it again is harmless.
        log.error("%s: no connection for %g s after %d reconnect attempts: the stream ends here; the outputs hold "
                  "the frames processed", self.name, self.reconnect_timeout_s, attempt)
        return False

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        self._cancelled.set()
        self.capture.release()


class FolderSource(FrameSource):
    """Images of a folder in sorted file-name order, e.g. a PoseTrack sequence; frame i is at i / fps seconds."""

    def __init__(self, folder: Path, fps: float = DEFAULT_FOLDER_FPS, damaged_frames: str = "skip"):
        self.name = self.input_path = str(folder)
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


class ImageSequenceSource(FrameSource):
    """Numpy images from any iterable (a list, a generator, a caller's own reader): BGR uint8 [H, W, 3], as
    cv2.imread and cv2.VideoCapture give them. Frame i is at i / fps seconds. Not live: the reader waits for the
    pipeline, so no image is dropped."""

    def __init__(self, images: Iterable[np.ndarray], fps: float = DEFAULT_FOLDER_FPS, name: str = "images"):
        if not fps > 0:
            raise ConfigError(f"the frame rate of an image sequence must be > 0, got {fps!r}")
        self.images, self.fps, self.name = images, float(fps), name
        try:
            self.frame_count = len(images)  # type: ignore[arg-type]
        except TypeError:  # a generator: unknown
            self.frame_count = None

    def frames(self) -> Iterator[Frame]:
        for index, image in enumerate(self.images):
            yield Frame(index, as_bgr_image(image, f"image {index} of {self.name}"), index / self.fps)


def as_bgr_image(image, what: str) -> np.ndarray:
    """`image` as a contiguous BGR uint8 [H, W, 3] array; UserError saying what is expected otherwise."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise UserError(f"{what} must be a BGR uint8 numpy array of shape [H, W, 3] (as cv2.imread gives), got "
                        f"{got}; convert it first, e.g. cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)")
    return np.ascontiguousarray(image)


def open_video_file(path: Path, damaged_frames: str = "skip", fps: float = 0.0) -> FrameSource:
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
    source = _CaptureSource(capture, str(path), live=False, damaged_frames=damaged_frames, fps=fps)
    source.input_path = str(path)
    return source


def open_webcam(index: int, reconnect_timeout_s: float = 0.0) -> FrameSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise UserError(f"cannot open webcam {index}: check that it is connected and free (ls /dev/video*), "
                        "or give a video file instead")
    return _CaptureSource(capture, f"webcam {index}", live=True, reopen=lambda: cv2.VideoCapture(index),
                          reconnect_timeout_s=reconnect_timeout_s)


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


def _open_stream_capture(url: str, timeout_s: float) -> cv2.VideoCapture:
    timeout_ms = int(timeout_s * 1000)
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG,
                            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])


def open_stream(url: str, timeout_s: float, reconnect_timeout_s: float = 0.0) -> FrameSource:
    capture = _open_stream_capture(url, timeout_s)
    if not capture.isOpened():
        raise UserError(f"cannot open stream {url}: {_why_stream_failed(url, timeout_s)}")
    return _CaptureSource(capture, url, live=True, reopen=lambda: _open_stream_capture(url, timeout_s),
                          reconnect_timeout_s=reconnect_timeout_s)


def open_source(spec: str, *, open_timeout_s: float = 10.0, damaged_frames: str = "skip", fps: float = 0.0,
                reconnect_timeout_s: float = 0.0) -> FrameSource:
    """'0' -> webcam 0; 'rtsp://...' -> stream; a folder -> its images; anything else -> a video file.
    `damaged_frames`: "skip" or "stop", for files and folders (see the module docstring). `fps`: the rate of a
    folder's images (0: DEFAULT_FOLDER_FPS), or a video's rate in place of its header's (0: the header's).
    `reconnect_timeout_s`: how long a live source retries a dropped connection (0: it ends at the first drop)."""
    spec = str(spec)
    check_damaged_frame_policy(damaged_frames)
    if spec.isdigit():
        return open_webcam(int(spec), reconnect_timeout_s)
    if spec.lower().startswith(STREAM_PREFIXES):
        return open_stream(spec, open_timeout_s, reconnect_timeout_s)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, fps=fps or DEFAULT_FOLDER_FPS, damaged_frames=damaged_frames)
    return open_video_file(path, damaged_frames, fps)


_END = object()


class ThreadedReader:
    """Decodes frames in a background thread into a bounded queue.

    Files block the reader when the queue (`queue_size` frames) is full, so no frame is lost. A live source keeps
    only its newest frame: a frame the pipeline has not taken by the time the next one is captured is dropped
    (`dropped_frames` counts them), so the pipeline always works on the most recent picture and no backlog builds.
    Errors in the reader thread are raised in the consuming thread.
    """

    def __init__(self, source: FrameSource, queue_size: int = 8):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self.dropped_frames = 0
        self._queue: "queue.Queue" = queue.Queue(maxsize=1 if source.live else queue_size)
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
        self.source.cancel()  # a reconnect backoff would otherwise hold the join
        self._thread.join(timeout=5.0)
        self.source.close()
