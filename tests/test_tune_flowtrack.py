"""benchmarks/tune_flowtrack.py searches every user-facing FlowTrack setting around its default: a setting missing
from its grid would have no leave-one-out evidence for the default config.py states."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from posetrack_app.config import FlowTrackConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tune_flowtrack  # noqa: E402  (benchmarks/ is not a package)


def test_every_flowtrack_setting_is_searched():
    searched = {name for name in tune_flowtrack.GRID if not name.startswith("tracker.")}
    assert searched == {field.name for field in dataclasses.fields(FlowTrackConfig)}


@pytest.mark.parametrize("name", sorted(tune_flowtrack.GRID))
def test_each_grid_holds_the_default(name):
    """The one-field sweeps move a setting away from its default, so the default must be one of the grid's values.
    The defaults as the script reads them for its sweeps (`_defaults`, from the config's own defaults)."""
    assert tune_flowtrack._defaults()[name] in tune_flowtrack.GRID[name]
