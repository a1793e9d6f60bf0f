"""Outputs never overwrite inputs or each other, and stale temporary files of killed runs are cleaned up.

Each case runs the real CLI (in-process) and checks the exit code, the one-line message naming both paths, and
that the input and the other files are untouched."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from faults import synthetic_video
from posetrack_app.cli import main


def _run(capsys, argv):
    code = main([*argv, "--no-progress"] if argv[0] == "track" else argv)
    err = capsys.readouterr().err
    return code, err


def _error_line(err):
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synthetic_video(tmp_path / "video.mp4", 6)
    os.symlink("video.mp4", tmp_path / "link.mp4")
    os.link(tmp_path / "video.mp4", tmp_path / "hard.mp4")
    (tmp_path / "afile").write_text("I am a file")
    return tmp_path


@pytest.mark.parametrize("argv, fragments", [
    # an output on the input, directly, through a symlink and through a hard link
    (["track", "video.mp4", "--out-video", "video.mp4"], ["--out-video video.mp4 is the input SOURCE", "video.mp4"]),
    (["track", "link.mp4", "--out-video", "video.mp4"], ["--out-video video.mp4 is the input SOURCE"]),
    (["track", "video.mp4", "--out-video", "hard.mp4"], ["--out-video hard.mp4 is the input SOURCE"]),
    (["track", "video.mp4", "--out-json", "./video.mp4"], ["--out-json video.mp4 is the input SOURCE"]),
    # two outputs on one path
    (["track", "video.mp4", "--out-video", "a.mp4", "--out-json", "a.mp4"],
     ["--out-video a.mp4 and --out-json a.mp4 are the same file"]),
    (["track", "video.mp4", "--out-json", "a.jsonl", "--out-mot", "a.jsonl"],
     ["--out-json a.jsonl and --out-mot a.jsonl are the same file"]),
    (["track", "video.mp4", "--out-json", "out.json", "--out-posetrack", "afile/../out.json"],
     ["--out-json out.json and --out-posetrack afile/../out.json are the same file"]),
    # an output whose folder is a regular file
    (["track", "video.mp4", "--out-json", "afile/x.jsonl"], ["afile is a file, not a folder"]),
    (["track", "video.mp4", "--out-video", "afile/sub/x.mp4"], ["afile is a file, not a folder"]),
    # extensions
    (["track", "video.mp4", "--out-json", "x.txt"], ["--out-json x.txt must end in one of .jsonl, .json"]),
    (["track", "video.mp4", "--out-posetrack", "x.jsonl"], ["--out-posetrack x.jsonl must end in one of .json"]),
    (["track", "video.mp4", "--out-video", "x.webm"], ["--out-video x.webm must end in one of .mp4"]),
])
def test_track_outputs_never_overwrite_inputs_or_each_other(workdir, capsys, argv, fragments):
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    code, err = _run(capsys, argv)
    assert code == 2, err
    line = _error_line(err)
    for fragment in fragments:
        assert fragment in line, line
    after = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing changed, no temporary file left


@pytest.fixture
def dataset(tmp_path):
    """A one-sequence PoseTrack dataset and a prediction folder holding a file for it."""
    from faults import write_images_dataset

    root = write_images_dataset(tmp_path / "ds", {"seq": 2})
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "seq.json").write_text((root / "annotations" / "val" / "seq.json").read_text())
    return root


@pytest.mark.parametrize("make_argv, fragments", [
    (lambda ds, pred: ["batch", str(ds), "--out", str(ds / "annotations" / "val")],
     ["--out", "is the input annotation folder of seq"]),
    (lambda ds, pred: ["batch", str(ds), "--out", str(ds / "annotations" / "val" / "seq.json")],
     ["is a file, not a folder"]),
    (lambda ds, pred: ["batch", str(ds), "--out", str(pred), "--eval", "--json",
                       str(ds / "annotations" / "val" / "seq.json")],
     ["--json", "is the input GT file of seq"]),
    (lambda ds, pred: ["batch", str(ds), "--out", str(pred), "--eval", "--json", str(pred / "seq.json")],
     ["--json", "is the input prediction file of seq"]),
    (lambda ds, pred: ["eval", str(ds / "annotations" / "val"), str(pred), "--json", str(pred / "seq.json")],
     ["--json", "is the input PRED_DIR file seq.json"]),
    (lambda ds, pred: ["eval", str(ds / "annotations" / "val"), str(pred), "--json",
                       str(ds / "annotations" / "val" / "seq.json")],
     ["--json", "is the input GT_DIR file seq.json"]),
    (lambda ds, pred: ["eval", str(ds / "annotations" / "val"), str(pred), "--json", str(pred / "scores.txt")],
     ["--json", "must end in one of .json"]),
])
def test_batch_and_eval_outputs_never_overwrite_inputs(dataset, capsys, make_argv, fragments):
    pred = dataset.parent / "pred"
    files = sorted(p for p in dataset.parent.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    code, err = _run(capsys, make_argv(dataset, pred))
    assert code == 2, err
    line = _error_line(err)
    for fragment in fragments:
        assert fragment in line, line
    assert {p: p.read_bytes() for p in sorted(q for q in dataset.parent.rglob("*") if q.is_file())} == before


def test_stale_temporary_files_of_killed_runs_are_removed(workdir, capsys):
    """Temporary files whose process is gone (or that carry no process id: older versions) are removed; the
    temporary file of a run still writing the same output is left alone."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = workdir / ".out.999999999.k2j4h5g6.part.jsonl"        # pid above any pid_max: gone
        old_style = workdir / ".out.a1b2c3d4.part.jsonl"              # no pid: an older version's leftover
        alive = workdir / f".out.{sleeper.pid}.q9w8e7r6.part.jsonl"   # a run that is still writing
        other_output = workdir / ".other.999999999.zzzzzzzz.part.jsonl"
        for path in (dead, old_style, alive, other_output):
            path.write_text("half a line")
        code, err = _run(capsys, ["track", "video.mp4", "--out-json", "out.jsonl", "--set", "detector.input_size=64"])
        assert code == 0, err
        assert not dead.exists() and not old_style.exists()
        assert alive.exists() and other_output.exists()
        assert len((workdir / "out.jsonl").read_text().splitlines()) == 6
        assert [json.loads(line)["frame"] for line in (workdir / "out.jsonl").read_text().splitlines()] == list(range(6))
    finally:
        sleeper.kill()
        sleeper.wait()
