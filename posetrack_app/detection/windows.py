"""Detection in windows: the network run on parts of the letterboxed input around the people the tracker expects,
instead of on all of it (detector.schedule=roi; detection/schedule.py says when).

A convolutional network's cost is about proportional to its input's area: on the 2-core development machine the
YOLO11n-pose network took 80.8 ms on a 480x640 input, 22.4 ms on 256x256 and 8.2 ms on 160x128 (one thread). So a
frame with a few people in it costs a fraction of a whole-frame call.

Windows are cut from the letterboxed input on the network's stride grid, so each window's anchors are anchors of the
whole input (the same pixels in the same phase) and its output maps back by an offset. What a window sees is not
the whole frame: near its edges the network sees less context, and the model's attention block sees only the
window. So:
- a person cut by a window edge inside the frame is not kept from that window (its box would be cut too);
- where the windows would cover most of the input anyway, the whole input runs instead (one call, all context).

Shape glossary: M windows; C = 5 + 3K output channels; A anchors.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..ops.boxes import box_areas, box_iou, clip_boxes
from .yolo_onnx import STRIDE

# At or above this share of the input's area, the whole input runs instead of the windows: their cost would be
# near the whole input's (each call also has a fixed cost, 2-3 ms here) and the whole input gives every person all
# of the frame's context.
MAX_WINDOW_AREA_FRACTION = 0.6
# A box reaching within this many input pixels of a window edge that is not the input's own edge was cut by it.
CUT_TOLERANCE_PX = 4.0


def detection_windows(regions_xyxy: np.ndarray, input_hw: Tuple[int, int],
                      max_area_fraction: float = MAX_WINDOW_AREA_FRACTION) -> Optional[np.ndarray]:
    """Regions in input pixels [R, 4] (x0, y0, x1, y1) -> int64 windows [M, 4] that cover them, on the stride grid,
    inside the input and not overlapping (overlapping windows are merged into their bounding window, repeatedly).
    None when the windows would cover `max_area_fraction` of the input or more, or there are no regions: run the
    whole input."""
    height, width = input_hw
    regions = np.asarray(regions_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(regions) == 0:
        return None
    windows = np.stack([np.floor(regions[:, 0] / STRIDE), np.floor(regions[:, 1] / STRIDE),
                        np.ceil(regions[:, 2] / STRIDE), np.ceil(regions[:, 3] / STRIDE)], axis=1) * STRIDE
    windows = clip_boxes(windows, width, height).astype(np.int64)
    merged = _merge_overlapping(list(windows[box_areas(windows) > 0]))
    if not merged:
        return None
    merged = np.stack(merged)
    if box_areas(merged).sum() >= max_area_fraction * height * width:
        return None
    return merged


def _merge_overlapping(windows: List[np.ndarray]) -> List[np.ndarray]:
    """Windows -> windows of which no two overlap: each one that overlaps others becomes their bounding window."""
    kept: List[np.ndarray] = []  # no two overlap
    for window in windows:
        while kept:  # a bounding window may reach windows that the window alone did not
            # Windows have area, so IoU > 0 is overlap (windows that only touch stay apart).
            hits = np.flatnonzero(box_iou(window, np.stack(kept))[0] > 0).tolist()
            if not hits:
                break
            window = np.concatenate([np.min([window[:2]] + [kept[k][:2] for k in hits], axis=0),
                                     np.max([window[2:]] + [kept[k][2:] for k in hits], axis=0)])
            kept = [other for k, other in enumerate(kept) if k not in hits]
        kept.append(window)
    return kept


def window_output_to_input(output: np.ndarray, window: np.ndarray, input_hw: Tuple[int, int]) -> np.ndarray:
    """A window's network output [1, C, A] -> the same anchors in whole-input pixels, without those whose box reaches
    a window edge that lies inside the input (within CUT_TOLERANCE_PX): people the edge cut."""
    x0, y0, x1, y1 = (float(v) for v in window)
    height, width = input_hw
    out = np.array(output, dtype=np.float32, copy=True)
    out[0, 0] += x0
    out[0, 1] += y0
    out[0, 5::3] += x0
    out[0, 6::3] += y0
    cx, cy, half_w, half_h = out[0, 0], out[0, 1], out[0, 2] / 2, out[0, 3] / 2
    cut = np.zeros(out.shape[2], dtype=bool)
    if x0 > 0:
        cut |= cx - half_w < x0 + CUT_TOLERANCE_PX
    if y0 > 0:
        cut |= cy - half_h < y0 + CUT_TOLERANCE_PX
    if x1 < width:
        cut |= cx + half_w > x1 - CUT_TOLERANCE_PX
    if y1 < height:
        cut |= cy + half_h > y1 - CUT_TOLERANCE_PX
    return out[:, :, ~cut]
