"""The library API: tracked poses in your own Python code, with the models loaded once.

    from posetrack_app import PoseTracker

    tracker = PoseTracker.from_config()                   # defaults; or a YAML preset and overrides
    for frame, persons in tracker.run("video.mp4"):       # a path, folder, webcam index, URL or numpy images
        for person in persons:
            ...  # person.track_id, person.box_xyxy, person.keypoints_xy, person.keypoint_scores, person.propagated

    persons = tracker.step(image_bgr)                     # your own loop: one BGR uint8 image at a time
    persons = tracker.step(image_bgr, boxes=my_boxes)     # your own detector's boxes: our poses and tracking
    tracker.reset()                                       # between videos of a step() loop

Shape glossary: N persons, K keypoints (`tracker.keypoint_names`), H x W image pixels.

Everything that comes out is a frozen dataclass of plain Python values and read-only numpy arrays; nothing is
printed (the modules log through `logging`). `run()` and `process()` read the source in a thread, and each starts
a new sequence (track ids from 1). `posetrack track` is `process()` per input.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

from .config import AppConfig, load_config
from .errors import UserError
from .pipeline import Pipeline, RunSummary, TrackingRun
from .structures import Detections, Frame, Tracks

log = logging.getLogger(__name__)

# What `run()` and `process()` accept as a source: a path (video file or image folder) or URL as text or Path, a
# webcam index, an opened FrameSource, or numpy images (a list, a generator, or an array [T, H, W, 3]).
SourceLike = Union[str, Path, int, object, Iterable[np.ndarray]]


def _read_only(array, dtype) -> np.ndarray:
    array = np.array(array, dtype=dtype)  # a copy: the caller's array is never aliased
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class TrackedPerson:
    """One tracked person in one frame.

    track_id: stable across frames for the same person; never reused within a run (a new person gets a new,
        larger id).
    box_xyxy: float32 [4] image pixels (x1, y1, x2, y2); box_score: the detector's score for it.
    keypoints_xy: float32 [K, 2] image pixels; keypoint_scores: float32 [K] in [0, 1], in the order of
        PoseTracker.keypoint_names.
    propagated: True when the pose was carried by optical-flow propagation from earlier frames (the detector did
        not see this person in this frame).
    raw_keypoints_xy: None when keypoint smoothing is off (the default); with tracker.smoothing.enabled,
        keypoints_xy are the smoothed keypoints and this is float32 [K, 2], read-only: the tracker's keypoints
        before smoothing.
    """

    track_id: int
    box_xyxy: np.ndarray
    box_score: float
    keypoints_xy: np.ndarray
    keypoint_scores: np.ndarray
    propagated: bool
    raw_keypoints_xy: Optional[np.ndarray] = None


@dataclass(frozen=True, eq=False)
class TrackedFrame:
    """The frame a result belongs to.

    index: position in the source (a gap marks frames left out as damaged, or never seen by a live run).
    time_s: seconds on the source's clock: the video's presentation time, the capture time of a live frame
        (seconds since its first frame), index / fps for image folders and numpy images.
    image_bgr: uint8 [H, W, 3], read-only.
    capture_unix_s: wall-clock (UNIX) time at which a live source captured it; None otherwise.
    latency_s: live sources: seconds from capture to this result; None otherwise.
    """

    index: int
    time_s: float
    image_bgr: np.ndarray
    capture_unix_s: Optional[float] = None
    latency_s: Optional[float] = None


def persons_from_tracks(tracks: Tracks) -> Tuple[TrackedPerson, ...]:
    """The pipeline's Tracks of one frame as TrackedPerson values (copies; the arrays are read-only)."""
    poses, raw = tracks.poses, tracks.raw_keypoints
    return tuple(
        TrackedPerson(int(track_id), _read_only(poses.boxes_xyxy[i], np.float32), float(poses.box_scores[i]),
                      _read_only(poses.keypoints[i], np.float32), _read_only(poses.keypoint_scores[i], np.float32),
                      bool(poses.proposed_by[i] >= 0), None if raw is None else _read_only(raw[i], np.float32))
        for i, track_id in enumerate(tracks.track_ids))


