"""`posetrack bench [SOURCE]`: per-stage timings (median, p95, share of the frame time) and end-to-end FPS of the
pipeline on a video, or on a synthetic clip of N drawn people when no SOURCE is given.

Warm-up frames are run and not counted. GPU stages are timed with a device synchronize before each clock read
(--timer synchronize, default) or with CUDA events (--timer events). The JSON record carries the machine (CPU,
cores, GPU, driver, CUDA, torch, ONNX Runtime, TensorRT) and the 1-minute load average at start and end.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from contextlib import contextmanager

from ..errors import UserError
from ..io.atomic import atomic_write, check_distinct_outputs, check_output_path, write_json_atomic
from ._common import add_config_arguments, config_from_args

COMMAND = "bench"
HELP = "time each pipeline stage (median, p95, share) and end-to-end FPS on a video or a synthetic clip"

log = logging.getLogger(__name__)

DEFAULT_PERSONS = 5
DEFAULT_RESOLUTION = "720p"


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SOURCE", nargs="?",
                        help="video file, image folder, webcam index or stream; omitted: a synthetic clip")
    parser.add_argument("--frames", type=int, default=150, metavar="N", help="frames measured after warm-up (150)")
    parser.add_argument("--warmup", type=int, default=10, metavar="N", help="frames run first and not counted (10)")
    parser.add_argument("--json", metavar="F", help="write the record (timings + environment) as JSON")
    parser.add_argument("--markdown", metavar="F", help="write the report as Markdown")
    synthetic = parser.add_argument_group("synthetic clip (no SOURCE)")
    synthetic.add_argument("--persons", type=int, metavar="N",
                           help=f"people in the synthetic clip ({DEFAULT_PERSONS})")
    synthetic.add_argument("--resolution", metavar="R",
                           help=f"480p, 720p, 1080p or WIDTHxHEIGHT ({DEFAULT_RESOLUTION})")
    synthetic.add_argument("--seed", type=int, default=0, help="synthetic clip seed (0)")
    synthetic.add_argument("--no-detector-network", action="store_true",
                           help="do not run the detector network on synthetic frames (detect then costs ~0)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sequential", action="store_true",
                      help="decode, infer and write one after the other on one thread (no overlap)")
    mode.add_argument("--compare", action="store_true",
                      help="run sequential, then pipelined, and report the speedup of the threaded runner")
    parser.add_argument("--out-video", metavar="F",
                        help="also write the annotated video (timed as 'write.video': render + encode)")
    parser.add_argument("--out-json", metavar="F", help="also write JSON Lines poses (timed as 'write.jsonlines')")
    parser.add_argument("--timer", choices=("synchronize", "events"), default="synchronize",
                        help="GPU stage timing: synchronize before clock reads (default) or CUDA events")
    add_config_arguments(parser)


def _check_args(args) -> None:
    from ..io.sinks import check_output_paths

    if args.frames < 1:
        raise UserError(f"--frames must be >= 1, got {args.frames}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if args.source is not None:
        for flag, value in (("--persons", args.persons), ("--resolution", args.resolution)):
            if value is not None:
                raise UserError(f"{flag} applies to the synthetic clip only: drop SOURCE or drop {flag}")
        if args.no_detector_network:
            raise UserError("--no-detector-network applies to the synthetic clip only: drop SOURCE or the flag")
    if args.persons is not None and args.persons < 0:
        raise UserError(f"--persons must be >= 0, got {args.persons}")
    inputs = {"SOURCE": args.source}
    check_distinct_outputs({"--json": args.json, "--markdown": args.markdown, "--out-video": args.out_video,
                            "--out-json": args.out_json}, inputs)
    check_output_paths(video=args.out_video, jsonl=args.out_json, inputs=inputs)
    for path, what in ((args.json, "--json"), (args.markdown, "--markdown")):
        if path:
            check_output_path(path, what=what)


@contextmanager
def _bench_subject(args, cfg):
    """(source_info, make_source, clip, notes): the given SOURCE, or a synthetic clip written to a temporary video
    (so that decoding is timed too) that lives as long as this context."""
    from ..benchmark import synthetic
    from ..io.sources import open_source, open_video_file

    if args.source is not None:
        yield ({"name": args.source, "synthetic": False},
               lambda: open_source(args.source, open_timeout_s=cfg.source.open_timeout_s), None, [])
        return
    try:
        width, height = synthetic.parse_resolution(args.resolution or DEFAULT_RESOLUTION)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    persons = DEFAULT_PERSONS if args.persons is None else args.persons
    clip = synthetic.SyntheticClip(persons, width, height, args.warmup + args.frames, seed=args.seed)
    video_path, keep_alive = synthetic.synthetic_video(clip)
    notes = [synthetic.SYNTHETIC_DETECTIONS_NOTE + (
        "; the detector network still runs on every frame for timing and its output is discarded"
        if not args.no_detector_network else "; the detector network is not run")]
    info = {"name": f"synthetic {persons} persons {width}x{height}", "synthetic": True, "persons": persons,
            "seed": args.seed}
    try:
        yield info, lambda: open_video_file(video_path), clip, notes
    finally:
        keep_alive.cleanup()


def _measure(args, cfg, source_info, make_source, clip, notes) -> tuple:
    """Runs each requested mode on a fresh pipeline and source; returns ({mode: BenchRun}, the last pipeline)."""
    from ..benchmark import environment, runs as bench_runs
    from ..benchmark.synthetic import SyntheticDetector
    from ..build import build_pipeline
    from ..io.sinks import open_sinks
    from ..timing import StageTimer

    render_options = dataclasses.asdict(cfg.render)
    modes = ["sequential", "pipelined"] if args.compare else (["sequential"] if args.sequential else ["pipelined"])
    results, pipeline = {}, None
    for mode in modes:
        detector = wrap = None
        if clip is not None and args.no_detector_network:
            detector = SyntheticDetector(clip)
        elif clip is not None:
            def wrap(network):  # the real network is timed; the clip's known persons go on
                return SyntheticDetector(clip, network=network)
        pipeline = build_pipeline(cfg, timer=StageTimer.for_device(cfg.pose.device, mode=args.timer),
                                  detector=detector, wrap_detector=wrap)
        source = make_source()
        sinks = open_sinks(pipeline.skeleton, source.fps, render_options, video=args.out_video, jsonl=args.out_json,
                           raw_keypoints=cfg.tracker.smoothing.enabled)
        log.info("bench: %s run, %d warm-up + %d frames", mode, args.warmup, args.frames)
        load_start = environment.load_average_1min()
        options = {} if mode == "sequential" else {"queue_size": cfg.source.queue_size}
        runner = bench_runs.run_sequential if mode == "sequential" else bench_runs.run_pipelined
        result = runner(pipeline, source, sinks, warmup=args.warmup, frames=args.frames,
                        render_options=render_options, **options)
        result.extra["load_average_1min"] = {"start": load_start, "end": environment.load_average_1min()}
        if result.frames_measured == 0:
            raise UserError(f"{source_info['name']} ended during the {args.warmup} warm-up frames: "
                            "lower --warmup or give a longer source")
        if result.frames_measured < args.frames:
            notes.append(f"{mode}: the source ended after {result.frames_measured} measured frames "
                         f"(asked for {args.frames})")
        results[mode] = result
    return results, pipeline


def _write_reports(args, record: dict) -> None:
    from ..benchmark.report import format_report

    print(format_report(record))
    if args.json:
        write_json_atomic(args.json, record, indent=2)
        log.info("wrote %s", args.json)
    if args.markdown:
        with atomic_write(args.markdown) as handle:
            handle.write(format_report(record, markdown=True))
        log.info("wrote %s", args.markdown)
    sys.stdout.flush()


def run(args) -> int:
    from ..benchmark import environment
    from ..benchmark.report import bench_record
    from ..config import to_dict

    _check_args(args)
    cfg = config_from_args(args)
    load_start = environment.load_average_1min()
    with _bench_subject(args, cfg) as (source_info, make_source, clip, notes):
        results, pipeline = _measure(args, cfg, source_info, make_source, clip, notes)
    load_end = environment.load_average_1min()

    source_info["frame_wh"] = next(iter(results.values())).extra.get("frame_wh")
    setup = environment.describe_setup(cfg, pipeline)
    setup["detector_network_run"] = clip is None or not args.no_detector_network
    if args.out_video or args.out_json:
        setup["outputs"] = [p for p in (args.out_video, args.out_json) if p]
    record = bench_record(command=environment.command_line(), source=source_info, runs=results, setup=setup,
                          environment=environment.capture_environment(), load_start=load_start, load_end=load_end,
                          config=to_dict(cfg), notes=notes)
    _write_reports(args, record)
    return 0
