"""SIGTERM and SIGHUP end a run the way Ctrl-C does, and closing the outputs is never cut short.

`termination_signals()` (installed by the CLI around a command) turns the first SIGINT, SIGTERM or SIGHUP into an
`Interrupted` exception (a KeyboardInterrupt, so every place that ends a run cleanly on Ctrl-C handles all three).
Code that must not be cut in the middle (closing and renaming outputs) runs inside `deferred()`: a signal that
arrives there is held and raised when the block ends. Later signals are logged and ignored: the run is already
stopping, and a second Ctrl-C must not leave a half-closed output behind (SIGKILL still ends the process).
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

HANDLED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal; `signal_number` says which."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


class _State:
    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.pending = False
        self.deferring = 0


_state = _State()


def received_signal() -> Optional[int]:
    """The signal that interrupted this command, or None."""
    return _state.received


def signal_name(signal_number: Optional[int] = None) -> str:
    number = _state.received if signal_number is None else signal_number
    return signal.Signals(number).name if number is not None else "SIGINT"


def exit_code() -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_state.received if _state.received is not None else signal.SIGINT)


def _handle(signal_number: int, _frame) -> None:
    if _state.received is not None:
        log.warning("%s received while stopping: still closing the outputs (SIGKILL aborts without them)",
                    signal.Signals(signal_number).name)
        return
    _state.received = signal_number
    if _state.deferring:
        _state.pending = True
        return
    raise Interrupted(signal_number)


def interruptible(operation: Callable[[float], T], poll_s: float = 0.1) -> T:
    """`operation(timeout_s)`: a blocking queue get/put that raises queue.Empty / queue.Full on timeout. It runs
    with signals held, so an interrupt never lands inside the queue's locks (an exception raised there can lose a
    wake-up and hang the other thread), and is retried every `poll_s` so a held signal still acts within that."""
    while True:
        with deferred():
            try:
                return operation(poll_s)
            except (queue.Empty, queue.Full):
                pass


@contextmanager
def termination_signals() -> Iterator[None]:
    """Within the block, SIGINT / SIGTERM / SIGHUP raise `Interrupted` once (see the module docstring). Signal
    handlers can only be set from the main thread; elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _handle) for number in HANDLED_SIGNALS}
    _state.__init__()
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal that arrives inside the block is raised when the block has finished (not if it failed: its own
    error then wins, and the caller is stopping anyway). Only the main thread receives signals, so elsewhere this
    changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if _state.pending and not _state.deferring:
        _state.pending = False
        raise Interrupted(_state.received)
