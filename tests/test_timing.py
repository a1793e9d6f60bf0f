"""StageTimer on a fake clock (the true durations are known exactly, so nothing depends on how busy the machine is):
statistics from known durations, bounded memory on long runs, synchronize semantics with a simulated asynchronous
device, thread safety; the smoothed FPS; CUDA paths on a GPU."""
import threading
import time
import tracemalloc

from dataclasses import asdict

import numpy as np
import pytest
from fake_clock import FakeClock

from posetrack_app.timing import CudaEventTimer, SmoothedFps, StageTimer, stats_from_ms


@pytest.mark.parametrize("block_s", [[0.03, 0.03, 0.03], [0.001, 0.5, 0.02, 0.02], [0.0, 1e-6]])
def test_stage_reports_the_time_that_passed_inside_it(block_s):
    clock = FakeClock()
    timer = StageTimer(clock=clock)
    for seconds in block_s:
        clock.advance(0.7)  # time outside a stage is never charged to it
        with timer.stage("work"):
            clock.advance(seconds)
    stats = timer.stats()["work"]
    assert stats.calls == len(block_s)
    assert stats.total_ms == pytest.approx(1000.0 * sum(block_s), abs=1e-9)
    assert stats.min_ms == pytest.approx(1000.0 * min(block_s), abs=1e-9)
    assert stats.max_ms == pytest.approx(1000.0 * max(block_s), abs=1e-9)
    assert stats.median_ms == pytest.approx(1000.0 * float(np.median(block_s)), abs=1e-9)


@pytest.mark.parametrize("samples_ms, median, p95, mean", [
    ([10.0], 10.0, 10.0, 10.0),
    ([1.0, 2.0, 3.0, 4.0], 2.5, 3.85, 2.5),
    (list(range(1, 101)), 50.5, 95.05, 50.5),
    ([5.0, 5.0, 5.0, 100.0], 5.0, 85.75, 28.75),
])
def test_statistics_of_known_durations(samples_ms, median, p95, mean):
    # Expected values: numpy's linear-interpolation percentile worked by hand, e.g. p95 of 1..4 sits at rank
    # 0.95 * 3 = 2.85, i.e. 3 + 0.85 * (4 - 3) = 3.85.
    timer = StageTimer()
    for ms in samples_ms:
        timer.add("stage", ms / 1000.0)
    stats = timer.stats()["stage"]
    assert stats.calls == len(samples_ms)
    assert stats.median_ms == pytest.approx(median, abs=1e-9)
    assert stats.p95_ms == pytest.approx(p95, abs=1e-9)
    assert stats.mean_ms == pytest.approx(mean, abs=1e-9)
    assert stats.total_ms == pytest.approx(sum(samples_ms), abs=1e-9)
    assert timer.mean_ms()["stage"] == pytest.approx(mean, abs=1e-9)
    assert asdict(stats) == pytest.approx(asdict(stats_from_ms(samples_ms)), rel=1e-12)


@pytest.mark.parametrize("capacity, calls", [(1000, 50_000), (64, 10_000)])
def test_long_runs_keep_exact_totals_and_sampled_quantiles(capacity, calls):
    # Durations 1..calls ms in a shuffled order: the true median and p95 are known.
    durations_ms = np.random.default_rng(0).permutation(np.arange(1, calls + 1, dtype=np.float64))
    timer = StageTimer(reservoir_samples=capacity)
    for ms in durations_ms:
        timer.add("stage", ms / 1000.0)
    stats = timer.stats()["stage"]
    assert stats.calls == calls
    assert stats.total_ms == pytest.approx(durations_ms.sum(), rel=1e-12)
    assert stats.mean_ms == pytest.approx((calls + 1) / 2.0, rel=1e-12)
    assert (stats.min_ms, stats.max_ms) == pytest.approx((1.0, float(calls)), abs=1e-9)
    # A uniform sample of `capacity` values: the median's rank has a standard error of 0.5 / sqrt(capacity) of
    # the range (1.6% at 1000, 6.3% at 64); allowed: 4 standard errors.
    tolerance = 4 * 0.5 / np.sqrt(capacity) * calls
    assert stats.median_ms == pytest.approx(calls / 2.0, abs=tolerance)
    tolerance_p95 = 4 * np.sqrt(0.95 * 0.05 / capacity) * calls
    assert stats.p95_ms == pytest.approx(0.95 * calls, abs=tolerance_p95)


