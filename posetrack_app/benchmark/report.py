"""A benchmark's JSON record (`bench_record`) and its human-readable forms: per-stage tables and the report, as
plain text or Markdown, rebuilt from the JSON alone.

"share" is a stage's total time over the wall time of the measured frames. In the sequential loop the shares
add up to about 100%; pipelined, stages in the reader and writer threads overlap the pipeline, so they can add
up to more than 100%: that excess is the overlap the threads buy.
"""
from __future__ import annotations

import shlex
from datetime import datetime, timezone
from typing import Dict, Optional, Sequence

import numpy as np

from ..timing import stats_from_ms
from .runs import BenchRun


def summarize_run(run: BenchRun) -> Dict[str, object]:
    """JSON-ready numbers of a run: per stage median/p95/mean ms and share of the wall time; frame stats."""
    wall_ms = 1000.0 * run.wall_s
    stages = {}
    for name, s in run.stage_stats.items():
        stages[name] = {
            "calls": s.calls,
            "median_ms": round(s.median_ms, 3),
            "p95_ms": round(s.p95_ms, 3),
            "mean_ms": round(s.mean_ms, 3),
            "share": round(s.total_ms / wall_ms, 4) if wall_ms > 0 else None,
        }
    out: Dict[str, object] = {
        "mode": run.mode,
        "timer_mode": run.timer_mode,
        "warmup_frames": run.warmup_frames,
        "frames_measured": run.frames_measured,
        "wall_s": round(run.wall_s, 4),
        "fps_end_to_end": round(run.fps, 3),
        "stages": stages,
    }
    if len(run.frame_interval_ms):
        f = stats_from_ms(run.frame_interval_ms)
        out["frame"] = {"median_ms": round(f.median_ms, 3), "p95_ms": round(f.p95_ms, 3),
                        "mean_ms": round(1000.0 / run.fps if run.fps else f.mean_ms, 3)}
    if run.persons_per_frame:
        p = np.asarray(run.persons_per_frame)
        out["persons_per_frame"] = {"mean": round(float(p.mean()), 3), "max": int(p.max()), "min": int(p.min())}
    out.update(run.extra)
    return out


def format_table(summary: Dict[str, object], markdown: bool = False) -> str:
    """Per-stage table of a `summarize_run` result (stdout text, or a Markdown table)."""
    rows = []
    for name, s in summary["stages"].items():
        label = ("  " + name) if "." in name else name
        share = "" if s["share"] is None else f"{100.0 * s['share']:.1f}%"
        rows.append((label, str(s["calls"]), f"{s['median_ms']:.2f}", f"{s['p95_ms']:.2f}", share,
                     f"{1000.0 / s['mean_ms']:.1f}" if s["mean_ms"] > 0 else ""))
    frame = summary.get("frame")
    if frame:
        rows.append(("frame (wall)", str(summary["frames_measured"]), f"{frame['median_ms']:.2f}",
                     f"{frame['p95_ms']:.2f}", "100.0%", f"{summary['fps_end_to_end']:.1f}"))
    header = ("stage", "calls", "median ms", "p95 ms", "share", "stage FPS")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 5) + "|"]
        lines += ["| " + " | ".join((c.strip() if i == 0 else c) for i, c in enumerate(r)) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines)


MODE_TITLES = {
    "sequential": "sequential (decode -> pipeline -> render/write on one thread)",
    "pipelined": "pipelined (run_stream: reader thread -> pipeline -> writer thread)",
}


