"""Shared fixtures; skips tests marked needs_cuda / needs_tensorrt where the hardware or package is absent."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _find_shared_data() -> Path:
    """The shared test data: $SHARED_DIR/data (set by .ci/run), else ../shared/data beside the checkout, else the
    workplace's /work/shared/data; the first that exists."""
    candidates = [Path(os.environ["SHARED_DIR"]) / "data"] if os.environ.get("SHARED_DIR") else []
    candidates += [REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_DATA = _find_shared_data()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    has_cuda = _cuda_available()
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_trt = pytest.mark.skip(reason="needs TensorRT and a CUDA GPU")
    for item in items:
        if "needs_cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)
        if "needs_tensorrt" in item.keywords and not (has_tensorrt and has_cuda):
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA
