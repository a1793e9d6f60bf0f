"""PoseTrack 2017 / 2018 sequence files: reading, writing, round trips."""
from __future__ import annotations

import numpy as np
import pytest

from posetrack_app.io.posetrack_json import (EVAL_JOINT_NAMES, EVAL_TO_LAYOUT, PoseTrackFormatError,
                                             parse_sequence, read_sequence, sequence_to_json, write_sequence)
from posetrack_app.skeleton import POSETRACK18


def _assert_same_sequence(a, b):
    assert len(a.frames) == len(b.frames)
    for fa, fb in zip(a.frames, b.frames):
        assert fa.file_name == fb.file_name and fa.is_labeled == fb.is_labeled
        assert len(fa.ignore_regions) == len(fb.ignore_regions)
        for ra, rb in zip(fa.ignore_regions, fb.ignore_regions):
            np.testing.assert_allclose(ra, rb)
        assert [p.track_id for p in fa.persons] == [p.track_id for p in fb.persons]
        for pa, pb in zip(fa.persons, fb.persons):
            np.testing.assert_array_equal(pa.present, pb.present)
            np.testing.assert_allclose(pa.keypoints[pa.present], pb.keypoints[pb.present], atol=1e-3)
            np.testing.assert_allclose(pa.keypoint_scores[pa.present], pb.keypoint_scores[pb.present], atol=1e-5)
            np.testing.assert_allclose(pa.head_box_xyxy, pb.head_box_xyxy, atol=1e-3)


def test_reads_the_2018_sample(shared_data):
    seq = read_sequence(shared_data / "posetrack18_sample" / "annotations" / "009473_mpii_test.json")
    assert seq.format == "2018" and seq.name == "009473_mpii_test" and len(seq) == 1
    frame = seq.frames[0]
    assert frame.is_labeled and frame.file_name == "images/val/009473_mpii_test/000000.jpg"
    first, second = frame.persons
    assert (first.track_id, second.track_id) == (0, 1)
    # bbox_head [648, 253, 138, 103] (x, y, w, h) -> xyxy.
    np.testing.assert_allclose(first.head_box_xyxy, [648, 253, 786, 356])
    # 14 of 15 joints annotated (left_elbow is (0, 0, 0)); ear slots never present.
    assert first.num_points == 14 and not first.present[POSETRACK18.index("left_elbow")]
    assert not first.present[POSETRACK18.index("left_ear")]
    np.testing.assert_allclose(first.keypoints[POSETRACK18.index("head_top")], [704.1047363, 254.4751892])
    assert np.isnan(first.keypoint_scores).all()  # GT: empty 'scores'


@pytest.mark.parametrize("name", ["003418_mpii_test", "009473_mpii_test", "012834_mpii_test"])
def test_sample_round_trips_through_both_formats(shared_data, tmp_path, name):
    original = read_sequence(shared_data / "posetrack18_sample" / "annotations" / f"{name}.json")
    assert original.frames[0].ignore_regions  # the sample has ignore regions
    write_sequence(tmp_path / "a.json", original, "2017")
    as_2017 = read_sequence(tmp_path / "a.json")
    assert as_2017.format == "2017"
    write_sequence(tmp_path / "b.json", as_2017, "2018")
    back = read_sequence(tmp_path / "b.json")
    _assert_same_sequence(original, as_2017)
    _assert_same_sequence(original, back)


def test_2018_keypoint_presence_follows_the_official_converter(tmp_path):
    names = list(POSETRACK18.keypoint_names)
    triples = [0.0] * 51
    triples[0:3] = [10, 20, 0]     # nose: visibility 0 but real coordinates -> present
    triples[3:6] = [0, 0, 1]       # head_bottom at (0, 0) but visible -> present
    triples[6:9] = [0, 0, 0]       # head_top: (0, 0, 0) -> absent
    triples[9:12] = [5, 5, 1]      # left_ear: not scored by PoseTrack -> absent
    data = {"images": [{"id": 7, "file_name": "x/000000.jpg"}],
            "annotations": [{"image_id": 7, "track_id": 3, "keypoints": triples, "scores": [0.5] * 17,
                             "bbox_head": [0, 0, 10, 10]}],
            "categories": [{"name": "person", "keypoints": names}]}
    person = parse_sequence(data, tmp_path / "x.json").frames[0].persons[0]
    assert person.present[[0, 1, 2, 3]].tolist() == [True, True, False, False]
    assert person.keypoint_scores[0] == 0.5


def test_2017_points_scores_and_missing_point_lists(tmp_path):
    data = {"annolist": [{
        "image": [{"name": "images/bonn/000001.jpg"}], "imgnum": [1],
        "annorect": [
            {"track_id": [4], "x1": [0], "y1": [0], "x2": [30], "y2": [40],
             "annopoints": [{"point": [{"id": [13], "x": [5.5], "y": [6], "score": [0.7]},
                                       {"id": [13], "x": [99], "y": [99]},   # repeated id: first one wins
                                       {"id": [0], "x": [1], "y": [2]}]}]},
            {"track_id": [5], "x1": [0], "y1": [0], "x2": [30], "y2": [40], "annopoints": []},
        ],
        "ignore_regions": [{"point": [{"x": [0], "y": [0]}, {"x": [9], "y": [0]}, {"x": [9], "y": [9]}]}],
    }]}
    seq = parse_sequence(data, tmp_path / "s.json")
    a, b = seq.frames[0].persons
    nose = POSETRACK18.index("nose")
    assert a.present[nose] and a.keypoints[nose].tolist() == [5.5, 6.0] and a.keypoint_scores[nose] == 0.7
    assert a.present[POSETRACK18.index("right_ankle")] and np.isnan(a.keypoint_scores[POSETRACK18.index("right_ankle")])
    assert a.has_point_list and not b.has_point_list
    assert seq.frames[0].is_labeled  # no is_labeled key: labeled when it has persons
    np.testing.assert_allclose(seq.frames[0].ignore_regions[0], [[0, 0], [9, 0], [9, 9]])
    again = parse_sequence(sequence_to_json(seq, "2017"), tmp_path / "t.json")
    assert not again.frames[0].persons[1].has_point_list


def test_eval_order_matches_the_2017_point_ids():
    assert EVAL_JOINT_NAMES[0] == "right_ankle" and EVAL_JOINT_NAMES[12] == "head_bottom"
    assert [POSETRACK18.keypoint_names[i] for i in EVAL_TO_LAYOUT] == list(EVAL_JOINT_NAMES)


@pytest.mark.parametrize("text,phrase", [
    ("[1, 2]", "expected a JSON object"),
    ('{"foo": 1}', "neither a PoseTrack 2017 file"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "no 'categories'"),
    ('{"annolist": [{"annorect": [{"annopoints": []}]}]}', "no track_id"),
    ('{"annolist": [{"annorect": [{"track_id": [1], "annopoints": [{"point": [{"id": [15], "x": [1], "y": [1]}]}]}]}]}',
     "outside 0..14"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, text, phrase):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(PoseTrackFormatError) as info:
        read_sequence(path)
    assert phrase in str(info.value) and str(path) in str(info.value)


def test_wrong_keypoint_count_in_2018(tmp_path):
    data = {"images": [{"id": 1}], "annotations": [{"image_id": 1, "track_id": 0, "keypoints": [0] * 45}],
            "categories": [{"name": "person", "keypoints": list(POSETRACK18.keypoint_names)}]}
    with pytest.raises(PoseTrackFormatError, match="17 x \\(x, y, v\\) = 51 numbers"):
        parse_sequence(data, tmp_path / "k.json")
