"""`posetrack track SOURCE`: run the tracker on a video file, webcam, image folder or stream."""
from __future__ import annotations

import dataclasses
import logging
import sys

from ..errors import UserError
from ._common import add_config_arguments, config_from_args

COMMAND = "track"
HELP = "track people in a video, webcam (0), folder of images or RTSP/HTTP stream"

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="video file, webcam index (0), image folder, or rtsp:// URL")
    parser.add_argument("--out-video", metavar="F", help="annotated video (.mp4, .mov, .m4v, .mkv or .avi)")
    parser.add_argument("--out-json", metavar="F", help="JSON Lines (.jsonl or .json): one object per frame with "
                                                        "tracked poses")
    parser.add_argument("--out-mot", metavar="F", help="MOTChallenge box file (frame,id,left,top,w,h,score,-1,-1,-1)")
    parser.add_argument("--out-posetrack", metavar="F", help="PoseTrack 2018 file (.json) of the whole run, as the "
                                                             "batch command writes; `posetrack eval` scores it")
    parser.add_argument("--show", action="store_true", help="live window (q quits)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def _summary_line(summary, pose_network: bool, damaged_frames: int) -> str:
    # Per-stage FPS is not shown: for a stage of 0.02 ms (the detector-keypoint pose stage) it reads "45907 FPS",
    # which says nothing; the mean milliseconds do.
    stages = ", ".join(f"{name} {ms:.1f} ms" if name != "pose" or pose_network else "pose: detector keypoints"
                       for name, ms in summary.stage_mean_ms.items())
    line = (f"{summary.frames} frames, {summary.tracks} tracks, {summary.fps:.1f} FPS end to end "
            f"(mean per frame: {stages})")
    if summary.dropped_frames:
        line += f", {summary.dropped_frames} stale frames dropped"
    if damaged_frames:
        line += f", {damaged_frames} damaged frame{'s' if damaged_frames != 1 else ''} skipped"
    return line


def _file_input(spec: str):
    """The path SOURCE names when it is a file or folder (not a webcam index or a stream URL)."""
    from ..io.sources import STREAM_PREFIXES

    return None if spec.isdigit() or spec.lower().startswith(STREAM_PREFIXES) else spec


def run(args) -> int:
    from .. import interrupts
    from ..build import build_pipeline
    from ..io.sinks import check_output_paths, open_sinks
    from ..io.sources import open_source
    from ..pipeline import run_stream
    from ..pose.detector_keypoints import DetectorKeypointPoses

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}")
    cfg = config_from_args(args)
    outputs = dict(video=args.out_video, jsonl=args.out_json, mot=args.out_mot, posetrack=args.out_posetrack)
    check_output_paths(**outputs, inputs={"SOURCE": _file_input(args.source)})
    if not (any(outputs.values()) or args.show):
        log.warning("no output requested: add --out-video, --out-json, --out-mot, --out-posetrack or --show")
    source = open_source(args.source, open_timeout_s=cfg.source.open_timeout_s,
                         damaged_frames=cfg.source.damaged_frames)
    pipeline = build_pipeline(cfg)
    sinks = open_sinks(pipeline.skeleton, source.fps, dataclasses.asdict(cfg.render), **outputs,
                       posetrack_options=dataclasses.asdict(cfg.posetrack), show=args.show,
                       frame_name=source.frame_name)

    progress = None
    try:
        if not args.no_progress:
            from ..progress import progress_bar
            total = source.frame_count
            if args.max_frames is not None and total is not None:
                total = min(total, args.max_frames)
            progress = progress_bar(total=total, unit="frame", desc=source.name[-40:])

        def on_frame(frame, tracks):
            if progress is not None:
                with interrupts.deferred():  # never inside the progress bar's lock
                    progress.update(1)
                    progress.set_postfix(persons=len(tracks), refresh=False)

        summary = run_stream(pipeline, source, sinks, max_frames=args.max_frames, queue_size=cfg.source.queue_size,
                             on_frame=on_frame)
    except BaseException:
        # run_stream discards the outputs of a failed run; this covers a failure before it took them over.
        for sink in sinks:
            sink.close(keep=False)
        raise
    finally:
        if progress is not None:
            progress.close()
    pose_network = not isinstance(pipeline.pose_stage, DetectorKeypointPoses)
    line = _summary_line(summary, pose_network, source.damaged_frames)
    if summary.interrupted:
        line = f"interrupted by {interrupts.signal_name()}: {line}; the outputs hold the frames processed"
    print(line, file=sys.stderr)
    if summary.truncated:
        print(f"note: {source.name} ended early (truncated or corrupt); outputs hold the frames read", file=sys.stderr)
    return interrupts.exit_code() if summary.interrupted else 0
