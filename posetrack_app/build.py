"""Config -> objects: the one place that maps an AppConfig to a detector, a pose stage, a tracker and a Pipeline.

Also the policy for pose weights: a published name is fetched (pose/weights.py), a configured file or engine that is
missing is an error, and only without weights configured are the detector's own keypoints used (said once).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Optional, Set

from .config import AppConfig
from .errors import ConfigError, UserError
from .pipeline import Pipeline
from .timing import StageTimer

log = logging.getLogger(__name__)


class WarnOnce:
    """Logs a warning the first time its key is seen, then stays quiet for that key."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.seen: Set[str] = set()

    def __call__(self, key: str, message: str, *args) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.logger.warning(message, *args)


# One plain warning per process, however many pipelines (sequences, batch workers) get built.
PROCESS_WARNINGS = WarnOnce(log)

# Frames read ahead with the roi schedule. Its whole frames are known by the clock, so each can start this many frames
# before its turn and overlap the window frames before it; windows still wait for the frame before (pipeline.py).
# Measured on 2 cores (benchmarks/results/peer_fps_cpu_roi_lookahead.md; the tracks are the same): 8 frames ahead ran
# at 1.36x / 1.33x the FPS of 1 at 640 / 960 on a 10 fps clip (a whole frame every 3rd frame) and 1.15x at 25 fps
# (every 8th); 4 gained as much at 10 fps, less at 25 (1.13x / 1.06x in a two-round run).
ROI_DETECT_AHEAD = 8


def build_detector(cfg: AppConfig, on_first_call: bool = False):
    """The detector cfg.detector describes; its `description` says which backend, device and precision run it.
    on_first_call: its network is built when the first frame comes (always so for input size "auto", which
    depends on the frame size)."""
    from .detection.detector import YoloPoseDetector

    d = cfg.detector
    if d.precision == "int8" and not d.int8_calibration:
        # Measured on the dev suite (benchmarks/results/detector_accuracy_vnni.md), PETS09's small pedestrians at 960,
        # MOTA / IDF1: fp32 71.7 / 75.1; int8 calibrated on the two photos (large people) 62.3 / 60.7, calibrated on
        # other street video (the MOT17 mini frames) 70.9 / 76.3.
        PROCESS_WARNINGS("int8-default-calibration",
                         "int8 detector calibrated on Ultralytics' two sample photos: its scores can drift on video "
                         "unlike them (small or distant people); set detector.int8_calibration to a video or image "
                         "folder like yours")
    if d.input_size == "auto" or on_first_call:
        from .config import replace
        from .input_size import OnDemandDetector

        fixed_size = None if d.input_size == "auto" else d.input_size
        return OnDemandDetector(lambda size: build_detector(replace(cfg, **{"detector.input_size": size})), fixed_size)
    detector = YoloPoseDetector.build(
        d.model, backend=d.backend, device=d.device, precision=d.precision, input_size=d.input_size,
        score_threshold=detector_score_threshold(cfg), nms_iou_threshold=d.nms_iou_threshold,
        max_detections=d.max_detections,
        cache_dir=d.cache_dir, providers=tuple(d.providers), intra_op_threads=d.intra_op_threads,
        ort_spinning=d.ort_spinning, split_head=d.split_head, engine=d.engine, cuda_graphs=d.cuda_graphs,
        int8_calibration=d.int8_calibration, int8_calibration_frames=d.int8_calibration_frames,
    )
    # "auto" choices are resolved by now: say what runs (the run summary can show detector.description too).
    log.info("detector: %s", detector.description)
    return detector


def detector_score_threshold(cfg: AppConfig) -> float:
    """The score the detector runs at: detector.score_threshold, or FlowTrack's lower tracker.flow.low_score_threshold
    (weaker detections that only continue existing tracks; the tracker tells them apart by their score)."""
    if cfg.tracker.kind == "flowtrack":
        return min(cfg.detector.score_threshold, cfg.tracker.flow.low_score_threshold)
    return cfg.detector.score_threshold


def resolve_schedule(cfg: AppConfig) -> str:
    """detector.schedule with "auto" resolved: "roi" where the detector can run on windows (ONNX Runtime on the CPU),
    detector.detect_every is 1 and FlowTrack tracks, else "fixed". A GPU detects whole frames ahead instead; the IoU
    tracker does not say where its lost people are, and with windows it lost 1.4 MOTA on syn7 and switched 23 more
    ids on PETS09 (benchmarks/results/detector_accuracy_roi_iou.md)."""
    from .detection.backends.base import resolve_choice

    d = cfg.detector
    if d.schedule != "auto":
        return d.schedule
    backend, device, _ = resolve_choice(d.backend, d.device, d.precision, d.model)
    windows = backend == "onnxruntime" and device == "cpu"
    return "roi" if windows and d.detect_every == 1 and cfg.tracker.kind == "flowtrack" else "fixed"


