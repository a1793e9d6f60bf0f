"""Batch runner: dataset walking, resume, failures, worker processes, Ray, and a real end-to-end run.

Most tests use `fake_factory`: a deterministic test double whose poses follow from the image's grey level. The
ground truth is written out by hand from the same rule (`gt_persons`, plain JSON dicts, never the project's
PoseTrack conversion or writer), so the scores are known without running the code under test. One test runs the
real pipeline (YOLO11n-pose) on the PoseTrack 2018 sample, kills the batch midway, resumes it, and scores it
against the sample's human annotations.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from posetrack_app import batch as batch_module
from posetrack_app.batch import discover_sequences, predict_sequence, run_batch
from posetrack_app.config import AppConfig, load_config
from posetrack_app.errors import UserError
from posetrack_app.evaluation.posetrack import evaluate_folders
from posetrack_app.skeleton import POSETRACK18
from posetrack_app.structures import LATE_POSES, PENDING_SINCE, Poses, Tracks

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
FAIL_LEVEL = 255  # a frame of this grey level makes the fake pipeline raise

# The official PoseTrack 2018 keypoint order, written out (the ears are never annotated or scored).
POSETRACK18_NAMES = ["nose", "head_bottom", "head_top", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                     "right_knee", "left_ankle", "right_ankle"]
EARS = (3, 4)
EVAL_ORDER_2017 = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
                   "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "head_bottom", "nose",
                   "head_top"]


def person_joints(level: int, track_id: int) -> np.ndarray:
    """[17, 2] joints (PoseTrack-18 order) of person `track_id` in a frame of grey `level`: persons 1 and 2 are
    what the fake pipeline finds; person 3 only exists in ground truth made with `unseen_person`."""
    base = np.stack([np.arange(17) * 3.0, np.arange(17) * 5.0], axis=1)
    return base + {1: (level, 10), 2: (level + 100, 20), 3: (level + 200, 30)}[track_id]


class FakePipeline:
    """Persons 1 and 2 (PoseTrack-18 layout, score 0.9) placed by the image's grey level; a white frame raises."""

    skeleton = POSETRACK18

    def reset(self):
        self.frames = 0

    def step(self, frame):
        level = int(frame.image_bgr[0, 0, 0])
        if level == FAIL_LEVEL:
            raise ValueError("fake pipeline: cannot handle a white frame")
        keypoints = np.stack([person_joints(level, 1), person_joints(level, 2)]).astype(np.float32)
        scores = np.full((2, 17), 0.9, np.float32)
        boxes = np.array([[level, 10, level + 60, 110], [level + 100, 20, level + 160, 120]], np.float32)
        return Tracks(np.array([1, 2]), Poses(keypoints, scores, boxes, np.array([0.9, 0.8], np.float32)))


def fake_factory(cfg):
    return FakePipeline()


def _gt_2018(name, levels, track_ids):
    images, annotations = [], []
    for i, level in enumerate(levels):
        images.append({"file_name": f"images/val/{name}/{i:06d}.png", "id": i, "is_labeled": True})
        for t in ([] if level == FAIL_LEVEL else track_ids):
            keypoints = []
            for k, (x, y) in enumerate(person_joints(level, t)):
                keypoints += [0, 0, 0] if k in EARS else [float(x), float(y), 1]
            x0, y0 = person_joints(level, t)[0]
            annotations.append({"id": 100 * i + t, "image_id": i, "track_id": t, "keypoints": keypoints,
                                "bbox_head": [float(x0), float(y0), 60.0, 80.0]})
    return {"images": images, "annotations": annotations,
            "categories": [{"name": "person", "id": 1, "keypoints": POSETRACK18_NAMES}]}


def _gt_2017(name, levels, track_ids):
    annolist = []
    for i, level in enumerate(levels):
        rects = []
        for t in ([] if level == FAIL_LEVEL else track_ids):
            joints = person_joints(level, t)
            points = [{"id": [j], "x": [float(joints[POSETRACK18_NAMES.index(n), 0])],
                       "y": [float(joints[POSETRACK18_NAMES.index(n), 1])]} for j, n in enumerate(EVAL_ORDER_2017)]
            x0, y0 = joints[0]
            rects.append({"track_id": [t], "x1": [float(x0)], "y1": [float(y0)], "x2": [float(x0) + 60],
                          "y2": [float(y0) + 80], "annopoints": [{"point": points}]})
        annolist.append({"image": [{"name": f"images/val/{name}/{i:06d}.png"}], "imgnum": [i + 1],
                         "is_labeled": [1], "annorect": rects})
    return {"annolist": annolist}


