"""Benchmark machinery: synthetic clips, warm-up exclusion, stage sets of the sequential and pipelined runs (on a
fake clock where durations are checked), statistics and report, the environment record, and `posetrack bench` end
to end (with its bad inputs)."""
import json

import numpy as np
import pytest
from fake_clock import FakeClock

from posetrack_app.benchmark import environment, report, runs, synthetic
from posetrack_app.cli import main
from posetrack_app.errors import OutputError
from posetrack_app.io.sinks import JsonLinesSink, Sink
from posetrack_app.io.sources import FrameSource
from posetrack_app.pipeline import Pipeline
from posetrack_app.pose.detector_keypoints import DetectorKeypointPoses
from posetrack_app.skeleton import COCO17
from posetrack_app.timing import StageStats, StageTimer
from posetrack_app.tracking.iou_tracker import IouTracker

PIPELINE_STAGES = ["decode", "detect", "propagate", "pose", "track"]


class ClipSource(FrameSource):
    """Frames of a SyntheticClip straight from memory."""

    def __init__(self, clip):
        self.clip, self.name, self.fps, self.frame_count = clip, "clip", clip.fps, len(clip)

    def frames(self):
        return self.clip.frames()


def _pipeline(clip, pose_stage=None, timer=None):
    tracker = IouTracker(skeleton=COCO17)
    return Pipeline(synthetic.SyntheticDetector(clip), pose_stage or DetectorKeypointPoses(), tracker, timer=timer)


@pytest.mark.parametrize("persons", [0, 1, 5, 12])
def test_synthetic_clip_has_the_people_it_says(persons):
    clip = synthetic.SyntheticClip(persons, 320, 240, 6, seed=3)
    for index in (0, 5):
        found = clip.detections(index)
        assert len(found) <= persons and len(found) >= persons - 1  # at most one walker off screen
        assert found.keypoints.shape == (len(found), 17, 3)
        boxes, kpts = found.boxes_xyxy, found.keypoints
        # Boxes hold their keypoints (up to clipping at the border and the 1 px noise).
        inside = ((kpts[..., 0] >= boxes[:, None, 0] - 2) & (kpts[..., 0] <= boxes[:, None, 2] + 2)
                  & (kpts[..., 1] >= boxes[:, None, 1] - 2) & (kpts[..., 1] <= boxes[:, None, 3] + 2))
        on_screen = (kpts[..., 0] >= 0) & (kpts[..., 0] < 320) & (kpts[..., 1] >= 0) & (kpts[..., 1] < 240)
        assert inside[on_screen].all()
        image = clip.render(index)
        assert image.shape == (240, 320, 3) and image.dtype == np.uint8
        # A figure is drawn where its torso is: pixels there differ from the empty background.
        for person in kpts:
            x, y = np.round((person[5, :2] + person[12, :2]) / 2).astype(int)
            if 0 <= x < 320 and 0 <= y < 240:
                assert np.abs(image[y, x].astype(int) - clip.background[y, x].astype(int)).sum() > 0


def test_synthetic_clip_is_deterministic_and_moves():
    a, b = synthetic.SyntheticClip(4, 320, 240, 10, seed=7), synthetic.SyntheticClip(4, 320, 240, 10, seed=7)
    assert np.array_equal(a.render(9), b.render(9))
    assert np.array_equal(a.detections(9).keypoints, b.detections(9).keypoints)
    moved = np.abs(a.detections(9).boxes_xyxy - a.detections(0).boxes_xyxy).max()
    assert moved > 5.0
    assert not np.array_equal(synthetic.SyntheticClip(4, 320, 240, 10, seed=8).render(0), a.render(0))


@pytest.mark.parametrize("text, wh", [("480p", (854, 480)), ("1080p", (1920, 1080)), ("640x360", (640, 360))])
def test_parse_resolution(text, wh):
    assert synthetic.parse_resolution(text) == wh


