"""Per-stage wall-clock timers for the pipeline and benchmarks."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional

import numpy as np


class StageTimer:
    """Collects durations (seconds) per named stage.

    `synchronize` is called before each clock read when given (e.g. torch.cuda.synchronize), so that time spent
    in asynchronous GPU work is charged to the stage that launched it.
    """

    def __init__(self, synchronize: Optional[Callable[[], None]] = None):
        self.synchronize = synchronize
        self.durations_s: Dict[str, List[float]] = defaultdict(list)

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
            self.durations_s[name].append(time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.durations_s[name].append(seconds)

    def mean_ms(self) -> Dict[str, float]:
        return {name: 1000.0 * float(np.mean(v)) for name, v in self.durations_s.items() if v}

    def median_ms(self) -> Dict[str, float]:
        return {name: 1000.0 * float(np.median(v)) for name, v in self.durations_s.items() if v}

    def reset(self) -> None:
        self.durations_s.clear()
