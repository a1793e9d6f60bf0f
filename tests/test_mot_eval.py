"""Box MOT metrics on hand-made MOTChallenge files with known error counts."""
import numpy as np
import pytest

from posetrack_app.cli import main
from posetrack_app.errors import UserError
from posetrack_app.evaluation.mot import evaluate_mot, format_mot_table, load_mot_file, parse_mot_text

GT = """1,1,10,10,20,40,1,-1,-1,-1
1,2,100,10,20,40,1,-1,-1,-1
2,1,12,10,20,40,1,-1,-1,-1
2,2,98,10,20,40,1,-1,-1,-1
3,1,14,10,20,40,1,-1,-1,-1
3,2,96,10,20,40,1,-1,-1,-1
3,3,200,200,20,40,0,-1,-1,-1
"""


def _pred(lines):
    return parse_mot_text("\n".join(lines), "pred")


@pytest.mark.parametrize("name, lines, expected", [
    ("perfect", [l for l in GT.splitlines() if not l.startswith("3,3")],
     dict(mota=1.0, idf1=1.0, id_switches=0, false_negatives=0, false_positives=0)),
    ("one_miss", ["1,1,10,10,20,40", "1,2,100,10,20,40", "2,1,12,10,20,40", "2,2,98,10,20,40", "3,1,14,10,20,40"],
     dict(false_negatives=1, false_positives=0, id_switches=0, mota=1 - 1 / 6)),
    ("one_false_positive", [l for l in GT.splitlines() if not l.startswith("3,3")] + ["2,9,300,300,20,40"],
     dict(false_negatives=0, false_positives=1, id_switches=0, mota=1 - 1 / 6)),
    ("one_switch", ["1,1,10,10,20,40", "1,2,100,10,20,40", "2,1,12,10,20,40", "2,2,98,10,20,40",
                    "3,7,14,10,20,40", "3,2,96,10,20,40"],
     dict(false_negatives=0, false_positives=0, id_switches=1, mota=1 - 1 / 6)),
    ("low_iou_is_a_miss_and_a_false_positive", ["1,1,25,10,20,40", "1,2,100,10,20,40", "2,1,12,10,20,40",
                                                 "2,2,98,10,20,40", "3,1,14,10,20,40", "3,2,96,10,20,40"],
     dict(false_negatives=1, false_positives=1, id_switches=0)),
    ("box_on_a_non_target_is_not_a_false_positive", [l for l in GT.splitlines()],
     dict(false_positives=0, false_negatives=0, mota=1.0)),
])
def test_counts(name, lines, expected):
    result = evaluate_mot(parse_mot_text(GT, "gt"), _pred(lines))
    assert result.num_frames == 3 and result.num_gt_ids == 2 and result.num_gt_boxes == 6
    for key, value in expected.items():
        assert getattr(result, key) == pytest.approx(value, abs=1e-9), key


def test_non_targets_count_when_asked():
    result = evaluate_mot(parse_mot_text(GT, "gt"), _pred([]), gt_min_confidence=0.0)
    assert result.num_gt_boxes == 7 and result.false_negatives == 7 and result.num_gt_ids == 3


@pytest.mark.parametrize("text, message", [
    ("1,2,3", "expected MOTChallenge columns"),
    ("1,a,3,4,5,6", "non-numeric"),
    ("1,1,nan,4,5,6,1", "line 1: NaN or infinite value"),
    ("1,1,3,4,inf,6,1", "line 1: NaN or infinite value"),
    ("1,1,3,4,5,6,-Infinity", "line 1: NaN or infinite value"),
    ("0,1,3,4,5,6", "1-based"),
    ("1,1,3,4,-5,6", "negative box"),
    ("1,1,3,4,5,6\n1,1,9,9,5,6", "twice"),
])
def test_bad_lines_raise_user_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_mot_text(text, "f.txt")


def test_files_and_cli(tmp_path, capsys):
    gt = tmp_path / "gt.txt"
    gt.write_text(GT)
    pred = tmp_path / "pred.txt"
    pred.write_text("1 1 10 10 20 40\n1 2 100 10 20 40\n")  # whitespace-separated is accepted too
    assert sorted(load_mot_file(pred)) == [1]
    assert main(["eval-mot", str(gt), str(pred)]) == 0
    out = capsys.readouterr().out
    # 2 of 6 boxes found: FN 4, MOTA = 1 - 4/6 = 33.3, precision 100.0
    assert "| MOTA |" in out and "| 33.3 | " in out and "| 4 | 0 | 100.0 |" in out
    assert main(["eval-mot", str(gt), str(tmp_path / "missing.txt")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("")
    assert main(["eval-mot", str(tmp_path / "empty.txt"), str(pred)]) == 2


def test_real_ground_truth_scores_itself_perfectly(shared_data):
    path = shared_data / "pets09_s2l1" / "gt" / "gt.txt"
    result = evaluate_mot(load_mot_file(path), load_mot_file(path))
    assert (result.mota, result.idf1, result.num_frames, result.num_gt_ids) == (1.0, 1.0, 795, 19)


def test_table_format():
    result = evaluate_mot(parse_mot_text(GT, "gt"), _pred([]))
    table = format_mot_table({"x": result}, {"x": {"FPS": "3.0"}})
    assert table.splitlines()[0].startswith("|  | MOTA | IDF1 | IDSW | FN | FP")
    assert table.splitlines()[2].startswith("| x | 0.0 |") and "| 3.0 |" in table


def test_max_frames_scores_only_the_first_frames(tmp_path, capsys):
    gt = tmp_path / "gt.txt"
    gt.write_text(GT)
    pred = tmp_path / "pred.txt"
    pred.write_text("1,1,10,10,20,40\n1,2,100,10,20,40\n")  # a run stopped after frame 1
    result = evaluate_mot(parse_mot_text(GT, "gt"), load_mot_file(pred), max_frames=1)
    assert result.num_frames == 1 and result.mota == 1.0 and result.false_negatives == 0
    assert main(["eval-mot", str(gt), str(pred), "--max-frames", "1"]) == 0
    assert "| 100.0 |" in capsys.readouterr().out
    assert main(["eval-mot", str(gt), str(pred), "--max-frames", "0"]) == 2
    assert "--max-frames must be >= 1" in capsys.readouterr().err
