"""How the FlowTracker defaults are chosen: leave-one-group-out over the tracker dev suite.

Every candidate setting runs FlowTrack on every clip of the suite (benchmarks/tracker_suite.py) at the detector
size detector.input_size=auto picks for it. A clip's score is the mean of its MOTA and IDF1, and, on the synthetic
clips that have pose truth, also its pose MOTA and pose mAP. Clips are grouped (pets09; the seven MOT17 mini clips,
each 4-8 frames, as one group; each synthetic clip alone); the suite score is the mean over groups of the group's mean.

Leave-one-group-out: for each group, the candidate with the best suite score on the other groups is chosen, and
scored on the group left out. The gap (fitted score on the other groups minus the left-out score) and the regret
(the left-out group's best candidate minus the chosen one there) say how much a choice fits the clips it was chosen
on. The defaults are the candidate with the best score on all groups, unless another lies within noise of it and
config.py gives a reason to prefer it (FlowTrackConfig says so beside the field); the one-field sweeps around the
starting point show each setting's effect.

    python benchmarks/tune_flowtrack.py --out benchmarks/results/flowtrack_loo.md
    python benchmarks/tune_flowtrack.py --random 20 --workers 2 --out /tmp/search.md

Candidates: the defaults, each GRID field moved through its values with the others at their defaults, and
`--random` points of the whole grid (seeded).
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import random
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from posetrack_app.config import load_config, to_dict  # noqa: E402
from posetrack_app.input_size import auto_input_size  # noqa: E402
from posetrack_app.io.atomic import atomic_write  # noqa: E402
from tracker_suite import cached_detections, load_clips, run_tracker, score, suite_clips  # noqa: E402

# Searched fields ("tracker.flow." implied unless the name has a section) and their grids.
GRID = {
    "confirm_score": [0.4, 0.5, 0.6],
    "new_track_min_score": [0.3, 0.4],
    # 0.25 = detector.score_threshold: no weak second round.
    "low_score_threshold": [0.1, 0.15, 0.25],
    "max_propagation_s": [0.0, 0.25, 0.5],
    "max_lost_s": [1.0, 2.0, 4.0],
    "match_oks_threshold": [0.05, 0.15, 0.3],
    "pose_nms_oks_threshold": [0.5, 0.6, 0.7],
    "box_flow_weight": [0.0, 0.3],
    "tracker.box_merge_iou_threshold": [0.5, 0.7],
}
log = logging.getLogger("tune_flowtrack")
_shared: dict = {}  # filled before the worker pool forks: clips and their detections


def _key(name: str) -> str:
    return name if name.startswith("tracker.") else f"tracker.flow.{name}"


def _defaults() -> dict:
    config = to_dict(load_config(None, []))
    out = {}
    for name in GRID:
        node = config
        for part in _key(name).split("."):
            node = node[part]
        out[name] = node
    return out


def clip_score(scores: dict) -> float:
    """The number a candidate is chosen by on one clip (higher is better)."""
    parts = [scores["MOTA"], scores["IDF1"]] + [scores[k] for k in ("pose MOTA", "pose mAP") if k in scores]
    return float(np.mean(parts))


def _evaluate(candidate: dict) -> Dict[str, dict]:
    """{clip: scores} of FlowTrack with `candidate` over the defaults."""
    cfg = load_config(None, [f"{_key(k)}={v}" for k, v in candidate.items()])
    return {clip.name: score(clip, run_tracker("flowtrack", cfg, clip, _shared["detections"][clip.name]))
            for clip in _shared["clips"]}


def group_scores(per_clip: Dict[str, dict], groups: Dict[str, List[str]]) -> Dict[str, float]:
    return {g: float(np.mean([clip_score(per_clip[c]) for c in names])) for g, names in groups.items()}


def candidates(start: dict, n_random: int, seed: int) -> List[dict]:
    pool = [dict(start)]
    for name, values in GRID.items():
        pool += [{**start, name: v} for v in values if v != start[name]]
    rng = random.Random(seed)
    pool += [{name: rng.choice(values) for name, values in GRID.items()} for _ in range(n_random)]
    unique = {tuple(sorted(c.items())): c for c in pool}
    return list(unique.values())


def leave_one_out(results: List[Dict[str, float]], groups: List[str]) -> List[dict]:
    """Per left-out group: the chosen candidate (best mean on the others), its fitted and left-out scores, and the
    in-sample score there (of the candidate chosen on all groups, the left-out one included)."""
    best_all = int(np.argmax([np.mean([r[g] for g in groups]) for r in results]))
    rows = []
    for held in groups:
        others = [g for g in groups if g != held]
        fitted = [np.mean([r[g] for g in others]) for r in results]
        chosen = int(np.argmax(fitted))
        oracle = max(r[held] for r in results)
        rows.append({"held_out": held, "chosen": chosen, "fitted": float(fitted[chosen]),
                     "left_out": results[chosen][held], "gap": float(fitted[chosen] - results[chosen][held]),
                     "in_sample": results[best_all][held],
                     "optimism": float(results[best_all][held] - results[chosen][held]),
                     "regret": float(oracle - results[chosen][held])})
    return rows


def _label(candidate: dict, reference: dict) -> str:
    changed = [f"{k}={v}" for k, v in candidate.items() if v != reference[k]]
    return " ".join(changed) if changed else "(defaults)"


def report(pool, results, loo, groups, start, command) -> str:
    best = int(np.argmax([np.mean([r[g] for g in groups]) for r in results]))
    lines = [f"# FlowTracker: leave-one-group-out over the dev suite ({len(pool)} candidates)", "",
             f"Command: `{command}`", "",
             "Clip score: mean of MOTA and IDF1 (and pose MOTA and pose mAP where the clip has pose truth); group "
             "score: mean over its clips; suite score: mean over groups. Detector size: auto for each clip.", "",
             "## Leave one group out", "",
             "gap = fitted score on the other groups minus the left-out score (it also holds the groups' "
             "different difficulty); in-sample = the left-out group's score under the candidate chosen on all groups; "
             "optimism = in-sample minus left-out (what fitting on a group gains there); regret = the left-out "
             "group's best candidate minus the chosen one.", "",
             "| left out | chosen on the others | fitted (others) | left-out score | gap | in-sample | optimism | regret |",
             "|---|---|---|---|---|---|---|---|"]
    for row in loo:
        lines.append(f"| {row['held_out']} | {_label(pool[row['chosen']], start)} | {row['fitted']:.1f} | "
                     f"{row['left_out']:.1f} | {row['gap']:+.1f} | {row['in_sample']:.1f} | {row['optimism']:+.1f} | "
                     f"{row['regret']:.1f} |")
    lines += ["", f"Mean gap {np.mean([r['gap'] for r in loo]):+.1f}, mean optimism "
              f"{np.mean([r['optimism'] for r in loo]):+.1f}, mean regret "
              f"{np.mean([r['regret'] for r in loo]):.1f} (score points).", "",
              f"Best on all groups: {_label(pool[best], start)}.", "",
              "## Every candidate (group scores)", "",
              "| candidate | " + " | ".join(groups) + " | suite |", "|---|" + "---|" * (len(groups) + 1)]
    order = np.argsort([-np.mean([r[g] for g in groups]) for r in results])
    for i in order:
        cells = [f"{results[i][g]:.1f}" for g in groups] + [f"{np.mean([results[i][g] for g in groups]):.1f}"]
        lines.append(f"| {_label(pool[i], start)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_suite(names: List[str], cache: Path) -> Dict[str, List[str]]:
    clips = load_clips(names, cache)
    _shared["clips"] = clips
    _shared["detections"] = {c.name: cached_detections(c, auto_input_size(c.size_wh), cache)[0] for c in clips}
    groups: Dict[str, List[str]] = {}
    for clip in clips:
        groups.setdefault(clip.group if clip.group in ("pets09", "mot17") else clip.name, []).append(clip.name)
    return groups


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=suite_clips())
    parser.add_argument("--random", type=int, default=0, help="random grid points besides the one-field sweeps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default="/tmp/posetrack_suite")
    parser.add_argument("--out", help="write the tables as Markdown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("posetrack_app.build").setLevel(logging.ERROR)

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    groups = load_suite(args.clips, cache)
    start = _defaults()
    pool = candidates(start, args.random, args.seed)
    log.info("%d candidates on %d clips", len(pool), len(_shared["clips"]))
    with multiprocessing.get_context("fork").Pool(args.workers) as workers:
        per_clip = workers.map(_evaluate, pool)
    results = [group_scores(p, groups) for p in per_clip]
    loo = leave_one_out(results, list(groups))
    command = f"python benchmarks/tune_flowtrack.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    text = report(pool, results, loo, list(groups), start, command)
    print(text)
    if args.out:
        with atomic_write(Path(args.out)) as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