def format_report(record: Dict[str, object], markdown: bool = False) -> str:
    """Human-readable report of a `bench_record` (stdout text or Markdown), rebuilt from the JSON alone."""
    source, setup, env = record["source"], record["setup"], record["environment"]
    load = record["load_average_1min"]
    size = "x".join(str(v) for v in source.get("frame_wh") or []) or "?"
    pose = setup["pose_stage"] + (" (detector keypoints, no pose network)"
                                  if setup["pose_stage"] == "DetectorKeypointPoses" else
                                  f" ({setup['pose_model']}, {setup['pose_backend']}, {setup['pose_device']}, "
                                  f"{setup['pose_precision']}, batch <= {setup['pose_max_batch']})")
    detector = setup["detector"]
    if source.get("synthetic"):
        detector += " (" + ("network run for timing, output replaced by the known persons" if
                            setup.get("detector_network_run") else "no network run") + ")"
    gpu = env.get("gpu_name") or "none"
    facts = [
        f"source: {source['name']} ({size})" + (f", synthetic clip, {source['persons']} persons, seed "
                                                f"{source['seed']}" if source.get("synthetic") else ""),
        f"detector: {detector}; providers {', '.join(setup.get('detector_providers') or []) or '-'}; "
        f"input {setup['detector_input_size']}",
        f"pose: {pose}; tracker: {setup['tracker']}"
        + (f"; the detector {setup['detect_ahead']} frame(s) ahead in worker threads (pipelined run)"
           if setup.get("detect_ahead") else ""),
        f"machine: {env.get('cpu_model')} ({env.get('cpu_count_usable')} usable cores), GPU {gpu}"
        + (f" (driver {env.get('gpu_driver')})" if env.get("gpu_driver") else "")
        + f"; torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, TensorRT {env.get('tensorrt') or '-'}",
        f"load average (1 min): {load['start']} at start, {load['end']} at end",
    ]
    parts = []
    for name, run in record["runs"].items():
        title = f"{MODE_TITLES.get(name, name)}: {run['frames_measured']} frames after {run['warmup_frames']} " \
                f"warm-up, timer {run['timer_mode']}"
        persons = run.get("persons_per_frame") or {}
        tail = f"end to end {run['fps_end_to_end']:.2f} FPS"
        if run.get("frame"):
            tail += f" ({1000.0 / run['fps_end_to_end']:.1f} ms per frame)" if run["fps_end_to_end"] else ""
        if persons:
            tail += f"; persons per frame {persons['mean']:.1f} mean, {persons['max']} max"
        run_load = run.get("load_average_1min")
        if run_load:
            tail += f"; load average {run_load['start']} -> {run_load['end']}"
        if markdown:
            parts.append(f"**{title}**\n\n{format_table(run, markdown=True)}\n\n{tail}")
        else:
            parts.append(f"{title}\n{format_table(run)}\n{tail}")
    if "pipelined_speedup" in record:
        parts.append(f"pipelined / sequential end-to-end FPS: {record['pipelined_speedup']:.2f}x")
    notes = list(record.get("notes") or [])
    if markdown:
        head = "\n".join(f"- {line}" for line in facts + notes)
        return f"{head}\n\n" + "\n\n".join(parts) + f"\n\nCommand: `{record['command']}`\n"
    return "\n".join(facts + [f"note: {n}" for n in notes]) + "\n\n" + "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------------


def bench_record(*, command: Sequence[str], source: Dict[str, object], runs: Dict[str, BenchRun], setup: dict,
                 environment: dict, load_start: Optional[float], load_end: Optional[float],
                 config: Optional[dict] = None, notes: Sequence[str] = ()) -> Dict[str, object]:
    """The JSON written by `posetrack bench --json`."""
    record: Dict[str, object] = {
        "schema": "posetrack-bench/1",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(command),
        "source": source,
        "load_average_1min": {"start": load_start, "end": load_end},
        "runs": {name: summarize_run(run) for name, run in runs.items()},
        "setup": setup,
        "environment": environment,
        "notes": list(notes),
    }
    if "sequential" in runs and "pipelined" in runs and runs["sequential"].fps > 0:
        record["pipelined_speedup"] = round(runs["pipelined"].fps / runs["sequential"].fps, 3)
    if config is not None:
        record["config"] = config
    return record
