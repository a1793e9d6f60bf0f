"""Plots and Markdown tables from the benchmark JSON records, and the generated blocks of RESULTS.md.

    python benchmarks/plot_results.py     # rewrite every scaling_*.png/.md from its JSON and refresh RESULTS.md

RESULTS.md keeps hand-written text; the blocks between `<!-- BEGIN generated: NAME -->` and
`<!-- END generated: NAME -->` are rebuilt from benchmarks/results/NAME.json (a `posetrack bench --json`
record, or a `scaling.py` record), so re-running a measurement command and then this script updates the tables.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from posetrack_app.io.atomic import atomic_write  # noqa: E402

BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END generated: (?P=name) -->)",
                   re.DOTALL)


def plot_scaling(record: dict, png_prefix: Path) -> list:
    """Two PNGs: whole-pipeline frame time and tracker time against persons per frame, a line per resolution
    (and per tracker). Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    env = record["environment"]
    machine = f"{env.get('cpu_model')} ({env.get('cpu_count_usable')} cores), GPU {env.get('gpu_name') or 'none'}"
    load = record["load_average_1min"]
    subtitle = f"{machine}; load avg 1 min {load['start']} -> {load['end']}"

    for row in record["pipeline"]:
        row.setdefault("non_detect_median_ms", non_detect_ms(row))
    panels = [("pipeline", "whole pipeline, sequential (decode .. render)", "frame_median_ms", "frame_p95_ms"),
              ("pipeline_without_detector", "whole pipeline without the detector network: sum of the other "
               "stages' medians", "non_detect_median_ms", None)]
    panels += [(f"tracker_{kind}", f"tracker alone: {kind} (propose + update)", "median_ms", "p95_ms")
               for kind in record.get("trackers", {})]
    for key, title, median_key, p95_key in panels:
        rows = record["trackers"][key[len("tracker_"):]] if key.startswith("tracker_") else record["pipeline"]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for resolution in record["resolutions"]:
            points = sorted((r["persons"], r[median_key], r[p95_key] if p95_key else None)
                            for r in rows if r["resolution"] == resolution)
            if not points:
                continue
            persons, medians, p95s = zip(*points)
            line, = ax.plot(persons, medians, marker="o", label=f"{resolution} median")
            if p95_key:
                ax.plot(persons, p95s, linestyle=":", color=line.get_color(), label=f"{resolution} p95")
        ax.set_xlabel("persons per frame")
        ax.set_ylabel("time per frame (ms)")
        ax.set_title(title, fontsize=10)
        fig.suptitle(subtitle, fontsize=7, y=0.995)
        ax.set_xticks(record["persons"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = Path(f"{png_prefix}_{key}.png")
        tmp = path.with_name(f".{path.stem}.part.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)
        written.append(path)
    return written


def non_detect_ms(row: dict) -> float:
    """Sum of the per-stage medians of a scaling row other than the detector (top-level stages only)."""
    return round(sum(ms for name, ms in row["stage_median_ms"].items() if name != "detect" and "." not in name), 3)


def scaling_markdown(record: dict) -> str:
    env, load = record["environment"], record["load_average_1min"]
    lines = [f"- machine: {env.get('cpu_model')} ({env.get('cpu_count_usable')} usable cores), GPU "
             f"{env.get('gpu_name') or 'none'}; torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}",
             f"- load average (1 min): {load['start']} at start, {load['end']} at end",
             f"- {record['frames']} frames measured per point after {record['warmup']} warm-up; "
             f"{record['detections_note']}",
             f"- pose stage: {record['pose_stage']}; detector input {record['detector_input_size']}", ""]
    persons = record["persons"]
    lines.append("Whole pipeline, median frame time in ms (p95 in parentheses), sequential loop:")
    lines.append("")
    lines.append("| resolution \\ persons | " + " | ".join(str(p) for p in persons) + " |")
    lines.append("|---|" + "---:|" * len(persons))
    for resolution in record["resolutions"]:
        cells = {r["persons"]: f"{r['frame_median_ms']:.1f} ({r['frame_p95_ms']:.1f})"
                 for r in record["pipeline"] if r["resolution"] == resolution}
        lines.append(f"| {resolution} | " + " | ".join(cells.get(p, "-") for p in persons) + " |")
    lines += ["", "Without the detector network: sum of the other stages' medians (decode, propagate, pose, track, "
              "render), ms:", ""]
    lines.append("| resolution \\ persons | " + " | ".join(str(p) for p in persons) + " |")
    lines.append("|---|" + "---:|" * len(persons))
    for resolution in record["resolutions"]:
        cells = {r["persons"]: f"{non_detect_ms(r):.1f}" for r in record["pipeline"] if r["resolution"] == resolution}
        lines.append(f"| {resolution} | " + " | ".join(cells.get(p, "-") for p in persons) + " |")
    for kind, rows in record.get("trackers", {}).items():
        lines += ["", f"Tracker alone ({kind}: propose + update), median ms per frame (p95):", ""]
        lines.append("| resolution \\ persons | " + " | ".join(str(p) for p in persons) + " |")
        lines.append("|---|" + "---:|" * len(persons))
        for resolution in record["resolutions"]:
            cells = {r["persons"]: f"{r['median_ms']:.2f} ({r['p95_ms']:.2f})"
                     for r in rows if r["resolution"] == resolution}
            lines.append(f"| {resolution} | " + " | ".join(cells.get(p, "-") for p in persons) + " |")
    lines += ["", f"Command: `{record['command']}`"]
    return "\n".join(lines) + "\n"


def block_markdown(name: str) -> str:
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        return f"_not measured yet: {path.relative_to(REPO)} is missing (run the command above)._\n"
    record = json.loads(path.read_text())
    if record.get("schema", "").startswith("posetrack-bench"):
        from posetrack_app.benchmark.report import format_report

        return format_report(record, markdown=True)
    if record.get("schema", "").startswith("posetrack-scaling"):
        return scaling_markdown(record)
    raise ValueError(f"{path}: unknown record schema {record.get('schema')!r}")


def refresh_results_md(path: Path = RESULTS_MD) -> list:
    """Rebuilds every generated block of RESULTS.md from its JSON; returns the block names."""
    text = path.read_text()
    names = []

    def rebuild(match):
        names.append(match.group("name"))
        return match.group(1) + block_markdown(match.group("name")) + match.group(4)

    new_text = BLOCK.sub(rebuild, text)
    with atomic_write(path) as handle:
        handle.write(new_text)
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-plots", action="store_true", help="only refresh RESULTS.md")
    args = parser.parse_args(argv)
    if not args.no_plots:
        for json_path in sorted(RESULTS_DIR.glob("scaling_*.json")):
            record = json.loads(json_path.read_text())
            for png in plot_scaling(record, json_path.with_suffix("")):
                print(f"wrote {png.relative_to(REPO)}")
            with atomic_write(json_path.with_suffix(".md")) as handle:
                handle.write(scaling_markdown(record))
    names = refresh_results_md()
    print(f"refreshed {RESULTS_MD.relative_to(REPO)}: {', '.join(names) or 'no generated blocks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