def make_dataset(root: Path, sequences: dict, fmt="2018", unseen_person=()):
    """sequences: name -> grey levels, one flat PNG frame per level (lossless, so the fake reads the level back
    exactly). GT files are hand-written JSON: persons 1 and 2 per frame (none in a white frame), plus person 3 in
    the sequences named in `unseen_person`."""
    for name, levels in sequences.items():
        folder = root / "images" / "val" / name
        folder.mkdir(parents=True)
        for i, level in enumerate(levels):
            cv2.imwrite(str(folder / f"{i:06d}.png"), np.full((48, 64, 3), level, np.uint8))
        track_ids = (1, 2, 3) if name in unseen_person else (1, 2)
        data = (_gt_2017 if fmt == "2017" else _gt_2018)(name, levels, track_ids)
        (root / "annotations" / "val").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "val" / f"{name}.json").write_text(json.dumps(data))


def grey(level, n=3):
    return [level + 10 * i for i in range(n)]


@pytest.fixture
def fake_dataset(tmp_path):
    make_dataset(tmp_path / "ds", {"seq_a": grey(20), "seq_b": grey(60), "seq_c": grey(100)})
    return tmp_path / "ds"


def test_discover_sequences_errors(tmp_path, fake_dataset):
    assert [j.name for j in discover_sequences(fake_dataset, "val")] == ["seq_a", "seq_b", "seq_c"]
    with pytest.raises(UserError, match="does not exist"):
        discover_sequences(tmp_path / "nowhere", "val")
    with pytest.raises(UserError, match="splits found: val"):
        discover_sequences(fake_dataset, "test")
    (tmp_path / "empty" / "annotations" / "val").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no sequences"):
        discover_sequences(tmp_path / "empty", "val")


def test_batch_writes_resumes_and_scores(fake_dataset, tmp_path):
    jobs = discover_sequences(fake_dataset, "val")
    out = tmp_path / "pred"
    report = run_batch(jobs, out, AppConfig(), pipeline_factory=fake_factory)
    assert [o.status for o in report.outcomes] == ["done"] * 3 and report.num_frames == 9
    result = evaluate_folders(fake_dataset / "annotations" / "val", out)
    assert result.total_ap == 100.0 and result.total_mota == 100.0
    # Every predicted joint sits exactly on the hand-written GT joint of its person.
    data = json.loads((out / "seq_b.json").read_text())
    by_image_and_track = {(a["image_id"], a["track_id"]): a["keypoints"] for a in data["annotations"]}
    for i, level in enumerate(grey(60)):
        for t in (1, 2):
            expected = _gt_2018("seq_b", [level], (t,))["annotations"][0]["keypoints"]
            np.testing.assert_allclose(by_image_and_track[(i, t)], expected, atol=1e-3)
    stamp = (out / "seq_b.json").stat().st_mtime_ns
    (out / "seq_c.json").unlink()
    again = run_batch(jobs, out, AppConfig(), pipeline_factory=fake_factory)
    assert sorted((o.name, o.status) for o in again.outcomes) == [
        ("seq_a", "skipped"), ("seq_b", "skipped"), ("seq_c", "done")]
    assert (out / "seq_b.json").stat().st_mtime_ns == stamp
    redo = run_batch(jobs, out, AppConfig(), pipeline_factory=fake_factory, overwrite=True)
    assert [o.status for o in redo.outcomes] == ["done"] * 3


def test_scores_against_ground_truth_with_a_person_never_predicted(tmp_path):
    """seq_c's GT has a third person in every frame that the fake never finds. Per joint: 6 + 6 + 9 = 21 GT points,
    18 exact predictions of one score, no false positive: AP = 18/21. MOT leaves each sequence's last frame out:
    4 + 4 + 6 = 14 objects, 2 misses (person 3 twice): MOTA = 1 - 2/14."""
    make_dataset(tmp_path / "ds", {"seq_a": grey(20), "seq_b": grey(60), "seq_c": grey(100)}, unseen_person={"seq_c"})
    run_batch(discover_sequences(tmp_path / "ds", "val"), tmp_path / "pred", AppConfig(), pipeline_factory=fake_factory)
    result = evaluate_folders(tmp_path / "ds" / "annotations" / "val", tmp_path / "pred")
    for joint in result.ap:
        assert (joint.num_gt, joint.num_predictions) == (21, 18)
        assert joint.ap == pytest.approx(100 * 18 / 21, abs=1e-9)
    for joint in result.mot:
        assert (joint.num_objects, joint.num_misses, joint.num_switches, joint.num_false_positives) == (14, 2, 0, 0)
        assert joint.mota == pytest.approx(100 * (1 - 2 / 14), abs=1e-9)


