"""`posetrack track` end to end on real video, and every bad input of the foundation issue:
a one-line error, exit code 2, no traceback, no half-written output."""
import json
import socket
import threading

import cv2
import numpy as np
import pytest

from faults import unused_loopback_port
from posetrack_app.cli import main

NO_PROGRESS = ["--no-progress"]


@pytest.fixture(scope="module")
def vtest(shared_data):
    return shared_data / "pets09_s2l1" / "vtest.avi"


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def _assert_user_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, err
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def test_track_writes_video_json_and_mot(tmp_path, capsys, vtest):
    out_video, out_json, out_mot = tmp_path / "a.mp4", tmp_path / "a.jsonl", tmp_path / "a.txt"
    code, err = _run(capsys, ["track", str(vtest), "--out-video", str(out_video), "--out-json", str(out_json),
                              "--out-mot", str(out_mot), "--max-frames", "8", *NO_PROGRESS])
    assert code == 0, err
    assert "8 frames" in err and "FPS end to end" in err
    # No pose network runs (no weights): the summary says so instead of a meaningless "pose 45907 FPS".
    assert "pose: detector keypoints" in err and "stage FPS" not in err
    # ... and which detector ran, where, at which input size (auto: PETS09's 768x576 runs at 960).
    assert "detector: onnxruntime fp32 on cpu (CPUExecutionProvider), input 960" in err
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(8))
    persons = [p for r in records for p in r["persons"]]
    assert len(persons) >= 8  # PETS09 has 2-8 walkers in every frame
    first = persons[0]
    assert set(first) == {"track_id", "box_xyxy", "score", "keypoints", "propagated"}
    assert all(isinstance(p["propagated"], bool) for p in persons)
    assert len(first["keypoints"]) == 17 and len(first["keypoints"][0]) == 3
    # Identities persist: most ids of frame 0 are still there in frame 7.
    ids0 = {p["track_id"] for p in records[0]["persons"]}
    ids7 = {p["track_id"] for p in records[7]["persons"]}
    assert len(ids0 & ids7) >= max(1, len(ids0) - 1)
    mot = np.loadtxt(out_mot, delimiter=",", ndmin=2)
    assert mot.shape == (len(persons), 10)
    assert mot[:, 0].min() == 1 and mot[:, 0].max() == 8  # MOTChallenge frames count from 1
    assert (mot[:, 7:] == -1).all()
    capture = cv2.VideoCapture(str(out_video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (768, 576)
    assert not list(tmp_path.glob(".*part*")), "temporary files left behind"


def test_image_folder_source(tmp_path, capsys, vtest):
    capture = cv2.VideoCapture(str(vtest))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        ok, image = capture.read()
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), image)
    out_json = tmp_path / "f.jsonl"
    code, err = _run(capsys, ["track", str(folder), "--out-json", str(out_json), *NO_PROGRESS])
    assert code == 0, err
    assert len(out_json.read_text().splitlines()) == 3


def test_truncated_video_stops_cleanly_and_keeps_outputs(tmp_path, capsys, vtest):
    truncated = tmp_path / "cut.avi"
    truncated.write_bytes(vtest.read_bytes()[:700_000])
    out_json = tmp_path / "cut.jsonl"
    code, err = _run(capsys, ["track", str(truncated), "--out-json", str(out_json), *NO_PROGRESS,
                              "--set", "detector.input_size=320"])
    assert code == 0, err
    assert "truncated" in err
    frames = len(out_json.read_text().splitlines())
    assert 0 < frames < 795


