"""Atomic file output: write to a temporary name in the same folder, rename on success.

A killed or failed run never leaves a half-written file under the final name. Temporary names carry the writing
process's id (`.NAME.PID.RANDOM.partSUFFIX`), so a later run can tell the leftovers of a killed run (their process
is gone) from the files of a run still writing, and removes only the former.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Sequence

from ..errors import OutputError, UserError

log = logging.getLogger(__name__)

PART_MARK = ".part"


def check_output_path(path, suffixes: Optional[Sequence[str]] = None, what: str = "output") -> Path:
    """Fail early, with a fix, when `path` cannot be written (missing folder, a file where the folder should be, no
    permission, a directory) or, given `suffixes`, has another extension."""
    path = Path(path)
    folder = path.parent
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise UserError(f"{what} {path} must end in one of {', '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory: give a file name")
    blocking = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UserError(f"{what} {path}: {blocking} is a file, not a folder: choose another output location")
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


def _same_file(a: Path, b: Path) -> bool:
    """Equal after resolving links; hard links to one file count too."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet: then they are different files
        return False


def check_distinct_outputs(outputs: Mapping[str, object], inputs: Optional[Mapping[str, object]] = None) -> None:
    """No output may be an input or another output. Keys are what the user typed (`--out-video`, `SOURCE`),
    values paths; None values are skipped. Raises UserError naming both."""
    outs = {label: Path(p) for label, p in outputs.items() if p}
    ins = {label: Path(p) for label, p in (inputs or {}).items() if p}
    seen: Dict[str, Path] = {}
    for label, path in outs.items():
        for in_label, in_path in ins.items():
            if _same_file(path, in_path):
                raise UserError(f"{label} {path} is the input {in_label} ({in_path.resolve()}): writing it would "
                                "destroy the input; choose another output name")
        for other_label, other in seen.items():
            if _same_file(path, other):
                raise UserError(f"{other_label} {other} and {label} {path} are the same file ({path.resolve()}): "
                                "give each output its own name")
        seen[label] = path


def _part_glob(path: Path) -> str:
    return f".{path.stem}.*{PART_MARK}{path.suffix}"


def temporary_path_for(path) -> Path:
    """A fresh temporary path beside `path` with the same suffix (so writers that look at it still work)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f"{PART_MARK}{path.suffix}",
                               dir=path.parent or ".")
    os.close(fd)
    # mkstemp creates the file private (0600); give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_parts(path) -> int:
    """Delete the temporary files of `path` left by killed runs (their process is gone); returns how many.

    Temporary files of a process still running are left alone. Names without a process id come from versions
    that did not write one; their run is long over.
    """
    path = Path(path)
    removed = 0
    prefix = f".{path.stem}."
    for part in path.parent.glob(_part_glob(path)):
        middle = part.name[len(prefix):-len(f"{PART_MARK}{path.suffix}")]
        if "." in middle:
            pid_text = middle.split(".", 1)[0]
            if not pid_text.isdigit() or int(pid_text) == os.getpid() or _writer_alive(int(pid_text)):
                continue
        try:
            part.unlink()
        except FileNotFoundError:  # another run cleaned it first
            continue
        removed += 1
        log.info("removed %s, left by a killed run", part)
    return removed


# What to do about a full disk, in every message that reports one.
DISK_FULL_HINT = "free some space or choose another location"


def output_error(path, exc: OSError) -> OutputError:
    """The one-line error for a failed write of `path`."""
    reason = exc.strerror or str(exc)
    hint = (DISK_FULL_HINT if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the disk and the output location")
    return OutputError(f"cannot write {path}: {reason} ({hint}); nothing was written there")


@contextmanager
def atomic_write(path, mode: str = "w", encoding: str = "utf-8") -> Iterator:
    """`with atomic_write(p) as f: f.write(...)`: p appears only if the block finishes without error.
    A failed write (disk full, I/O error) raises OutputError naming p."""
    from ..interrupts import deferred

    path = check_output_path(path)
    remove_stale_parts(path)
    tmp = temporary_path_for(path)
    try:
        try:
            with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            with deferred():
                os.replace(tmp, path)
        except OSError as exc:
            raise output_error(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path, data, indent=None) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=indent)