class LateConfirmingPipeline(FakePipeline):
    """Person 2 is tracked but not yet confirmed in the first two frames: reported from frame 2 on, when the tracker
    hands over their poses of frames 0 and 1 (LATE_POSES), as FlowTrack does for a person first detected weakly."""

    def step(self, frame):
        tracks = super().step(frame)
        if frame.index >= 2:
            if frame.index == 2:
                tracks.info[LATE_POSES] = {i: self._person_2(i) for i in (0, 1)}
            return tracks
        report = Tracks(tracks.track_ids[:1], tracks.poses.select(np.array([0])))
        report.info[PENDING_SINCE] = 0
        return report

    def _person_2(self, index):
        level = self.levels[index]
        return Tracks(np.array([2]), Poses(person_joints(level, 2)[None].astype(np.float32),
                                           np.full((1, 17), 0.9, np.float32),
                                           np.array([[level + 100, 20, level + 160, 120]], np.float32),
                                           np.array([0.4], np.float32)))


def test_a_person_confirmed_late_is_written_in_their_first_frames(tmp_path):
    """The prediction file holds person 2 in frames 0 and 1 too, so it scores as if they were reported at once."""
    levels = grey(20, n=4)
    make_dataset(tmp_path / "ds", {"seq": levels})
    pipeline = LateConfirmingPipeline()
    pipeline.levels = levels
    run_batch(discover_sequences(tmp_path / "ds", "val"), tmp_path / "pred", AppConfig(),
              pipeline_factory=lambda cfg: pipeline)
    data = json.loads((tmp_path / "pred" / "seq.json").read_text())
    assert sorted((a["image_id"], a["track_id"]) for a in data["annotations"]) == [
        (i, t) for i in range(4) for t in (1, 2)]
    result = evaluate_folders(tmp_path / "ds" / "annotations" / "val", tmp_path / "pred")
    assert result.total_ap == 100.0 and result.total_mota == 100.0


def test_batch_keeps_the_gt_format_and_threshold(tmp_path):
    make_dataset(tmp_path / "ds", {"old": grey(20)}, fmt="2017")
    jobs = discover_sequences(tmp_path / "ds", "val")
    cfg = load_config(None, ["posetrack.keypoint_score_threshold=0.95"])  # above the fake's 0.9
    run_batch(jobs, tmp_path / "pred", cfg, pipeline_factory=fake_factory)
    data = json.loads((tmp_path / "pred" / "old.json").read_text())
    assert "annolist" in data and len(data["annolist"]) == 3
    assert all(entry["annorect"] == [] for entry in data["annolist"])  # every keypoint below the threshold


def test_failing_sequences_are_reported_and_the_rest_go_on(tmp_path):
    make_dataset(tmp_path / "ds", {"good": grey(20), "white": [20, FAIL_LEVEL, 40]})
    make_dataset(tmp_path / "ds2", {"lost": grey(20)})
    (tmp_path / "ds2" / "images" / "val" / "lost" / "000002.png").unlink()
    jobs = discover_sequences(tmp_path / "ds", "val") + discover_sequences(tmp_path / "ds2", "val")
    report = run_batch(jobs, tmp_path / "pred", AppConfig(), pipeline_factory=fake_factory)
    status = {o.name: (o.status, o.message) for o in report.outcomes}
    assert status["good"][0] == "done"
    assert status["white"][0] == "failed" and "white frame" in status["white"][1]
    assert status["lost"][0] == "failed" and "000002.png" in status["lost"][1]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["good.json"]


def test_cli_lists_failures_and_exits_1(tmp_path, monkeypatch, capsys):
    from posetrack_app.cli import main
    make_dataset(tmp_path / "ds", {"good": grey(20), "white": [FAIL_LEVEL]})
    monkeypatch.setattr(batch_module, "default_pipeline_factory", fake_factory)
    code = main(["batch", str(tmp_path / "ds"), "--out", str(tmp_path / "pred"), "--eval", "--no-progress",
                 "--json", str(tmp_path / "scores.json")])
    captured = capsys.readouterr()
    assert code == 1
    assert "white: fake pipeline: cannot handle a white frame" in captured.err
    assert "scoring the 1 of 2 sequences" in captured.out
    assert json.loads((tmp_path / "scores.json").read_text())["ap"]["groups"]["Total"] == 100.0
    assert main(["batch", str(tmp_path / "nowhere"), "--out", str(tmp_path / "pred")]) == 2


