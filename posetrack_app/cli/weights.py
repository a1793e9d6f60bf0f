"""`posetrack weights list` / `posetrack weights fetch NAME`: the published pose checkpoints by name.

Any of these names also works as `--set pose.weights=NAME` (downloaded on first use); see pose/weights.py for
where files go, how downloads resume and how they are verified.
"""
from __future__ import annotations

import argparse

COMMAND = "weights"
HELP = "list the published pose checkpoints, or download one by name into the cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="the registered names, what each is for, and which are downloaded")
    fetch = actions.add_parser("fetch", help="download NAME (resumes a broken download; verifies the SHA-256)")
    fetch.add_argument("name", metavar="NAME", help="a name from `posetrack weights list`")
    for sub in (listing, fetch):
        sub.add_argument("--cache-dir", metavar="DIR",
                         help="cache folder (default: $POSETRACK_CACHE_DIR, else ~/.cache/posetrack_app)")


def _list(args) -> int:
    from ..pose.weights import REGISTRY, cached_path, weights_dir

    rows = [("name", "pose.model", "pose.keypoints", "accuracy (mmpose model zoo)", "local")]
    for entry in REGISTRY.values():
        path = cached_path(entry, args.cache_dir)
        rows.append((entry.name, entry.model, entry.keypoints, entry.accuracy,
                     f"{path.stat().st_size / 1e6:.0f} MB" if path.is_file() else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\ncache: {weights_dir(args.cache_dir)}; use one with --set pose.weights=NAME (with the pose.model and "
          f"pose.keypoints shown), e.g. --config configs/hrnet_w48_384x288_posetrack18.yaml")
    return 0


def _fetch(args) -> int:
    from ..pose.weights import fetch, get_entry, terminal_progress

    entry = get_entry(args.name)
    path = fetch(entry, args.cache_dir, progress=terminal_progress(entry.name))
    print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "fetch": _fetch}[args.weights_action](args)
