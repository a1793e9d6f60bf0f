"""`posetrack eval-mot GT_TXT PRED_TXT`: box MOTA, IDF1, ID switches, FN, FP of a MOTChallenge result file."""
from __future__ import annotations

import argparse
import json

from ..evaluation.mot import evaluate_mot_files, format_mot_table

COMMAND = "eval-mot"
HELP = "score a MOTChallenge box file against ground truth (CLEAR MOT with IoU >= 0.5, IDF1)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt", metavar="GT_TXT", help="ground truth, MOTChallenge format (e.g. gt/gt.txt)")
    parser.add_argument("pred", metavar="PRED_TXT", help="predictions, MOTChallenge format (posetrack track --out-mot)")
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="minimum IoU of a match (default 0.5)")
    parser.add_argument("--gt-min-confidence", type=float, default=1.0,
                        help="ground-truth rows with a lower conf column are non-targets (default 1; 0 scores all)")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="score frames 1..N only (for a run stopped early with `track --max-frames N`)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError

    if not 0.0 < args.iou_threshold <= 1.0:
        raise UserError(f"--iou-threshold must be in (0, 1], got {args.iou_threshold}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}")
    result = evaluate_mot_files(args.gt, args.pred, args.iou_threshold, args.gt_min_confidence, args.max_frames)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(format_mot_table({args.pred: result}))
    print(f"{result.num_frames} frames, {result.num_gt_ids} ground-truth ids, {result.num_gt_boxes} ground-truth "
          f"boxes, {result.num_pred_boxes} predicted boxes, mean IoU of matches {result.motp_iou:.3f}")
    return 0