def build_detection_schedule(cfg: AppConfig):
    """When and where the pipeline runs the detector (cfg.detector.schedule; detection/schedule.py)."""
    from .detection.schedule import build_schedule

    d = cfg.detector
    kind = resolve_schedule(cfg)
    skips_frames = kind == "adaptive" or d.detect_every > 1
    if skips_frames and cfg.tracker.kind != "flowtrack":
        raise ConfigError(f"detector.schedule={d.schedule} with detect_every={d.detect_every} skips frames and needs "
                          "tracker.kind=flowtrack to carry them; set detector.schedule=fixed and "
                          "detector.detect_every=1 for the IoU tracker")
    return build_schedule(kind, detect_every=d.detect_every, adaptive_max_interval_s=d.adaptive_max_interval_s,
                          adaptive_min_reliable_fraction=d.adaptive_min_reliable_fraction,
                          roi_full_interval_s=d.roi_full_interval_s, roi_margin=d.roi_margin)


def build_pose_stage(cfg: AppConfig, warn_once: Optional[WarnOnce] = None):
    """The top-down estimator over the configured weights (a published name, fetched on first use, or a .pth
    path) or exported engine. A configured weights file or engine that cannot be had is an error; with neither
    configured, the detector's own keypoints are used, said once per `warn_once` (by default once per process),
    unless pose.require_weights makes that an error too."""
    from .pose.detector_keypoints import DetectorKeypointPoses

    p = cfg.pose
    if p.model == "detector":
        return DetectorKeypointPoses()
    # An exported engine (.onnx / .engine) runs without the .pth it came from.
    engine = Path(p.engine).expanduser() if p.engine and p.backend != "torch" else None
    if engine is not None and not engine.is_file():
        raise UserError(f"pose.engine file {engine} not found: build it with `posetrack export`, fix the path, or "
                        f"leave pose.engine empty")
    if not p.weights and engine is None:
        if p.require_weights:
            raise UserError(f"no pose.weights configured and pose.require_weights is true: pass --set "
                            f"pose.weights=NAME (`posetrack weights list`) or the path of a checkpoint for {p.model}")
        (warn_once or PROCESS_WARNINGS)(
            "pose-fallback", "no pose.weights configured: using the detector's own keypoints instead of %s. Pass "
            "--set pose.weights=NAME (`posetrack weights list`) or PATH.pth for HRNet poses.", p.model)
        return DetectorKeypointPoses()
    weights = None
    if p.weights:
        from .pose.weights import resolve, terminal_progress

        weights = resolve(p.weights, model=p.model, keypoints=p.keypoints,
                          progress=terminal_progress(f"pose weights {p.weights}"))
        if not weights.is_file():
            raise UserError(f"pose.weights file {weights} not found: fix the path, give a published name "
                            f"(`posetrack weights list`), or leave pose.weights empty for the detector's keypoints")

    from .pose.backends import BackendOptions, create_backend
    from .pose.models import get_model_spec
    from .pose.topdown import TopDownEstimator
    from .skeleton import get_skeleton

    try:
        skeleton = get_skeleton(p.keypoints)
    except KeyError as exc:
        raise ConfigError(f"pose.keypoints: {exc.args[0]}") from None
    spec = get_model_spec(p.model)
    options = BackendOptions(
        model_name=p.model, num_keypoints=skeleton.num_keypoints, input_hw=spec.input_hw,
        keypoint_layout=skeleton.name, weights_path=str(weights) if weights else None, device=p.device,
        precision=p.precision, channels_last=p.channels_last, compile=p.compile, cuda_graphs=p.cuda_graphs,
        cuda_graph_batches=tuple(p.cuda_graph_batches), max_batch=p.max_batch, engine_path=p.engine,
        providers=tuple(p.providers), intra_op_threads=p.intra_op_threads,
    )
    backend = create_backend(p.backend, options)
    if p.cuda_graphs and hasattr(backend, "warmup"):
        # Every bucket captured now, before the stream starts: captured lazily, the first frame with a new number
        # of people stalled the stream for the capture and cuDNN's timing of its shapes (0.1-1.4 s each on an
        # H200; PETS09 at 960 ran at 38.9 FPS end to end against a median frame of 16.4 ms, RESULTS.md, GPU).
        started = time.perf_counter()
        costs = backend.warmup()
        log.info("pose network: CUDA graphs for batches %s captured in %.1f s", ", ".join(map(str, costs)),
                 time.perf_counter() - started)
    return TopDownEstimator(
        backend, skeleton=skeleton, flip_test=p.flip_test, flip_shift_cells=p.flip_shift_cells, dark=p.dark,
        dark_kernel=p.dark_kernel, clip_scores=p.clip_scores, box_padding=p.box_padding, max_batch=p.max_batch,
    )


def build_tracker(cfg: AppConfig, skeleton):
    """cfg.tracker.kind's tracker; wrapped in the One-Euro keypoint smoother when tracker.smoothing.enabled."""
    tracker = _build_bare_tracker(cfg, skeleton)
    if not cfg.tracker.smoothing.enabled:
        return tracker
    from .tracking.smoothing import SmoothedTracker
    return SmoothedTracker.from_config(tracker, cfg.tracker.smoothing)


