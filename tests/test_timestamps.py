"""Time that is right: frames carry the container's presentation times (constant 30000/1001 fps and variable
rate), image folders index / source.fps, and the written video keeps the source's rate (29.97 stays 29.97), read
back by OpenCV and by ffmpeg itself."""
from __future__ import annotations

import json
import re
import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pandas
import pytest

import posetrack_app.build as build
from posetrack_app.cli import main
from posetrack_app.io.sources import open_source
from scripted_people import LANES_FOR_TIME, clip, scripted_pipeline, write_video

NTSC_FPS = 30000 / 1001
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> str:
    result = subprocess.run([FFMPEG, "-hide_banner", *args], capture_output=True, text=True, timeout=60)
    return result.stderr


def make_test_video(path, rate: str, frames: int, codec: str, video_filter: str = "") -> None:
    """ffmpeg's own test pattern at an exact rational `rate` (OpenCV's writer cannot make 30000/1001 exactly)."""
    args = ["-y", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size=160x120:rate={rate}",
            "-frames:v", str(frames), "-c:v", codec]
    if video_filter:  # frames dropped by the filter keep their times: a variable-rate file
        args += ["-vf", video_filter, "-fps_mode", "passthrough"]
    ffmpeg(*args, str(path))
    assert path.is_file(), path


def stream_rate(path) -> str:
    """The frame rate ffmpeg reports for the file's video stream, e.g. '29.97 fps'."""
    match = re.search(r"Video:.*?, ([\d.]+) fps", ffmpeg("-i", str(path)))
    assert match, path
    return match.group(1)


# (file name, rate, codec, filter, expected presentation times in seconds)
VFR_TIMES = [0.0, 0.1, 0.2, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
CASES = [
    ("ntsc.avi", "30000/1001", "mjpeg", "", [i * 1001 / 30000 for i in range(40)]),
    ("ntsc.mp4", "30000/1001", "mpeg4", "", [i * 1001 / 30000 for i in range(40)]),
    ("vfr.mp4", "10", "mpeg4", r"select=not(between(n\,3\,5))", VFR_TIMES),
    ("vfr.mkv", "10", "mjpeg", r"select=not(between(n\,3\,5))", VFR_TIMES),
]


@pytest.mark.parametrize("name, rate, codec, video_filter, times_s", CASES, ids=[c[0] for c in CASES])
def test_video_frames_carry_the_containers_presentation_times(tmp_path, name, rate, codec, video_filter, times_s):
    path = tmp_path / name
    make_test_video(path, rate, len(times_s), codec, video_filter)  # -frames:v counts output frames
    source = open_source(str(path))
    frames = list(source.frames())
    assert [f.index for f in frames] == list(range(len(times_s)))
    # mkv stores milliseconds; the others are exact to float precision.
    np.testing.assert_allclose([f.timestamp_s for f in frames], times_s, atol=1e-3 if name.endswith(".mkv") else 1e-9)
    assert all(f.capture_unix_s is None for f in frames)
    # A variable-rate file holds fewer frames than duration x average rate: still complete, nothing damaged.
    assert not source.truncated and source.damaged_frames == 0


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_written_video_and_outputs_keep_the_ntsc_rate_and_times(tmp_path, capsys, monkeypatch, suffix):
    source = tmp_path / "ntsc.avi"
    frames = 30
    make_test_video(source, "30000/1001", frames, "mjpeg")
    monkeypatch.setattr(build, "build_pipeline", scripted_pipeline)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["track", str(source), "--out-video", str(out / f"v{suffix}"), "--out-json", str(out / "p.jsonl"),
                 "--out-csv", str(out / "p.csv"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    capture = cv2.VideoCapture(str(out / f"v{suffix}"))
    written_fps, count = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    # OpenCV's writer stores the rate to 0.001 (2997/100 for 30000/1001: 1 ppm); never 30.
    assert written_fps == pytest.approx(NTSC_FPS, abs=1e-3) and count == frames
    assert stream_rate(out / f"v{suffix}") == "29.97"
    times = [json.loads(line)["time_s"] for line in (out / "p.jsonl").read_text().splitlines()]
    assert times == [round(i * 1001 / 30000, 4) for i in range(frames)]


def test_image_folders_are_timed_by_source_fps(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(clip(5, LANES_FOR_TIME)):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    monkeypatch.setattr(build, "build_pipeline", scripted_pipeline)
    for fps, extra in ((30.0, []), (7.0, ["--set", "source.fps=7"])):
        out = tmp_path / f"p{int(fps)}.csv"
        assert main(["track", str(folder), "--out-csv", str(out), "--no-progress", *extra]) == 0, capsys.readouterr()
        table = pandas.read_csv(out)
        np.testing.assert_allclose(table["time_s"], table["frame"] / fps, atol=5e-5)
        assert table["frame"].max() == 4


def test_source_fps_overrides_a_wrong_video_header(tmp_path, capsys, monkeypatch):
    """PETS09's AVI header says 10 fps, the real rate is 7: source.fps=7 retimes the frames and the written video."""
    source = tmp_path / "header10.avi"
    write_video(source, clip(6, LANES_FOR_TIME), fps=10.0)
    monkeypatch.setattr(build, "build_pipeline", scripted_pipeline)
    out = tmp_path / "o"
    out.mkdir()
    code = main(["track", str(source), "--out-json", str(out / "p.jsonl"), "--out-video", str(out / "v.avi"),
                 "--set", "source.fps=7", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    times = [json.loads(line)["time_s"] for line in (out / "p.jsonl").read_text().splitlines()]
    assert times == [round(i / 7, 4) for i in range(6)]
    capture = cv2.VideoCapture(str(out / "v.avi"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0, abs=1e-3)
    capture.release()
