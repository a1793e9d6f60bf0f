"""Accuracy of the detector speed levers on the dev suite, against the detect-every-frame fp32 path.

Each variant is a set of `--set` overrides (detector backend / precision / schedule). Detections are made once per
detector (backend, precision, calibration) and clip, cached under --cache-dir, and replayed through our pipeline
(FlowTrack, detector keypoints) under the variant's detection schedule: the schedule decides which frames get the
cached detections, exactly as Pipeline.step would call the detector. The "roi" schedule looks at parts of frames
chosen from the tracks, so its variants run the detector itself on every frame instead. Scores per clip come from
the tracker dev suite's loaders and scorers (benchmarks/tracker_suite.py): box MOTA / IDF1 for PETS09 and the MOT17
clips, plus pose mAP / MOTA on the synthetic clips that have pose truth.

    python benchmarks/detector_accuracy.py --clips pets09 mot17 syn7 \
        --variant fp32: --variant int8:detector.precision=int8,detector.int8_calibration=DIR \
        --variant adaptive:detector.schedule=adaptive --out benchmarks/results/detector_accuracy.md
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tracker_suite as suite  # noqa: E402
from posetrack_app.build import (build_detection_schedule, build_detector, build_pose_stage,  # noqa: E402
                                 build_tracker, detector_score_threshold, resolve_schedule)
from posetrack_app.benchmark.environment import cpu_record, cpu_summary  # noqa: E402
from posetrack_app.config import load_config, replace  # noqa: E402
from posetrack_app.input_size import auto_input_size  # noqa: E402
from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402
from posetrack_app.pipeline import Pipeline  # noqa: E402
from posetrack_app.structures import Frame  # noqa: E402

log = logging.getLogger("detector_accuracy")
# Detector fields that change the detections (the rest of a variant replays the same cache).
DETECTOR_FIELDS = ("backend", "precision", "int8_calibration", "int8_calibration_frames", "model")
METRICS = ("MOTA", "IDF1", "IDSW", "pose mAP", "pose MOTA")


def detector_key(cfg) -> str:
    d = cfg.detector
    parts = [f"{f}={getattr(d, f)}" for f in DETECTOR_FIELDS]
    return "_".join(p.replace("/", "-") for p in parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=["pets09", "mot17"])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=V,KEY=V")
    parser.add_argument("--size", type=int, default=0, help="detector input size for every clip (0 = auto per clip; "
                                                             "PETS09 uses 960, as the issue's figures)")
    parser.add_argument("--cache-dir", default="/tmp/posetrack_detector_accuracy")
    parser.add_argument("--out", help="markdown table (and .json beside it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("posetrack_app.build").setLevel(logging.ERROR)
    variants = {}
    for text in args.variant or ["fp32:"]:
        name, _, settings = text.partition(":")
        variants[name] = [s for s in settings.split(",") if s]
    cache_root = Path(args.cache_dir)
    clips = suite.load_clips(args.clips, cache_root)
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    calls: Dict[str, Dict[str, int]] = {}
    for name, overrides in variants.items():
        cfg = load_config(None, overrides)
        cache_dir = cache_root / detector_key(cfg)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for clip in clips:
            size = args.size or (960 if clip.group == "pets09" else auto_input_size(clip.size_wh))
            if resolve_schedule(cfg) == "roi":
                counting = _Counting(build_detector(replace(cfg, **{"detector.input_size": size})))
            else:
                detections, _ = suite.cached_detections(clip, size, cache_dir, cfg)
                counting = _Counting(lambda frame, regions=None: detections[frame.index])
            run = _run(cfg, clip, counting)
            results.setdefault(name, {})[clip.name] = suite.score(clip, run)
            # Frames the detector ran on whole (a call with regions may still run whole, where its windows would
            # cover most of the frame: detection/windows.py).
            calls.setdefault(name, {})[clip.name] = counting.calls - counting.region_calls
            log.info("%s %s@%d: %s; detector on %d/%d whole frames", name, clip.name, size,
                     {k: round(v, 1) for k, v in results[name][clip.name].items() if k in METRICS},
                     counting.calls - counting.region_calls, len(clip.frames))
    table = _table(results, calls, clips)
    machine = cpu_record()
    print(table)
    if args.out:
        out = Path(args.out)
        with atomic_write(out) as handle:
            handle.write(f"# Detector levers: accuracy on the dev suite\n\nCommand: `python benchmarks/detector_accuracy.py "
                         f"{' '.join(argv or sys.argv[1:])}`\n\n"
                         # int8 detections depend on the CPU's int8 kernels (VNNI or not), so the machine is named.
                         f"Machine: {cpu_summary(machine)}\n\n")
            for name, overrides in variants.items():
                handle.write(f"- {name}: {' '.join(overrides) or '(defaults: onnxruntime fp32, every frame)'}\n")
            handle.write("\n" + table + "\n")
        write_json_atomic(out.with_suffix(".json"), {"variants": variants, "results": results, "detector_calls": calls,
                                                     "machine": machine}, indent=2)
    return 0


class _Counting:
    """A detector (cached detections replayed, or a real one) and how often the pipeline called it, on the whole
    frame or with regions (the roi schedule)."""

    def __init__(self, detector):
        self.detector, self.calls, self.region_calls = detector, 0, 0

    def __call__(self, frame: Frame, regions=None):
        self.calls += 1
        self.region_calls += regions is not None
        return self.detector(frame, regions)


def _run(cfg, clip, detector) -> suite.RunOutput:
    cfg = replace(cfg, **{"pose.model": "detector"})
    pose_stage = build_pose_stage(cfg)
    tracker = build_tracker(cfg, pose_stage.skeleton)
    # FlowTrack asks the detector for its weak detections too (build.detector_score_threshold).
    threshold = detector_score_threshold(cfg)

    def replay(frame: Frame, regions=None):
        found = detector(frame, regions)
        return found.select(np.flatnonzero(found.scores >= threshold))

    return suite.run_pipeline(Pipeline(replay, pose_stage, tracker, schedule=build_detection_schedule(cfg),
                                       box_merge_iou_threshold=cfg.tracker.box_merge_iou_threshold), clip)


def _table(results, calls, clips) -> str:
    groups: Dict[str, List] = {}
    for clip in clips:
        groups.setdefault(clip.group or clip.name, []).append(clip)
    names = list(results)
    lines = ["| variant | " + " | ".join(f"{g} {m}" for g in groups for m in ("MOTA", "IDF1", "whole frames"))
             + " | pose mAP / MOTA (synthetic) |", "|---|" + "---:|" * (3 * len(groups)) + "---|"]
    for name in names:
        cells = []
        for group, members in groups.items():
            # MOT17 clips are 4-8 frames each: pooled by summing errors would need the raw counts, so the
            # mean over clips is shown.
            mota = np.mean([results[name][c.name]["MOTA"] for c in members])
            idf1 = np.mean([results[name][c.name]["IDF1"] for c in members])
            share = sum(calls[name][c.name] for c in members) / sum(len(c.frames) for c in members)
            cells += [f"{mota:.1f}", f"{idf1:.1f}", f"{100 * share:.0f}%"]
        pose = [f"{c.name} {results[name][c.name]['pose mAP']:.1f} / {results[name][c.name]['pose MOTA']:.1f}"
                for c in clips if "pose mAP" in results[name][c.name]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'; '.join(pose) or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
