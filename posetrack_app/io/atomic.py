"""Atomic file output: write to a temporary name in the same folder, rename on success.

A killed or failed run never leaves a half-written file under the final name.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError


def check_output_path(path) -> Path:
    """Fail early, with a fix, when `path` cannot be written (missing folder, no permission, a directory)."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"output {path} is a directory: give a file name")
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist: create it first (mkdir -p {folder})")
    # Creating a file is the only reliable test: os.access says yes to root even on read-only mounts.
    try:
        fd, probe = tempfile.mkstemp(prefix=".posetrack-write-test.", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write in {folder} ({exc.strerror}): choose another output location") from None
    os.close(fd)
    os.unlink(probe)
    return path


def temporary_path_for(path) -> Path:
    """A fresh temporary path beside `path` with the same suffix (so writers that look at it still work)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent or ".")
    os.close(fd)
    # mkstemp creates the file private (0600); give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextmanager
def atomic_write(path, mode: str = "w", encoding: str = "utf-8") -> Iterator:
    """`with atomic_write(p) as f: f.write(...)`: p appears only if the block finishes without error."""
    path = check_output_path(path)
    tmp = temporary_path_for(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path, data, indent=None) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=indent)
