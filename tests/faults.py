"""Helpers that make faults real for the I/O tests: a small tmpfs that fills up, short synthetic videos, the
CLI in a subprocess, process liveness, a loopback port nothing listens on, and a slow test-double pipeline for batch worker processes (imported by
spawned workers, so it lives in a plain module rather than a test file)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


@contextmanager
def small_tmpfs(mount_point: Path, size: str = "2m"):
    """A tmpfs of `size` at `mount_point` (root only; skips the test with the reason where mounting fails)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}): disk-full cases need one")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill_disk(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of `folder` with one file until only about `leave_bytes` stay free."""
    filler = folder / "filler.bin"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as handle:
        try:
            handle.write(b"\0" * max(0, free - leave_bytes))
            handle.flush()
        except OSError:  # full already: that is the point
            pass
    return filler


def synthetic_video(path: Path, frames: int, width: int = 64, height: int = 48, fps: float = 25.0,
                    noise: bool = False, seed: int = 0) -> Path:
    """A short video: a grey ramp with a moving bar, or random noise (noise=True: large after encoding)."""
    rng = np.random.default_rng(seed)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened(), path
    for i in range(frames):
        if noise:
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        else:
            image = np.full((height, width, 3), 40 + (i * 3) % 180, np.uint8)
            x = (i * 2) % max(1, width - 8)
            image[:, x:x + 8] = 255
        writer.write(image)
    writer.release()
    return path


def video_frame_count(path: Path) -> int:
    """Frames actually decodable from `path` (counted by reading, not from the header)."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def cli_command(*args: str):
    return [sys.executable, "-m", "posetrack_app", *args]


def cli_env(**extra: str) -> dict:
    paths = [str(REPO_ROOT), str(TESTS_DIR)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **extra)


def process_gone(pid: int) -> bool:
    """True when `pid` has exited (a zombie, exited but not yet reaped by its new parent, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def unused_loopback_port() -> int:
    """A 127.0.0.1 port that nothing listens on now: connecting is refused at once, and a server may bind it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def part_files(folder: Path):
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


# ------------------------------------------------------------------- a slow pipeline for batch worker processes

class SlowPipeline:
    """Test double for batch runs in worker processes: sleeps SLOW_PIPELINE_DELAY_S per frame and reports no one.
    Each process that builds one writes its pid into SLOW_PIPELINE_PID_DIR (so a test can watch the workers)."""

    def __init__(self):
        from posetrack_app.skeleton import COCO17

        self.skeleton = COCO17
        self.delay_s = float(os.environ.get("SLOW_PIPELINE_DELAY_S", "0.2"))
        pid_dir = os.environ.get("SLOW_PIPELINE_PID_DIR")
        if pid_dir:
            (Path(pid_dir) / str(os.getpid())).write_text("")

    def reset(self):
        pass

    def step(self, frame):
        from posetrack_app.structures import Poses, Tracks

        time.sleep(self.delay_s)
        return Tracks(np.zeros(0, np.int64), Poses(np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32),
                                                   np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))


def slow_factory(cfg):
    return SlowPipeline()


def write_images_dataset(root: Path, sequences: dict, size=(64, 48)) -> Path:
    """A PoseTrack-layout dataset of flat grey JPEGs with empty 2018 GT files: sequences = name -> frame count."""
    import json

    for name, count in sequences.items():
        folder = root / "images" / "val" / name
        folder.mkdir(parents=True)
        images = []
        for i in range(count):
            cv2.imwrite(str(folder / f"{i:06d}.jpg"), np.full((size[1], size[0], 3), 100, np.uint8))
            images.append({"file_name": f"images/val/{name}/{i:06d}.jpg", "id": i, "is_labeled": True})
        (root / "annotations" / "val").mkdir(parents=True, exist_ok=True)
        from posetrack_app.io.posetrack_json import CATEGORY_2018
        (root / "annotations" / "val" / f"{name}.json").write_text(
            json.dumps({"images": images, "annotations": [], "categories": [CATEGORY_2018]}))
    return root
