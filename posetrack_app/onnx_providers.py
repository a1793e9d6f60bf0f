"""ONNX Runtime execution providers: the one home of their names and of the default order of preference.

The detector and the pose backends both read these, so that a provider is spelled once. Importing this module
does not import onnxruntime (its list of installed providers is passed in).
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence, Tuple

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# GPU first where `onnxruntime-gpu` offers it; the CPU provider is always there.
DEFAULT_PROVIDERS: Tuple[str, ...] = (CUDA_PROVIDER, CPU_PROVIDER)


def select_providers(preferred: Sequence[str], available: Iterable[str]) -> Tuple[str, ...]:
    """`preferred` filtered to the `available` providers (onnxruntime.get_available_providers()), with the CPU
    provider appended as the last resort."""
    available = set(available)
    chosen = [p for p in preferred if p in available]
    skipped = [p for p in preferred if p not in available]
    if skipped:
        log.debug("onnxruntime providers not installed, skipped: %s", ", ".join(skipped))
    if CPU_PROVIDER not in chosen:
        chosen.append(CPU_PROVIDER)
    return tuple(chosen)


def providers_for_device(device: str, preferred: Sequence[str] = DEFAULT_PROVIDERS) -> Tuple[str, ...]:
    """The preferred providers that run on `device` ("cpu" keeps only the CPU provider; "cuda[:i]" keeps them all)."""
    if device == "cpu":
        return (CPU_PROVIDER,)
    return tuple(preferred)
