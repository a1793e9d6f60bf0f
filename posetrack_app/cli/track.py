"""`posetrack track SOURCE [SOURCE ...]`: run the tracker on video files, a webcam, image folders or streams.

Built on the library API (api.PoseTracker): the models are loaded once, then each input is `process()`ed in turn
into its own output set. With several inputs every --out-* name must hold `{stem}`, replaced by the input's name.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserError
from ._common import add_config_arguments, config_from_args

COMMAND = "track"
HELP = "track people in videos, a webcam (0), folders of images or videos, or RTSP/HTTP streams"

log = logging.getLogger(__name__)

# Output options: argparse destination (= PoseTracker.process keyword) -> open_sinks keyword.
OUTPUT_ARGUMENTS = {"out_video": "video", "out_json": "jsonl", "out_csv": "csv", "out_mot": "mot",
                    "out_posetrack": "posetrack"}
STEM = "{stem}"


def add_arguments(parser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="video file, webcam index (0), folder of images, folder of videos, or rtsp:// / http:// "
                             "URL; several are tracked one after the other with the models loaded once, each into "
                             "its own outputs (put {stem} in the --out-* names)")
    parser.add_argument("--out-video", metavar="F", help="annotated video (.mp4, .mov, .m4v, .mkv or .avi)")
    parser.add_argument("--out-json", metavar="F", help="JSON Lines (.jsonl or .json): one object per frame with "
                                                        "tracked poses")
    parser.add_argument("--out-csv", metavar="F", help="CSV (.csv): one row per person per frame (track id, frame, "
                                                       "time, box, score, propagated flag, x/y/score per joint)")
    parser.add_argument("--out-mot", metavar="F", help="MOTChallenge box file (frame,id,left,top,w,h,score,-1,-1,-1)")
    parser.add_argument("--out-posetrack", metavar="F", help="PoseTrack 2018 file (.json) of the whole run, as the "
                                                             "batch command writes; `posetrack eval` scores it")
    parser.add_argument("--show", action="store_true", help="live window (q quits)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (of each input)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def _summary_line(summary, pose_network: bool, damaged_frames: int, detector: Optional[str] = None,
                  frames_ahead: int = 1) -> str:
    # Per-stage FPS is not shown: for a stage of 0.02 ms (the detector-keypoint pose stage) it reads "45907 FPS",
    # which says nothing; the mean milliseconds do.
    def stage(name: str, ms: float) -> str:
        if name == "pose" and not pose_network:
            return "pose: detector keypoints"
        # Frames detected ahead run beside the frame being tracked, several at once: each call takes longer than the
        # frame time it costs. A lone frame (a photo) is detected by itself.
        overlapped = name == "detect" and frames_ahead > 1 and summary.frames > 1
        ahead = f" (up to {frames_ahead} frames ahead)" if overlapped else ""
        return f"{name} {ms:.1f} ms{ahead}"

    stages = ", ".join(stage(name, ms) for name, ms in summary.stage_mean_ms.items())
    line = (f"{summary.frames} frames, {summary.tracks} tracks, {summary.fps:.1f} FPS end to end "
            f"(mean per frame: {stages})")
    if summary.latency_median_ms is not None:
        line += (f", latency capture -> result median {summary.latency_median_ms:.0f} ms, "
                 f"p95 {summary.latency_p95_ms:.0f} ms")
    if summary.dropped_frames:
        line += f", {summary.dropped_frames} stale frames dropped"
    if summary.reconnects:
        line += f", {summary.reconnects} reconnect{'s' if summary.reconnects != 1 else ''}"
    if damaged_frames:
        line += f", {damaged_frames} damaged frame{'s' if damaged_frames != 1 else ''} skipped"
    if detector:
        line += f"; detector: {detector}"
    return line


def file_input(spec: str) -> Optional[str]:
    """The path SOURCE names when it is a file or folder (not a webcam index or a stream URL)."""
    from ..io.sources import STREAM_PREFIXES

    return None if spec.isdigit() or spec.lower().startswith(STREAM_PREFIXES) else spec


def expand_inputs(specs: List[str]) -> List[str]:
    """The inputs SOURCE arguments name, in order: a folder without images but with video files stands for its
    videos (sorted by name); anything else for itself. A file or folder that does not exist is an error here,
    before any model loads."""
    from ..io.sources import list_images, list_videos

    inputs = []
    for spec in specs:
        if file_input(spec) is None:
            inputs.append(spec)
            continue
        path = Path(spec).expanduser()
        if not path.exists():
            raise UserError(f"video file {path} not found: check the path")
        if path.is_dir() and not list_images(path):
            videos = list_videos(path)
            if videos:
                inputs += [str(v) for v in videos]
                continue
        inputs.append(spec)
    return inputs


def input_stem(spec: str) -> str:
    """What {stem} becomes for an input: a file's name without its extension, a folder's name, `webcam0`, or the
    host and path of a stream URL with other characters as '_'."""
    if spec.isdigit():
        return f"webcam{spec}"
    if file_input(spec) is None:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", spec.split("://", 1)[-1]).strip("_.") or "stream"
    path = Path(spec).expanduser()
    return path.name if path.is_dir() else path.stem


def output_sets(args, inputs: List[str]) -> List[Dict[str, Optional[str]]]:
    """Each input's outputs (process() keywords -> path), with {stem} filled in; UserError for a name without
    {stem} when there are several inputs, or with another {placeholder}."""
    templates = {dest: getattr(args, dest) for dest in OUTPUT_ARGUMENTS}
    options = {dest: "--" + dest.replace("_", "-") for dest in OUTPUT_ARGUMENTS}
    for key, template in templates.items():
        if not template:
            continue
        unknown = [p for p in re.findall(r"\{[^{}]*\}", template) if p != STEM]
        if unknown:
            raise UserError(f"{options[key]} {template}: unknown placeholder {unknown[0]}; the only one is {STEM}, "
                            "the input's name")
        if len(inputs) > 1 and STEM not in template:
            suffix = Path(template).suffix
            raise UserError(f"{options[key]} {template} would be written by each of the {len(inputs)} inputs: put "
                            f"{STEM} in the name, e.g. {options[key]} 'out/{STEM}{suffix}'")
    return [{key: template.replace(STEM, input_stem(spec)) if template else None
             for key, template in templates.items()} for spec in inputs]


def check_outputs(inputs: List[str], sets: List[Dict[str, Optional[str]]]) -> None:
    """Every output of every input: a valid name in a writable folder, not an input, not another output."""
    from ..io.atomic import check_distinct_outputs
    from ..io.sinks import OUTPUT_OPTIONS, check_output_paths

    several = len(inputs) > 1
    # An input named twice (`a.mp4 a.mp4`, or a folder and a video inside it) gets its position in the label: with
    # the name alone, the second input's outputs would replace the first's here, go unchecked, and the second run
    # would overwrite the first one's files.
    repeated = {spec for spec in inputs if inputs.count(spec) > 1}
    labelled = {}
    for number, (spec, outputs) in enumerate(zip(inputs, sets), start=1):
        name = f"input {number} ({spec})" if spec in repeated else spec
        for dest, path in outputs.items():
            option = OUTPUT_OPTIONS[OUTPUT_ARGUMENTS[dest]]
            if path:
                labelled[f"{option} of {name}" if several else option] = path
    sources = {f"SOURCE {spec}" if several else "SOURCE": file_input(spec) for spec in inputs}
    check_distinct_outputs(labelled, sources)
    for outputs in sets:
        check_output_paths(**{OUTPUT_ARGUMENTS[dest]: path for dest, path in outputs.items()})


def run(args) -> int:
    from .. import interrupts
    from ..api import PoseTracker
    from ..pose.detector_keypoints import DetectorKeypointPoses

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}")
    cfg = config_from_args(args)  # a config mistake is named first, before the inputs are looked at
    inputs = expand_inputs(args.sources)
    sets = output_sets(args, inputs)
    check_outputs(inputs, sets)
    if not (any(sets[0].values()) or args.show):
        log.warning("no output requested: add --out-video, --out-json, --out-csv, --out-mot, --out-posetrack or "
                    "--show")
    tracker = PoseTracker.from_config(config=cfg, live=any(file_input(spec) is None for spec in inputs))
    pose_network = not isinstance(tracker.pipeline.pose_stage, DetectorKeypointPoses)
    for number, (spec, outputs) in enumerate(zip(inputs, sets), start=1):
        if len(inputs) > 1:
            log.info("input %d of %d: %s", number, len(inputs), spec)
        source = tracker.open(spec)
        summary = _track_one(tracker, source, outputs, args)
        # What ran (backend, precision, device, input size): known once the first frame has built the detector.
        line = _summary_line(summary, pose_network, source.damaged_frames, tracker.pipeline.detector_description,
                             frames_ahead=tracker.pipeline.detect_ahead)
        if len(inputs) > 1:
            line = f"{spec}: {line}"
        if summary.interrupted:
            line = f"interrupted by {interrupts.signal_name()}: {line}; the outputs hold the frames processed"
        print(line, file=sys.stderr)
        if summary.truncated:
            print(f"note: {source.name} ended early (truncated or corrupt); outputs hold the frames read",
                  file=sys.stderr)
        if summary.connection_lost:
            print(f"note: {source.name} stayed unreachable for source.reconnect_timeout_s="
                  f"{tracker.config.source.reconnect_timeout_s:g} s: the run ended there; outputs hold the frames "
                  "processed", file=sys.stderr)
        if summary.interrupted:
            if number < len(inputs):
                print(f"{len(inputs) - number} input(s) not started", file=sys.stderr)
            return interrupts.exit_code()
    return 0


def _track_one(tracker, source, outputs: Dict[str, Optional[str]], args):
    """One input through tracker.process with a progress bar; the source is closed whatever happens."""
    from .. import interrupts

    progress = None
    try:
        if not args.no_progress:
            from ..progress import progress_bar
            total = source.frame_count
            if args.max_frames is not None and total is not None:
                total = min(total, args.max_frames)
            progress = progress_bar(total=total, unit="frame", desc=source.name[-40:])

        def on_frame(frame, persons):
            if progress is not None:
                with interrupts.deferred():  # never inside the progress bar's lock
                    progress.update(1)
                    progress.set_postfix(persons=len(persons), refresh=False)

        return tracker.process(source, max_frames=args.max_frames, show=args.show,
                               on_frame=on_frame if progress is not None else None, **outputs)
    except BaseException:
        source.close()  # process() closes it once it has taken it over; before that, this does
        raise
    finally:
        if progress is not None:
            progress.close()
