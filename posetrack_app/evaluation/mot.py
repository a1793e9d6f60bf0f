"""Box-level CLEAR MOT and identity metrics (MOTA, IDF1, ID switches) for MOTChallenge text files.

Shape glossary: G ground-truth boxes and P predicted boxes of one frame; boxes are (left, top, width, height)
in pixels as MOTChallenge writes them, converted to xyxy for IoU.

MOTChallenge 2015 line: `frame(1-based), id, left, top, width, height, conf, x, y, z` (a prediction file may
stop after `conf`). A ground-truth row with conf below `gt_min_confidence` (PETS09-S2L1 marks 174 boxes of far,
tiny people with 0) is not a target: predictions that cover one (IoU >= the threshold, one-to-one) are removed
instead of being counted as false positives, and the row itself is not a miss; this follows the MOTChallenge
handling of non-target boxes. A box pair matches when IoU >= `iou_threshold` (0.5 as MOTChallenge).

motmetrics 1.4.0 computes the metrics; its own IoU helper uses `np.asfarray`, which NumPy 2 removed, so the
distance matrix (1 - IoU, NaN where IoU < the threshold) is computed here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import UserError
from ..ops.boxes import box_iou, xywh_to_xyxy

# frame (1-based) -> (ids int64 [G], boxes_xywh float32 [G, 4], conf float32 [G])
MotFrames = Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MotResult:
    mota: float            # 1 - (FN + FP + IDSW) / GT boxes
    idf1: float            # identity F1 (global id assignment)
    id_switches: int
    false_negatives: int
    false_positives: int
    precision: float
    recall: float
    num_frames: int
    num_gt_ids: int        # distinct ground-truth identities
    num_gt_boxes: int
    num_pred_boxes: int    # after removing predictions on non-target boxes
    motp_iou: float        # mean IoU of matched pairs

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def parse_mot_text(text: str, source: str = "<text>") -> MotFrames:
    """MOTChallenge lines -> per-frame arrays. Raises UserError naming the line that does not fit."""
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")] if "," in line else line.split()
        if len(parts) < 6:
            raise UserError(f"{source} line {line_number}: expected MOTChallenge columns 'frame,id,left,top,width,"
                            f"height[,conf,...]', got {len(parts)} values: {line[:80]!r}")
        try:
            values = [float(p) for p in parts[:7]]
        except ValueError:
            raise UserError(f"{source} line {line_number}: non-numeric value in {line[:80]!r}; a MOTChallenge file "
                            "holds only numbers") from None
        if not np.isfinite(values).all():  # float() reads "nan" and "inf" without complaint
            raise UserError(f"{source} line {line_number}: NaN or infinite value in {line[:80]!r}; a MOTChallenge "
                            "file holds only finite numbers")
        frame, track_id = values[0], values[1]
        if frame != int(frame) or frame < 1:
            raise UserError(f"{source} line {line_number}: frame must be a 1-based integer, got {parts[0]!r}")
        if track_id != int(track_id):
            raise UserError(f"{source} line {line_number}: id must be an integer, got {parts[1]!r}")
        if values[4] < 0 or values[5] < 0:
            raise UserError(f"{source} line {line_number}: negative box width or height {parts[4]}, {parts[5]}")
        conf = values[6] if len(values) > 6 else 1.0
        rows.append((int(frame), int(track_id), *values[2:6], conf))
    frames: MotFrames = {}
    if not rows:
        return frames
    table = np.array(rows, dtype=np.float64)
    for frame in np.unique(table[:, 0]).astype(int):
        sel = table[table[:, 0] == frame]
        ids = sel[:, 1].astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise UserError(f"{source}: frame {frame} has the id {ids[np.argmax(np.bincount(ids - ids.min()))]} twice;"
                            " each id may appear once per frame")
        frames[int(frame)] = (ids, sel[:, 2:6].astype(np.float32), sel[:, 6].astype(np.float32))
    return frames


def load_mot_file(path) -> MotFrames:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"MOT file {path} not found: give the path of a MOTChallenge .txt file "
                        "(e.g. gt/gt.txt, or the file `posetrack track --out-mot` wrote)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file: expected MOTChallenge lines 'frame,id,left,top,width,height,...'") from None
    return parse_mot_text(text, str(path))


def _iou_distance(gt_xywh: np.ndarray, pred_xywh: np.ndarray, iou_threshold: float) -> np.ndarray:
    iou = box_iou(xywh_to_xyxy(gt_xywh), xywh_to_xyxy(pred_xywh))
    return np.where(iou >= iou_threshold, 1.0 - iou, np.nan)


def _drop_on_non_targets(gt_xywh, pred_xywh, iou_threshold: float) -> np.ndarray:
    """bool [P]: predictions to keep after removing those matched one-to-one to non-target boxes."""
    keep = np.ones(len(pred_xywh), bool)
    if len(gt_xywh) == 0 or len(pred_xywh) == 0:
        return keep
    # Imported here: scipy.optimize takes about a second to import, and `track` loads this module with the CLI.
    from scipy.optimize import linear_sum_assignment

    iou = box_iou(xywh_to_xyxy(gt_xywh), xywh_to_xyxy(pred_xywh))
    rows, cols = linear_sum_assignment(-np.where(iou >= iou_threshold, iou, 0.0))
    hit = iou[rows, cols] >= iou_threshold
    keep[cols[hit]] = False
    return keep


def evaluate_mot(gt: MotFrames, pred: MotFrames, iou_threshold: float = 0.5,
                 gt_min_confidence: float = 1.0, max_frames: Optional[int] = None) -> MotResult:
    """CLEAR MOT + IDF1 over all frames that have ground truth or predictions.

    Ground-truth rows with conf < gt_min_confidence are non-targets (see the module docstring); pass 0 to score
    every row. Predicted frames without any ground-truth frame around them still count (their boxes are FP).
    max_frames: score frames 1..max_frames only (a run stopped early with `track --max-frames`).
    """
    import motmetrics as mm

    if not gt:
        raise UserError("the ground-truth file has no boxes: check that it is a MOTChallenge gt.txt")
    acc = mm.MOTAccumulator(auto_id=False)
    empty = (np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    frames = sorted(f for f in set(gt) | set(pred) if max_frames is None or f <= max_frames)
    num_gt = num_pred = 0
    for frame in frames:
        gt_ids, gt_boxes, gt_conf = gt.get(frame, empty)
        pred_ids, pred_boxes, _ = pred.get(frame, empty)
        target = gt_conf >= gt_min_confidence
        keep = _drop_on_non_targets(gt_boxes[~target], pred_boxes, iou_threshold)
        gt_ids, gt_boxes = gt_ids[target], gt_boxes[target]
        pred_ids, pred_boxes = pred_ids[keep], pred_boxes[keep]
        num_gt += len(gt_ids)
        num_pred += len(pred_ids)
        acc.update(gt_ids.tolist(), pred_ids.tolist(), _iou_distance(gt_boxes, pred_boxes, iou_threshold),
                   frameid=frame)
    metrics = ["mota", "idf1", "num_switches", "num_misses", "num_false_positives", "precision", "recall",
               "num_frames", "num_unique_objects", "motp"]
    summary = mm.metrics.create().compute(acc, metrics=metrics, name="all")
    row = summary.loc["all"]

    def number(name, default=0.0):
        value = float(row[name])
        return default if not np.isfinite(value) else value

    return MotResult(
        mota=number("mota"), idf1=number("idf1"), id_switches=int(row["num_switches"]),
        false_negatives=int(row["num_misses"]), false_positives=int(row["num_false_positives"]),
        precision=number("precision"), recall=number("recall"), num_frames=int(row["num_frames"]),
        num_gt_ids=int(row["num_unique_objects"]), num_gt_boxes=num_gt, num_pred_boxes=num_pred,
        motp_iou=1.0 - number("motp", 1.0),
    )


def evaluate_mot_files(gt_path, pred_path, iou_threshold: float = 0.5, gt_min_confidence: float = 1.0,
                       max_frames: Optional[int] = None) -> MotResult:
    gt = load_mot_file(gt_path)
    pred = load_mot_file(pred_path)
    return evaluate_mot(gt, pred, iou_threshold, gt_min_confidence, max_frames)


def format_mot_table(results: Dict[str, MotResult], extra: Dict[str, Dict[str, str]] = None) -> str:
    """Markdown table, one row per named result (percentages with one decimal). `extra`: more columns per row."""
    extra = extra or {}
    extra_names = []
    for columns in extra.values():
        extra_names += [c for c in columns if c not in extra_names]
    header = ["", "MOTA", "IDF1", "IDSW", "FN", "FP", "Prec", "Rec"] + extra_names
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name, r in results.items():
        cells = [name, f"{100 * r.mota:.1f}", f"{100 * r.idf1:.1f}", str(r.id_switches), str(r.false_negatives),
                 str(r.false_positives), f"{100 * r.precision:.1f}", f"{100 * r.recall:.1f}"]
        cells += [extra.get(name, {}).get(c, "") for c in extra_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
