"""`posetrack eval GT_DIR PRED_DIR`: PoseTrack mAP and MOTA with the official tool's semantics."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List

from ..io.atomic import check_distinct_outputs, check_output_path, write_json_atomic

COMMAND = "eval"
HELP = "score PoseTrack predictions (mAP, MOTA) against GT sequence files, as the official poseval does"


def add_arguments(parser) -> None:
    parser.add_argument("gt_dir", metavar="GT_DIR", help="folder of GT sequence files (PoseTrack 2017 or 2018 .json)")
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder with one prediction file per GT file, same names")
    parser.add_argument("--json", metavar="F", help="also write all figures as JSON to F")
    parser.add_argument("--per-joint", action="store_true", help="also print the per-joint detail")
    parser.add_argument("--mot-engine", choices=("builtin", "motmetrics"), default="builtin",
                        help="CLEAR MOT bookkeeping: builtin (motmetrics' algorithm, fast) or motmetrics itself")


def _cell(value: float, width: int = 6) -> str:
    text = "n/a" if value is None or math.isnan(value) else f"{value:.1f}"
    # A wide value (MOTA -1234.5) keeps a space before it instead of running into the previous column.
    return f"{text:>{width}}" if len(text) < width else f" {text}"


def format_tables(result, per_joint: bool = False) -> str:
    """The official grouped tables (AP; MOTA per group, MOTP, Prec, Rec), plus per-joint rows on request."""
    from ..evaluation.posetrack import display_joint_name

    ap = result.ap_groups()
    mota = result.mota_groups()
    groups = list(ap)
    lines: List[str] = [
        f"{result.num_sequences} sequences, {result.num_frames} scored frames ({result.num_mot_frames} for MOT)",
        "",
        "Average Precision (AP):",
        "".join(f"{g:>6}" for g in groups),
        "".join(_cell(ap[g]) for g in groups),
        "",
        "Multiple Object Tracking (MOT):",
        "".join(f"{'MOTA':>6}" for _ in groups) + f"{'MOTP':>6}{'Prec':>6}{'Rec':>6}",
        "".join(f"{g:>6}" for g in groups) + f"{'Total':>6}" * 3,
        "".join(_cell(mota[g]) for g in groups) + _cell(result.total_motp) + _cell(result.total_mot_precision)
        + _cell(result.total_mot_recall),
    ]
    if per_joint:
        lines += ["", f"{'joint':<15}{'AP':>7}{'Prec':>7}{'Rec':>7}{'GT':>7}  {'MOTA':>7}{'Prec':>7}{'Rec':>7}"
                      f"{'objects':>9}{'misses':>8}{'IDsw':>6}{'FP':>7}"]
        for a, m in zip(result.ap, result.mot):
            lines.append(f"{display_joint_name(a.name):<15}{_cell(a.ap, 7)}{_cell(a.precision, 7)}{_cell(a.recall, 7)}"
                         f"{a.num_gt:>7}  {_cell(m.mota, 7)}{_cell(m.precision, 7)}{_cell(m.recall, 7)}"
                         f"{m.num_objects:>9}{m.num_misses:>8}{m.num_switches:>6}{m.num_false_positives:>7}")
    return "\n".join(lines)


def run(args) -> int:
    from ..evaluation.posetrack import evaluate_folders

    if args.json:
        check_output_path(args.json, (".json",), "--json")
        inputs = {f"GT_DIR file {p.name}": p for p in Path(args.gt_dir).glob("*.json")}
        inputs.update({f"PRED_DIR file {p.name}": p for p in Path(args.pred_dir).glob("*.json")})
        check_distinct_outputs({"--json": args.json}, inputs)
    result = evaluate_folders(args.gt_dir, args.pred_dir, args.mot_engine)
    print(format_tables(result, args.per_joint))
    if args.json:
        write_json_atomic(args.json, result.to_dict(), indent=1)
    return 0
