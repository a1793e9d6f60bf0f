"""Batch runner: the pipeline over every sequence of a PoseTrack-layout dataset, one prediction file each.

Dataset layout (PoseTrack 2017 and 2018 alike):

    DATASET_ROOT/annotations/<split>/<seq>.json     GT sequence file (gives the frames to predict)
    DATASET_ROOT/images/<split>/<seq>/*.jpg         the sequence's frames, in file-name order

Every image of a sequence goes through the pipeline (the tracker needs them all, in order; it is reset per
sequence); the prediction file has one entry per GT frame, in the GT's format, and is written by the driver
atomically, so a killed run leaves only complete files and a rerun skips them. Sequences run in the calling
process (workers=1), in worker processes with one pipeline each (workers=N; one GPU per worker where there
are several), or as Ray tasks (ray_address). A failing sequence is reported and the others go on.
Worker processes end with the driver: they ignore Ctrl-C (the driver handles it and stops them) and exit on
their own when the driver process is gone (killed with SIGKILL, say), instead of computing for nobody.
Images are read as the track command reads a folder (io.sources.read_image), under the same damaged-frame
policy (`source.damaged_frames`): "skip" leaves a damaged image out of the sequence (its GT frame gets no
prediction) with a warning naming it, "stop" fails the sequence there.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence as SequenceType

from .config import AppConfig, PoseTrackOutputConfig
from .errors import DamagedFrameError, UserError
from .interrupts import deferred
from .io.atomic import check_distinct_outputs, remove_stale_parts, write_json_atomic
from .io.posetrack_json import read_sequence, sequence_to_json
from .io.sources import (DEFAULT_FOLDER_FPS, IMAGE_SUFFIXES, DamagedFrames, check_damaged_frame_policy, list_images,
                         read_image)
from .onnx_providers import CUDA_PROVIDER
from .posetrack_layout import prediction_template, tracks_to_persons, with_persons
from .structures import Frame
from .tracking.backfill import Backfill

log = logging.getLogger(__name__)

# How often a worker checks that the driver process still exists.
PARENT_CHECK_INTERVAL_S = 0.5

PipelineFactory = Callable[[AppConfig], object]


def default_pipeline_factory(cfg: AppConfig):
    from .build import build_pipeline

    return build_pipeline(cfg)


@dataclass(frozen=True)
class SequenceJob:
    name: str
    annotation_path: Path
    image_dir: Path

    def image_paths(self) -> List[Path]:
        if not self.image_dir.is_dir():
            return []
        return list_images(self.image_dir)


@dataclass
class SequenceOutcome:
    name: str
    status: str  # "done", "skipped" (already written) or "failed"
    num_frames: int = 0
    seconds: float = 0.0
    message: str = ""


@dataclass
class BatchReport:
    outcomes: List[SequenceOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    # Set when Ctrl-C / SIGTERM / SIGHUP stopped the batch; the files written so far are complete.
    interrupted: bool = False

    def _with(self, status: str) -> List[SequenceOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> List[SequenceOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> List[SequenceOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> List[SequenceOutcome]:
        return self._with("failed")

    @property
    def num_frames(self) -> int:
        return sum(o.num_frames for o in self.done)


def discover_sequences(dataset_root, split: str) -> List[SequenceJob]:
    """The sequences of `split`: one per annotations/<split>/*.json, images from images/<split>/<name>/."""
    root = Path(dataset_root)
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist")
    annotation_dir = root / "annotations" / split
    if not annotation_dir.is_dir():
        found = sorted(p.name for p in (root / "annotations").iterdir() if p.is_dir()) if (root / "annotations").is_dir() else []
        hint = f"; splits found: {', '.join(found)}" if found else " (expected annotations/<split>/<seq>.json)"
        raise UserError(f"{annotation_dir} does not exist: not a PoseTrack dataset folder or wrong --split{hint}")
    jobs = [SequenceJob(p.stem, p, root / "images" / split / p.stem) for p in sorted(annotation_dir.glob("*.json"))]
    if not jobs:
        raise UserError(f"{annotation_dir} holds no sequences (*.json annotation files)")
    return jobs


def output_path(out_dir, job: SequenceJob) -> Path:
    return Path(out_dir) / f"{job.name}.json"


def check_output_folder(out_dir: Path, jobs: SequenceType[SequenceJob]) -> None:
    """The prediction folder must not be a folder the batch reads: predictions are named like the GT files
    (<seq>.json), so --out on the annotation folder would overwrite the ground truth."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder: give a folder for the prediction files")
    for job in jobs:
        check_distinct_outputs({"--out": out_dir}, {f"annotation folder of {job.name}": job.annotation_path.parent,
                                                    f"image folder of {job.name}": job.image_dir})


def predict_sequence(job: SequenceJob, pipeline, output_cfg: PoseTrackOutputConfig,
                     on_frame: Optional[Callable[[], None]] = None, damaged_frames: str = "skip",
                     fps: float = 0.0) -> dict:
    """Run `pipeline` over every image of the sequence; return the prediction file's JSON (GT's format).

    GT frames pair with images by file name; a GT frame whose image is missing is an error. A damaged image is
    skipped or fails the sequence, as `damaged_frames` says ("skip" / "stop"). fps: the sequence's frame rate for
    the frames' timestamps (source.fps; 0 = the image-folder default), which the tracker's time limits use.
    """
    frame_interval_s = 1.0 / (fps or DEFAULT_FOLDER_FPS)
    damage = DamagedFrames(damaged_frames)
    gt = read_sequence(job.annotation_path)
    images = job.image_paths()
    if not images:
        raise UserError(f"{job.image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) for sequence {job.name}")
    gt_frames_of: Dict[str, List[int]] = {}
    for index, frame in enumerate(gt.frames):
        gt_frames_of.setdefault(Path(frame.file_name).name, []).append(index)
    image_names = {p.name for p in images}
    missing = [name for name in gt_frames_of if name not in image_names]
    if missing:
        raise UserError(f"{job.annotation_path}: {len(missing)} annotated frame(s) have no image in {job.image_dir} "
                        f"(first: {missing[0]})")
    pipeline.reset()
    persons = [[] for _ in gt.frames]
    backfill = Backfill()  # a track confirmed late is written in its first frames too

    def write(ready) -> None:
        for _, tracks, name in ready:
            targets = gt_frames_of.get(name)
            if targets:
                frame_persons = tracks_to_persons(tracks, pipeline.skeleton, output_cfg.keypoint_score_threshold,
                                                  output_cfg.head_rule)
                for target in targets:
                    persons[target] = frame_persons

    for index, path in enumerate(images):
        try:
            image = read_image(path)
        except DamagedFrameError as exc:
            damage.report(f"sequence {job.name}, frame {index}: {exc}")
            continue
        frame = Frame(index, image, index * frame_interval_s)
        write(backfill.push(frame, pipeline.step(frame), path.name))
        if on_frame is not None:
            on_frame()
    write(backfill.flush())
    return sequence_to_json(with_persons(prediction_template(gt), persons))


# ------------------------------------------------------------------------------------ worker processes

_WORKER: Dict[str, object] = {}


def _cached_pipeline(factory: PipelineFactory, cfg: AppConfig):
    """One pipeline per process, built on first use (so a build error fails a sequence, not the pool)."""
    key = (factory, cfg)
    if _WORKER.get("key") != key:
        _WORKER["pipeline"] = factory(cfg)
        _WORKER["key"] = key
    return _WORKER["pipeline"]


def _watch_driver(driver_pid: int, stop) -> None:
    """Worker side: end this process when the driver is gone (its parent changed: the driver died, even by
    SIGKILL, which no handler sees) or asks the workers to stop (Ctrl-C). Workers hold no output file: the driver
    writes every file, so exiting at once loses only the sequence in progress."""
    while not stop.wait(PARENT_CHECK_INTERVAL_S):
        if os.getppid() != driver_pid:
            os._exit(1)
    os._exit(0)


def _init_worker(gpu_ids: SequenceType[str], counter, progress_queue, cpu_threads: int, driver_pid: int,
                 stop) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the driver handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_driver, args=(driver_pid, stop), name="driver-watchdog", daemon=True).start()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpu_ids:
        # Before anything imports CUDA: this worker sees exactly one GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids[index % len(gpu_ids)]
    # Share the cores instead of every worker starting one thread per core (OpenMP / torch honour this).
    os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads))
    _WORKER["progress"] = progress_queue


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _worker_config(cfg: AppConfig, workers: int) -> AppConfig:
    """Give each worker's onnxruntime sessions (detector and pose) their share of the cores, unless the config
    fixes a number: one thread per core in every worker would oversubscribe the machine."""
    from .config import replace

    share = _threads_per_worker(workers)
    changes = {}
    if cfg.pose.intra_op_threads == 0:
        changes["pose.intra_op_threads"] = share
    if cfg.detector.intra_op_threads == 0:
        changes["detector.intra_op_threads"] = share
    return replace(cfg, **changes) if changes else cfg


def _run_job(job: SequenceJob, cfg: AppConfig, factory: PipelineFactory):
    """Worker side: returns (json, frames, seconds) or raises; the driver writes the file."""
    start = time.perf_counter()
    progress = _WORKER.get("progress")
    frames = [0]

    def on_frame():
        frames[0] += 1
        if progress is not None:
            progress.put(1)

    data = predict_sequence(job, _cached_pipeline(factory, cfg), cfg.posetrack, on_frame, cfg.source.damaged_frames,
                            cfg.source.fps)
    return data, frames[0], time.perf_counter() - start


def pipeline_uses_gpu(cfg: AppConfig) -> bool:
    """Whether the pipeline would run on a GPU if one is there (explicit cuda device or CUDA provider)."""
    return cfg.pose.device.startswith("cuda") or CUDA_PROVIDER in tuple(cfg.detector.providers)


def visible_gpu_ids() -> List[str]:
    """GPU ids this machine offers (respecting CUDA_VISIBLE_DEVICES); empty without CUDA."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


# ---------------------------------------------------------------------------------------------- driver

class _Progress:
    """Two tqdm bars (sequences, frames) when asked for; no-ops otherwise."""

    def __init__(self, enabled: bool, num_sequences: int, num_frames: int):
        self.bars = None
        if enabled:
            from .progress import progress_bar
            self.bars = (progress_bar(total=num_sequences, desc="sequences", unit="seq", position=0),
                         progress_bar(total=num_frames, desc="frames", unit="frame", position=1))

    def frames(self, n: int = 1) -> None:
        if self.bars:
            self.bars[1].update(n)

    def sequence(self) -> None:
        if self.bars:
            self.bars[0].update(1)

    def close(self) -> None:
        if self.bars:
            for bar in self.bars:
                bar.close()


def run_batch(jobs: SequenceType[SequenceJob], out_dir, cfg: AppConfig, *, workers: int = 1,
              ray_address: Optional[str] = None, overwrite: bool = False,
              pipeline_factory: Optional[PipelineFactory] = None,
              progress: bool = False) -> BatchReport:
    """Predict every job into out_dir/<name>.json; returns what happened to each sequence.

    pipeline_factory(cfg) -> pipeline (default: build_pipeline); with workers > 1 or Ray it must be a
    module-level callable (it is pickled by reference into the workers).
    """
    pipeline_factory = pipeline_factory or default_pipeline_factory
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    check_damaged_frame_policy(cfg.source.damaged_frames)
    out_dir = Path(out_dir)
    check_output_folder(out_dir, jobs)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = BatchReport()
    todo = []
    for job in jobs:
        if output_path(out_dir, job).exists() and not overwrite:
            report.outcomes.append(SequenceOutcome(job.name, "skipped"))
        else:
            remove_stale_parts(output_path(out_dir, job))
            todo.append(job)
    if report.skipped:
        log.info("%d of %d sequences already have predictions in %s: skipped (pass --overwrite to redo them)",
                 len(report.skipped), len(jobs), out_dir)
    bars = _Progress(progress, len(todo), sum(len(j.image_paths()) for j in todo) if progress else 0)

    def finish(job: SequenceJob, data: dict, frames: int, seconds: float) -> None:
        with deferred():  # a finished sequence is written even when a signal arrives meanwhile
            write_json_atomic(output_path(out_dir, job), data)
        report.outcomes.append(SequenceOutcome(job.name, "done", frames, seconds))
        bars.sequence()

    def fail(job: SequenceJob, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        log.error("sequence %s failed: %s", job.name, message)
        report.outcomes.append(SequenceOutcome(job.name, "failed", message=message))
        bars.sequence()

    try:
        if todo and ray_address:
            _run_ray(todo, cfg, pipeline_factory, ray_address, finish, fail, bars)
        elif todo and workers > 1:
            _run_processes(todo, cfg, pipeline_factory, workers, finish, fail, bars)
        else:
            for job in todo:
                t0 = time.perf_counter()
                frames = [0]

                def on_frame():
                    frames[0] += 1
                    bars.frames()
                try:
                    pipeline = _cached_pipeline(pipeline_factory, cfg)
                    data = predict_sequence(job, pipeline, cfg.posetrack, on_frame, cfg.source.damaged_frames,
                                            cfg.source.fps)
                except Exception as exc:  # noqa: BLE001 -- one failing sequence must not stop the batch
                    fail(job, exc)
                    continue
                finish(job, data, frames[0], time.perf_counter() - t0)
    except KeyboardInterrupt:
        # The sequence in progress is lost; every file written so far is complete (atomic), and a rerun resumes.
        report.interrupted = True
        log.warning("interrupted: %d sequences written, %d not done; rerun the same command to continue",
                    len(report.done), len(todo) - len(report.done) - len(report.failed))
    finally:
        bars.close()
    report.wall_s = time.perf_counter() - start
    return report


def _run_processes(todo, cfg, factory, workers, finish, fail, bars) -> None:
    context = multiprocessing.get_context("spawn")
    gpu_ids = visible_gpu_ids() if pipeline_uses_gpu(cfg) else []
    progress_queue = context.Queue()
    counter = context.Value("i", 0)
    workers = min(workers, len(todo))
    cfg = cfg if gpu_ids else _worker_config(cfg, workers)
    stop_workers = context.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(gpu_ids, counter, progress_queue, _threads_per_worker(workers), os.getpid(),
                                         stop_workers))
    try:
        pending = {pool.submit(_run_job, job, cfg, factory): job for job in todo}
        while pending:
            done, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(progress_queue, bars)
            for future in done:
                job = pending.pop(future)
                try:
                    data, frames, seconds = future.result()
                except BrokenProcessPool as exc:
                    fail(job, RuntimeError(f"worker process died ({exc}); rerun to retry this sequence"))
                    continue
                except Exception as exc:  # noqa: BLE001 -- reported per sequence
                    fail(job, exc)
                    continue
                finish(job, data, frames, seconds)
        _drain(progress_queue, bars)
    except BaseException:
        # Interrupted (or failed): the workers' sequences in progress are dropped, so stop them now instead of
        # waiting for them to finish.
        stop_workers.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _drain(progress_queue, bars) -> None:
    while True:
        try:
            bars.frames(progress_queue.get_nowait())
        except queue_module.Empty:
            return


def _ray_task(job: SequenceJob, cfg: AppConfig, factory: PipelineFactory):
    return _run_job(job, cfg, factory)


def _run_ray(todo, cfg, factory, address, finish, fail, bars) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'posetrack_app[ray]'") from None
    if not ray.is_initialized():
        # "local" starts a private instance on this machine; "auto" or an address joins a running cluster.
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False)
    # Ray retries a task whose worker died (max_retries), so a lost node only costs that sequence a rerun;
    # the driver writes every file, so no worker ever holds a half-written output.
    # One GPU per task when the pipeline would use one and the cluster has any; the default config merely
    # prefers CUDA (with CPU fallback), which must not make tasks wait forever on a CPU-only cluster.
    gpus = 1 if pipeline_uses_gpu(cfg) and ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote = ray.remote(num_gpus=gpus, max_retries=3)(_ray_task)
    pending = {remote.remote(job, cfg, factory): job for job in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            job = pending.pop(ref)
            try:
                data, frames, seconds = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 -- ray wraps the task's exception; report it per sequence
                cause = getattr(exc, "cause", None) or exc
                fail(job, cause)
                continue
            bars.frames(frames)
            finish(job, data, frames, seconds)
