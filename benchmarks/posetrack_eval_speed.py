"""PoseTrack evaluator speed, and batch wall time with 1 and 2 worker processes.

    python benchmarks/posetrack_eval_speed.py                      # both parts
    python benchmarks/posetrack_eval_speed.py --skip-batch         # evaluator only

Evaluator: a synthetic dataset of 30 sequences x 50 frames x 5 persons (2018 files; predictions with pixel
noise, a joint pushed past the threshold now and then, dropped persons, a false positive person and an
identity swap per sequence), scored by `evaluate_folders` (reading included) and by `evaluate_sequences`
alone; the median of --repeats runs.

Batch: PETS 2009 S2.L1 frames laid out as a PoseTrack dataset (the right half of the scene, upscaled 2x,
the detector's own output as GT), `posetrack batch` with --workers 1 and 2 as subprocesses (wall time
includes start-up and the per-worker pipeline build).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from posetrack_app.evaluation.posetrack import evaluate_folders, evaluate_sequences, load_folder_pairs  # noqa: E402
from posetrack_app.io.posetrack_json import FrameAnnotation, Person, Sequence, write_sequence  # noqa: E402
from posetrack_app.io.atomic import write_json_atomic  # noqa: E402
from posetrack_app.skeleton import POSETRACK18  # noqa: E402

SCORED = np.array([n not in ("left_ear", "right_ear") for n in POSETRACK18.keypoint_names])


def synthetic_dataset(folder: Path, sequences=30, frames=50, persons=5, seed=0) -> None:
    rng = np.random.default_rng(seed)
    (folder / "gt").mkdir(parents=True)
    (folder / "pred").mkdir()
    template = rng.uniform(0, 120, size=(17, 2))
    for s in range(sequences):
        origins = rng.uniform(0, 1600, size=(persons, 2))
        velocity = rng.normal(0, 4, size=(persons, 2))
        gt_frames, pred_frames = [], []
        swap_at = rng.integers(frames // 4, frames)
        for f in range(frames):
            gt_people, pred_people = [], []
            for p in range(persons):
                keypoints = template + origins[p] + f * velocity[p]
                present = SCORED & (rng.random(17) > 0.1)
                head = np.r_[keypoints[2] - 20, keypoints[2] + 20]
                gt_people.append(Person(p, keypoints, present, np.full(17, np.nan), head_box_xyxy=head))
                if rng.random() < 0.05:
                    continue  # dropped person
                noise = rng.normal(0, 6, size=(17, 2))
                noise[rng.random(17) < 0.05] += 60  # a joint past the threshold
                track = p if f < swap_at or p > 1 else 1 - p
                pred_people.append(Person(track + 100, keypoints + noise, SCORED & (rng.random(17) > 0.05),
                                          np.where(SCORED, rng.random(17), np.nan)))
            if rng.random() < 0.2:
                pred_people.append(Person(999, template + rng.uniform(0, 1600, 2), SCORED, np.where(SCORED, 0.2, np.nan)))
            name = f"images/val/{s:06d}/{f:06d}.jpg"
            gt_frames.append(FrameAnnotation(name, f, True, gt_people))
            pred_frames.append(FrameAnnotation(name, f, True, pred_people))
        write_sequence(folder / "gt" / f"{s:06d}.json", Sequence(f"{s:06d}", gt_frames), "2018")
        write_sequence(folder / "pred" / f"{s:06d}.json", Sequence(f"{s:06d}", pred_frames), "2018")


def bench_evaluator(repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        synthetic_dataset(folder)
        with_reading, scoring_only = [], []
        result = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = evaluate_folders(folder / "gt", folder / "pred")
            with_reading.append(time.perf_counter() - t0)
            pairs = load_folder_pairs(folder / "gt", folder / "pred")
            t0 = time.perf_counter()
            evaluate_sequences(pairs)
            scoring_only.append(time.perf_counter() - t0)
    return {
        "dataset": "30 sequences x 50 frames x 5 persons (synthetic, PoseTrack 2018 files)",
        "evaluate_folders_s_median": round(statistics.median(with_reading), 3),
        "evaluate_sequences_s_median": round(statistics.median(scoring_only), 3),
        "runs_s": [round(t, 3) for t in with_reading],
        "total_ap": round(result.total_ap, 2),
        "total_mota": round(result.total_mota, 2),
    }


def pets_dataset(root: Path, sequences: int, frames: int, overrides) -> None:
    import cv2

    from posetrack_app.config import load_config
    from posetrack_app.posetrack_layout import tracks_to_persons
    from posetrack_app.build import build_pipeline
    from posetrack_app.structures import Frame

    cfg = load_config(None, overrides)
    pipeline = build_pipeline(cfg)
    capture = cv2.VideoCapture(str(REPO.parent / "shared" / "data" / "pets09_s2l1" / "vtest.avi"))
    for s in range(sequences):
        name = f"pets_{s:03d}"
        (root / "images" / "val" / name).mkdir(parents=True)
        pipeline.reset()
        annotated = []
        for f in range(frames):
            ok, image = capture.read()
            if not ok:
                raise SystemExit("vtest.avi ended early: ask for fewer frames")
            image = cv2.resize(image[120:408, 384:768], (768, 576))
            path = root / "images" / "val" / name / f"{f:06d}.jpg"
            cv2.imwrite(str(path), image)
            tracks = pipeline.step(Frame(f, cv2.imread(str(path)), f / 7))
            persons = tracks_to_persons(tracks, pipeline.skeleton, cfg.posetrack.keypoint_score_threshold,
                                        cfg.posetrack.head_rule)
            for p in persons:
                x1, y1, x2, y2 = p.box_xyxy
                p.head_box_xyxy = np.array([x1, y1, x1 + (x2 - x1) / 2, y1 + (y2 - y1) / 4])
            annotated.append(FrameAnnotation(f"images/val/{name}/{f:06d}.jpg", f, True, persons))
        (root / "annotations" / "val").mkdir(parents=True, exist_ok=True)
        write_sequence(root / "annotations" / "val" / f"{name}.json", Sequence(name, annotated), "2018")


def bench_batch(sequences: int, frames: int, overrides) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        pets_dataset(root, sequences, frames, overrides)
        rows = {}
        for workers in (1, 2):
            out = Path(tmp) / f"pred_{workers}"
            command = [sys.executable, "-m", "posetrack_app", "batch", str(root), "--out", str(out), "--no-progress",
                       "--workers", str(workers), "--eval", *[a for o in overrides for a in ("--set", o)]]
            t0 = time.perf_counter()
            run = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            wall = time.perf_counter() - t0
            if run.returncode != 0:
                raise SystemExit(f"batch failed:\n{run.stderr}")
            rows[f"workers_{workers}"] = {"wall_s": round(wall, 2), "frames_per_s": round(sequences * frames / wall, 2),
                                          "summary": run.stdout.splitlines()[0]}
            shutil.rmtree(out)
    return {"dataset": f"{sequences} sequences x {frames} frames (PETS09 S2L1 crops, 768x576)",
            "config": overrides, "command": "posetrack batch DS --out PRED --workers N --eval --set ...", **rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--batch-sequences", type=int, default=4)
    parser.add_argument("--batch-frames", type=int, default=25)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "posetrack_eval_speed.json"))
    args = parser.parse_args()
    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(v, 2) for v in os.getloadavg()]},
        "evaluator": bench_evaluator(args.repeats),
    }
    print(json.dumps(results["evaluator"], indent=1))
    if not args.skip_batch:
        results["batch"] = bench_batch(args.batch_sequences, args.batch_frames, ["detector.input_size=640"])
        print(json.dumps(results["batch"], indent=1))
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    write_json_atomic(args.out, results, indent=1)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
