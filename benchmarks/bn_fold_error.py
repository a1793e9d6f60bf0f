"""How far BatchNorm folding (pose/backends/torch_backend.py) moves a network's output, relative to the output's
largest magnitude, on the probe the fold check uses (1 x 3 x 64 x 64, seed 0): with default-initialised BatchNorm
and with randomised statistics (as a trained checkpoint has). The fold check's limit is
FOLD_CHECK_RELATIVE_TOLERANCE (1e-4).

    python benchmarks/bn_fold_error.py | tee benchmarks/results/bn_fold_error.txt
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posetrack_app.pose.backends.torch_backend import FOLD_CHECK_RELATIVE_TOLERANCE, FOLD_PROBE_SIDE_PX, _fold_pairs  # noqa: E402
from posetrack_app.pose.models import build_model  # noqa: E402

MODELS = ("hrnet_w32_256x192", "hrnet_w48_256x192", "simple_baseline_r50_256x192", "simple_baseline_r152_256x192")


def randomise_batchnorm(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.1)


def relative_fold_error(name: str, randomised: bool) -> tuple:
    torch.manual_seed(0)
    model = build_model(name, 17).eval()
    if randomised:
        randomise_batchnorm(model)
    folded = copy.deepcopy(model)
    count = _fold_pairs(folded)
    probe = torch.randn((1, 3, FOLD_PROBE_SIDE_PX, FOLD_PROBE_SIDE_PX), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, candidate = model(probe), folded(probe)
    return count, float((reference - candidate).abs().max() / reference.abs().max())


def main() -> int:
    torch.set_num_threads(1)
    print(f"fold check limit: {FOLD_CHECK_RELATIVE_TOLERANCE:g} of the output's largest magnitude")
    for randomised in (False, True):
        print("BatchNorm statistics:", "randomised (mean N(0,0.1), var U(0.5,1.5), gamma U(0.5,1.5), beta N(0,0.1))"
              if randomised else "default initialisation")
        for name in MODELS:
            count, error = relative_fold_error(name, randomised)
            print(f"  {name:30s} {count:4d} BatchNorm layers folded, max |folded - original| / max |original| "
                  f"= {error:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