def test_memory_stays_flat_however_many_calls():
    timer = StageTimer(reservoir_samples=1000)
    for _ in range(2000):  # past the reservoir's size, so everything it will ever hold is allocated
        timer.add("stage", 0.001)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(30_000):
            timer.add("stage", 0.001)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Keeping every duration would take >= 240 kB (8 bytes each); the bounded timer allocates nothing lasting.
    assert after - before < 10_000
    assert timer.stats()["stage"].calls == 32_000


def test_names_keep_first_use_order_and_reset_clears():
    timer = StageTimer()
    for name in ("decode", "detect", "pose", "pose.network", "detect"):
        timer.add(name, 0.001)
    assert list(timer.stats()) == ["decode", "detect", "pose", "pose.network"]
    assert timer.stats()["detect"].calls == 2
    timer.reset()
    assert timer.stats() == {} and timer.mean_ms() == {}


def test_stage_records_even_when_the_block_raises():
    clock = FakeClock()
    timer = StageTimer(clock=clock)
    with pytest.raises(RuntimeError):
        with timer.stage("boom"):
            clock.advance(0.25)
            raise RuntimeError("stage failed")
    assert timer.stats()["boom"].calls == 1
    assert timer.stats()["boom"].total_ms == pytest.approx(250.0)


@pytest.mark.parametrize("bad", [0, -5])
def test_reservoir_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="reservoir_samples"):
        StageTimer(reservoir_samples=bad)


def test_stats_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        stats_from_ms([])


