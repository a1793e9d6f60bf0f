"""The `posetrack` command. Each subcommand is one module of this package defining

    COMMAND = "name"            # as typed on the command line
    HELP = "one line"           # shown by `posetrack --help`
    add_arguments(parser)       # argparse arguments
    run(args) -> int            # exit code

Subcommands are found by scanning this package, so adding one never edits this file.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from typing import List, Optional

from .. import __version__, interrupts
from ..errors import UserError

log = logging.getLogger(__name__)


def _subcommand_modules():
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "COMMAND"):
            modules.append(module)
    return sorted(modules, key=lambda m: m.COMMAND)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posetrack", description="Real-time multi-person video pose tracking.")
    parser.add_argument("--version", action="version", version=f"posetrack_app {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in _subcommand_modules():
        sub = subparsers.add_parser(module.COMMAND, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def _quiet_video_library_logs() -> None:
    """OpenCV and its FFmpeg print a line per failed frame (70 lines for one full disk) that repeat what our one-line
    errors say; -v keeps them. A value the user set in the environment wins."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "cv2" in sys.modules:  # read at import: set it directly too
        import cv2
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        _quiet_video_library_logs()
    # SIGTERM (kill, timeout, docker stop, systemd) and SIGHUP (a closed terminal) end a run as Ctrl-C does: the
    # outputs written so far are closed and kept.
    with interrupts.termination_signals():
        try:
            return int(args._run(args))
        except UserError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message holds
            print(f"posetrack {args.command}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"posetrack {args.command}: interrupted by {interrupts.signal_name()}", file=sys.stderr)
            return interrupts.exit_code()