@pytest.mark.parametrize("text", ["720", "0x10", "axb", "4k"])
def test_parse_resolution_rejects(text):
    with pytest.raises(ValueError, match="resolution"):
        synthetic.parse_resolution(text)


@pytest.mark.parametrize("runner", [runs.run_sequential, runs.run_pipelined])
@pytest.mark.parametrize("warmup, frames", [(0, 5), (3, 4)])
def test_runs_time_every_stage_once_per_measured_frame(runner, warmup, frames):
    clip = synthetic.SyntheticClip(3, 320, 240, warmup + frames + 5, seed=1)
    run = runner(_pipeline(clip), ClipSource(clip), warmup=warmup, frames=frames)
    assert run.frames_measured == frames and run.warmup_frames == warmup
    assert list(run.stage_stats) == PIPELINE_STAGES + ["render"]
    assert {name: s.calls for name, s in run.stage_stats.items()} == {n: frames for n in PIPELINE_STAGES + ["render"]}
    assert len(run.frame_interval_ms) == frames
    assert run.persons_per_frame == [len(clip.detections(i)) for i in range(warmup, warmup + frames)]
    assert run.extra["frame_wh"] == [320, 240]
    # Frame intervals tile the measured wall time (the pipelined wall also holds the writer's drain).
    assert run.frame_interval_ms.sum() <= 1000.0 * run.wall_s * 1.0001


class CostlyPose(DetectorKeypointPoses):
    """The detector's keypoints, costing `cost_s` per frame on the fake clock."""

    def __init__(self, clock, cost_s):
        super().__init__()
        self.clock, self.cost_s = clock, cost_s

    def __call__(self, frame, detections):
        self.clock.advance(self.cost_s)
        return super().__call__(frame, detections)


class CostlyClipSource(ClipSource):
    """Decoding a frame costs `cost_s` on the fake clock."""

    def __init__(self, clip, clock, cost_s):
        super().__init__(clip)
        self.clock, self.cost_s = clock, cost_s

    def frames(self):
        for frame in self.clip.frames():
            self.clock.advance(self.cost_s)
            yield frame


# Pipelined, the reader thread decodes ahead while the pipeline runs, so decoding must cost nothing on the fake
# clock there or the split of time between the threads would depend on scheduling.
@pytest.mark.parametrize("runner, decode_s", [(runs.run_sequential, 0.01), (runs.run_sequential, 0.0),
                                              (runs.run_pipelined, 0.0)])
def test_bench_reports_known_stage_times_shares_and_fps(runner, decode_s):
    pose_s, warmup, frames = 0.04, 2, 6
    clock = FakeClock()
    clip = synthetic.SyntheticClip(2, 160, 120, warmup + frames + 3, seed=2)
    pipeline = _pipeline(clip, CostlyPose(clock, pose_s), timer=StageTimer(clock=clock))
    run = runner(pipeline, CostlyClipSource(clip, clock, decode_s), warmup=warmup, frames=frames)
    summary = report.summarize_run(run)
    frame_s = pose_s + decode_s
    assert run.wall_s == pytest.approx(frames * frame_s, abs=1e-9)
    assert summary["fps_end_to_end"] == pytest.approx(1.0 / frame_s, rel=1e-3)
    assert run.frame_interval_ms == pytest.approx([1000.0 * frame_s] * frames, abs=1e-6)
    assert summary["stages"]["pose"]["calls"] == frames  # the warm-up frames are not counted
    assert summary["stages"]["pose"]["median_ms"] == pytest.approx(1000.0 * pose_s, abs=1e-6)
    assert summary["stages"]["pose"]["share"] == pytest.approx(pose_s / frame_s, abs=1e-4)
    if runner is runs.run_sequential:
        assert summary["stages"]["decode"]["median_ms"] == pytest.approx(1000.0 * decode_s, abs=1e-6)
        assert summary["stages"]["decode"]["share"] == pytest.approx(decode_s / frame_s, abs=1e-4)
    for name in ("detect", "propagate", "track", "render"):
        assert summary["stages"][name]["median_ms"] == 0.0  # nothing else moved the clock


