"""The dev suite's "detector alone" row (benchmarks/tracker_suite.detector_alone_scores) and where the suite summary
compares FlowTrack with it: issue 12's "never worse than the detector alone", taken literally."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from posetrack_app.config import AppConfig, replace
from posetrack_app.structures import Detections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_trackers  # noqa: E402  (benchmarks/ is not a package)
import tracker_suite  # noqa: E402

K = 17
PERSON = [100.0, 50.0, 180.0, 250.0]   # xyxy, the one person of the truth in every frame
ELSEWHERE = [400.0, 50.0, 480.0, 250.0]


def _clip(n_frames):
    gt = {f: (np.array([1]), np.array([[100.0, 50.0, 80.0, 200.0]]), np.array([1.0])) for f in range(1, n_frames + 1)}
    return tracker_suite.Clip("toy", 25.0, [np.zeros((300, 600, 3), np.uint8)] * n_frames, gt)


def _detections(frame_boxes):
    """frame_boxes: per frame a list of (box xyxy, score)."""
    out = []
    for boxes in frame_boxes:
        xyxy = np.array([b for b, _ in boxes], np.float32).reshape(-1, 4)
        scores = np.array([s for _, s in boxes], np.float32)
        out.append(Detections(xyxy, scores, np.zeros((len(boxes), K, 3), np.float32)))
    return out


@pytest.mark.parametrize("frame_boxes, threshold, expected", [
    # every detection counts as it is: the person twice, nothing else
    ([[(PERSON, 0.9)], [(PERSON, 0.9)]], 0.25, {"FP": 0, "FN": 0, "Prec": 100.0, "Rec": 100.0}),
    # a box where nobody is is a false positive; a person detected under the threshold is a miss
    ([[(PERSON, 0.9), (ELSEWHERE, 0.5)], [(PERSON, 0.2)]], 0.25, {"FP": 1, "FN": 1, "Prec": 50.0, "Rec": 50.0}),
    # the threshold is detector.score_threshold: at 0.1 the weak box is the person
    ([[(PERSON, 0.9), (ELSEWHERE, 0.5)], [(PERSON, 0.2)]], 0.1, {"FP": 1, "FN": 0, "Prec": 2 / 3 * 100, "Rec": 100.0}),
])
def test_detector_alone_reports_every_detection_at_the_score_threshold(frame_boxes, threshold, expected):
    cfg = replace(AppConfig(), **{"detector.score_threshold": threshold})
    scores = tracker_suite.detector_alone_scores(cfg, _clip(len(frame_boxes)), _detections(frame_boxes))
    assert set(scores) == {"FP", "FN", "Prec", "Rec"}   # no identities, so no MOTA / IDF1 / ID switches
    assert scores == pytest.approx(expected)


def _row(tracker, **scores):
    base = {"MOTA": 50.0, "IDF1": 50.0, "IDSW": 0, "FP": 0, "FN": 0}
    return {"clip": "toy", "fps": 25.0, "size": 640, "size_label": "640", "tracker": tracker,
            "scores": scores if tracker == compare_trackers.DETECTOR_ALONE else {**base, **scores}}


@pytest.mark.parametrize("flowtrack, flagged", [
    ({"Prec": 95.0, "Rec": 80.0}, "none"),
    ({"Prec": 95.0, "Rec": 78.5}, "toy Rec -1.5"),
    ({"Prec": 93.0, "Rec": 80.5}, "toy Prec -2.0"),
])
def test_summary_says_where_flowtrack_falls_under_the_detector_alone(flowtrack, flagged):
    rows = [_row(compare_trackers.DETECTOR_ALONE, FP=1, FN=5, Prec=95.0, Rec=80.0),
            _row("iou", Prec=95.0, Rec=70.0), _row("flowtrack", **flowtrack)]
    text = compare_trackers.summary(rows, ["iou", "flowtrack"])
    assert f"FlowTrack precision / recall more than 1 point under the detector alone's: {flagged}" in text
    # the untracked row is not a tracker: it is in no mean and wins no clip
    assert "| detector alone |" not in text.split("The detector alone")[0]


@pytest.mark.parametrize("flowtrack_runs, flagged", [
    # one noisy copy 5 points under is not the median: the median is what the check reads
    ([(95.0, 80.0), (90.0, 80.0), (95.0, 80.0)], "none"),
    ([(93.0, 80.0), (93.5, 80.0), (95.0, 80.0)], "toy Prec -1.5"),
    ([(95.0, 78.0), (95.0, 78.0), (95.0, 81.0)], "toy Rec -2.0"),
])
def test_noise_summary_checks_flowtrack_against_the_iou_tracker_on_the_medians(flowtrack_runs, flagged):
    def noisy(tracker, runs):
        scores = [{"MOTA": 50.0, "IDF1": 50.0, "IDSW": 0, "Prec": p, "Rec": r} for p, r in runs]
        return {**_row(tracker, Prec=95.0, Rec=80.0), "noise": compare_trackers.noise_spread(scores)}

    rows = [noisy("iou", [(95.0, 80.0)] * 3), noisy("flowtrack", flowtrack_runs)]
    text = compare_trackers.format_noise(rows, ["iou", "flowtrack"])
    assert f"more than 1 point under the IoU tracker's, on the medians: {flagged}" in text
