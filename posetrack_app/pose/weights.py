"""Published pose checkpoints by name: the registry, and their download into the user's cache folder.

`pose.weights` takes a path or one of these names; `posetrack weights list` prints them and `posetrack weights
fetch NAME` downloads one ahead of time. A download

    - goes to <cache>/weights/<file name> (cache: $POSETRACK_CACHE_DIR, else $XDG_CACHE_HOME/posetrack_app, else
      ~/.cache/posetrack_app), so a second run finds it there and reads no network;
    - is written to <file name>.incomplete and renamed when complete and verified (atomic: the final name only ever
      holds a whole, checked file), under a lock (<cache>/weights/.download.lock) so that parallel workers download
      it once;
    - resumes: an interrupted transfer keeps its .incomplete file, and the next attempt (the automatic retries, or
      the next run) asks the server for the rest with an HTTP Range request;
    - is verified: OpenMMLab file names carry the first 8 hex digits of the file's SHA-256 (`...-5fd6d3ff_20211130.pth`);
      a file whose hash does not start with them is deleted, not kept, and the error says so;
    - fails offline with one line naming the URL and the manual alternative (download it, pass its path).

$POSETRACK_WEIGHTS_MIRROR (e.g. http://mirror.local/openmmlab) replaces the scheme and host of every URL, for
machines that reach the files through a mirror; the tests point it at a loopback server.

Only the standard library does HTTP (urllib); nothing here imports torch.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

from ..errors import ConfigError, UserError

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "POSETRACK_CACHE_DIR"
MIRROR_ENV = "POSETRACK_WEIGHTS_MIRROR"
INCOMPLETE_SUFFIX = ".incomplete"
# One lock file in the weights folder serialises downloads across processes (parallel batch workers).
LOCK_NAME = ".download.lock"
# Bytes per read and per progress update.
CHUNK_BYTES = 1 << 20
# Seconds without data before a connection counts as cut.
READ_TIMEOUT_S = 60.0
# Resumed attempts after a cut within one call, and the pause before each (seconds, doubled every time).
MAX_RESUMES = 3
RESUME_BACKOFF_S = 1.0
# OpenMMLab's published file names: <name>-<first 8 hex digits of SHA-256>_<date>.pth
_OPENMMLAB_NAME = re.compile(r"-([0-9a-f]{8})_\d{8}\.pth$")

MMPOSE_V1 = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
MMPOSE_V0 = "https://download.openmmlab.com/mmpose/top_down/"


@dataclass(frozen=True)
class PublishedWeights:
    """One released checkpoint: the pose.model and pose.keypoints it is for, where it is, what it scores."""

    name: str
    model: str
    keypoints: str
    url: str
    # mmpose's own evaluation of the file, as its model zoo prints it.
    accuracy: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def sha256_prefix(self) -> str:
        """The hash prefix in the file name (OpenMMLab's publish_model writes it there)."""
        match = _OPENMMLAB_NAME.search(self.file_name)
        if match is None:
            raise ValueError(f"{self.file_name} carries no SHA-256 prefix (name-<8 hex>_<date>.pth)")
        return match.group(1)


def _entries(*entries: PublishedWeights) -> Dict[str, PublishedWeights]:
    return {e.name: e for e in entries}


# Exact URLs and figures from mmpose's model zoo (configs/body_2d_keypoint/topdown_heatmap/{coco,posetrack18}/
# *_coco.yml and *_posetrack18.yml). Left out: ResNet-101 384x288, whose entry there points at the 256x192 file.
REGISTRY: Dict[str, PublishedWeights] = _entries(
    PublishedWeights("hrnet_w32_256x192_coco", "hrnet_w32_256x192", "coco17",
                     MMPOSE_V1 + "td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth", "COCO val AP 74.9"),
    PublishedWeights("hrnet_w32_384x288_coco", "hrnet_w32_384x288", "coco17",
                     MMPOSE_V1 + "td-hm_hrnet-w32_8xb64-210e_coco-384x288-ca5956af_20220909.pth", "COCO val AP 76.1"),
    PublishedWeights("hrnet_w48_256x192_coco", "hrnet_w48_256x192", "coco17",
                     MMPOSE_V1 + "td-hm_hrnet-w48_8xb32-210e_coco-256x192-0e67c616_20220913.pth", "COCO val AP 75.6"),
    PublishedWeights("hrnet_w48_384x288_coco", "hrnet_w48_384x288", "coco17",
                     MMPOSE_V1 + "td-hm_hrnet-w48_8xb32-210e_coco-384x288-c161b7de_20220915.pth", "COCO val AP 76.7"),
    PublishedWeights("hrnet_w32_256x192_posetrack18", "hrnet_w32_256x192", "posetrack18",
                     MMPOSE_V0 + "hrnet/hrnet_w32_posetrack18_256x192-1ee951c4_20201028.pth",
                     "PoseTrack18 val mAP 83.4 (GT boxes), 76.9 (detected)"),
    PublishedWeights("hrnet_w32_384x288_posetrack18", "hrnet_w32_384x288", "posetrack18",
                     MMPOSE_V0 + "hrnet/hrnet_w32_posetrack18_384x288-806f00a3_20211130.pth",
                     "PoseTrack18 val mAP 83.7 (GT boxes), 77.3 (detected)"),
    PublishedWeights("hrnet_w48_256x192_posetrack18", "hrnet_w48_256x192", "posetrack18",
                     MMPOSE_V0 + "hrnet/hrnet_w48_posetrack18_256x192-b5d9b3f1_20211130.pth",
                     "PoseTrack18 val mAP 84.6 (GT boxes), 77.4 (detected)"),
    PublishedWeights("hrnet_w48_384x288_posetrack18", "hrnet_w48_384x288", "posetrack18",
                     MMPOSE_V0 + "hrnet/hrnet_w48_posetrack18_384x288-5fd6d3ff_20211130.pth",
                     "PoseTrack18 val mAP 84.6 (GT boxes), 77.8 (detected)"),
    PublishedWeights("simple_baseline_r50_256x192_coco", "simple_baseline_r50_256x192", "coco17",
                     MMPOSE_V1 + "td-hm_res50_8xb64-210e_coco-256x192-04af38ce_20220923.pth", "COCO val AP 71.8"),
    PublishedWeights("simple_baseline_r50_384x288_coco", "simple_baseline_r50_384x288", "coco17",
                     MMPOSE_V1 + "td-hm_res50_8xb64-210e_coco-384x288-7b8db90e_20220923.pth", "COCO val AP 73.1"),
    PublishedWeights("simple_baseline_r101_256x192_coco", "simple_baseline_r101_256x192", "coco17",
                     MMPOSE_V1 + "td-hm_res101_8xb64-210e_coco-256x192-065d3625_20220926.pth", "COCO val AP 72.8"),
    PublishedWeights("simple_baseline_r152_256x192_coco", "simple_baseline_r152_256x192", "coco17",
                     MMPOSE_V1 + "td-hm_res152_8xb32-210e_coco-256x192-0345f330_20220928.pth", "COCO val AP 73.6"),
    PublishedWeights("simple_baseline_r152_384x288_coco", "simple_baseline_r152_384x288", "coco17",
                     MMPOSE_V1 + "td-hm_res152_8xb32-210e_coco-384x288-7fbb906f_20220927.pth", "COCO val AP 75.0"),
    PublishedWeights("simple_baseline_r50_256x192_posetrack18", "simple_baseline_r50_256x192", "posetrack18",
                     MMPOSE_V0 + "resnet/res50_posetrack18_256x192-a62807c7_20201028.pth",
                     "PoseTrack18 val mAP 81.2 (GT boxes)"),
)

# Called with (bytes so far, total bytes or None) as a download proceeds.
ProgressCallback = Callable[[int, Optional[int]], None]


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "posetrack_app"


def weights_dir(cache_dir=None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "weights"


def cached_path(entry: PublishedWeights, cache_dir=None) -> Path:
    return weights_dir(cache_dir) / entry.file_name


def download_url(entry: PublishedWeights) -> str:
    """entry.url, or the same path on $POSETRACK_WEIGHTS_MIRROR."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return entry.url
    return mirror.rstrip("/") + urllib.parse.urlsplit(entry.url).path


def looks_like_name(value: str) -> bool:
    """A pose.weights value that is meant as a registered name: no folder part and no file suffix."""
    return bool(value) and "/" not in value and os.sep not in value and Path(value).suffix == ""


def get_entry(name: str) -> PublishedWeights:
    if name not in REGISTRY:
        raise ConfigError(f"unknown pose weights name {name!r}: `posetrack weights list` shows the published ones "
                          f"({', '.join(sorted(REGISTRY))}); or pass the path of a .pth file")
    return REGISTRY[name]


def check_fits(entry: PublishedWeights, model: str, keypoints: str) -> None:
    """ConfigError unless the configured pose.model and pose.keypoints are the ones the weights were trained for."""
    if (model, keypoints) != (entry.model, entry.keypoints):
        raise ConfigError(
            f"pose weights {entry.name} are for pose.model={entry.model} with pose.keypoints={entry.keypoints}, the "
            f"config has {model} / {keypoints}: add --set pose.model={entry.model} --set pose.keypoints="
            f"{entry.keypoints}" + (" (or use configs/hrnet_w48_384x288_posetrack18.yaml)"
                                     if entry.name == "hrnet_w48_384x288_posetrack18" else ""))


def sha256_of(path: Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _ConnectionCut(Exception):
    """The transfer stopped before the announced end; what arrived is kept for a resume."""


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One downloader per file across processes (batch workers); others wait, then find the finished file."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the rename still keeps the final name whole
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _offline_error(entry: PublishedWeights, url: str, reason: str, target: Path) -> UserError:
    return UserError(
        f"cannot download pose weights {entry.name} from {url} ({reason}): check the network connection and run "
        f"again (a partial download resumes), or download the file yourself and pass its path: "
        f"--set pose.weights=/path/to/{entry.file_name} (or put it at {target})")


def _transfer(url: str, partial: Path, progress: Optional[ProgressCallback], timeout_s: float) -> None:
    """Append the rest of `url` to `partial` (HTTP Range from its current size). Raises _ConnectionCut when the
    stream ends early or stalls, urllib.error.URLError / HTTPError when the server cannot be asked."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:     # nothing after `offset`: the file is already whole (the hash decides)
            return
        raise
    except (ConnectionError, socket.timeout, TimeoutError, http.client.HTTPException) as exc:
        # The server was reached and then dropped the request: worth another try, unlike a refused connection.
        raise _ConnectionCut(f"{type(exc).__name__} before the first byte") from None
    with response:
        if offset and response.status != 206:
            log.info("%s does not resume downloads; starting again from the beginning", urllib.parse.urlsplit(url).netloc)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        with open(partial, "ab" if offset else "wb") as handle:
            if progress:
                progress(done, total)
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as exc:
                    raise _ConnectionCut(f"{type(exc).__name__} after {done} bytes") from None
                if not chunk:
                    break
                handle.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            handle.flush()
            os.fsync(handle.fileno())
    if total is not None and done < total:
        raise _ConnectionCut(f"the connection closed after {done} of {total} bytes")


def fetch(entry: PublishedWeights, cache_dir=None, *, progress: Optional[ProgressCallback] = None,
          max_resumes: int = MAX_RESUMES, timeout_s: float = READ_TIMEOUT_S,
          backoff_s: float = RESUME_BACKOFF_S) -> Path:
    """The verified local file of `entry`, downloaded into the cache first if it is not there (module docstring).
    Raises UserError when it cannot be downloaded or does not verify."""
    target = cached_path(entry, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + INCOMPLETE_SUFFIX)
    url = download_url(entry)
    with _exclusive(target.parent / LOCK_NAME):
        if target.is_file():               # another process finished it while this one waited for the lock
            return target
        if partial.exists():
            log.info("resuming the download of %s at %.1f MB", entry.name, partial.stat().st_size / 1e6)
        else:
            log.info("downloading pose weights %s (once) from %s into %s", entry.name, url, target.parent)
        for attempt in range(max_resumes + 1):
            try:
                _transfer(url, partial, progress, timeout_s)
                break
            except _ConnectionCut as cut:
                if attempt == max_resumes:
                    raise UserError(
                        f"the download of {entry.name} from {url} was cut {max_resumes + 1} times ({cut}); "
                        f"{partial.stat().st_size / 1e6:.1f} MB are kept in {partial}: run the command again to "
                        f"resume, or download the file yourself and pass --set pose.weights=PATH") from None
                log.warning("download of %s interrupted (%s); resuming", entry.name, cut)
                time.sleep(backoff_s * 2 ** attempt)
            except urllib.error.HTTPError as exc:
                raise _offline_error(entry, url, f"HTTP {exc.code} {exc.reason}", target) from None
            except urllib.error.URLError as exc:   # refused, no route, name not resolved: offline
                reason = exc.reason
                raise _offline_error(entry, url, str(getattr(reason, "strerror", None) or reason), target) from None
            except OSError as exc:                 # the cache folder, not the network
                raise UserError(f"cannot write {partial} ({exc.strerror}): free some space there or set "
                                f"{CACHE_DIR_ENV} to another folder") from None
        digest = sha256_of(partial)
        if not digest.startswith(entry.sha256_prefix):
            size = partial.stat().st_size
            partial.unlink()
            raise UserError(
                f"the download of {entry.name} from {url} ({size} bytes) has SHA-256 {digest[:16]}..., not "
                f"{entry.sha256_prefix}... as its name says: the file was deleted, not kept; run the command again, "
                f"or download it yourself and pass --set pose.weights=PATH")
        os.replace(partial, target)
    log.info("pose weights %s verified (SHA-256 %s...) and saved as %s", entry.name, entry.sha256_prefix, target)
    return target


def resolve(value: str, *, model: str, keypoints: str, cache_dir=None,
            progress: Optional[ProgressCallback] = None) -> Path:
    """pose.weights -> a local file: a registered name is checked against the configured model and layout and
    fetched (downloaded on first use); anything else is taken as a path, unchanged."""
    if looks_like_name(value) and not Path(value).expanduser().exists():
        entry = get_entry(value)
        check_fits(entry, model, keypoints)
        return fetch(entry, cache_dir, progress=progress)
    return Path(value).expanduser()


class LogProgress:
    """A ProgressCallback for when no progress bar is drawn: one log line per `step` of the file."""

    def __init__(self, label: str, step: float = 0.1):
        self.label, self.step, self._next = label, step, 0.0

    def __call__(self, done: int, total: Optional[int]) -> None:
        if total and done / total >= self._next:
            log.info("%s: %3.0f%% of %.1f MB", self.label, 100.0 * done / total, total / 1e6)
            self._next = min(1.0, done / total + self.step)


def terminal_progress(label: str) -> ProgressCallback:
    """A progress bar on a terminal (posetrack_app.progress), log lines otherwise (batch workers, log files). The bar
    is drawn from the first byte on, so a file already in the cache draws nothing."""
    if not sys.stderr.isatty():
        return LogProgress(label)
    from ..progress import progress_bar

    bar = None

    def update(done: int, total: Optional[int]) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_bar(desc=label, total=total, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
    return update