def tracked_frame(frame: Frame, tracks: Tracks) -> TrackedFrame:
    from .io.sinks import LATENCY_INFO_KEY

    image = frame.image_bgr.view()
    image.setflags(write=False)  # a read-only view: the pipeline's frame is shared with the output writer
    return TrackedFrame(frame.index, float(frame.timestamp_s), image, frame.capture_unix_s,
                        tracks.info.get(LATENCY_INFO_KEY))


class Run:
    """What `PoseTracker.run()` returns: iterate it for (TrackedFrame, persons) per frame; `summary` (RunSummary:
    frames, FPS, latency median/p95 for live sources, ...) is complete once the iteration has ended.

    Use it as a context manager when your loop may raise: the outputs are then discarded on an error and kept on
    a normal end, a `break` or Ctrl-C (see pipeline.TrackingRun).
    """

    def __init__(self, tracking_run: TrackingRun):
        self._run = tracking_run

    @property
    def summary(self) -> RunSummary:
        return self._run.summary

    def __enter__(self) -> "Run":
        self._run.__enter__()
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        return self._run.__exit__(exc_type, exc, traceback)

    def __iter__(self) -> Iterator[Tuple[TrackedFrame, Tuple[TrackedPerson, ...]]]:
        for frame, tracks in self._run:
            yield tracked_frame(frame, tracks), persons_from_tracks(tracks)

    def close(self) -> None:
        """Stop early and keep what was written."""
        self._run.close(keep=True)


def _config_from(config_path, overrides) -> AppConfig:
    """overrides: "key=value" strings (as --set takes them) or a mapping of dotted keys to values."""
    if isinstance(overrides, Mapping):
        # JSON is YAML: each value keeps its type through --set's parser (960, 0.5, true, "auto", [1, 2]).
        overrides = [f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}"
                     for key, value in overrides.items()]
    elif isinstance(overrides, str):
        raise UserError(f"overrides must be a list of 'key=value' strings or a dict, got the string {overrides!r}: "
                        f"wrap it in a list, e.g. overrides=[{overrides!r}]")
    return load_config(config_path, overrides)


