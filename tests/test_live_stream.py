"""Live streams that stay live: a loopback HTTP MJPEG stream served by a real ffmpeg process (the binary inside
imageio-ffmpeg) is killed mid-run and restarted; the run reconnects with backoff and carries on, the outputs stay
valid, and every frame reports its capture -> result latency. Also: giving up after source.reconnect_timeout_s,
and the reader handing the pipeline only the newest frame."""
from __future__ import annotations

import json
import logging
import subprocess
import threading
import time

import cv2
import imageio_ffmpeg
import numpy as np
import pandas
import pytest

from faults import unused_loopback_port
import posetrack_app.build as build
from posetrack_app import PoseTracker
from posetrack_app.cli import main
from posetrack_app.io.sources import FrameSource, ThreadedReader
from posetrack_app.structures import Frame
from scripted_people import LANES_FOR_TIME, RectangleDetector, clip, scripted_pipeline, write_video

STREAM_FPS = 25.0


def is_listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:port, read from /proc/net/tcp: connecting to find out would take the
    server's one client slot (`-listen 1`)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in table.readlines()[1:])


class MjpegServer:
    """ffmpeg serving `clip` in a loop, in real time (-re), as multipart JPEG over HTTP to one client."""

    def __init__(self, clip_path, port: int):
        self.command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
                        "-stream_loop", "-1", "-i", str(clip_path), "-c:v", "copy", "-f", "mpjpeg",
                        "-listen", "1", f"http://127.0.0.1:{port}/"]
        self.port = port
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not is_listening(self.port):
            assert self.process.poll() is None, "ffmpeg exited before listening"
            assert time.monotonic() < deadline, "ffmpeg did not listen within 10 s"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()


@pytest.fixture
def server(tmp_path):
    clip_path = tmp_path / "walkers.avi"
    write_video(clip_path, clip(50, LANES_FOR_TIME, textured=True), STREAM_FPS)
    served = MjpegServer(clip_path, unused_loopback_port())
    served.start()
    yield served
    served.kill()


