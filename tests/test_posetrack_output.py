"""`posetrack track VIDEO --out-posetrack F.json` writes PoseTrack 2018 (the batch command's conversion and
writer), and `posetrack eval` scores it: against hand-written ground truth with hand-computed scores, and with the
real pipeline against the human annotations of the PoseTrack 2018 sample."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from posetrack_app.cli import main
from posetrack_app.skeleton import POSETRACK18

# The PoseTrack 2018 keypoint order as the official files name it (written out here, not taken from our code).
POSETRACK18_NAMES = ["nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                     "right_knee", "left_ankle", "right_ankle"]
EARS = (3, 4)


def joints(track_id):
    """[17, 2] image pixels of person `track_id`: a 5-wide grid of joints 10 px apart, persons 200 px apart."""
    return np.array([[100.0 + 200 * (track_id - 1) + 10 * (k % 5), 50.0 + 10 * (k // 5)] for k in range(17)])


# Person 2 is not predicted in frame 2: one miss. Everything else is exact.
PREDICTED = {0: (1, 2), 1: (1, 2), 2: (1,), 3: (1, 2)}


class ScriptedPoses:
    """Pose stage test double in the PoseTrack-18 layout: PREDICTED persons at their exact joints, score 0.9."""

    skeleton = POSETRACK18

    def __call__(self, frame, detections):
        from posetrack_app.structures import Poses

        ids = PREDICTED[frame.index]
        keypoints = np.stack([joints(t) for t in ids]).astype(np.float32)
        boxes = np.array([[*joints(t).min(axis=0), *joints(t).max(axis=0)] for t in ids], np.float32)
        return Poses(keypoints, np.full((len(ids), 17), 0.9, np.float32), boxes, np.full(len(ids), 0.8, np.float32))


class ScriptedTracker:
    """Gives each frame's persons their scripted track ids."""

    def reset(self):
        pass

    def propose(self, frame):
        from posetrack_app.structures import Detections
        return Detections.empty()

    def update(self, frame, poses):
        from posetrack_app.structures import Tracks
        return Tracks(np.array(PREDICTED[frame.index]), poses)


def scripted_pipeline(cfg, detector=None, live=False):
    """The real Pipeline (and runner) around scripted stages: no detector network, exact known poses (a stand-in
    for build.build_pipeline, with its signature)."""
    from posetrack_app.pipeline import Pipeline
    from posetrack_app.structures import Detections

    return Pipeline(lambda frame: Detections.empty(), ScriptedPoses(), ScriptedTracker())


def hand_written_gt(frames=4):
    """2018 GT written out by hand: persons 1 and 2 in every frame, every joint but the ears, 60 x 80 px head boxes
    (diagonal 100: a joint matches within 0.5 x 0.6 x 100 = 30 px)."""
    images, annotations = [], []
    for f in range(frames):
        images.append({"file_name": f"frames/{f:06d}.jpg", "id": f, "is_labeled": True})
        for t in (1, 2):
            keypoints = []
            for k, (x, y) in enumerate(joints(t)):
                keypoints += [0, 0, 0] if k in EARS else [float(x), float(y), 1]
            x0, y0 = joints(t)[0]
            annotations.append({"image_id": f, "track_id": t, "keypoints": keypoints,
                                "bbox_head": [float(x0), float(y0) - 80, 60, 80], "id": 10 * f + t})
    return {"images": images, "annotations": annotations,
            "categories": [{"name": "person", "id": 1, "keypoints": POSETRACK18_NAMES}]}


def test_out_posetrack_is_scored_by_eval_with_hand_computed_numbers(tmp_path, capsys, monkeypatch):
    import posetrack_app.build as build

    frames = tmp_path / "frames"
    frames.mkdir()
    for f in range(4):
        cv2.imwrite(str(frames / f"{f:06d}.jpg"), np.full((300, 600, 3), 50, np.uint8))
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / "seq.json").write_text(json.dumps(hand_written_gt()))
    monkeypatch.setattr(build, "build_pipeline", scripted_pipeline)

    code = main(["track", str(frames), "--out-posetrack", str(tmp_path / "pred" / "seq.json"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    written = json.loads((tmp_path / "pred" / "seq.json").read_text())
    assert [image["file_name"] for image in written["images"]] == [f"frames/{f:06d}.jpg" for f in range(4)]
    assert written["categories"][0]["keypoints"] == POSETRACK18_NAMES
    assert len(written["annotations"]) == 7

    code = main(["eval", str(tmp_path / "gt"), str(tmp_path / "pred"), "--json", str(tmp_path / "scores.json")])
    assert code == 0, capsys.readouterr().err
    scores = json.loads((tmp_path / "scores.json").read_text())
    # AP per joint: 8 GT points, 7 exact predictions of equal score, no false positive: precision 1 up to recall
    # 7/8, so AP = 87.5. MOT: frames 0-2 (the last is left out), 6 objects per joint, 1 miss: MOTA = 1 - 1/6.
    for joint in scores["ap"]["joints"]:
        assert joint["ap"] == pytest.approx(87.5, abs=1e-9), joint
        assert (joint["num_gt"], joint["num_predictions"]) == (8, 7)
    for joint in scores["mot"]["joints"]:
        assert joint["mota"] == pytest.approx(100 * (1 - 1 / 6), abs=1e-9), joint
        assert (joint["num_objects"], joint["num_misses"], joint["num_switches"],
                joint["num_false_positives"]) == (6, 1, 0, 0)


SAMPLE = ("003418_mpii_test", "009473_mpii_test", "012834_mpii_test")


@pytest.mark.slow
def test_real_pipeline_out_posetrack_against_the_human_annotated_sample(shared_data, tmp_path, capsys):
    """The default pipeline (YOLO11n-pose keypoints, shoulders-nose head rule) on the three annotated frames of the
    PoseTrack 2018 sample: measured Total AP 36.5, shoulders 59.6 (2-core CPU). The floors are far below, yet far
    above what a wrong joint order or misaligned frames would give (about 0)."""
    sample = shared_data / "posetrack18_sample"
    (tmp_path / "pred").mkdir()
    for name in SAMPLE:
        code = main(["track", str(sample / "images" / "val" / name), "--out-posetrack",
                     str(tmp_path / "pred" / f"{name}.json"), "--no-progress"])
        assert code == 0, capsys.readouterr().err
    shutil.copytree(sample / "annotations", tmp_path / "gt")
    code = main(["eval", str(tmp_path / "gt"), str(tmp_path / "pred"), "--json", str(tmp_path / "scores.json")])
    assert code == 0, capsys.readouterr().err
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["num_sequences"] == 3 and scores["num_frames"] == 3
    assert scores["ap"]["groups"]["Total"] >= 25.0, scores["ap"]["groups"]
    assert scores["ap"]["groups"]["Shou"] >= 40.0, scores["ap"]["groups"]
