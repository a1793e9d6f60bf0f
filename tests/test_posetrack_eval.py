"""PoseTrack AP / MOTA with the official semantics, on synthetic sequences with hand-computed expectations.

Every synthetic sequence has 4 frames and two GT persons A (track 1) and B (track 2), 200 px apart, with all
15 scored joints. Head boxes are 30 x 40 px: diagonal 50, head size 0.6 x 50 = 30 px, so a joint matches
within 15 px. The last frame of a sequence is left out of MOT, so each joint has 2 x 3 = 6 MOT objects.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from posetrack_app.evaluation.posetrack import (average_precision, evaluate_folders, evaluate_sequences,
                                                points_strictly_inside)
from posetrack_app.io.posetrack_json import (EVAL_JOINT_NAMES, FrameAnnotation, Person, PoseTrackFormatError,
                                             Sequence, parse_sequence, read_sequence, sequence_to_json,
                                             write_sequence)
from posetrack_app.skeleton import POSETRACK18

NUM_FRAMES = 4
# Joint offsets inside a person: 17 slots spread on a 5 x 4 grid, 20 px apart (ears unused).
_GRID = np.array([[20.0 * (k % 5), 20.0 * (k // 5)] for k in range(17)])
_SCORED = np.array([n not in ("left_ear", "right_ear") for n in POSETRACK18.keypoint_names])
ORIGIN = {1: (100.0, 100.0), 2: (300.0, 100.0)}


def person(track_id, origin, score=0.9, head=True, shift=None):
    """shift: {joint name: (dx, dy)} moves single joints."""
    keypoints = _GRID + np.asarray(origin)
    for name, delta in (shift or {}).items():
        keypoints[POSETRACK18.index(name)] += delta
    scores = np.where(_SCORED, score, np.nan)
    if isinstance(score, dict):
        scores = np.where(_SCORED, score.get("default", 0.9), np.nan)
        for name, s in score.items():
            if name != "default":
                scores[POSETRACK18.index(name)] = s
    head_box = np.array([origin[0], origin[1] - 40, origin[0] + 30, origin[1]]) if head else None
    return Person(track_id=track_id, keypoints=keypoints, present=_SCORED.copy(), keypoint_scores=scores,
                  head_box_xyxy=head_box)


def sequence(frames, name="seq", regions=None):
    return Sequence(name=name, frames=[
        FrameAnnotation(file_name=f"images/val/{name}/{i:06d}.jpg", image_id=i, is_labeled=bool(p), persons=p,
                        ignore_regions=list(regions or []))
        for i, p in enumerate(frames)])


def gt_sequence(**kwargs):
    return sequence([[person(1, ORIGIN[1]), person(2, ORIGIN[2])] for _ in range(NUM_FRAMES)], **kwargs)


def pred_frames(make):
    return [make(f) for f in range(NUM_FRAMES)]


def both(f):
    return [person(1, ORIGIN[1]), person(2, ORIGIN[2])]


def jitter(px):
    def make(f):
        shift = {"right_wrist": (px, 0.0)} if f == 1 else {}
        score = {"default": 0.9, "right_wrist": 0.5} if f == 1 else 0.9
        return [person(1, ORIGIN[1], score=score, shift=shift), person(2, ORIGIN[2])]
    return make


def swap(f):
    a, b = (1, 2) if f < 2 else (2, 1)
    return [person(a, ORIGIN[1]), person(b, ORIGIN[2])]


def false_positive(f):
    return both(f) + [person(3, (600.0, 400.0), score=0.95)]


def empty_frame(f):
    return [] if f == 1 else both(f)


# B's region: a box around person B, A untouched.
REGION_B = np.array([[280.0, 50.0], [400.0, 50.0], [400.0, 200.0], [280.0, 200.0]])

# name, prediction frames, GT regions, expected per-joint (joint or "*": (AP, MOTA, misses, switches, FP, objects))
CASES = [
    ("perfect", pred_frames(both), None, {"*": (100.0, 100.0, 0, 0, 0, 6)}),
    ("dropped person", pred_frames(lambda f: [person(1, ORIGIN[1])]), None, {"*": (50.0, 50.0, 3, 0, 0, 6)}),
    # 16 px = d 0.533 > 0.5: frame 1's wrist is a FP and its GT a miss; ranked last (score 0.5): AP 7/8.
    ("jitter over threshold", pred_frames(jitter(16.0)), None,
     {"right_wrist": (87.5, 100 * (1 - 2 / 6), 1, 0, 1, 6), "left_wrist": (100.0, 100.0, 0, 0, 0, 6)}),
    ("jitter under threshold", pred_frames(jitter(14.0)), None, {"*": (100.0, 100.0, 0, 0, 0, 6)}),
    # Ids swap in frame 2 (still scored for MOT): both objects switch partner.
    ("identity swap", pred_frames(swap), None, {"*": (100.0, 100 * (1 - 2 / 6), 0, 2, 0, 6)}),
    # A far extra person scored above the true ones: 4 FP ranked first, AP = precision 8/12 at every recall.
    ("false-positive person", pred_frames(false_positive), None, {"*": (100 * 8 / 12, 50.0, 0, 0, 3, 6)}),
    # B and an extra prediction inside the region are removed; the missing B prediction costs nothing.
    ("ignore region", pred_frames(lambda f: [person(1, ORIGIN[1]), person(7, (310.0, 110.0))]), [REGION_B],
     {"*": (100.0, 100.0, 0, 0, 0, 3)}),
    # Frame 1 has no prediction: AP recall 6/8; MOT frame 1 counts 1 object, 1 miss, 1 FP instead of its GT.
    ("empty prediction frame", pred_frames(empty_frame), None, {"*": (75.0, 100 * (1 - 2 / 5), 1, 0, 1, 5)}),
]


@pytest.mark.parametrize("name,frames,regions,expected", CASES, ids=[c[0] for c in CASES])
def test_synthetic_cases(name, frames, regions, expected):
    result = evaluate_sequences([(gt_sequence(regions=regions), sequence(frames))])
    for joint in EVAL_JOINT_NAMES:
        want = expected.get(joint, expected.get("*"))
        if want is None:
            continue
        ap, mota, misses, switches, fps, objects = want
        m = result.mot_of(joint)
        assert result.ap_of(joint).ap == pytest.approx(ap, abs=1e-9), joint
        assert m.mota == pytest.approx(mota, abs=1e-9), joint
        assert (m.num_misses, m.num_switches, m.num_false_positives, m.num_objects) == (misses, switches, fps, objects), joint
    assert result.num_frames == NUM_FRAMES
    assert result.num_mot_frames == NUM_FRAMES - 1


def test_totals_and_groups_follow_the_official_table():
    result = evaluate_sequences([(gt_sequence(), sequence(pred_frames(jitter(16.0))))])
    # Total is the mean over 15 joints, not over the 7 groups.
    assert result.total_ap == pytest.approx((14 * 100 + 87.5) / 15)
    groups = result.ap_groups()
    assert groups["Wri"] == pytest.approx((87.5 + 100) / 2)
    assert groups["Head"] == pytest.approx(100.0)
    assert groups["Total"] == pytest.approx(result.total_ap)
    wrist = result.mot_of("right_wrist")
    assert wrist.precision == pytest.approx(100 * 5 / 6) and wrist.recall == pytest.approx(100 * 5 / 6)


def test_joint_without_predictions_has_ap_zero_and_counts_in_total():
    def no_nose(f):
        people = both(f)
        for p in people:
            p.present[POSETRACK18.index("nose")] = False
        return people
    result = evaluate_sequences([(gt_sequence(), sequence(pred_frames(no_nose)))])
    assert result.ap_of("nose").ap == 0.0 and result.ap_of("nose").num_predictions == 0
    assert result.total_ap == pytest.approx(14 * 100 / 15)
    assert result.mot_of("nose").mota == pytest.approx(0.0)  # 6 objects, 6 misses


def test_prediction_keeps_only_its_best_gt():
    # One prediction halfway-wrong on A: 10 joints on A, 5 on B -> assigned to A; its B joints are FPs.
    def mixed(f):
        p = person(1, ORIGIN[1])
        for name in EVAL_JOINT_NAMES[:5]:
            k = POSETRACK18.index(name)
            p.keypoints[k] += np.subtract(ORIGIN[2], ORIGIN[1])
        return [p]
    result = evaluate_sequences([(gt_sequence(), sequence(pred_frames(mixed)))])
    assert result.ap_of(EVAL_JOINT_NAMES[0]).ap == 0.0      # all candidates FP (wrong GT)
    assert result.ap_of(EVAL_JOINT_NAMES[10]).ap == pytest.approx(50.0)  # 4 TP of 8 GT


def test_last_frame_of_each_sequence_is_left_out_of_mot():
    gt1, gt2 = gt_sequence(name="a"), sequence([[person(1, ORIGIN[1])]] * 2, name="b")
    pr1, pr2 = sequence(pred_frames(both), name="a"), sequence([[]] * 2, name="b")
    result = evaluate_sequences([(gt1, pr1), (gt2, pr2)])
    # a: 3 frames x 2 objects, matched; b: 1 frame with no prediction -> 1 object, 1 miss, 1 FP.
    m = result.mot_of("nose")
    assert (m.num_objects, m.num_misses, m.num_false_positives) == (7, 1, 1)
    assert result.num_mot_frames == 4 and result.num_frames == 6


def test_frames_without_gt_are_not_scored():
    frames = [[person(1, ORIGIN[1])], [], [person(1, ORIGIN[1])]]
    preds = [[person(1, ORIGIN[1])], [person(5, (500.0, 500.0))], [person(1, ORIGIN[1])]]
    result = evaluate_sequences([(sequence(frames), sequence(preds))])
    assert result.num_frames == 2
    assert result.ap_of("nose").ap == 100.0 and result.ap_of("nose").precision == 100.0


@pytest.mark.parametrize("scores,labels,positives,expected", [
    ([0.9, 0.8, 0.7], [1, 0, 1], 3, (1 / 3 + 1 / 3 * 2 / 3, 2 / 3, 2 / 3)),
    ([0.1, 0.9], [1, 1], 4, (0.5, 1.0, 0.5)),
    ([0.5], [0], 2, (0.0, 0.0, 0.0)),
    ([], [], 5, (0.0, 0.0, 0.0)),
])
def test_average_precision_table(scores, labels, positives, expected):
    assert average_precision(np.array(scores), np.array(labels, bool), positives) == pytest.approx(expected)


@pytest.mark.parametrize("point,inside", [
    ((5, 5), True), ((0, 5), False), ((10, 10), False), ((10.01, 5), False), ((9.99, 0.01), True), ((-1, -1), False),
])
def test_points_strictly_inside_square(point, inside):
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    assert points_strictly_inside(np.array([point], float), square)[0] == inside


def test_points_strictly_inside_concave_polygon():
    # A "U": the notch (5, 8) is outside, the arms are inside.
    u_shape = np.array([[0, 0], [10, 0], [10, 10], [7, 10], [7, 3], [3, 3], [3, 10], [0, 10]], float)
    got = points_strictly_inside(np.array([[5, 8], [1, 8], [8, 8], [5, 1]], float), u_shape)
    assert got.tolist() == [False, True, True, True]


def _write_pair(tmp_path, gt, pred, fmt):
    (tmp_path / "gt").mkdir(exist_ok=True)
    (tmp_path / "pred").mkdir(exist_ok=True)
    write_sequence(tmp_path / "gt" / f"{gt.name}.json", gt, fmt)
    write_sequence(tmp_path / "pred" / f"{gt.name}.json", pred, fmt)


def test_2017_and_2018_files_give_identical_numbers(tmp_path):
    gt = gt_sequence(name="s1", regions=[REGION_B])
    pred = sequence([swap(f) + [person(9, (310.0, 110.0))] if f != 1 else [] for f in range(NUM_FRAMES)], name="s1")
    results = {}
    for fmt in ("2017", "2018"):
        (tmp_path / fmt).mkdir()
        _write_pair(tmp_path / fmt, gt, pred, fmt)
        results[fmt] = evaluate_folders(tmp_path / fmt / "gt", tmp_path / fmt / "pred").to_dict()
    assert json.loads(json.dumps(results["2017"])) == json.loads(json.dumps(results["2018"]))
    assert results["2017"]["mot"]["joints"][0]["num_switches"] == 1  # B is ignored: only A switches
    assert results["2017"]["ap"]["joints"][0]["ap"] == 75.0


def test_sample_gt_against_itself_and_a_degraded_copy(shared_data, tmp_path):
    gt_dir = shared_data / "posetrack18_sample" / "annotations"
    perfect = evaluate_folders(gt_dir, gt_dir)
    assert perfect.num_sequences == 3 and perfect.num_frames == 3
    for joint in perfect.ap:
        assert joint.ap == 100.0 and joint.num_gt > 0
    # One labeled frame per sequence: nothing is left for MOT once the last frame is dropped.
    assert perfect.num_mot_frames == 0 and math.isnan(perfect.total_mota)
    # Degrade: drop every second person of each file and move every right wrist by 10 head sizes.
    for path in sorted(gt_dir.glob("*.json")):
        data = json.loads(path.read_text())
        data["annotations"] = data["annotations"][::2]
        for ann in data["annotations"]:
            k = 3 * POSETRACK18.index("right_wrist")
            if ann["keypoints"][k + 2]:
                ann["keypoints"][k] += 10 * np.hypot(*ann["bbox_head"][2:])
        (tmp_path / path.name).write_text(json.dumps(data))
    degraded = evaluate_folders(gt_dir, tmp_path)
    assert degraded.ap_of("right_wrist").ap == 0.0
    nose = degraded.ap_of("nose")
    # Every kept person is a TP (no scores, so all rank at -9999): AP = recall < 100, precision 100.
    assert nose.num_gt == perfect.ap_of("nose").num_gt
    assert 0 < nose.recall < 100 and nose.precision == 100.0
    assert nose.ap == pytest.approx(nose.recall)


# ------------------------------------------------------------------------------------------ bad input

def _folders(tmp_path, gt_text, pred_text=None, name="s.json"):
    (tmp_path / "gt").mkdir(parents=True)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / name).write_text(gt_text)
    if pred_text is not None:
        (tmp_path / "pred" / name).write_text(pred_text)
    return tmp_path / "gt", tmp_path / "pred"


def _json(seq, fmt="2018"):
    return json.dumps(sequence_to_json(seq, fmt))


def test_bad_input_messages(tmp_path):
    good = _json(gt_sequence())
    cases = {
        "not json": ("{not json", good, "not valid JSON"),
        "no head box": (_json(sequence([[person(1, ORIGIN[1], head=False)]])),
                        _json(sequence([[person(1, ORIGIN[1])]])), "no head box"),
        "missing prediction": (good, None, "prediction file missing"),
        "frame count": (good, _json(sequence(pred_frames(both)[:3])), "3 frames, but the GT"),
        "duplicate ids": (good, _json(sequence([[person(1, ORIGIN[1]), person(1, ORIGIN[2])]] * NUM_FRAMES)),
                          "duplicate track ids [1]"),
    }
    for case, (gt_text, pred_text, phrase) in cases.items():
        gt_dir, pred_dir = _folders(tmp_path / case.replace(" ", "_"), gt_text, pred_text)
        with pytest.raises(PoseTrackFormatError) as info:
            evaluate_folders(gt_dir, pred_dir)
        assert phrase in str(info.value), case
        assert "s.json" in str(info.value), case


def _set_2018(data, annotation, field, value, index=None):
    if index is None:
        data["annotations"][annotation][field] = value
    else:
        data["annotations"][annotation][field][index] = value
    return data


def _set_2017(data, frame, person_index, point, field, value):
    data["annolist"][frame]["annorect"][person_index]["annopoints"][0]["point"][point][field] = [value]
    return data


# Prediction files with values that are not finite numbers. Python's JSON reader accepts NaN and Infinity, and
# numpy turns the string "1.5" into a number: each would change the scores silently (MOTA 50 -> -200 with NaN).
_RIGHT_WRIST = 3 * POSETRACK18.index("right_wrist")
BAD_VALUES = [
    ("2018", lambda d: _set_2018(d, 5, "keypoints", float("nan"), _RIGHT_WRIST),
     "frame 2 (images/val/s/000002.jpg), person 1 (annotation 5): keypoint right_wrist x must be a finite number, "
     "got nan"),
    ("2018", lambda d: _set_2018(d, 0, "keypoints", float("inf"), _RIGHT_WRIST + 1),
     "frame 0 (images/val/s/000000.jpg), person 0 (annotation 0): keypoint right_wrist y must be a finite number, "
     "got inf"),
    ("2018", lambda d: _set_2018(d, 2, "keypoints", "12.5", 0),
     "frame 1 (images/val/s/000001.jpg), person 0 (annotation 2): keypoint nose x must be a finite number, "
     "got '12.5'"),
    ("2018", lambda d: _set_2018(d, 3, "keypoints", True, 2),
     "person 1 (annotation 3): keypoint nose v must be a finite number, got True"),
    ("2018", lambda d: _set_2018(d, 1, "scores", [0.9] * 16 + [float("nan")]),
     "frame 0 (images/val/s/000000.jpg), person 1 (annotation 1): score of keypoint right_ankle must be a finite "
     "number, got nan"),
    ("2018", lambda d: _set_2018(d, 4, "score", float("-inf")),
     "person 0 (annotation 4): score must be a finite number, got -inf"),
    ("2018", lambda d: _set_2018(d, 6, "bbox", [1, 2, "wide", 4]),
     "person 0 (annotation 6): box value must be a finite number, got 'wide'"),
    ("2017", lambda d: _set_2017(d, 3, 1, 4, "x", float("nan")),
     "frame 3 (images/val/s/000003.jpg), person 1: x must be a finite number, got nan"),
    ("2017", lambda d: _set_2017(d, 1, 0, 0, "score", "high"),
     "frame 1 (images/val/s/000001.jpg), person 0: score must be a finite number, got 'high'"),
]


@pytest.mark.parametrize("fmt, corrupt, message", BAD_VALUES)
def test_non_finite_or_non_numeric_values_are_refused_naming_file_frame_and_person(tmp_path, capsys, fmt, corrupt,
                                                                                    message):
    from posetrack_app.cli import main

    gt = gt_sequence(name="s")
    pred = sequence(pred_frames(lambda f: [person(1, ORIGIN[1]), person(2, ORIGIN[2])]), name="s")
    for p in (q for frame in pred.frames for q in frame.persons):
        p.score, p.box_xyxy = 0.9, np.array([0.0, 0.0, 10.0, 10.0])
    data = corrupt(json.loads(_json(pred, fmt)))
    gt_dir, pred_dir = _folders(tmp_path, _json(gt, fmt), json.dumps(data))
    code = main(["eval", str(gt_dir), str(pred_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"{pred_dir / 's.json'}: " in errors[0] and message in errors[0], errors[0]


def test_wide_values_keep_their_columns_apart():
    from posetrack_app.cli.eval import _cell
    assert [_cell(v) for v in (-1234.5, -200.0, 50.0, float("nan"))] == [" -1234.5", " -200.0", "  50.0", "   n/a"]


def test_unknown_keypoint_layout_is_named(tmp_path):
    data = json.loads(_json(gt_sequence()))
    data["categories"][0]["keypoints"] = ["nose", "left_eye", "right_eye", "left_ear", "right_ear",
                                          *POSETRACK18.keypoint_names[5:]]
    with pytest.raises(PoseTrackFormatError, match="unknown keypoint layout.*head_bottom.*COCO-17"):
        parse_sequence(data, tmp_path / "coco.json")


def test_empty_gt_folder_is_a_user_error(tmp_path):
    from posetrack_app.errors import UserError
    (tmp_path / "gt").mkdir()
    with pytest.raises(UserError, match="no .json sequence files"):
        evaluate_folders(tmp_path / "gt", tmp_path)


def test_eval_cli_prints_tables_and_writes_json(tmp_path, capsys):
    from posetrack_app.cli import main
    _write_pair(tmp_path, gt_sequence(name="s1"), sequence(pred_frames(swap), name="s1"), "2018")
    code = main(["eval", str(tmp_path / "gt"), str(tmp_path / "pred"), "--per-joint", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Average Precision (AP):" in out and "Total" in out and "neck" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ap"]["groups"]["Total"] == 100.0
    assert data["mot"]["total"]["mota"] == pytest.approx(100 * (1 - 2 / 6))
    assert main(["eval", str(tmp_path / "gt"), str(tmp_path / "nowhere")]) == 2


def _random_pairs(seed, sequences=3, frames=12, persons=4):
    """Crowded random sequences: integer offsets (distance ties), drops, swaps, false positives, empty frames."""
    rng = np.random.default_rng(seed)
    pairs = []
    for s in range(sequences):
        origins = rng.integers(0, 90, size=(persons, 2)).astype(float) * 4
        gt_frames, pred_frames = [], []
        for f in range(frames):
            gt_people = [person(p, origins[p] + f * 2) for p in range(persons) if rng.random() > 0.1]
            preds = []
            if rng.random() > 0.1:
                for p in range(persons):
                    if rng.random() < 0.15:
                        continue
                    shift = {n: tuple(rng.integers(-12, 13, 2).astype(float)) for n in EVAL_JOINT_NAMES[::3]}
                    track = int(rng.integers(0, persons + 2)) if rng.random() < 0.2 else p
                    if track in [q.track_id for q in preds]:
                        track = 100 + p
                    preds.append(person(track, origins[p] + f * 2, score=float(rng.random()), shift=shift))
            gt_frames.append(gt_people)
            pred_frames.append(preds)
        pairs.append((sequence(gt_frames, name=f"r{s}"), sequence(pred_frames, name=f"r{s}")))
    return pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_builtin_clear_mot_counts_equal_motmetrics(seed):
    pairs = _random_pairs(seed)
    fast = evaluate_sequences(pairs, mot_engine="builtin")
    reference = evaluate_sequences(pairs, mot_engine="motmetrics")
    for a, b in zip(fast.mot, reference.mot):
        assert (a.num_objects, a.num_misses, a.num_switches, a.num_false_positives, a.num_detections) == \
            (b.num_objects, b.num_misses, b.num_switches, b.num_false_positives, b.num_detections), a.name
        assert a.mota == pytest.approx(b.mota, abs=1e-9) and a.motp == pytest.approx(b.motp, abs=1e-9)
    assert sum(m.num_switches for m in fast.mot) > 0 and sum(m.num_misses for m in fast.mot) > 0
