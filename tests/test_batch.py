"""Batch runner: dataset walking, resume, failures, worker processes, Ray, and a real end-to-end run.

Most tests use `fake_factory`: a deterministic test double whose poses follow from the image's grey level,
so GT files made from the same rule are matched exactly. One test runs the real pipeline (YOLO11n-pose)
on PETS 2009 frames laid out as a PoseTrack dataset, kills the batch midway and resumes it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from posetrack_app import batch as batch_module
from posetrack_app.batch import discover_sequences, run_batch
from posetrack_app.config import AppConfig, load_config
from posetrack_app.errors import UserError
from posetrack_app.evaluation.posetrack import evaluate_folders
from posetrack_app.io.posetrack_json import FrameAnnotation, Sequence, write_sequence
from posetrack_app.posetrack_layout import tracks_to_persons
from posetrack_app.skeleton import COCO17
from posetrack_app.structures import Frame, Poses, Tracks

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
FAIL_LEVEL = 255  # a frame of this grey level makes the fake pipeline raise


class FakePipeline:
    """Two persons per frame, placed by the image's grey level; track ids 1 and 2 from reset on."""

    skeleton = COCO17

    def reset(self):
        self.frames = 0

    def step(self, frame):
        level = int(frame.image_bgr[0, 0, 0])
        if level == FAIL_LEVEL:
            raise ValueError("fake pipeline: cannot handle a white frame")
        base = np.stack([np.arange(17) * 3.0, np.arange(17) * 5.0], axis=1).astype(np.float32)
        keypoints = np.stack([base + (level, 10), base + (level + 100, 20)])
        scores = np.full((2, 17), 0.9, np.float32)
        boxes = np.array([[level, 10, level + 60, 110], [level + 100, 20, level + 160, 120]], np.float32)
        return Tracks(np.array([1, 2]), Poses(keypoints, scores, boxes, np.array([0.9, 0.8], np.float32)))


def fake_factory(cfg):
    return FakePipeline()


def _head_boxes(persons):
    for p in persons:
        x1, y1, x2, y2 = p.box_xyxy
        p.head_box_xyxy = np.array([x1, y1, x1 + (x2 - x1) / 2, y1 + (y2 - y1) / 4])
    return persons


def make_dataset(root: Path, sequences: dict, fmt="2018", pipeline=None, cfg=None):
    """sequences: name -> list of BGR images. Writes images/val/<name>/NNNNNN.jpg and a GT file whose persons
    are `pipeline`'s output on those images (head boxes from the person boxes)."""
    pipeline = pipeline or FakePipeline()
    cfg = cfg or AppConfig()
    for name, images in sequences.items():
        folder = root / "images" / "val" / name
        folder.mkdir(parents=True)
        pipeline.reset()
        frames = []
        for i, image in enumerate(images):
            file_name = f"{i:06d}.jpg"
            cv2.imwrite(str(folder / file_name), image)
            decoded = cv2.imread(str(folder / file_name))
            if decoded[0, 0, 0] == FAIL_LEVEL:
                persons = []  # the fake pipeline fails here: the GT just has no person
            else:
                tracks = pipeline.step(Frame(i, decoded, i / 25))
                persons = _head_boxes(tracks_to_persons(tracks, pipeline.skeleton,
                                                        cfg.posetrack.keypoint_score_threshold, cfg.posetrack.head_rule))
            frames.append(FrameAnnotation(file_name=f"images/val/{name}/{file_name}", image_id=i,
                                          is_labeled=True, persons=persons))
        (root / "annotations" / "val").mkdir(parents=True, exist_ok=True)
        write_sequence(root / "annotations" / "val" / f"{name}.json", Sequence(name, frames, fmt), fmt)


def grey(level, n=3):
    # Flat frames: the fake pipeline reads their grey level (GT and batch both read the decoded JPEG).
    return [np.full((48, 64, 3), level + 10 * i, np.uint8) for i in range(n)]


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
    stamp = (out / "seq_b.json").stat().st_mtime_ns
    (out / "seq_c.json").unlink()
    again = run_batch(jobs, out, AppConfig(), pipeline_factory=fake_factory)
    assert sorted((o.name, o.status) for o in again.outcomes) == [
        ("seq_a", "skipped"), ("seq_b", "skipped"), ("seq_c", "done")]
    assert (out / "seq_b.json").stat().st_mtime_ns == stamp
    redo = run_batch(jobs, out, AppConfig(), pipeline_factory=fake_factory, overwrite=True)
    assert [o.status for o in redo.outcomes] == ["done"] * 3