def tracker(**settings) -> PoseTracker:
    return PoseTracker.from_config(overrides={"tracker.kind": "iou", **settings}, detector=RectangleDetector())


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_the_run_resumes_and_outputs_stay_valid(server, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="posetrack_app.io.sources")
    out = tmp_path / "out"
    out.mkdir()
    frames, outage = [], {}
    started_unix_s = time.time()
    with tracker(**{"source.reconnect_timeout_s": 20}).run(
            server.url, max_frames=50, out_json=out / "p.jsonl", out_csv=out / "p.csv",
            out_video=out / "v.avi") as run:
        for frame, persons in run:
            frames.append(frame)
            if len(frames) == 15:
                server.kill()
                outage["killed"] = time.monotonic()
                restart = threading.Timer(1.0, server.start)
                restart.start()
    restart.join()
    summary = run.summary
    assert summary.frames == 50 and not summary.interrupted
    assert summary.reconnects == 1 and not summary.connection_lost
    # Frame numbers and times carry on across the reconnect, with the outage as a gap in the times.
    assert [f.index for f in frames] == sorted({f.index for f in frames})
    times = np.array([f.time_s for f in frames])
    assert (np.diff(times) > 0).all() and np.diff(times).max() >= 0.9
    # Live frames: wall-clock capture time (on the same clock as time_s) and a capture -> result latency each.
    wall = np.array([f.capture_unix_s for f in frames])
    assert started_unix_s - 1 <= wall[0] and wall[-1] <= time.time()
    np.testing.assert_allclose(wall - wall[0], times - times[0], atol=1e-6)
    latencies = [f.latency_s for f in frames]
    assert all(latency is not None and latency > 0 for latency in latencies)
    assert 0 < summary.latency_median_ms <= summary.latency_p95_ms
    # The outputs: complete, loadable, one record per frame processed.
    records = [json.loads(line) for line in (out / "p.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [f.index for f in frames]
    assert [r["capture_unix_s"] for r in records] == pytest.approx(list(wall), abs=1e-5)
    table = pandas.read_csv(out / "p.csv")
    assert len(table) == sum(len(r["persons"]) for r in records) > 0
    assert set(table["frame"]) == {r["frame"] for r in records if r["persons"]}
    assert table["capture_unix_s"].notna().all()
    # The video plays in real time: the outage is filled with the last picture, so it spans the run's time.
    capture = cv2.VideoCapture(str(out / "v.avi"))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count >= round((times[-1] - times[0]) * STREAM_FPS) + 1 > 50
    messages = [r.getMessage() for r in caplog.records]
    assert any("connection dropped after" in m for m in messages), messages
    assert any("reconnected after" in m for m in messages), messages
    assert sorted(p.name for p in out.iterdir()) == ["p.csv", "p.jsonl", "v.avi"]


def kill_when_written(server: MjpegServer, folder, lines: int, timeout_s: float = 60.0) -> threading.Thread:
    """Kills the server once the run's temporary JSON Lines file in `folder` holds `lines` lines (the run is then
    well under way, however long the stream took to open on a loaded machine)."""
    def watch():
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            parts = list(folder.glob(".*.part.jsonl"))
            if parts and parts[0].read_bytes().count(b"\n") >= lines:
                break
            time.sleep(0.02)
        server.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_stream_that_stays_down_ends_the_run_after_the_reconnect_time_with_outputs_kept(
        server, tmp_path, capsys, caplog, monkeypatch):
    """Through the CLI: the server dies during the run and never comes back; retries are logged until
    source.reconnect_timeout_s, then the run ends normally (exit 0), its outputs complete, and the summary reports
    the latency and what happened."""
    caplog.set_level(logging.WARNING, logger="posetrack_app.io.sources")
    monkeypatch.setattr(build, "build_pipeline", scripted_pipeline)
    out = tmp_path / "p.jsonl"
    watcher = kill_when_written(server, tmp_path, lines=5)
    code = main(["track", server.url, "--out-json", str(out), "--no-progress",
                 "--set", "source.reconnect_timeout_s=2"])
    watcher.join()
    err = capsys.readouterr().err
    assert code == 0, err
    messages = [r.getMessage() for r in caplog.records]
    assert any("reconnect attempt 1 failed" in m for m in messages), messages
    assert any("the stream ends here" in m for m in messages), messages
    assert "stayed unreachable for source.reconnect_timeout_s=2 s" in err
    assert "latency capture -> result median" in err and "p95" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) >= 5 and all("capture_unix_s" in r for r in records)
    assert [r["frame"] for r in records] == sorted({r["frame"] for r in records})


def test_without_reconnecting_the_run_ends_at_the_first_drop(server, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="posetrack_app.io.sources")
    run = tracker(**{"source.reconnect_timeout_s": 0}).run(server.url, out_json=tmp_path / "p.jsonl")
    for count, _ in enumerate(run, start=1):
        if count == 6:
            server.kill()
    assert run.summary.frames >= 6 and run.summary.reconnects == 0
    assert any("not reconnecting" in r.getMessage() for r in caplog.records)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == run.summary.frames


class CountingLiveSource(FrameSource):
    """A live source that makes a frame every `interval_s` and records how many it had made when each was
    handed out (by frame index)."""

    live = True

    def __init__(self, count: int, interval_s: float):
        self.count, self.interval_s, self.made = count, interval_s, 0
        self.name, self.fps = "counting", 1.0 / interval_s

    def frames(self):
        for index in range(self.count):
            time.sleep(self.interval_s)
            self.made = index + 1
            yield Frame(index, np.zeros((4, 4, 3), np.uint8), index * self.interval_s)


def test_live_reader_hands_out_the_newest_frame_however_slow_the_consumer():
    """The consumer takes 15 ms a frame, the camera makes one every 2 ms: each frame taken is the newest (or the
    one just before it, caught in the hand-over), never one from a backlog, whatever source.queue_size says."""
    source = CountingLiveSource(150, 0.002)
    reader = ThreadedReader(source, queue_size=8)
    staleness = []
    for frame in reader:
        staleness.append(source.made - 1 - frame.index)
        time.sleep(0.015)
    reader.close()
    assert reader.dropped_frames > 0 and len(staleness) + reader.dropped_frames == 150
    # Frames made after the one taken: 0, or 1 caught in the hand-over (a thread switch between taking and
    # counting can add one or two on a loaded machine). A queue of 8 dropping only its oldest gave about 7.
    assert np.median(staleness) <= 1 and max(staleness) <= 3, staleness


@pytest.mark.parametrize("draw_latency", [True, False])
def test_overlay_shows_the_latency_of_live_frames_only_when_enabled(draw_latency):
    from posetrack_app.io.sinks import LATENCY_INFO_KEY, RenderOnlySink
    from posetrack_app.skeleton import COCO17
    from posetrack_app.structures import Tracks

    sink = RenderOnlySink(COCO17, {"draw_fps": False, "draw_latency": draw_latency})
    frame = Frame(0, np.zeros((120, 320, 3), np.uint8), 0.0, capture_unix_s=time.time())
    plain = sink.render(frame, Tracks.empty(17), None)
    live = Tracks.empty(17)
    live.info[LATENCY_INFO_KEY] = 0.042
    drawn = sink.render(frame, live, None)
    assert plain.max() == 0  # nothing to draw without a latency
    assert (drawn.max() > 0) == draw_latency
