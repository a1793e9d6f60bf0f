"""Per-stage timers for the pipeline and benchmarks, and the smoothed FPS shown while a stream runs.

Two ways to time stages that launch asynchronous GPU work:

- `StageTimer(synchronize=torch.cuda.synchronize)` (or `StageTimer.for_device("cuda")`): a device synchronize
  before each clock read, so a stage is charged with the GPU work it launched. Wall-clock, simple, but the
  synchronize removes CPU/GPU overlap between stages, so the end-to-end time it sees is pessimistic.
- `CudaEventTimer` (or `StageTimer.for_device("cuda", mode="events")`): CUDA events recorded on the current
  stream at the start and end of each stage; no synchronize inside the loop, so overlap is kept. Durations are
  GPU-timeline times, resolved when statistics are read (and in batches while a long run goes on).

Stage names may be nested with dots ("pose", "pose.crop", "pose.network"): a nested stage is timed inside its
parent and also counted there. Timers are safe to fill from several threads (reader, pipeline, writer).

Memory is bounded, so a timer can run on an endless stream: per stage, the count, total, minimum and maximum are
exact, and the median / p95 come from a uniform random sample (reservoir) of at most `RESERVOIR_SAMPLES`
durations; below that many calls they are exact.
"""
from __future__ import annotations

import math
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

# Per stage. 8192 float64 samples are 64 kB, and a uniform sample of that size puts the p95 within about
# +-0.5 percentile points of the true one (binomial standard error sqrt(0.95 * 0.05 / 8192) = 0.24%).
RESERVOIR_SAMPLES = 8192
# CudaEventTimer: resolve recorded events in batches once this many are pending, so they do not pile up.
PENDING_EVENTS_LIMIT = 1024


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


class _BoundedSamples:
    """Durations of one stage in constant memory: exact count / total / min / max, and a uniform reservoir of at
    most `capacity` durations for the quantiles (Vitter's algorithm R, seeded so that runs are repeatable)."""

    __slots__ = ("capacity", "calls", "total_s", "min_s", "max_s", "_reservoir_s", "_rng")

    def __init__(self, capacity: int, seed: int):
        self.capacity = capacity
        self.calls = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = -math.inf
        # Grown by doubling up to `capacity`: a stage timed a few times costs a few bytes.
        self._reservoir_s = np.empty(min(capacity, 64), dtype=np.float64)
        self._rng = random.Random(seed)

    def add(self, seconds: float) -> None:
        index = self.calls
        self.calls += 1
        self.total_s += seconds
        self.min_s = min(self.min_s, seconds)
        self.max_s = max(self.max_s, seconds)
        if index < self.capacity:
            if index == len(self._reservoir_s):
                grown = np.empty(min(2 * index, self.capacity), dtype=np.float64)
                grown[:index] = self._reservoir_s
                self._reservoir_s = grown
            self._reservoir_s[index] = seconds
            return
        # Keep the new duration with probability capacity / calls, in place of a uniformly chosen one.
        slot = self._rng.randrange(self.calls)
        if slot < self.capacity:
            self._reservoir_s[slot] = seconds

    def stats(self) -> StageStats:
        sample_ms = 1000.0 * self._reservoir_s[:min(self.calls, self.capacity)]
        return StageStats(
            calls=self.calls,
            total_ms=1000.0 * self.total_s,
            mean_ms=1000.0 * self.total_s / self.calls,
            median_ms=float(np.median(sample_ms)),
            p95_ms=float(np.percentile(sample_ms, 95.0)),
            min_ms=1000.0 * self.min_s,
            max_ms=1000.0 * self.max_s,
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
    """Collects durations (seconds) per named stage, in bounded memory.

    synchronize: called before each clock read when given (e.g. torch.cuda.synchronize), so that time spent in
        asynchronous GPU work is charged to the stage that launched it.
    clock: seconds, monotonic (time.perf_counter); tests pass a fake clock to know the true durations.
    reservoir_samples: durations kept per stage for the median and p95 (exact below that many calls).
    """

    mode = "wall"

    def __init__(self, synchronize: Optional[Callable[[], None]] = None, *,
                 clock: Callable[[], float] = time.perf_counter, reservoir_samples: int = RESERVOIR_SAMPLES):
        if reservoir_samples < 1:
            raise ValueError(f"reservoir_samples must be >= 1, got {reservoir_samples}")
        self.synchronize = synchronize
        self.clock = clock
        self.reservoir_samples = reservoir_samples
        self._samples: Dict[str, _BoundedSamples] = {}
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
        start = self.clock()
        try:
            yield
        finally:
            if self.synchronize is not None:
                self.synchronize()
            self.add(name, self.clock() - start)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            samples = self._samples.get(name)
            if samples is None:
                # Seeded by the stage's position, so two runs of the same program keep the same samples.
                samples = self._samples[name] = _BoundedSamples(self.reservoir_samples, seed=len(self._samples))
            samples.add(float(seconds))

    def _resolve_pending(self) -> None:
        """Turns measurements still in flight (CUDA events) into durations; nothing to do for the wall clock."""

    def stats(self) -> Dict[str, StageStats]:
        """Per stage, in the order the stages were first timed."""
        self._resolve_pending()
        with self._lock:
            return {name: samples.stats() for name, samples in self._samples.items() if samples.calls}

    def mean_ms(self) -> Dict[str, float]:
        return {name: s.mean_ms for name, s in self.stats().items()}

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()


class CudaEventTimer(StageTimer):
    """Stage times from CUDA events on the current stream of `device` (GPU timeline, resolution about 0.5 us).
    Never synchronizes inside `stage` except to resolve events recorded long before (see PENDING_EVENTS_LIMIT);
    statistics resolve the rest.

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
                overflow = len(self._pending) >= PENDING_EVENTS_LIMIT
            if overflow:
                # The older half was recorded hundreds of stages ago, so waiting on it costs (almost) nothing.
                self._resolve(PENDING_EVENTS_LIMIT // 2)

    def _resolve(self, count: Optional[int] = None) -> None:
        with self._lock:
            cut = len(self._pending) if count is None else count
            pending, self._pending = self._pending[:cut], self._pending[cut:]
        for name, start, end in pending:
            end.synchronize()
            # elapsed_time is in milliseconds.
            self.add(name, start.elapsed_time(end) / 1000.0)

    def _resolve_pending(self) -> None:
        self._resolve()

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
        super().reset()


class SmoothedFps:
    """Frames per second over the latest frames, exponentially smoothed so that an on-screen counter is readable.

    newest_weight: share of the newest frame in the value (0.1: roughly the last 10 frames count).
    """

    def __init__(self, newest_weight: float = 0.1):
        if not 0.0 < newest_weight <= 1.0:
            raise ValueError(f"newest_weight must be in (0, 1], got {newest_weight}")
        self.newest_weight = newest_weight
        self.value: Optional[float] = None

    def update(self, frame_s: float) -> float:
        """Adds one frame that took `frame_s` seconds; returns the smoothed FPS."""
        # A clock tick of 0 (coarse timers) would give infinite FPS: floor the frame time at 1 us.
        fps = 1.0 / max(frame_s, 1e-6)
        self.value = fps if self.value is None else (1.0 - self.newest_weight) * self.value + self.newest_weight * fps
        return self.value
