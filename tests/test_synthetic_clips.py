"""The synthetic dev-suite clips' camera (benchmarks/synthetic_clips.py): static clips stay exactly static (their
frames, and so their cached detections, do not change), and a moving camera stays within the motion its spec names."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tracker_suite  # noqa: E402  (benchmarks/ is not a package)
from synthetic_clips import PAN_PERIOD_S, SYNTHETIC_CLIPS, ClipSpec, _camera_offset  # noqa: E402

TIMES_S = np.arange(0.0, 4 * PAN_PERIOD_S, 0.01)


@pytest.mark.parametrize("name", [n for n, spec in SYNTHETIC_CLIPS.items() if not (spec.pan or spec.shake)])
def test_a_static_camera_never_moves(name):
    offsets = np.array([_camera_offset(SYNTHETIC_CLIPS[name], t) for t in TIMES_S])
    assert not offsets.any()


@pytest.mark.parametrize("pan, shake", [(0.15, 0.01), (0.15, 0.0), (0.0, 0.02), (0.3, 0.05)])
def test_a_moving_camera_pans_and_shakes_as_far_as_its_spec_says(pan, shake):
    spec = ClipSpec(fps=25.0, duration_s=8.0, size_wh=(960, 540), people=1, seed=0, pan=pan, shake=shake)
    w, h = spec.size_wh
    offsets = np.array([_camera_offset(spec, t) for t in TIMES_S])
    # Left to right, the pan's full sweep plus the shake; up and down, the shake alone.
    assert np.abs(offsets[:, 0]).max() == pytest.approx(pan * w, abs=shake * h + 1e-3)
    assert np.abs(offsets[:, 0]).max() <= pan * w + shake * h + 1e-3
    assert np.abs(offsets[:, 1]).max() <= shake * h + 1e-3
    if shake:  # a hand-held camera does shake up and down
        assert np.abs(offsets[:, 1]).max() >= 0.5 * shake * h


def test_every_synthetic_clip_is_in_the_suite():
    assert tracker_suite.suite_clips() == ["pets09", "mot17", *SYNTHETIC_CLIPS]
    assert any(spec.pan for spec in SYNTHETIC_CLIPS.values()), "the suite has no moving-camera clip"