def test_sinks_are_timed_as_write_and_their_output_is_kept(tmp_path):
    clip = synthetic.SyntheticClip(2, 160, 120, 10, seed=4)
    out = tmp_path / "poses.jsonl"
    run = runs.run_sequential(_pipeline(clip), ClipSource(clip), [JsonLinesSink(out, COCO17)], warmup=2, frames=5)
    assert "render" not in run.stage_stats
    assert {n: s.calls for n, s in run.stage_stats.items() if n.startswith("write")} == {
        "write": 5, "write.jsonlines": 5}
    assert run.stage_stats["write.jsonlines"].total_ms <= run.stage_stats["write"].total_ms
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(7))  # warm-up frames are written too


class FailsToFinish(Sink):
    """An output that cannot be completed (a full disk found at the end, say)."""

    def write(self, frame, tracks, fps):
        pass

    def finish(self):
        raise OutputError("cannot write x.mp4: the disk is full")


@pytest.mark.parametrize("runner", [runs.run_sequential, runs.run_pipelined])
def test_one_output_that_cannot_be_finished_discards_them_all(runner, tmp_path):
    clip = synthetic.SyntheticClip(2, 160, 120, 6, seed=4)
    out = tmp_path / "poses.jsonl"
    with pytest.raises(OutputError, match="disk is full"):
        runner(_pipeline(clip), ClipSource(clip), [JsonLinesSink(out, COCO17), FailsToFinish()], warmup=1, frames=3)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file is left


class InterruptedSource(ClipSource):
    """Ctrl-C (or SIGTERM, which the CLI turns into the same) after `frames` frames."""

    def __init__(self, clip, frames):
        super().__init__(clip)
        self.count = frames

    def frames(self):
        for index, frame in enumerate(self.clip.frames()):
            if index == self.count:
                raise KeyboardInterrupt
            yield frame


@pytest.mark.parametrize("runner", [runs.run_sequential, runs.run_pipelined])
def test_an_interrupted_run_stops_the_benchmark_and_keeps_its_outputs(runner, tmp_path):
    """An interrupted run is no measurement: both runners end with the interrupt (the pipelined one used to return
    the frames seen so far, which bench then reported as "the source ended during the warm-up frames"), and the
    outputs written so far are closed and kept, as `posetrack track` keeps them."""
    clip = synthetic.SyntheticClip(2, 160, 120, 10, seed=4)
    out = tmp_path / "poses.jsonl"
    with pytest.raises(KeyboardInterrupt):
        runner(_pipeline(clip), InterruptedSource(clip, 3), [JsonLinesSink(out, COCO17)], warmup=5, frames=5)
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == [0, 1, 2]


def _fake_run(mode="sequential"):
    stats = {
        "decode": StageStats(4, 40.0, 10.0, 10.0, 12.0, 8.0, 12.0),
        "pose": StageStats(4, 120.0, 30.0, 30.0, 33.0, 27.0, 33.0),
        "pose.network": StageStats(4, 100.0, 25.0, 25.0, 28.0, 22.0, 28.0),
    }
    return runs.BenchRun(mode, 2, 4, 0.2, np.array([50.0, 50.0, 50.0, 50.0]), [3, 3, 4, 2], stats)


def test_summary_shares_fps_and_table():
    summary = report.summarize_run(_fake_run())
    assert summary["fps_end_to_end"] == pytest.approx(20.0)
    assert summary["stages"]["decode"]["share"] == pytest.approx(0.2)
    assert summary["stages"]["pose"]["share"] == pytest.approx(0.6)
    assert summary["frame"]["median_ms"] == pytest.approx(50.0)
    assert summary["persons_per_frame"] == {"mean": 3.0, "max": 4, "min": 2}
    table = report.format_table(summary)
    lines = table.splitlines()
    assert lines[0].split() == ["stage", "calls", "median", "ms", "p95", "ms", "share", "stage", "FPS"]
    assert lines[2].split() == ["decode", "4", "10.00", "12.00", "20.0%", "100.0"]
    assert lines[4].startswith("  pose.network")  # nested stages are indented under their parent
    assert lines[-1].split()[:2] == ["frame", "(wall)"]
    markdown = report.format_table(summary, markdown=True).splitlines()
    assert markdown[0].startswith("| stage |") and len(markdown) == 2 + 4


