"""`posetrack batch DATASET_ROOT --split val --out PRED_DIR`: predict every sequence of a PoseTrack dataset."""
from __future__ import annotations

import logging
import sys

from ..io.atomic import check_distinct_outputs, check_output_path, write_json_atomic
from ._common import add_config_arguments, config_from_args

COMMAND = "batch"
HELP = "run the pipeline over a PoseTrack-layout dataset, one prediction file per sequence (resumable)"

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("dataset_root", metavar="DATASET_ROOT",
                        help="folder with images/<split>/<seq>/*.jpg and annotations/<split>/<seq>.json")
    parser.add_argument("--split", default="val", help="dataset split (default: val)")
    parser.add_argument("--out", required=True, metavar="PRED_DIR", help="folder for the prediction files")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="sequences in parallel, each worker process with its own pipeline (one per GPU "
                             "where there are several); default 1")
    parser.add_argument("--ray", metavar="auto|local|ADDRESS",
                        help="run each sequence as a Ray task: 'auto' joins the running cluster, 'local' starts "
                             "one on this machine, or a cluster address (needs posetrack_app[ray])")
    parser.add_argument("--overwrite", action="store_true", help="redo sequences that already have a prediction file")
    parser.add_argument("--eval", action="store_true", help="score the predictions against the GT at the end")
    parser.add_argument("--json", metavar="F", help="with --eval: write the scores as JSON to F")
    parser.add_argument("--per-joint", action="store_true", help="with --eval: per-joint detail")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser)


def run(args) -> int:
    from .. import interrupts
    from ..batch import discover_sequences, output_path, run_batch
    from ..evaluation.posetrack import evaluate_sequences
    from ..io.posetrack_json import read_sequence
    from .eval import format_tables

    cfg = config_from_args(args)
    jobs = discover_sequences(args.dataset_root, args.split)
    if args.json:
        check_output_path(args.json, (".json",), "--json")
        inputs = {f"GT file of {j.name}": j.annotation_path for j in jobs}
        inputs.update({f"prediction file of {j.name}": output_path(args.out, j) for j in jobs})
        check_distinct_outputs({"--json": args.json}, inputs)
    report = run_batch(jobs, args.out, cfg, workers=args.workers, ray_address=args.ray, overwrite=args.overwrite,
                       progress=not args.no_progress)
    fps = report.num_frames / report.wall_s if report.wall_s > 0 else 0.0
    line = (f"{len(report.done)} sequences predicted ({report.num_frames} frames, {report.wall_s:.1f} s, "
            f"{fps:.1f} frames/s), {len(report.skipped)} already done, {len(report.failed)} failed; "
            f"predictions in {args.out}")
    if report.interrupted:
        print(f"interrupted by {interrupts.signal_name()}: {line}; rerun the same command to continue")
        return interrupts.exit_code()
    print(line)
    if args.eval:
        scored = [j for j in jobs if output_path(args.out, j).is_file()]
        if len(scored) < len(jobs):
            print(f"scoring the {len(scored)} of {len(jobs)} sequences that have predictions")
        if scored:
            pairs = [(read_sequence(j.annotation_path), read_sequence(output_path(args.out, j))) for j in scored]
            result = evaluate_sequences(pairs)
            print(format_tables(result, args.per_joint))
            if args.json:
                write_json_atomic(args.json, result.to_dict(), indent=1)
    if report.failed:
        print(f"{len(report.failed)} sequence(s) failed:", file=sys.stderr)
        for outcome in report.failed:
            print(f"  {outcome.name}: {outcome.message}", file=sys.stderr)
        return 1
    return 0
