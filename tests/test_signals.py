"""Real signals to real processes: SIGTERM and SIGHUP end `posetrack track` as Ctrl-C does (outputs so far closed
and kept, the summary says so, exit 128 + signal, no temporary file left), and batch worker processes end with
their driver, whether it is interrupted or killed outright."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from faults import (cli_command, cli_env, part_files, process_gone, synthetic_video, video_frame_count, wait_until,
                    write_images_dataset)

# Real processes: each starts Python, onnxruntime and the detector (about 5-15 s apiece on the 2-core machine).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    # Long enough that no run finishes before the signal (about 20 ms a frame here: 40 s for all of it).
    return synthetic_video(tmp_path_factory.mktemp("media") / "long.mp4", 2000)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_track_ends_on_signal_with_outputs_closed_and_kept(tmp_path, long_video, signal_number):
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        cli_command("track", str(long_video), "--out-video", str(out / "o.mp4"), "--out-json", str(out / "o.jsonl"),
                    "--out-mot", str(out / "o.txt"), "--out-posetrack", str(out / "o.json"), "--no-progress",
                    "--set", "detector.input_size=64"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The temporary files appear once the model is loaded and the run starts; then let it work a little.
        assert wait_until(lambda: len(part_files(out)) == 4, 90), part_files(out)
        wait_until(lambda: process.poll() is not None, 1.5)
        assert process.poll() is None, "the run ended before the signal: make the video longer"
        process.send_signal(signal_number)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    name = signal.Signals(signal_number).name
    assert process.returncode == 128 + signal_number, err
    assert f"interrupted by {name}" in err and "the outputs hold the frames processed" in err, err
    assert "Traceback" not in err
    assert part_files(out) == []
    lines = (out / "o.jsonl").read_text().splitlines()
    frames = [json.loads(line)["frame"] for line in lines]
    assert 0 < len(frames) < 2000 and frames == list(range(len(frames)))
    # Every output holds the same frames, and the video is complete (readable to its last frame).
    assert video_frame_count(out / "o.mp4") == len(frames)
    assert len(json.loads((out / "o.json").read_text())["images"]) == len(frames)
    assert f"wrote {out / 'o.mp4'}" in err


DRIVER = """
import sys
from posetrack_app import batch
from posetrack_app.cli import main
import faults
batch.default_pipeline_factory = faults.slow_factory
sys.exit(main(sys.argv[1:]))
"""


def _start_batch(tmp_path, sequences, workers=2, delay_s="0.3"):
    dataset = write_images_dataset(tmp_path / "ds", sequences)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "batch", str(dataset), "--out", str(tmp_path / "pred"), "--workers",
         str(workers), "--no-progress"],
        env=cli_env(SLOW_PIPELINE_DELAY_S=delay_s, SLOW_PIPELINE_PID_DIR=str(pid_dir)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, pid_dir


def _worker_pids(pid_dir):
    return [int(p.name) for p in pid_dir.iterdir()]


def test_batch_workers_end_when_the_driver_is_killed(tmp_path):
    # Each sequence takes 20 x 0.3 s = 6 s: the workers are mid-sequence when the driver dies.
    process, pid_dir = _start_batch(tmp_path, {f"s{i}": 20 for i in range(4)})
    try:
        assert wait_until(lambda: len(_worker_pids(pid_dir)) == 2, 120), "workers did not start"
        workers = _worker_pids(pid_dir)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert wait_until(lambda: all(process_gone(pid) for pid in workers), 10), \
            [pid for pid in workers if not process_gone(pid)]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_batch_interrupted_by_sigterm_stops_workers_and_keeps_finished_files(tmp_path):
    # Two 1-frame sequences finish at once, the 40-frame ones are mid-way at the signal.
    process, pid_dir = _start_batch(tmp_path, {"a": 1, "b": 1, "c": 40, "d": 40})
    pred = tmp_path / "pred"
    try:
        assert wait_until(lambda: pred.is_dir() and len([p for p in pred.glob("[!.]*.json")]) == 2, 120)
        workers = _worker_pids(pid_dir)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in out and "rerun the same command to continue" in out, out
    assert "Traceback" not in err
    assert sorted(p.name for p in pred.iterdir()) == ["a.json", "b.json"]
    assert wait_until(lambda: all(process_gone(pid) for pid in workers), 10)