def test_batch_keeps_the_gt_format_and_threshold(tmp_path):
    make_dataset(tmp_path / "ds", {"old": grey(20)}, fmt="2017")
    jobs = discover_sequences(tmp_path / "ds", "val")
    cfg = load_config(None, ["posetrack.keypoint_score_threshold=0.95"])  # above the fake's 0.9
    run_batch(jobs, tmp_path / "pred", cfg, pipeline_factory=fake_factory)
    data = json.loads((tmp_path / "pred" / "old.json").read_text())
    assert "annolist" in data and len(data["annolist"]) == 3
    assert all(entry["annorect"] == [] for entry in data["annolist"])  # every keypoint below the threshold


def test_failing_sequences_are_reported_and_the_rest_go_on(tmp_path):
    make_dataset(tmp_path / "ds", {"good": grey(20), "white": grey(20)})
    cv2.imwrite(str(tmp_path / "ds" / "images" / "val" / "white" / "000001.jpg"),
                np.full((48, 64, 3), FAIL_LEVEL, np.uint8))
    make_dataset(tmp_path / "ds2", {"lost": grey(20)})
    (tmp_path / "ds2" / "images" / "val" / "lost" / "000002.jpg").unlink()
    jobs = discover_sequences(tmp_path / "ds", "val") + discover_sequences(tmp_path / "ds2", "val")
    report = run_batch(jobs, tmp_path / "pred", AppConfig(), pipeline_factory=fake_factory)
    status = {o.name: (o.status, o.message) for o in report.outcomes}
    assert status["good"][0] == "done"
    assert status["white"][0] == "failed" and "white frame" in status["white"][1]
    assert status["lost"][0] == "failed" and "000002.jpg" in status["lost"][1]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["good.json"]


def test_cli_lists_failures_and_exits_1(tmp_path, monkeypatch, capsys):
    from posetrack_app.cli import main
    make_dataset(tmp_path / "ds", {"good": grey(20), "white": [np.full((48, 64, 3), FAIL_LEVEL, np.uint8)]})
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

    make_dataset(fake_dataset, {"white": [np.full((48, 64, 3), FAIL_LEVEL, np.uint8)]})
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

REAL_OVERRIDES = ["detector.input_size=640"]


def _pets_sequences(pets_video: Path, starts=(0, 150, 300), length=10):
    """PETS 2009 frames, the right half of the scene cropped and upscaled 2x so YOLO at 640 sees people."""
    capture = cv2.VideoCapture(str(pets_video))
    wanted = {s + i: (s, i) for s in starts for i in range(length)}
    sequences = {f"pets_{s:03d}": [None] * length for s in starts}
    index = 0
    while index <= max(wanted):
        ok, image = capture.read()
        if not ok:
            break
        if index in wanted:
            s, i = wanted[index]
            sequences[f"pets_{s:03d}"][i] = cv2.resize(image[120:408, 384:768], (768, 576))
        index += 1
    capture.release()
    return sequences


def test_real_pipeline_batch_is_killed_resumed_and_scores(shared_data, tmp_path):
    from posetrack_app.build import build_pipeline

    cfg = load_config(None, REAL_OVERRIDES)
    dataset = tmp_path / "ds"
    # GT = the detector's own output, made in this process; the batch runs in a subprocess.
    make_dataset(dataset, _pets_sequences(shared_data / "pets09_s2l1" / "vtest.avi"), pipeline=build_pipeline(cfg), cfg=cfg)
    out = tmp_path / "pred"
    command = [sys.executable, "-m", "posetrack_app", "batch", str(dataset), "--out", str(out), "--no-progress",
               *[arg for o in REAL_OVERRIDES for arg in ("--set", o)]]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("pets_*.json")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    finished = sorted(p.name for p in out.glob("pets_*.json"))
    assert 1 <= len(finished) < 3, finished   # killed midway
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}

    resumed = subprocess.run(command + ["--eval", "--json", str(tmp_path / "scores.json")], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{3 - len(finished)} sequences predicted" in resumed.stdout and f"{len(finished)} already done" in resumed.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == stamps  # not redone
    assert not list(out.glob(".*.part.json"))  # the killed run's temporary file is gone
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["num_sequences"] == 3 and scores["num_frames"] == 30
    scored = [j for j in scores["ap"]["joints"] if j["num_gt"] > 0]
    assert len(scored) >= 12
    for ap, mot in zip(scores["ap"]["joints"], scores["mot"]["joints"]):
        if ap["num_gt"]:
            assert ap["ap"] == pytest.approx(100.0, abs=1e-9), ap
            assert mot["mota"] == pytest.approx(100.0, abs=1e-9), mot