def _build_bare_tracker(cfg: AppConfig, skeleton):
    t = cfg.tracker
    if t.kind == "iou":
        from .tracking.iou_tracker import IouTracker
        return IouTracker.from_config(t.iou, skeleton)
    if t.kind == "flowtrack":
        from .config import replace
        from .tracking.flowtrack import FlowTracker
        flow = t.flow
        if cfg.detector.schedule == "adaptive" and flow.max_propagation_s < cfg.detector.adaptive_max_interval_s:
            # The adaptive schedule may leave adaptive_max_interval_s between detections: carry the tracks that long.
            flow = replace(flow, max_propagation_s=cfg.detector.adaptive_max_interval_s)
        try:
            return FlowTracker.from_config(flow, skeleton, high_score_threshold=cfg.detector.score_threshold)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    raise ConfigError(f"unknown tracker.kind {t.kind!r}; choose one of: flowtrack, iou")


def build_pipeline(cfg: AppConfig, timer: Optional[StageTimer] = None, *, detector=None,
                   wrap_detector: Optional[Callable] = None, live: bool = False) -> Pipeline:
    """The pipeline `cfg` describes. `detector`: a ready detector to use instead of building cfg.detector's.
    `wrap_detector(network) -> detector`: wraps each detector built from cfg (the bench command's synthetic clip
    times the real network this way). `live`: it will track live sources (webcam, stream), so "auto" choices favour
    latency over throughput."""
    if detector is not None and cfg.detector.schedule == "auto":
        # A caller's own detector is called as detector(frame): windows (the roi schedule) are asked of it only when
        # its caller sets detector.schedule=roi.
        from .config import replace
        cfg = replace(cfg, **{"detector.schedule": "fixed"})
    schedule = build_detection_schedule(cfg)
    pose_stage = build_pose_stage(cfg)
    detect_ahead = resolve_detect_ahead(cfg, pose_stage, live=live)
    ahead_detector = None
    if detector is None:
        if detect_ahead >= 2:
            # The worker threads' calls run at once, so each gets its share of the cores; `step()` and the calls the
            # run makes itself keep the detector with all of them. A run of several frames detects them all on the
            # worker threads, so that one is built only when called (its start-up would be a second network's).
            ahead_detector = build_detector(_detector_threads_shared(cfg, detect_ahead))
            detector = build_detector(cfg, on_first_call=True)
        else:
            detector = build_detector(cfg)
        if wrap_detector is not None:
            detector = wrap_detector(detector)
            ahead_detector = wrap_detector(ahead_detector) if ahead_detector is not None else None
    tracker = build_tracker(cfg, pose_stage.skeleton)
    return Pipeline(detector, pose_stage, tracker, schedule=schedule,
                    box_merge_iou_threshold=cfg.tracker.box_merge_iou_threshold, timer=timer,
                    detect_ahead=detect_ahead, ahead_detector=ahead_detector)


def resolve_detect_ahead(cfg: AppConfig, pose_stage, live: bool = False) -> int:
    """pipeline.detect_ahead as a number of frames; see PipelineConfig for what "auto" picks and why."""
    from .detection.backends.base import resolve_choice
    from .pose.detector_keypoints import DetectorKeypointPoses

    d = cfg.detector
    backend, device, _ = resolve_choice(d.backend, d.device, d.precision, d.model)
    # ONNX Runtime sessions take concurrent runs; the other backends hold one execution context each.
    concurrent = backend == "onnxruntime"
    choice = cfg.pipeline.detect_ahead
    if choice == "auto":
        if not isinstance(pose_stage, DetectorKeypointPoses):
            return 1 if str(cfg.pose.device).startswith("cuda") else 0
        # Live: two frames at once on a CPU adds a frame of latency (each call then has half the cores) for a
        # throughput a stream that drops stale frames barely needs (benchmarks/results/live_latency_cpu_ahead.md).
        if not (concurrent and device == "cpu" and not live):
            return 0
        return ROI_DETECT_AHEAD if resolve_schedule(cfg) == "roi" else 2
    if choice > 1 and not concurrent:
        raise ConfigError(f"pipeline.detect_ahead={choice} runs the detector on several frames at once, which only "
                          f"detector.backend=onnxruntime supports (this config runs {backend}): use 0 or 1")
    return choice


def _detector_threads_shared(cfg: AppConfig, detect_ahead: int) -> AppConfig:
    """The config of the detector that several frames at once call: each call gets its share of the detector's
    threads (all cores when detector.intra_op_threads is 0); one thread per core in every call would oversubscribe
    the machine."""
    if detect_ahead < 2:
        return cfg
    from .config import replace

    total = cfg.detector.intra_op_threads or os.cpu_count() or 1
    return replace(cfg, **{"detector.intra_op_threads": max(1, total // detect_ahead)})