class PoseTracker:
    """Detector -> pose network -> tracker, built once from a config and reused for any number of sources.

    config: the AppConfig it was built from; keypoint_names: the joint order of keypoints_xy;
    pipeline: the underlying Pipeline (stage timers, the stages themselves) for advanced use.
    """

    def __init__(self, config: AppConfig, pipeline: Pipeline):
        self.config = config
        self.pipeline = pipeline
        self._step_index = 0

    @classmethod
    def from_config(cls, config_path: Optional[Union[str, Path]] = None,
                    overrides: Union[Iterable[str], Mapping[str, object]] = (), *, config: Optional[AppConfig] = None,
                    detector=None, live: bool = False) -> "PoseTracker":
        """Builds the stages (loads the models) once.

        config_path: a YAML preset (configs/*.yaml) or None for the defaults; overrides: "key=value" strings as
        `--set` takes them (["detector.input_size=960"]) or a dict ({"detector.input_size": 960}); config: a ready
        AppConfig instead of both; detector: a ready detector object (`detector(frame) -> Detections`) in place of
        the configured one, run on whole frames (with detector.schedule=roi set, it is also called as
        `detector(frame, regions)`: float [R, 4] image boxes to look around); live: the sources will be live (a
        webcam, a stream), so "auto" settings favour latency over throughput (pipeline.detect_ahead).
        """
        from . import build

        if config is None:
            config = _config_from(config_path, overrides)
        elif config_path is not None or overrides:
            raise UserError("give either config= or config_path/overrides, not both")
        pipeline = build.build_pipeline(config, detector=detector, live=live)
        return cls(config, pipeline)

    @property
    def skeleton(self):
        return self.pipeline.skeleton

    @property
    def keypoint_names(self) -> Tuple[str, ...]:
        return tuple(self.pipeline.skeleton.keypoint_names)

    @property
    def step_fps(self) -> float:
        """The frame rate `step()` assumes when no timestamp_s is given: source.fps, or 30 when that is 0."""
        from .io.sources import DEFAULT_FOLDER_FPS

        return self.config.source.fps or DEFAULT_FOLDER_FPS

    def reset(self) -> None:
        """Start a new sequence: track ids restart from 1 and nothing of the previous frames is carried over.
        Call it between videos of a `step()` loop (`run()` and `process()` do it themselves)."""
        self.pipeline.reset()
        self._step_index = 0

    # -- one frame at a time --

    def step(self, image_bgr: np.ndarray, boxes=None, *, timestamp_s: Optional[float] = None,
             keypoints=None) -> Tuple[TrackedPerson, ...]:
        """Tracks the people of one image (BGR uint8 [H, W, 3], as cv2 gives it) after the images before it.

        boxes: None runs our detector; else this frame's person boxes from your own detector, float [N, 4]
            (x1, y1, x2, y2 pixels) or [N, 5] with a score column (1.0 when absent). Our pose network estimates
            their poses and our tracker gives the ids. Without pose weights configured (pose.weights) there is no
            pose network, and `keypoints` [N, K, 3] (x, y, score) must come with the boxes.
        timestamp_s: the image's time in seconds (the tracker's time limits are in seconds); default: the number
            of images since reset() / step_fps. Pass it for live cameras or variable frame rates.
        """
        from .io.sources import as_bgr_image

        image = as_bgr_image(image_bgr, "step(): image_bgr")
        index = self._step_index
        time_s = index / self.step_fps if timestamp_s is None else float(timestamp_s)
        if not np.isfinite(time_s):
            raise UserError(f"step(): timestamp_s must be a finite number of seconds, got {timestamp_s!r}")
        detections = None if boxes is None else self._caller_detections(boxes, keypoints)
        tracks = self.pipeline.step(Frame(index, image, time_s), detections)
        self._step_index += 1
        return persons_from_tracks(tracks)

    def _caller_detections(self, boxes, keypoints) -> Detections:
        from .pose.detector_keypoints import DetectorKeypointPoses

        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
            raise UserError(f"step(): boxes must be an array [N, 4] (x1, y1, x2, y2) or [N, 5] (with a score), got "
                            f"shape {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise UserError("step(): boxes hold NaN or infinite values")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise UserError("step(): boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1; convert (x, y, w, h) "
                            "boxes first: x2 = x + w, y2 = y + h")
        scores = boxes[:, 4] if boxes.shape[1] == 5 else np.ones(len(boxes))
        num_keypoints = self.skeleton.num_keypoints
        if keypoints is not None:
            keypoints = np.asarray(keypoints, dtype=np.float32)
            if keypoints.shape != (len(boxes), num_keypoints, 3):
                raise UserError(f"step(): keypoints must be an array [N, {num_keypoints}, 3] (x, y, score) matching "
                                f"the {len(boxes)} boxes, got shape {keypoints.shape}")
        elif isinstance(self.pipeline.pose_stage, DetectorKeypointPoses) and len(boxes):
            raise UserError("step(): boxes without keypoints need a pose network, and none is configured: set "
                            "pose.weights (a published name from `posetrack weights list`, or a .pth path), or pass "
                            "keypoints=[N, K, 3] from your own detector too")
        return Detections(boxes[:, :4], scores, keypoints)

    # -- whole sources --

    def open(self, source: SourceLike):
        """`source` as a FrameSource, with the config's source settings (timeouts, reconnects, damaged frames,
        fps). A FrameSource is returned as it is."""
        from .io.sources import FrameSource, ImageSequenceSource, open_source

        s = self.config.source
        if isinstance(source, FrameSource):
            return source
        if isinstance(source, bool):
            raise UserError(f"source must be a path, URL, webcam index or images, got {source!r}")
        if isinstance(source, (str, Path, int)):
            return open_source(str(source), open_timeout_s=s.open_timeout_s, damaged_frames=s.damaged_frames,
                               fps=s.fps, reconnect_timeout_s=s.reconnect_timeout_s)
        if isinstance(source, np.ndarray) and source.ndim != 4:
            raise UserError(f"run() takes several images (a list, a generator or an array [T, H, W, 3]), got an array "
                            f"of shape {source.shape}; for one image call step(image)")
        if isinstance(source, Iterable):
            return ImageSequenceSource(source, fps=self.step_fps)
        raise UserError(f"source must be a path, URL, webcam index or images, got {type(source).__name__}")

    def _open_run(self, source: SourceLike, outputs: Mapping[str, Optional[Union[str, Path]]], show: bool,
                  max_frames: Optional[int]):
        """(frame source, sinks) of one run, the tracker reset; the outputs are checked before anything opens."""
        from .io.sinks import check_output_paths, open_sinks

        if max_frames is not None and max_frames < 1:
            raise UserError(f"max_frames must be >= 1, got {max_frames}")
        frames = self.open(source)
        try:
            check_output_paths(**outputs, inputs={"SOURCE": frames.input_path})
            sinks = open_sinks(self.skeleton, frames.fps, _asdict(self.config.render), **outputs,
                               posetrack_options=_asdict(self.config.posetrack), show=show,
                               frame_name=frames.frame_name, live=frames.live,
                               raw_keypoints=self.config.tracker.smoothing.enabled)
        except BaseException:
            frames.close()
            raise
        self.reset()
        self.pipeline.timer.reset()
        return frames, sinks

    def run(self, source: SourceLike, *, max_frames: Optional[int] = None, out_video=None, out_json=None,
            out_csv=None, out_mot=None, out_posetrack=None, show: bool = False) -> Run:
        """Tracks a whole source, frame by frame: `for frame, persons in tracker.run(source)`.

        source: a video file, an image folder, a webcam index (0), an rtsp:// or http:// URL, or numpy images.
        Files are read in full, every frame; live sources always give the newest frame (those the pipeline had
        no time for are dropped) and reconnect after a dropped connection (source.reconnect_timeout_s).
        out_*: files written while you iterate (as `posetrack track` writes them: the annotated video, JSON
        Lines, CSV, MOTChallenge boxes, PoseTrack 2018), atomically: they appear complete when the run ends. A
        person whom FlowTrack confirms after their first frames is in the files from their first frame; the
        iteration gives each frame as it was decided (tracking/backfill.py).
        show: a live window (q ends the run). Starts a new sequence (reset()).
        """
        outputs = dict(video=out_video, jsonl=out_json, csv=out_csv, mot=out_mot, posetrack=out_posetrack)
        frames, sinks = self._open_run(source, outputs, show, max_frames)
        return Run(TrackingRun(self.pipeline, frames, sinks, max_frames=max_frames,
                               queue_size=self.config.source.queue_size))

    def process(self, source: SourceLike, *, max_frames: Optional[int] = None, out_video=None, out_json=None,
                out_csv=None, out_mot=None, out_posetrack=None, show: bool = False,
                on_frame: Optional[Callable[[TrackedFrame, Tuple[TrackedPerson, ...]], None]] = None) -> RunSummary:
        """`run()` to the end of the source, writing the outputs; returns the run's summary. Ctrl-C (SIGTERM,
        SIGHUP under the CLI) ends it early with the outputs kept and summary.interrupted set. on_frame(frame,
        persons) is called for each frame as it is done (e.g. a progress bar)."""
        from . import pipeline as pipeline_module  # looked up at call time, so a benchmark can wrap run_stream

        outputs = dict(video=out_video, jsonl=out_json, csv=out_csv, mot=out_mot, posetrack=out_posetrack)
        frames, sinks = self._open_run(source, outputs, show, max_frames)
        callback = None
        if on_frame is not None:
            def callback(frame, tracks):
                on_frame(tracked_frame(frame, tracks), persons_from_tracks(tracks))
        return pipeline_module.run_stream(self.pipeline, frames, sinks, max_frames=max_frames,
                                          queue_size=self.config.source.queue_size, on_frame=callback)


def _asdict(section) -> dict:
    import dataclasses

    return dataclasses.asdict(section)
