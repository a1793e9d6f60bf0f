"""Per-stage timers for the pipeline and benchmarks.

Two ways to time stages that launch asynchronous GPU work:

- `StageTimer(synchronize=torch.cuda.synchronize)` (or `StageTimer.for_device("cuda")`): a device synchronize
  before each clock read, so a stage is charged with the GPU work it launched. Wall-clock, simple, but the
  synchronize removes CPU/GPU overlap between stages, so the end-to-end time it sees is pessimistic.
- `CudaEventTimer` (or `StageTimer.for_device("cuda", mode="events")`): CUDA events recorded on the current
  stream at the start and end of each stage; no synchronize inside the loop, so overlap is kept. Durations are
  GPU-timeline times, resolved (one synchronize per pending event) when statistics are read.

Stage names may be nested with dots ("pose", "pose.crop", "pose.network"): a nested stage is timed inside its
parent and also counted there. Timers are safe to fill from several threads (reader, pipeline, writer).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np


@dataclass(frozen=True)
class StageStats:
    """Statistics of one stage over the samples collected (milliseconds, per call)."""

    calls: int
    total_ms: float
    mean_ms: float
    median_ms: float
    p95_ms: float
    min_ms: float
    max_ms: float

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


def stats_from_ms(samples_ms) -> StageStats:
    """StageStats of a sequence of durations in milliseconds (must not be empty)."""
    values = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no samples to summarise")
    return StageStats(
        calls=int(values.size),
        total_ms=float(values.sum()),
        mean_ms=float(values.mean()),
        median_ms=float(np.median(values)),
        # Linear interpolation between order statistics (numpy's default), so p95 of few samples is defined.
        p95_ms=float(np.percentile(values, 95.0)),
        min_ms=float(values.min()),
        max_ms=float(values.max()),
    )


def cuda_synchronize_for(device: str) -> Optional[Callable[[], None]]:
    """torch.cuda.synchronize bound to `device` when it is a CUDA device, else None (nothing to wait for)."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    target = torch.device(device)
    return lambda: torch.cuda.synchronize(target)


class StageTimer:
    """Collects durations (seconds) per named stage.

    `synchronize` is called before each clock read when given (e.g. torch.cuda.synchronize), so that time spent
    in asynchronous GPU work is charged to the stage that launched it.
    """

    mode = "wall"

    def __init__(self, synchronize: Optional[Callable[[], None]] = None):
        self.synchronize = synchronize
        self.durations_s: Dict[str, List[float]] = defaultdict(list)
        self._lock = threading.Lock()

    @classmethod
    def for_device(cls, device: str, mode: str = "synchronize") -> "StageTimer":
        """A timer suited to work on `device` ("cpu", "cuda", "cuda:1").

        mode "synchronize": wall clock with a device synchronize before each read (plain wall clock on CPU);
        mode "events": CUDA events (CudaEventTimer); falls back to the wall clock on CPU.
        """
        if mode not in ("synchronize", "events"):
            raise ValueError(f"timer mode must be 'synchronize' or 'events', got {mode!r}")
        synchronize = cuda_synchronize_for(device)
        if synchronize is None:
            return StageTimer()
        if mode == "events":
            return CudaEventTimer(device)
        timer = StageTimer(synchronize)
        timer.mode = "wall+synchronize"
        return timer

    @contextmanager
    def stage(self, name: str):
        if self.synchronize is not None:
            self.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.synchronize is not None:
                self.synchronize()
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.durations_s[name].append(float(seconds))

    def _resolved(self) -> Dict[str, List[float]]:
        """Durations per stage, with any pending measurement (events) turned into seconds."""
        with self._lock:
            return {name: list(values) for name, values in self.durations_s.items() if values}

    def names(self) -> List[str]:
        """Stage names in the order they were first timed."""
        return list(self._resolved())

    def durations_ms(self, name: str) -> np.ndarray:
        """float64 [calls] milliseconds of one stage (empty when never timed)."""
        return 1000.0 * np.asarray(self._resolved().get(name, []), dtype=np.float64)

    def mean_ms(self) -> Dict[str, float]:
        return {name: 1000.0 * float(np.mean(v)) for name, v in self._resolved().items()}

    def median_ms(self) -> Dict[str, float]:
        return {name: 1000.0 * float(np.median(v)) for name, v in self._resolved().items()}

    def percentile_ms(self, q: float) -> Dict[str, float]:
        """q-th percentile (0..100) per stage."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        return {name: 1000.0 * float(np.percentile(v, q)) for name, v in self._resolved().items()}

    def stats(self) -> Dict[str, StageStats]:
        return {name: stats_from_ms(1000.0 * np.asarray(v)) for name, v in self._resolved().items()}

    def reset(self) -> None:
        with self._lock:
            self.durations_s.clear()


class CudaEventTimer(StageTimer):
    """Stage times from CUDA events on the current stream of `device` (GPU timeline, milliseconds resolution
    about 0.5 us). Never synchronizes inside `stage`; statistics resolve the pending events.

    `add()` still takes host-measured seconds (e.g. for a CPU-only stage such as decoding).
    """

    mode = "cuda-events"

    def __init__(self, device: str = "cuda"):
        super().__init__(synchronize=None)
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("CudaEventTimer needs a CUDA GPU; use StageTimer() on CPU")
        self._torch = torch
        self.device = torch.device(device)
        self._pending: List[tuple] = []

    @contextmanager
    def stage(self, name: str):
        cuda = self._torch.cuda
        start = cuda.Event(enable_timing=True)
        end = cuda.Event(enable_timing=True)
        start.record(cuda.current_stream(self.device))
        try:
            yield
        finally:
            end.record(cuda.current_stream(self.device))
            with self._lock:
                self._pending.append((name, start, end))

    def _resolved(self) -> Dict[str, List[float]]:
        with self._lock:
            pending, self._pending = self._pending, []
        for name, start, end in pending:
            end.synchronize()
            # elapsed_time is in milliseconds.
            self.add(name, start.elapsed_time(end) / 1000.0)
        return super()._resolved()

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
        super().reset()
