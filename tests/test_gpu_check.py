"""benchmarks/gpu_check.sh as CI runs it (--quick --device cpu): every step runs and passes, and its JSON and
Markdown records hold every case, the GPU-test counts, the pose throughput and the peer; without CUDA the GPU mode
stops at once with a clear message; bad arguments exit 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["prepare", "gpu_tests", "pose_throughput", "cases", "peer"]
CASES = {"persons6_720p", "persons6_720p_pose_only", "vtest_960_outputs", "vtest_960_detector_keypoints",
         "persons30_1080p_pose_only"}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _run(*args, timeout_s=900):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.mark.slow
def test_quick_cpu_mode_runs_every_step_and_writes_its_records(tmp_path, shared_data):
    out = tmp_path / "results" / "gpu_check_cpu_quick"
    result = _run("--quick", "--device", "cpu", "--out", str(out), "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    record = json.loads(out.with_suffix(".json").read_text())
    assert record["device"] == "cpu" and record["quick"] is True
    assert [s["name"] for s in record["steps"]] == STEPS
    assert all(s["exit_code"] == 0 for s in record["steps"]), record["steps"]
    # On a CPU every GPU test is collected and skipped, none fails.
    assert record["gpu_tests"]["failed"] == 0 and record["gpu_tests"]["errors"] == 0
    assert record["gpu_tests"]["skipped"] > 0
    assert {r["model"] for r in record["pose_throughput"]["results"]} == {"hrnet_w32_256x192"}
    cases = {c["id"]: c for c in record["cases"]}
    assert set(cases) == CASES
    for case in cases.values():
        assert case["exit_code"] == 0 and case["fps"] > 0, case
    # HRNet ran where the case says so, with the weights the script made; the detector-keypoints case ran none.
    assert {c["setup"]["pose_stage"] for i, c in cases.items() if i != "vtest_960_detector_keypoints"} == {
        "TopDownEstimator"}
    assert cases["vtest_960_detector_keypoints"]["setup"]["pose_stage"] == "DetectorKeypointPoses"
    assert "pose.network" in cases["persons30_1080p_pose_only"]["stage_median_ms"]
    assert {i for i, c in cases.items() if not c["setup"]["detector_network_run"]} == {
        "persons6_720p_pose_only", "persons30_1080p_pose_only"}
    assert "write.video" in cases["vtest_960_outputs"]["stage_median_ms"]
    assert record["peer"]["peer_fps"] > 0

    markdown = out.with_suffix(".md").read_text()
    assert "| case | FPS | goal |" in markdown and "peer: ultralytics" in markdown
    # The one-screen summary is the Markdown, printed.
    assert "| case | FPS | goal |" in result.stdout


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU")
def test_gpu_mode_without_cuda_stops_at_once_with_a_clear_message(tmp_path):
    result = _run("--out", str(tmp_path / "r"), "--work", str(tmp_path / "work"), timeout_s=300)
    assert result.returncode == 2
    assert "torch sees no CUDA GPU" in result.stderr and "--quick --device cpu" in result.stderr
    assert not (tmp_path / "r.json").exists()
    steps = (tmp_path / "work" / "steps.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in steps] == ["prepare"]  # nothing else ran


@pytest.mark.parametrize("args, fragment", [
    (["--device", "tpu"], "--device must be cuda, cuda:N or cpu"),
    (["--weights", "/nonexistent/w48.pth"], "not found"),
    (["--frames", "3"], "unknown argument --frames"),
    (["--budget", "ten"], "--budget must be a whole number of seconds"),
])
def test_bad_arguments_exit_2(args, fragment):
    result = _run(*args, timeout_s=60)
    assert result.returncode == 2
    assert fragment in result.stderr


def test_a_case_stopped_by_the_time_limit_reads_as_interrupted(tmp_path):
    """A case ended by the step's time limit (posetrack exits 128 + SIGTERM's number) is reported as interrupted,
    not as failed with a made-up reason (the 30-person case of the H200 run of 2026-11-30 read "failed (exit 2)",
    its bench having blamed the source for ending during the warm-up)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    work = tmp_path / "work"
    work.mkdir()
    for order, (case_id, code) in enumerate([("persons6_720p_pose_only", 2), ("persons30_1080p_pose_only", 143)]):
        (work / f"case_{case_id}.status.json").write_text(json.dumps(
            {"id": case_id, "order": order, "title": case_id, "exit_code": code, "seconds": 1.0, "argv": []}))
    assert gpu_check.main(["report", "--work", str(work), "--device", "cpu", "--quick",
                           "--out", str(tmp_path / "r")]) == 0
    table = (tmp_path / "r.md").read_text()
    assert "| persons6_720p_pose_only | failed (exit 2) |" in table
    assert "| persons30_1080p_pose_only | interrupted (exit 143) |" in table