def _silent_server():
    """A TCP server on loopback that accepts and never answers: a stream that does not respond."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    connections = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return server, stop, connections


def test_refused_connection_says_refused(capsys):
    port = unused_loopback_port()
    code, err = _run(capsys, ["track", f"rtsp://127.0.0.1:{port}/live", "--set", "source.open_timeout_s=5",
                              *NO_PROGRESS])
    _assert_user_error(code, err, "cannot open stream", f"connection refused by 127.0.0.1:{port}")
    assert "within" not in err


def test_stream_that_does_not_answer_times_out(capsys):
    server, stop, connections = _silent_server()
    try:
        port = server.getsockname()[1]
        code, err = _run(capsys, ["track", f"rtsp://127.0.0.1:{port}/live", "--set", "source.open_timeout_s=1",
                                  *NO_PROGRESS])
    finally:
        stop.set()
        server.close()
        for c in connections:
            c.close()
    _assert_user_error(code, err, "cannot open stream", "accepts connections but sent no video within 1 s")


@pytest.mark.parametrize("make_args, fragments", [
    (lambda d, v: ["track", str(d / "missing.mp4")], ["not found"]),
    (lambda d, v: ["track", str(d / "not_a_video.mp4")], ["cannot open", "as a video"]),
    (lambda d, v: ["track", str(d / "empty_folder")], ["holds no images"]),
    (lambda d, v: ["track", "97"], ["cannot open webcam 97"]),
    (lambda d, v: ["track", str(v), "--out-json", str(d / "nope" / "x.jsonl")], ["does not exist", "mkdir -p"]),
    (lambda d, v: ["track", str(v), "--out-json", "/proc/x.jsonl"], ["cannot write in /proc"]),
    (lambda d, v: ["track", str(v), "--out-video", str(d / "x.webm")], ["must end in one of"]),
    (lambda d, v: ["track", str(v), "--out-json", str(d / "x.csv")], ["--out-json", "must end in one of .jsonl, .json"]),
    (lambda d, v: ["track", str(v), "--set", "detector.colour=red"], ["unknown config key detector.colour", "valid keys"]),
    (lambda d, v: ["track", str(v), "--config", str(d / "broken.yaml")], ["not valid YAML at line 2"]),
    (lambda d, v: ["track", str(v), "--set", "detector.model=" + str(d / "missing.onnx")], ["detector model", "not found"]),
    (lambda d, v: ["track", str(v), "--set", "detector.model=" + str(d / "garbage.onnx")], ["cannot load detector ONNX"]),
    (lambda d, v: ["track", str(v), "--set", "detector.input_size=100"], ["multiple of 32"]),
    (lambda d, v: ["track", str(v), "--max-frames", "0"], ["--max-frames must be >= 1"]),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, vtest, make_args, fragments):
    (tmp_path / "not_a_video.mp4").write_bytes(b"this is not a video" * 100)
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "broken.yaml").write_text("detector:\n  input_size: [640\n")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage" * 50)
    code, err = _run(capsys, make_args(tmp_path, vtest) + NO_PROGRESS)
    _assert_user_error(code, err, *fragments)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers


def test_info_runs(capsys):
    code = main(["info"])
    out = capsys.readouterr().out
    assert code == 0
    assert "onnxruntime" in out and "detector" in out and "pose" in out


# -- several inputs: one model load, one output set each --

def _scripted_build(monkeypatch):
    """build.build_pipeline replaced by the scripted pipeline (exact rectangles, no network); returns the call log."""
    import posetrack_app.build as build
    from scripted_people import scripted_pipeline

    calls = []

    def counting(cfg, *args, **kwargs):
        calls.append(cfg)
        return scripted_pipeline(cfg)

    monkeypatch.setattr(build, "build_pipeline", counting)
    return calls


def _two_videos(folder, frames=(6, 4)):
    from scripted_people import LANES_FOR_TIME, Walker, clip, write_video

    folder.mkdir()
    write_video(folder / "a.avi", clip(frames[0], LANES_FOR_TIME), 25.0)
    write_video(folder / "b.avi", clip(frames[1], [Walker(0, 99, 200, 60)]), 25.0)
    return folder / "a.avi", folder / "b.avi"


@pytest.mark.parametrize("as_folder", [True, False])
def test_several_inputs_load_the_models_once_and_write_one_output_set_each(tmp_path, capsys, monkeypatch, as_folder):
    import pandas

    calls = _scripted_build(monkeypatch)
    a, b = _two_videos(tmp_path / "clips")
    out = tmp_path / "out"
    out.mkdir()
    inputs = [str(tmp_path / "clips")] if as_folder else [str(a), str(b)]
    code, err = _run(capsys, ["track", *inputs, "--out-csv", str(out / "{stem}.csv"), "--out-json",
                              str(out / "{stem}_poses.jsonl"), *NO_PROGRESS])
    assert code == 0, err
    assert len(calls) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "a_poses.jsonl", "b.csv", "b_poses.jsonl"]
    first, second = pandas.read_csv(out / "a.csv"), pandas.read_csv(out / "b.csv")
    assert set(first["track_id"]) == {1, 2} and first["frame"].max() == 5
    assert set(second["track_id"]) == {1} and second["frame"].max() == 3  # ids restart with each video
    assert len((out / "b_poses.jsonl").read_text().splitlines()) == 4
    assert f"{a}: 6 frames, 2 tracks" in err and f"{b}: 4 frames, 1 tracks" in err


@pytest.mark.parametrize("make_outputs, fragments", [
    (lambda out: ["--out-csv", str(out / "all.csv")], ["--out-csv", "each of the 2 inputs", "put {stem} in the name"]),
    (lambda out: ["--out-csv", str(out / "{name}.csv")], ["unknown placeholder {name}", "the only one is {stem}"]),
    (lambda out: ["--out-json", str(out / "{stem}.jsonl"), "--out-csv", str(out / "{stem}.jsonl")],
     ["same file"]),
])
def test_ambiguous_outputs_for_several_inputs_stop_before_the_run(tmp_path, capsys, monkeypatch, make_outputs,
                                                                  fragments):
    calls = _scripted_build(monkeypatch)
    a, b = _two_videos(tmp_path / "clips")
    out = tmp_path / "out"
    out.mkdir()
    code, err = _run(capsys, ["track", str(a), str(b), *make_outputs(out), *NO_PROGRESS])
    _assert_user_error(code, err, *fragments)
    assert calls == [] and list(out.iterdir()) == []


def test_two_inputs_with_one_stem_are_refused(tmp_path, capsys, monkeypatch):
    calls = _scripted_build(monkeypatch)
    a, _ = _two_videos(tmp_path / "x")
    (tmp_path / "y").mkdir()
    other = tmp_path / "y" / "a.avi"
    other.write_bytes(a.read_bytes())
    code, err = _run(capsys, ["track", str(a), str(other), "--out-csv", str(tmp_path / "{stem}.csv"), *NO_PROGRESS])
    _assert_user_error(code, err, f"--out-csv of {a}", f"--out-csv of {other}", "same file")
    assert calls == []


@pytest.mark.parametrize("inputs, first, second", [
    (lambda a, folder: [a, a], 1, 2),            # one video named twice
    (lambda a, folder: [folder, a], 1, 3),       # a folder of videos, and one of its videos again
])
def test_an_input_named_twice_is_refused_before_it_overwrites_its_own_outputs(tmp_path, capsys, monkeypatch,
                                                                               inputs, first, second):
    """Its {stem} outputs are one set of files: the second run would silently replace the first one's."""
    calls = _scripted_build(monkeypatch)
    a, _ = _two_videos(tmp_path / "clips")
    out = tmp_path / "out"
    out.mkdir()
    argv = [str(p) for p in inputs(a, tmp_path / "clips")]
    code, err = _run(capsys, ["track", *argv, "--out-csv", str(out / "{stem}.csv"), *NO_PROGRESS])
    _assert_user_error(code, err, f"--out-csv of input {first} ({a})", f"--out-csv of input {second} ({a})",
                       "same file")
    assert calls == [] and list(out.iterdir()) == []