def test_worker_processes_give_the_same_files(fake_dataset, tmp_path):
    jobs = discover_sequences(fake_dataset, "val")
    run_batch(jobs, tmp_path / "one", AppConfig(), pipeline_factory=fake_factory)
    report = run_batch(jobs, tmp_path / "two", AppConfig(), pipeline_factory=fake_factory, workers=2)
    assert sorted(o.status for o in report.outcomes) == ["done"] * 3
    for job in jobs:
        assert (tmp_path / "one" / f"{job.name}.json").read_text() == (tmp_path / "two" / f"{job.name}.json").read_text()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (pip install 'posetrack_app[ray]')")
def test_ray_local_cluster_runs_a_batch(fake_dataset, tmp_path):
    import ray

    make_dataset(fake_dataset, {"white": [FAIL_LEVEL]})
    jobs = discover_sequences(fake_dataset, "val")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])}})
    try:
        report = run_batch(jobs, tmp_path / "pred", AppConfig(), pipeline_factory=fake_factory, ray_address="auto")
    finally:
        ray.shutdown()
    status = {o.name: o.status for o in report.outcomes}
    assert status == {"seq_a": "done", "seq_b": "done", "seq_c": "done", "white": "failed"}
    assert "white frame" in report.failed[0].message
    for name in ("seq_a", "seq_b", "seq_c"):
        assert len(json.loads((tmp_path / "pred" / f"{name}.json").read_text())["images"]) == 3


# ------------------------------------------------------------------------------------ real pipeline

SAMPLE = ("003418_mpii_test", "009473_mpii_test", "012834_mpii_test")


def _sample_dataset(sample: Path, root: Path) -> Path:
    """The PoseTrack 2018 sample in the batch layout: images/val/<seq>/ and annotations/val/<seq>.json."""
    shutil.copytree(sample / "images", root / "images")
    (root / "annotations" / "val").mkdir(parents=True)
    for name in SAMPLE:
        shutil.copy(sample / "annotations" / f"{name}.json", root / "annotations" / "val" / f"{name}.json")
    return root


def test_real_pipeline_batch_is_killed_resumed_and_scores(shared_data, tmp_path):
    """The default pipeline on the sample's three annotated 1920x1080 frames, one sequence each (a few seconds
    apiece on this CPU): killed after the first file, resumed, and scored against the human annotations
    (measured Total AP 36.5, shoulders 59.6, as `track --out-posetrack` gives; the floors are far below that, and
    far above the ~0 of a wrong joint order or misaligned frames)."""
    dataset = _sample_dataset(shared_data / "posetrack18_sample", tmp_path / "ds")
    out = tmp_path / "pred"
    command = [sys.executable, "-m", "posetrack_app", "batch", str(dataset), "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("[!.]*.json")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    finished = sorted(p.name for p in out.glob("[!.]*.json"))
    assert 1 <= len(finished) < 3, finished   # killed midway
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}

    resumed = subprocess.run(command + ["--eval", "--json", str(tmp_path / "scores.json")], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{3 - len(finished)} sequences predicted" in resumed.stdout and f"{len(finished)} already done" in resumed.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == stamps  # not redone
    assert not [p.name for p in out.iterdir() if ".part" in p.name]  # the killed run's temporary file is gone
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["num_sequences"] == 3 and scores["num_frames"] == 3
    assert scores["ap"]["groups"]["Total"] >= 25.0, scores["ap"]["groups"]
    assert scores["ap"]["groups"]["Shou"] >= 40.0, scores["ap"]["groups"]


@pytest.mark.parametrize("fps, expected_times_s", [(0.0, [0.0, 1 / 30, 2 / 30]), (10.0, [0.0, 0.1, 0.2]),
                                                   (25.0, [0.0, 0.04, 0.08])])
def test_sequence_frames_are_timed_by_source_fps(tmp_path, fps, expected_times_s):
    """The tracker's time limits are in seconds: PoseTrack frames get index / source.fps (0 = the folder default)."""
    make_dataset(tmp_path / "ds", {"seq_a": grey(20)})
    times = []

    class TimedPipeline(FakePipeline):
        def step(self, frame):
            times.append(frame.timestamp_s)
            return super().step(frame)

    job = discover_sequences(tmp_path / "ds", "val")[0]
    predict_sequence(job, TimedPipeline(), AppConfig().posetrack, fps=fps)
    assert times == pytest.approx(expected_times_s, abs=1e-12)