class FakeAsyncDevice:
    """Work 'launched' on it returns at once, as a CUDA kernel launch does; synchronize() waits for it, i.e. moves
    the clock on by the queued work, like torch.cuda.synchronize."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.queued_s = 0.0
        self.synchronize_calls = 0

    def launch(self, seconds: float) -> None:
        self.queued_s += seconds

    def synchronize(self) -> None:
        self.synchronize_calls += 1
        self.clock.advance(self.queued_s)
        self.queued_s = 0.0


def test_synchronize_charges_asynchronous_work_to_the_stage_that_launched_it():
    work_s = 0.1
    clock = FakeClock()
    device = FakeAsyncDevice(clock)
    timer = StageTimer(synchronize=device.synchronize, clock=clock)
    for _ in range(3):
        with timer.stage("network"):
            device.launch(work_s)
        with timer.stage("host"):
            clock.advance(0.002)
    assert device.synchronize_calls == 2 * 6  # before and after each stage
    assert timer.stats()["network"].median_ms == pytest.approx(1000.0 * work_s, abs=1e-9)
    assert timer.stats()["host"].median_ms == pytest.approx(2.0, abs=1e-9)

    # Without synchronize the launch looks free and the work is charged to whatever waits next.
    unsynced_clock = FakeClock()
    unsynced_device = FakeAsyncDevice(unsynced_clock)
    unsynced = StageTimer(clock=unsynced_clock)
    with unsynced.stage("network"):
        unsynced_device.launch(work_s)
    with unsynced.stage("host"):
        unsynced_device.synchronize()
    assert unsynced.stats()["network"].median_ms == 0.0
    assert unsynced.stats()["host"].median_ms == pytest.approx(1000.0 * work_s, abs=1e-9)


def test_adds_from_several_threads_are_all_kept():
    timer = StageTimer(reservoir_samples=100)

    def worker(name):
        for _ in range(2000):
            timer.add(name, 0.001)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("decode", "write", "decode", "write")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = timer.stats()
    assert {n: s.calls for n, s in stats.items()} == {"decode": 4000, "write": 4000}
    assert {n: s.total_ms for n, s in stats.items()} == pytest.approx({"decode": 4000.0, "write": 4000.0})


def test_for_device_on_cpu_is_a_plain_wall_clock_timer():
    for mode in ("synchronize", "events"):
        timer = StageTimer.for_device("cpu", mode=mode)
        assert type(timer) is StageTimer and timer.synchronize is None and timer.mode == "wall"
        assert timer.clock is time.perf_counter
    with pytest.raises(ValueError, match="timer mode"):
        StageTimer.for_device("cpu", mode="bogus")


@pytest.mark.parametrize("frame_s, expected_fps", [
    ([0.1], [10.0]),
    ([0.1, 0.05], [10.0, 0.9 * 10.0 + 0.1 * 20.0]),
    ([0.1, 0.05, 0.05], [10.0, 11.0, 0.9 * 11.0 + 0.1 * 20.0]),
    ([0.0], [1e6]),  # a zero-length tick counts as 1 us, not as infinite FPS
])
def test_smoothed_fps(frame_s, expected_fps):
    fps = SmoothedFps(newest_weight=0.1)
    assert [fps.update(s) for s in frame_s] == pytest.approx(expected_fps)


@pytest.mark.parametrize("bad", [0.0, 1.5])
def test_smoothed_fps_weight_range(bad):
    with pytest.raises(ValueError, match="newest_weight"):
        SmoothedFps(bad)


def _gpu_sleep(torch, seconds):
    """Queue a GPU busy-wait of about `seconds` (cycles calibrated once with events)."""
    cycles_per_s = getattr(_gpu_sleep, "cycles_per_s", None)
    if cycles_per_s is None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(1000)  # first call compiles/loads the kernel
        torch.cuda.synchronize()
        start.record()
        torch.cuda._sleep(10_000_000)
        end.record()
        end.synchronize()
        cycles_per_s = _gpu_sleep.cycles_per_s = 10_000_000 / (start.elapsed_time(end) / 1000.0)
    torch.cuda._sleep(int(seconds * cycles_per_s))


# On a GPU the oracle is the kernel's own length, measured independently with a pair of CUDA events.
GPU_TIMER_TOLERANCE = 0.10


@pytest.mark.needs_cuda
@pytest.mark.parametrize("mode", ["synchronize", "events"])
def test_gpu_stage_is_charged_its_kernel_time(mode):
    import torch

    work_s = 0.05
    timer = StageTimer.for_device("cuda", mode=mode)
    assert timer.mode == ("cuda-events" if mode == "events" else "wall+synchronize")
    for _ in range(3):
        with timer.stage("network"):
            _gpu_sleep(torch, work_s)
        with timer.stage("host"):
            time.sleep(0.001)
    assert timer.stats()["network"].median_ms / 1000.0 == pytest.approx(work_s, rel=GPU_TIMER_TOLERANCE)
    assert timer.stats()["network"].calls == 3
    if mode == "events":
        assert isinstance(timer, CudaEventTimer)
        timer.reset()
        assert timer.stats() == {}


@pytest.mark.needs_cuda
def test_event_timer_does_not_block_the_host():
    import torch

    timer = CudaEventTimer("cuda")
    _gpu_sleep(torch, 0.001)
    torch.cuda.synchronize()
    start = time.perf_counter()
    with timer.stage("network"):
        _gpu_sleep(torch, 0.1)
    host_s = time.perf_counter() - start
    assert host_s < 0.05  # the stage returned while the GPU was still busy
    assert timer.stats()["network"].median_ms / 1000.0 == pytest.approx(0.1, rel=GPU_TIMER_TOLERANCE)


@pytest.mark.needs_cuda
def test_event_timer_resolves_events_in_batches_on_long_runs():
    from posetrack_app.timing import PENDING_EVENTS_LIMIT

    timer = CudaEventTimer("cuda")
    for _ in range(3 * PENDING_EVENTS_LIMIT):
        with timer.stage("tiny"):
            pass
    assert len(timer._pending) < PENDING_EVENTS_LIMIT
    assert timer.stats()["tiny"].calls == 3 * PENDING_EVENTS_LIMIT
