"""Model output -> PoseTrack layout: joints by name, the head rule, persons per frame, prediction templates."""
from __future__ import annotations

import json

import numpy as np
import pytest

from posetrack_app.errors import UserError
from posetrack_app.io.posetrack_json import parse_sequence, sequence_to_json
from posetrack_app.posetrack_layout import prediction_template, to_posetrack_layout, tracks_to_persons
from posetrack_app.skeleton import COCO17, POSETRACK18
from posetrack_app.structures import Poses, Tracks


def _coco_pose(scores=None):
    keypoints = np.zeros((17, 2), np.float32)
    keypoints[COCO17.index("nose")] = (100, 50)
    keypoints[COCO17.index("left_shoulder")] = (120, 100)
    keypoints[COCO17.index("right_shoulder")] = (80, 100)
    keypoints[COCO17.index("left_wrist")] = (130, 180)
    s = np.full(17, 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return keypoints, s


def test_head_rule_shoulders_nose_hand_computed():
    keypoints, scores = _coco_pose()
    scores[COCO17.index("nose")] = 0.6
    out_kp, out_scores = to_posetrack_layout(keypoints[None], scores[None], COCO17, "shoulders_nose")
    # S = (100, 100), N = (100, 50), N - S = (0, -50): bottom = S + 0.3 (N - S), top = N + 0.5 (N - S).
    np.testing.assert_allclose(out_kp[0, POSETRACK18.index("head_bottom")], [100, 85])
    np.testing.assert_allclose(out_kp[0, POSETRACK18.index("head_top")], [100, 25])
    assert out_scores[0, POSETRACK18.index("head_top")] == pytest.approx(0.6)  # min of the inputs
    np.testing.assert_allclose(out_kp[0, POSETRACK18.index("left_wrist")], [130, 180])
    assert np.isnan(out_scores[0, POSETRACK18.index("left_ear")])  # never written


def test_head_rule_none_and_unknown():
    keypoints, scores = _coco_pose()
    _, out_scores = to_posetrack_layout(keypoints[None], scores[None], COCO17, "none")
    assert np.isnan(out_scores[0, POSETRACK18.index("head_top")])
    with pytest.raises(UserError, match="posetrack.head_rule"):
        to_posetrack_layout(keypoints[None], scores[None], COCO17, "magic")


def test_posetrack_trained_model_maps_by_name_without_derivation():
    keypoints = np.arange(34, dtype=np.float32).reshape(1, 17, 2)
    scores = np.full((1, 17), 0.8, np.float32)
    out_kp, _ = to_posetrack_layout(keypoints, scores, POSETRACK18, "shoulders_nose")
    np.testing.assert_allclose(out_kp[0, POSETRACK18.index("head_top")], keypoints[0, POSETRACK18.index("head_top")])


def test_tracks_to_persons_drops_low_scores_and_empty_persons():
    kp, scores = _coco_pose()
    weak = np.full(17, 0.1, np.float32)
    scores_a = scores.copy()
    scores_a[COCO17.index("left_wrist")] = 0.3
    poses = Poses(np.stack([kp, kp]), np.stack([scores_a, weak]), np.array([[0, 0, 10, 10]] * 2, np.float32),
                  np.array([0.9, 0.2], np.float32))
    persons = tracks_to_persons(Tracks(np.array([5, 6]), poses), COCO17, keypoint_score_threshold=0.4)
    assert [p.track_id for p in persons] == [5]   # track 6 has no keypoint >= 0.4
    person = persons[0]
    assert not person.present[POSETRACK18.index("left_wrist")]
    assert person.present[POSETRACK18.index("head_top")] and person.num_points == 14
    # Written and read back, the person keeps exactly its kept keypoints.
    template = prediction_template(parse_sequence(
        {"images": [{"id": 1, "file_name": "f/000000.jpg", "is_labeled": True}], "annotations": [],
         "categories": [{"name": "person", "keypoints": list(POSETRACK18.keypoint_names)}]}, "t.json"))
    template.frames[0].persons = persons
    back = parse_sequence(json.loads(json.dumps(sequence_to_json(template))), "u.json").frames[0].persons[0]
    np.testing.assert_array_equal(back.present, person.present)