@pytest.mark.parametrize("flags, expected", [
    ("fpu avx avx2 fma", ["avx2"]),
    ("avx2 avx512f avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8", ["avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                                      "amx_int8", "amx_bf16"]),
    ("sse4_2 ssse3", []),
])
def test_cpu_vector_extensions_read_from_the_flags_line(monkeypatch, flags, expected):
    text = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\nbugs\t\t: avx512_vnni_fake\n"
    real_read_text = environment.Path.read_text
    monkeypatch.setattr(environment.Path, "read_text",
                        lambda self, *a, **k: text if str(self) == "/proc/cpuinfo" else real_read_text(self, *a, **k))
    assert environment.cpu_vector_extensions() == expected


def test_record_has_speedup_environment_and_load(tmp_path):
    both = {"sequential": _fake_run("sequential"), "pipelined": _fake_run("pipelined")}
    both["pipelined"].wall_s = 0.1
    env = environment.capture_environment()
    for key in ("cpu_model", "cpu_count", "cpu_vector_extensions", "torch", "cuda_build", "gpu_name", "gpu_driver",
                "onnxruntime", "tensorrt", "opencv", "git"):
        assert key in env
    record = report.bench_record(command=["posetrack", "bench"], source={"name": "x", "frame_wh": [8, 8]},
                                runs=both, setup={"detector": "D", "detector_input_size": 640, "pose_stage": "P",
                                                  "pose_model": "m", "pose_backend": "torch", "pose_device": "cpu",
                                                  "pose_precision": "fp32", "pose_max_batch": 8, "tracker": "iou"},
                                environment=env, load_start=0.5, load_end=1.5)
    assert record["pipelined_speedup"] == pytest.approx(2.0)
    assert record["load_average_1min"] == {"start": 0.5, "end": 1.5}
    json.dumps(record)  # JSON-ready
    text = report.format_report(record)
    assert "load average (1 min): 0.5 at start, 1.5 at end" in text
    assert "2.00x" in text


@pytest.fixture(scope="module")
def vtest(shared_data):
    return shared_data / "pets09_s2l1" / "vtest.avi"


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    """A 3-frame synthetic video: a SOURCE for the cases that need one to exist but never get to decode it."""
    return synthetic.SyntheticClip(1, 64, 64, 3).write_video(tmp_path_factory.mktemp("clip") / "small.avi")


def test_bench_cli_synthetic_compare_writes_json_and_markdown(tmp_path, capsys):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    code = main(["bench", "--frames", "4", "--warmup", "1", "--persons", "2", "--resolution", "320x240",
                 "--no-detector-network", "--compare", "--json", str(out_json), "--markdown", str(out_md),
                 "--set", "tracker.kind=iou"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(out_json.read_text())
    assert set(record["runs"]) == {"sequential", "pipelined"}
    assert record["source"]["synthetic"] and record["source"]["persons"] == 2
    assert record["source"]["frame_wh"] == [320, 240]
    assert "stub detector" in " ".join(record["notes"])
    for run in record["runs"].values():
        assert run["frames_measured"] == 4
        assert set(PIPELINE_STAGES) <= set(run["stages"])
    assert record["pipelined_speedup"] > 0
    assert record["environment"]["cpu_count"] >= 1
    assert record["config"]["tracker"]["kind"] == "iou" == record["setup"]["tracker"]  # --set reached the run
    assert "frame (wall)" in captured.out and "stub detector" in captured.out
    assert "| stage |" in out_md.read_text()


def test_synthetic_detector_times_the_network_on_the_schedules_regions():
    clip = synthetic.SyntheticClip(2, 320, 240, 3)
    calls = []
    detector = synthetic.SyntheticDetector(clip, network=lambda frame, *regions: calls.append(regions))
    frame = next(iter(clip.frames()))
    regions = np.array([[10, 10, 60, 90]], np.float32)
    for asked in (None, regions):
        found = detector(frame) if asked is None else detector(frame, asked)
        assert len(found) == 2  # the clip's known people either way
    assert len(calls) == 2 and calls[0] == () and calls[1][0] is regions


def test_bench_cli_on_video_with_outputs(tmp_path, capsys, vtest):
    video, poses, out_json = tmp_path / "v.avi", tmp_path / "p.jsonl", tmp_path / "b.json"
    code = main(["bench", str(vtest), "--frames", "2", "--warmup", "1", "--sequential", "--out-video", str(video),
                 "--out-json", str(poses), "--json", str(out_json), "--set", "detector.input_size=320"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(out_json.read_text())
    run = record["runs"]["sequential"]
    assert run["frames_measured"] == 2
    assert {n: s["calls"] for n, s in run["stages"].items() if n.startswith("write")} == {
        "write": 2, "write.video": 2, "write.jsonlines": 2}
    assert run["load_average_1min"]["start"] is not None
    assert record["source"]["frame_wh"] == [768, 576]
    assert record["setup"]["detector"] == "YoloPoseDetector"
    assert len(poses.read_text().splitlines()) == 3 and video.stat().st_size > 0


@pytest.mark.parametrize("argv, fragment", [
    (["--frames", "0"], "--frames must be >= 1"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--persons", "-2"], "--persons must be >= 0"),
    (["--resolution", "huge"], "resolution must be one of"),
    (["SOURCE", "--persons", "3"], "--persons applies to the synthetic clip only"),
    (["SOURCE", "--no-detector-network"], "applies to the synthetic clip only"),
    (["--json", "/nonexistent-folder/b.json"], "does not exist"),
    (["/nonexistent/video.avi"], "not found"),
    (["SOURCE", "--out-video", "SOURCE"], "would destroy the input"),
    (["--json", "TMP/b.json", "--markdown", "TMP/b.json"], "are the same file"),
    (["--out-json", "TMP/poses.txt"], "must end in one of"),
])
def test_bench_cli_bad_inputs_are_one_line_errors(argv, fragment, capsys, small_video, tmp_path):
    argv = [str(small_video) if a == "SOURCE" else a.replace("TMP", str(tmp_path)) for a in argv]
    code = main(["bench", "--frames", "1", "--warmup", "0", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and fragment in error_lines[0], err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert small_video.stat().st_size > 0  # the input is intact


class FakeHeatmapBackend:
    """Stands in for a pose network: fixed-size input, random heatmaps (the estimator's plumbing is real)."""

    input_hw, num_keypoints, device = (64, 48), 17, "cpu"

    def infer(self, batch):
        import torch

        assert tuple(batch.shape[1:]) == (3, 64, 48)
        return torch.rand(batch.shape[0], 17, 16, 12)

    def close(self):
        pass


def test_top_down_sub_stages_are_timed_under_pose():
    from posetrack_app.pose.topdown import TopDownEstimator

    clip = synthetic.SyntheticClip(3, 320, 240, 6, seed=5)
    estimator = TopDownEstimator(FakeHeatmapBackend(), skeleton=COCO17, flip_test=True)
    pipeline = _pipeline(clip, estimator)
    run = runs.run_sequential(pipeline, ClipSource(clip), warmup=1, frames=4)
    names = list(run.stage_stats)
    assert names[names.index("pose") + 1:names.index("pose") + 4] == ["pose.crop", "pose.network", "pose.decode"]
    for name in ("pose.crop", "pose.network", "pose.decode"):
        assert run.stage_stats[name].calls == 4
        # A sub-stage takes part of its parent's time, never more.
        assert run.stage_stats[name].total_ms <= run.stage_stats["pose"].total_ms
