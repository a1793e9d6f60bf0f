"""`posetrack track SOURCE`: run the tracker on a video file, webcam, image folder or stream."""
from __future__ import annotations

import logging
import sys

from ..errors import UserError
from ..io.atomic import check_output_path
from ._common import add_config_arguments, config_from_args

COMMAND = "track"
HELP = "track people in a video, webcam (0), folder of images or RTSP/HTTP stream"

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="video file, webcam index (0), image folder, or rtsp:// URL")
    parser.add_argument("--out-video", metavar="F", help="annotated video (.mp4 or .avi)")
    parser.add_argument("--out-json", metavar="F", help="JSON Lines: one object per frame with tracked poses")
    parser.add_argument("--out-mot", metavar="F", help="MOTChallenge box file (frame,id,left,top,w,h,score,-1,-1,-1)")
    parser.add_argument("--show", action="store_true", help="live window (q quits)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def _summary_line(summary) -> str:
    stages = ", ".join(f"{name} {ms:.1f} ms" for name, ms in summary.stage_mean_ms.items())
    per_stage_fps = ", ".join(f"{name} {1000.0 / ms:.0f}" for name, ms in summary.stage_mean_ms.items() if ms > 0)
    line = (f"{summary.frames} frames, {summary.tracks} tracks, {summary.fps:.1f} FPS end to end "
            f"(mean per frame: {stages}; stage FPS: {per_stage_fps})")
    if summary.dropped_frames:
        line += f", {summary.dropped_frames} stale frames dropped"
    return line


def run(args) -> int:
    from ..io.sinks import JsonLinesSink, MotChallengeSink, VideoSink, WindowSink
    from ..io.sources import open_source
    from ..build import build_pipeline
    from ..pipeline import run_stream

    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}")
    cfg = config_from_args(args)
    for path in (args.out_video, args.out_json, args.out_mot):
        if path:
            check_output_path(path)
    if not (args.out_video or args.out_json or args.out_mot or args.show):
        log.warning("no output requested: add --out-video, --out-json, --out-mot or --show")
    source = open_source(args.source, open_timeout_s=cfg.source.open_timeout_s)
    pipeline = build_pipeline(cfg)
    skeleton = pipeline.skeleton
    render_options = {
        "keypoint_score_threshold": cfg.render.keypoint_score_threshold,
        "draw_boxes": cfg.render.draw_boxes,
        "line_thickness": cfg.render.line_thickness,
        "draw_fps": cfg.render.draw_fps,
    }
    sinks = []
    try:
        if args.out_video:
            sinks.append(VideoSink(args.out_video, skeleton, source.fps, render_options))
        if args.out_json:
            sinks.append(JsonLinesSink(args.out_json, skeleton))
        if args.out_mot:
            sinks.append(MotChallengeSink(args.out_mot))
        if args.show:
            sinks.append(WindowSink(skeleton, render_options))
    except BaseException:
        for sink in sinks:
            sink.close(keep=False)
        raise

    total = source.frame_count
    if args.max_frames is not None and total is not None:
        total = min(total, args.max_frames)
    progress = None
    if not args.no_progress:
        from ..progress import progress_bar
        progress = progress_bar(total=total, unit="frame", desc=source.name[-40:])

    def on_frame(frame, tracks):
        if progress is not None:
            progress.update(1)
            progress.set_postfix(persons=len(tracks), refresh=False)

    try:
        summary = run_stream(pipeline, source, sinks, max_frames=args.max_frames, queue_size=cfg.source.queue_size,
                             on_frame=on_frame)
    finally:
        if progress is not None:
            progress.close()
    print(_summary_line(summary), file=sys.stderr)
    if summary.truncated:
        print(f"note: {source.name} ended early (truncated or corrupt); outputs hold the frames read", file=sys.stderr)
    return 130 if summary.interrupted else 0