def test_a_missing_input_among_several_stops_before_any_model_loads(tmp_path, capsys, monkeypatch):
    calls = _scripted_build(monkeypatch)
    a, _ = _two_videos(tmp_path / "clips")
    code, err = _run(capsys, ["track", str(a), str(tmp_path / "nope.mp4"), "--out-csv", str(tmp_path / "{stem}.csv"),
                              *NO_PROGRESS])
    _assert_user_error(code, err, "nope.mp4 not found")
    assert calls == []


@pytest.mark.parametrize("frames, frames_ahead, pose_network, expected", [
    (10, 1, False, "10 frames, 2 tracks, 5.0 FPS end to end (mean per frame: detect 150.0 ms, pose: detector "
                   "keypoints, track 1.0 ms)"),
    (10, 2, False, "10 frames, 2 tracks, 5.0 FPS end to end (mean per frame: detect 150.0 ms (up to 2 frames ahead), "
                   "pose: detector keypoints, track 1.0 ms)"),
    (10, 2, True, "10 frames, 2 tracks, 5.0 FPS end to end (mean per frame: detect 150.0 ms (up to 2 frames ahead), "
                  "pose 20.0 ms, track 1.0 ms)"),
    # A lone frame (a photo) is detected by itself.
    (1, 2, False, "1 frames, 2 tracks, 0.5 FPS end to end (mean per frame: detect 150.0 ms, pose: detector "
                  "keypoints, track 1.0 ms)"),
])
def test_summary_line_says_when_detections_overlap(frames, frames_ahead, pose_network, expected):
    from posetrack_app.cli.track import _summary_line
    from posetrack_app.pipeline import RunSummary

    summary = RunSummary(frames=frames, tracks=2, wall_s=2.0,
                         stage_mean_ms={"detect": 150.0, "pose": 20.0, "track": 1.0})
    assert _summary_line(summary, pose_network, 0, frames_ahead=frames_ahead) == expected


class _Built(Exception):
    """Raised by the stand-in PoseTracker.from_config to stop the command once it has been asked for a tracker."""


@pytest.mark.parametrize("sources, live", [
    (["clip.avi"], False),
    (["0"], True),
    (["rtsp://camera.local/stream"], True),
    (["clip.avi", "http://camera.local/mjpeg"], True),
])
def test_track_builds_for_live_sources_when_any_input_is_live(monkeypatch, tmp_path, sources, live):
    from posetrack_app.api import PoseTracker

    (tmp_path / "clip.avi").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    seen = {}

    def from_config(*args, **kwargs):
        seen.update(kwargs)
        raise _Built

    monkeypatch.setattr(PoseTracker, "from_config", staticmethod(from_config))
    with pytest.raises(_Built):
        main(["track", *sources, "--out-json", "{stem}.jsonl", "--no-progress"])
    assert seen["live"] is live
