"""Side-by-side: paper-mode `decode_heatmaps` against the official HRNet code's `get_final_preds` (POST_PROCESS on)
on random heatmaps with peaks planted on every border row and column, negative channels, ties and equal
neighbours (the heatmaps of tests/test_heatmap_decode.py). The official transform back to the image is made the
identity (center = heatmap centre, scale = heatmap size / 200), so both sides report heatmap coordinates.

    git clone https://github.com/leoxiaobin/deep-high-resolution-net.pytorch /tmp/hrnet
    python benchmarks/official_decode_check.py /tmp/hrnet

Reads the official code, imports nothing of it into this project.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from posetrack_app.ops.heatmap import decode_heatmaps  # noqa: E402
from test_heatmap_decode import H, W, _random_heatmaps  # noqa: E402


def main(argv) -> int:
    official_lib = Path(argv[0]) / "lib"
    sys.path.insert(0, str(official_lib))
    from core import inference  # the official lib/core/inference.py (imports utils.transforms)

    config = types.SimpleNamespace(TEST=types.SimpleNamespace(POST_PROCESS=True))
    worst, joints = 0.0, 0
    for seed in range(20):
        heatmaps = _random_heatmaps(seed)
        n = len(heatmaps)
        centers, scales = np.tile([W / 2, H / 2], (n, 1)), np.tile([W / 200, H / 200], (n, 1))
        official, official_scores = inference.get_final_preds(config, heatmaps.copy(), centers, scales)
        ours, scores = decode_heatmaps(heatmaps)
        worst = max(worst, float(np.abs(official - ours).max()))
        joints += heatmaps.shape[0] * heatmaps.shape[1]
        if not np.array_equal(official_scores[..., 0], scores):
            print(f"seed {seed}: scores differ")
            return 1
    print(f"{joints} joints: max |official - ours| = {worst} heatmap cells; scores identical")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
