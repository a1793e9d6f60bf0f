"""Keypoint layouts as data: names, left/right flip pairs, OKS sigmas, limbs to draw.

COCO-17 is what COCO-trained detectors and HRNet checkpoints predict. PoseTrack-18 keeps COCO's 17 slots but
puts head_bottom and head_top in the two eye slots and leaves the ear slots unused (PoseTrack 2018 files).
Keypoints move between layouts by name (`keypoint_mapping`), never by position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    name: str
    keypoint_names: Tuple[str, ...]
    # Per-keypoint OKS falloff (COCO's kappa), in units of the object's sqrt(area).
    oks_sigmas: Tuple[float, ...]
    # Pairs of keypoint names drawn as limbs.
    limb_names: Tuple[Tuple[str, str], ...]

    def __post_init__(self) -> None:
        if len(self.oks_sigmas) != len(self.keypoint_names):
            raise ValueError(f"{self.name}: {len(self.oks_sigmas)} sigmas for {len(self.keypoint_names)} keypoints")
        for a, b in self.limb_names:
            self.index(a), self.index(b)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def index(self, keypoint_name: str) -> int:
        try:
            return self.keypoint_names.index(keypoint_name)
        except ValueError:
            raise KeyError(f"{self.name} has no keypoint {keypoint_name!r}; it has {', '.join(self.keypoint_names)}") from None

    @property
    def flip_pairs(self) -> Tuple[Tuple[int, int], ...]:
        """Index pairs (left, right) that swap under a horizontal flip."""
        pairs = []
        for i, name in enumerate(self.keypoint_names):
            if name.startswith("left_"):
                partner = "right_" + name[len("left_"):]
                if partner in self.keypoint_names:
                    pairs.append((i, self.keypoint_names.index(partner)))
        return tuple(pairs)

    @property
    def flip_permutation(self) -> np.ndarray:
        """perm such that flipped_keypoints = keypoints[perm] restores left/right after an image flip."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def limbs(self) -> np.ndarray:
        """int [L, 2] keypoint index pairs to draw."""
        return np.array([(self.index(a), self.index(b)) for a, b in self.limb_names], dtype=np.int64).reshape(-1, 2)

    @property
    def sigmas(self) -> np.ndarray:
        return np.asarray(self.oks_sigmas, dtype=np.float32)


_LIMBS_BODY = (
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
)

COCO17 = Skeleton(
    name="coco17",
    keypoint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    # COCO keypoint evaluation's sigmas.
    oks_sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    limb_names=_LIMBS_BODY + (
        ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    ),
)

POSETRACK18 = Skeleton(
    name="posetrack18",
    keypoint_names=(
        "nose", "head_bottom", "head_top", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    # COCO's sigmas where the joint is COCO's; head_bottom (neck) takes the shoulder's 0.079 and head_top
    # the ear's 0.035, the closest COCO joints in how precisely people place them.
    oks_sigmas=(0.026, 0.079, 0.035, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    limb_names=_LIMBS_BODY + (
        ("nose", "head_bottom"), ("nose", "head_top"),
        ("head_bottom", "left_shoulder"), ("head_bottom", "right_shoulder"),
    ),
)

SKELETONS: Dict[str, Skeleton] = {s.name: s for s in (COCO17, POSETRACK18)}


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise KeyError(f"unknown keypoint layout {name!r}; choose one of {', '.join(SKELETONS)}") from None


def keypoint_mapping(source: Skeleton, target: Skeleton) -> np.ndarray:
    """int [K_target]: for each target keypoint, the source index with the same name, or -1 where the
    source layout has no such keypoint."""
    return np.array(
        [source.keypoint_names.index(n) if n in source.keypoint_names else -1 for n in target.keypoint_names],
        dtype=np.int64,
    )
