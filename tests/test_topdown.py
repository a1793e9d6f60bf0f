"""Top-down geometry round trips (box -> crop -> heatmap -> decode -> image pixels), the flip test, the
TopDownEstimator wiring, and the pipeline's choice between HRNet and the detector's keypoints."""
from __future__ import annotations

import logging
import zlib

import numpy as np
import pytest
import torch

from posetrack_app.config import load_config
from posetrack_app.errors import UserError
from posetrack_app.ops.affine import (apply_affine, boxes_to_regions, invert_affine, region_to_crop_matrices,
                                      warp_crops)
from posetrack_app.ops.heatmap import decode_heatmaps, flip_back, merge_flip_test
from posetrack_app.pose.topdown import TopDownEstimator
from posetrack_app.skeleton import COCO17, POSETRACK18
from posetrack_app.structures import Detections, Frame, Poses

INPUT_HW = (256, 192)
HEATMAP_HW = (64, 48)
# The training targets' Gaussian width in heatmap cells (reference code: sigma 2).
TARGET_SIGMA = 2.0
ROUND_TRIP_TOLERANCE_PX = 0.5


def render_heatmaps(coords_xy: np.ndarray, heatmap_hw=HEATMAP_HW, sigma: float = TARGET_SIGMA) -> np.ndarray:
    """float32 [N, K, h, w] Gaussians of peak 1 at heatmap coordinates [N, K, 2] (index convention)."""
    h, w = heatmap_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = xs[None, None] - coords_xy[..., 0, None, None]
    dy = ys[None, None] - coords_xy[..., 1, None, None]
    return np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)).astype(np.float32)


def heatmap_matrices(boxes_xyxy):
    centers, sizes = boxes_to_regions(boxes_xyxy, INPUT_HW[1] / INPUT_HW[0])
    return centers, sizes, region_to_crop_matrices(centers, sizes, HEATMAP_HW[::-1])


def keypoints_in_boxes(boxes_xyxy, num_keypoints, rng, margin=0.1):
    """[N, K, 2] random image points inside each box (away from its edge by `margin` of its size)."""
    boxes = np.asarray(boxes_xyxy, np.float64)
    wh = boxes[:, 2:] - boxes[:, :2]
    u = rng.uniform(margin, 1 - margin, size=(len(boxes), num_keypoints, 2))
    return boxes[:, None, :2] + u * wh[:, None, :]


def mirrored_network_heatmaps(coords_hm: np.ndarray, skeleton) -> np.ndarray:
    """What an ideal network outputs for the mirrored crops: each joint sits at the mirrored crop position
    (crop column x -> W-1-x, i.e. heatmap x -> (W-1)/4 - x) and is labelled with its mirror partner."""
    mirrored = coords_hm.copy()
    mirrored[..., 0] = (INPUT_HW[1] - 1) / 4.0 - coords_hm[..., 0]
    mirrored = mirrored[:, np.argsort(skeleton.flip_permutation)]   # channel perm[k] holds joint k
    return render_heatmaps(mirrored)


# The reference flip test (mirror back, shift one cell right, average) places the flipped half 1/4 cell right
# of the true position, so the average peaks 1/8 cell right of it; released HRNet results include this bias
# (Huang et al., "The Devil is in the Details", CVPR 2020). Expected here exactly, not hidden in a tolerance.
REFERENCE_FLIP_BIAS_CELLS = 0.125

BOXES = {
    "small": [[300, 200, 330, 260]],                        # 30 x 60 px: 1 heatmap cell < 1 image px
    "medium": [[100, 50, 250, 400]],
    "large": [[20, 10, 620, 470]],                          # ~10 image px per heatmap cell
    "wide": [[50, 300, 600, 420]],                          # aspect 4.6:1, the region grows in height
    "tall": [[300, 0, 340, 470]],                           # aspect 1:12, the region grows in width
    "top_left_border": [[-40, -60, 120, 200]],              # box leaves the image
    "bottom_right_border": [[560, 380, 700, 560]],
    "several": [[10, 10, 100, 200], [200, 40, 260, 160], [400, 100, 640, 480]],
}


@pytest.mark.parametrize("box_name", sorted(BOXES))
def test_affine_round_trip_is_exact(box_name):
    rng = np.random.default_rng(1)
    boxes = np.array(BOXES[box_name], np.float64)
    centers, sizes = boxes_to_regions(boxes, INPUT_HW[1] / INPUT_HW[0])
    forward = region_to_crop_matrices(centers, sizes, INPUT_HW[::-1])
    points = keypoints_in_boxes(boxes, 17, rng)
    back = apply_affine(apply_affine(points, forward), invert_affine(forward))
    assert np.abs(back - points).max() < 1e-9
    # Box centers land on the crop center; the crop keeps the input's 3:4 aspect with 1.25 padding.
    assert np.allclose(apply_affine(centers[:, None], forward)[:, 0], [INPUT_HW[1] / 2, INPUT_HW[0] / 2])
    assert np.allclose(sizes[:, 0] / sizes[:, 1], INPUT_HW[1] / INPUT_HW[0])
    box_wh = boxes[:, 2:] - boxes[:, :2]
    assert np.all(sizes >= 1.25 * box_wh - 1e-9)
    # Only the narrow side grows: the other keeps exactly 1.25 x the box.
    assert np.allclose(np.min(sizes / (1.25 * box_wh), axis=1), 1.0)


@pytest.mark.parametrize("flip", [False, True], ids=["no_flip", "flip"])
@pytest.mark.parametrize("box_name", sorted(BOXES))
def test_keypoint_round_trip_through_heatmaps_dark(box_name, flip):
    """Image keypoints -> forward affine -> Gaussian heatmaps (-> flip test) -> DARK decode -> inverse affine."""
    rng = np.random.default_rng(zlib.crc32(box_name.encode()))
    boxes = np.array(BOXES[box_name], np.float64)
    centers, sizes, to_heatmap = heatmap_matrices(boxes)
    keypoints = keypoints_in_boxes(boxes, COCO17.num_keypoints, rng)
    coords_hm = apply_affine(keypoints, to_heatmap)
    heatmaps = render_heatmaps(coords_hm)
    expected_hm = coords_hm.copy()
    if flip:
        heatmaps = merge_flip_test(heatmaps, mirrored_network_heatmaps(coords_hm, COCO17), COCO17.flip_permutation)
        expected_hm[..., 0] += REFERENCE_FLIP_BIAS_CELLS
    decoded_hm, scores = decode_heatmaps(heatmaps, dark=True)
    decoded = apply_affine(decoded_hm, invert_affine(to_heatmap))
    expected = apply_affine(expected_hm, invert_affine(to_heatmap))
    assert np.abs(decoded - expected).max() < ROUND_TRIP_TOLERANCE_PX
    assert scores.min() > 0.9


@pytest.mark.parametrize("box_name", sorted(BOXES))
def test_reference_decoder_is_exact_on_its_quarter_grid(box_name):
    """Argmax + quarter offset recovers peaks at cell offsets 0, +-1/4 exactly: the round trip of image points
    whose heatmap position lies on that grid is exact (well within 0.5 px) for every box."""
    rng = np.random.default_rng(3)
    boxes = np.array(BOXES[box_name], np.float64)
    centers, sizes, to_heatmap = heatmap_matrices(boxes)
    cells = rng.integers(2, [HEATMAP_HW[1] - 2, HEATMAP_HW[0] - 2], size=(len(boxes), 17, 2))
    coords_hm = cells + rng.choice([-0.25, 0.0, 0.25], size=cells.shape)
    keypoints = apply_affine(coords_hm, invert_affine(to_heatmap))
    decoded_hm, _ = decode_heatmaps(render_heatmaps(coords_hm))
    decoded = apply_affine(decoded_hm, invert_affine(to_heatmap))
    assert np.abs(decoded - keypoints).max() < 1e-6


def test_reference_decoder_error_is_at_most_a_quarter_cell():
    rng = np.random.default_rng(4)
    coords_hm = rng.uniform(2, 40, size=(20, 17, 2))
    decoded, _ = decode_heatmaps(render_heatmaps(coords_hm))
    assert np.abs(decoded - coords_hm).max() <= 0.25 + 1e-6


def test_dark_keeps_argmax_where_the_peak_is_not_a_maximum():
    flat = np.zeros((2, 3) + HEATMAP_HW, np.float32)
    coords, scores = decode_heatmaps(flat, dark=True)
    assert np.isfinite(coords).all() and np.allclose(coords, 0) and np.allclose(scores, 0)


def test_flip_back_swaps_left_and_right_channels():
    heatmaps = np.zeros((1, 17) + HEATMAP_HW, np.float32)
    left_wrist, right_wrist = COCO17.index("left_wrist"), COCO17.index("right_wrist")
    heatmaps[0, left_wrist, 10, 5] = 1.0
    back = flip_back(heatmaps, COCO17.flip_permutation)
    assert back[0, right_wrist, 10, HEATMAP_HW[1] - 1 - 5] == 1.0
    assert back[0, left_wrist].max() == 0.0
    # PoseTrack's head joints have no partner and stay in place.
    head_top = POSETRACK18.index("head_top")
    assert POSETRACK18.flip_permutation[head_top] == head_top


class LookupBackend:
    """A stand-in network that answers each crop with precomputed heatmaps: the plain crop's, or for the mirrored
    crop the mirrored-network heatmaps. Crops are recognised by content, so the test does not assume in which
    order or how many at a time the estimator sends them."""

    def __init__(self, crops: torch.Tensor, plain: np.ndarray, mirrored: np.ndarray):
        self.input_hw = INPUT_HW
        self.num_keypoints = plain.shape[1]
        self.device = "cpu"
        self.keys = [c for c in crops] + [torch.flip(c, dims=[2]) for c in crops]
        self.answers = list(plain) + list(mirrored)
        self.batch_sizes = []

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(batch.shape[0])
        out = []
        for crop in batch:
            matches = [i for i, key in enumerate(self.keys) if torch.equal(key, crop)]
            assert len(matches) >= 1, "the estimator sent a crop that is neither a plain nor a mirrored crop"
            out.append(torch.from_numpy(self.answers[matches[0]]))
        return torch.stack(out)

    def close(self):
        pass


@pytest.mark.parametrize("flip,dark,max_batch", [(False, True, 32), (True, True, 3), (False, False, 1), (True, False, 32)])
def test_estimator_end_to_end(flip, dark, max_batch):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    boxes = np.array(BOXES["several"] + BOXES["top_left_border"], np.float32)
    estimator = TopDownEstimator(_placeholder_backend(), skeleton=COCO17)
    centers, sizes = estimator.regions(boxes)
    crops = estimator.crop_batch(image, centers, sizes)
    to_heatmap = region_to_crop_matrices(centers, sizes, HEATMAP_HW[::-1])
    keypoints = keypoints_in_boxes(boxes, 17, rng)
    coords_hm = apply_affine(keypoints, to_heatmap)
    backend = LookupBackend(crops, render_heatmaps(coords_hm), mirrored_network_heatmaps(coords_hm, COCO17))
    estimator = TopDownEstimator(backend, skeleton=COCO17, flip_test=flip, dark=dark, max_batch=max_batch)
    poses = estimator(Frame(0, image), Detections(boxes, np.linspace(0.9, 0.6, len(boxes))))
    assert isinstance(poses, Poses) and poses.keypoints.shape == (len(boxes), 17, 2)
    assert np.array_equal(poses.boxes_xyxy, boxes) and np.allclose(poses.box_scores, np.linspace(0.9, 0.6, len(boxes)))
    expected_hm = coords_hm.copy()
    if flip:
        expected_hm[..., 0] += REFERENCE_FLIP_BIAS_CELLS
    expected = apply_affine(expected_hm, invert_affine(to_heatmap))
    if dark:
        assert np.abs(poses.keypoints - expected).max() < ROUND_TRIP_TOLERANCE_PX
    else:
        cell_px = sizes[:, 0] / HEATMAP_HW[1]   # image pixels per heatmap cell, per box
        assert np.all(np.abs(poses.keypoints - expected).max(axis=(1, 2)) <= 0.25 * cell_px + 1e-3)
    assert 0.9 < poses.keypoint_scores.min() and poses.keypoint_scores.max() <= 1.0
    # All crops of the frame (and their mirrors) go through the network in chunks of at most max_batch.
    n = len(boxes) * (2 if flip else 1)
    assert sum(backend.batch_sizes) == n and max(backend.batch_sizes) == min(max_batch, n)


def _placeholder_backend():
    class Placeholder:
        input_hw = INPUT_HW
        num_keypoints = 17
        device = "cpu"

        def infer(self, batch):
            raise AssertionError("not called")

        def close(self):
            pass
    return Placeholder()


def test_estimator_crops_are_rgb_imagenet_normalised():
    image = np.zeros((100, 100, 3), np.uint8)
    image[..., 0] = 255   # pure blue in BGR
    estimator = TopDownEstimator(_placeholder_backend(), skeleton=COCO17)
    centers, sizes = estimator.regions(np.array([[40, 40, 60, 60]], np.float32))
    crop = estimator.crop_batch(image, centers, sizes)[0]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    center = crop[:, INPUT_HW[0] // 2, INPUT_HW[1] // 2].numpy()
    assert np.allclose(center, (np.array([0.0, 0.0, 1.0]) - mean) / std, atol=1e-5)


def test_zero_boxes_give_empty_poses_without_calling_the_network():
    estimator = TopDownEstimator(_placeholder_backend(), skeleton=POSETRACK18)
    poses = estimator(Frame(0, np.zeros((50, 60, 3), np.uint8)), Detections.empty())
    assert len(poses) == 0 and poses.num_keypoints == 17


def test_default_max_batch_has_one_home():
    """The estimator, BackendOptions, the config and `posetrack export` take their crops-per-call default from
    backends/base.py, and a default estimator splits the flip-test batch there (2 x 33 crops -> 64 + 2)."""
    import argparse
    import dataclasses

    from posetrack_app.cli import export as export_cli
    from posetrack_app.config import PoseConfig
    from posetrack_app.pose.backends.base import DEFAULT_MAX_BATCH, BackendOptions

    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    fields = {f.name: f.default for f in dataclasses.fields(BackendOptions)}
    assert fields["max_batch"] == PoseConfig().max_batch == parser.get_default("max_batch") == DEFAULT_MAX_BATCH

    calls = []

    class Recording(ConstantBackend):
        def infer(self, batch):
            calls.append(batch.shape[0])
            return super().infer(batch)

    heatmap = np.zeros((17,) + HEATMAP_HW, np.float32)
    estimator = TopDownEstimator(Recording(heatmap), skeleton=COCO17)
    boxes = np.tile(np.array([[10.0, 10.0, 50.0, 90.0]], np.float32), (DEFAULT_MAX_BATCH // 2 + 1, 1))
    estimator(Frame(0, np.zeros((100, 100, 3), np.uint8)), Detections(boxes, np.ones(len(boxes), np.float32)))
    assert estimator.max_batch == DEFAULT_MAX_BATCH and calls == [DEFAULT_MAX_BATCH, 2]


class ConstantBackend:
    """A stand-in network whose heatmaps are the same given [K, h, w] for every crop."""

    def __init__(self, heatmap: np.ndarray, device: str = "cpu"):
        self.input_hw, self.num_keypoints, self.device = INPUT_HW, heatmap.shape[0], device
        self.heatmap = torch.from_numpy(heatmap)

    def infer(self, batch):
        return self.heatmap.to(batch.device).expand(batch.shape[0], -1, -1, -1).clone()

    def close(self):
        pass


@pytest.mark.parametrize("clip_scores", [False, True])
def test_estimator_keeps_raw_scores_and_puts_unseen_joints_at_the_region_corner(clip_scores):
    """Paper mode through the whole estimator: a joint whose heatmap maximum is <= 0 lands on heatmap cell (0, 0),
    which is the crop region's top-left corner (center - size / 2) in the image; scores are the raw maxima unless
    clip_scores."""
    heatmap = np.full((17,) + HEATMAP_HW, -0.25, np.float32)
    heatmap[1:, 30, 20] = 1.4                  # joints 1.. peak above 1 at an inner cell
    estimator = TopDownEstimator(ConstantBackend(heatmap), skeleton=COCO17, flip_test=False,
                                 clip_scores=clip_scores)
    boxes = np.array([[100, 50, 250, 400], [300, 200, 330, 260]], np.float32)
    poses = estimator(Frame(0, np.zeros((480, 640, 3), np.uint8)), Detections(boxes, [0.9, 0.8]))
    centers, sizes = estimator.regions(boxes)
    assert np.allclose(poses.keypoints[:, 0], centers - sizes / 2, atol=1e-3)
    expected = [0.0, 1.0] if clip_scores else [-0.25, 1.4]
    assert np.allclose(poses.keypoint_scores[:, 0], expected[0]) and np.allclose(poses.keypoint_scores[:, 1:], expected[1])


def _reference_poses(image, boxes, backend, skeleton, flip):
    """The estimator's result computed with the host-side numpy functions alone (cv2 crops, numpy flip merge and
    decode): the implementation before decoding moved to the device."""
    estimator = TopDownEstimator(backend, skeleton=skeleton, flip_test=False, device_crops=False)
    centers, sizes = estimator.regions(boxes)
    h, w = INPUT_HW
    crops = warp_crops(image, region_to_crop_matrices(centers, sizes, (w, h)), (w, h))
    batch = torch.from_numpy(crops[..., ::-1].copy()).permute(0, 3, 1, 2).float()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255.0 for v in ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    batch = (batch - mean) / std
    heatmaps = backend.infer(batch).numpy()
    if flip:
        heatmaps = merge_flip_test(heatmaps, backend.infer(torch.flip(batch, dims=[3])).numpy(),
                                   skeleton.flip_permutation)
    coords, scores = decode_heatmaps(heatmaps)
    to_image = invert_affine(region_to_crop_matrices(centers, sizes, HEATMAP_HW[::-1]))
    return apply_affine(coords, to_image).astype(np.float32), scores


@pytest.mark.parametrize("flip", [False, True])
def test_device_decoding_gives_the_host_reference_results(flip):
    """The estimator (torch flip merge and decode on the backend's device, cv2 crops) reproduces the host-side
    numpy pipeline exactly, with a small real network so that heatmaps are not synthetic."""
    from test_hrnet import tiny_hrnet
    from posetrack_app.pose.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    backend = TorchBackend(tiny_hrnet(17), input_hw=INPUT_HW, num_keypoints=17)
    rng = np.random.default_rng(6)
    image = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    boxes = np.array(BOXES["several"] + BOXES["top_left_border"], np.float32)
    expected_keypoints, expected_scores = _reference_poses(image, boxes, backend, COCO17, flip)
    estimator = TopDownEstimator(backend, skeleton=COCO17, flip_test=flip)
    poses = estimator(Frame(0, image), Detections(boxes, np.full(len(boxes), 0.9)))
    assert np.array_equal(poses.keypoints, expected_keypoints)
    assert np.array_equal(poses.keypoint_scores, expected_scores)


def test_device_crops_on_the_cpu_match_the_cv2_crops():
    """The torch crop path (what runs on a GPU) run on the CPU: within cv2's fixed-point rounding of the cv2 path
    (1 grey level, test_gpu_crop.py), in normalised units."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    boxes = np.array(BOXES["several"] + BOXES["bottom_right_border"], np.float32)
    host = TopDownEstimator(_placeholder_backend(), skeleton=COCO17, device_crops=False)
    device = TopDownEstimator(_placeholder_backend(), skeleton=COCO17, device_crops=True)
    centers, sizes = host.regions(boxes)
    a, b = host.crop_batch(image, centers, sizes), device.crop_batch(image, centers, sizes)
    assert a.shape == b.shape == (len(boxes), 3) + INPUT_HW
    assert (a - b).abs().max() <= 1.0 / (255 * 0.224) + 1e-5   # 1 grey level / the smallest std


@pytest.mark.needs_cuda
def test_cuda_estimator_does_not_synchronise_before_the_network():
    """Crop, flip and network enqueue on the GPU without a host synchronisation (torch raises on one in sync
    debug mode); the results agree with the same code on the CPU."""
    from test_hrnet import tiny_hrnet
    from posetrack_app.pose.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    network = tiny_hrnet(17)
    backend = TorchBackend(network, input_hw=INPUT_HW, num_keypoints=17, device="cuda", cuda_graphs=True)
    estimator = TopDownEstimator(backend, skeleton=COCO17)
    image = np.random.default_rng(8).integers(0, 255, size=(720, 1280, 3), dtype=np.uint8)
    boxes = np.array(BOXES["several"], np.float32)
    centers, sizes = estimator.regions(boxes)
    estimator.heatmaps(estimator.crop_batch(image, centers, sizes))   # captures the CUDA graph (synchronises)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        heatmaps = estimator.heatmaps(estimator.crop_batch(image, centers, sizes))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # The same torch crop code on the CPU gives the same heatmaps up to GPU arithmetic (TF32 convolutions) ...
    cpu = TopDownEstimator(TorchBackend(network, input_hw=INPUT_HW, num_keypoints=17), skeleton=COCO17,
                           device_crops=True)
    cpu_heatmaps = cpu.heatmaps(cpu.crop_batch(image, centers, sizes))
    assert torch.allclose(heatmaps.cpu(), cpu_heatmaps, atol=1e-2 * float(cpu_heatmaps.abs().max()))
    # ... and the device decoder gives what the host decoder gives for those heatmaps.
    keypoints, scores = estimator.decode(heatmaps, centers, sizes)
    coords, host_scores = decode_heatmaps(heatmaps.cpu().numpy())
    to_image = invert_affine(region_to_crop_matrices(centers, sizes, HEATMAP_HW[::-1]))
    assert np.array_equal(keypoints, apply_affine(coords, to_image).astype(np.float32))
    assert np.array_equal(scores, host_scores)


def test_warp_crops_pads_outside_with_black():
    image = np.full((20, 20, 3), 200, np.uint8)
    matrices = region_to_crop_matrices(np.array([[0.0, 0.0]]), np.array([[20.0, 20.0]]), (20, 20))
    crop = warp_crops(image, matrices, (20, 20))[0]
    assert crop[2, 2].max() == 0 and crop[15, 15].min() == 200


# -- pipeline integration: build_pose_stage --

def test_no_weights_fall_back_to_detector_keypoints_with_one_warning(caplog):
    from posetrack_app.build import WarnOnce, build_pose_stage
    from posetrack_app.pose.detector_keypoints import DetectorKeypointPoses

    cfg = load_config(None, [])
    warn_once = WarnOnce(logging.getLogger("test_fallback"))
    with caplog.at_level(logging.WARNING, logger="test_fallback"):
        stages = [build_pose_stage(cfg, warn_once) for _ in range(3)]
    assert all(isinstance(s, DetectorKeypointPoses) for s in stages)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no pose.weights configured" in warnings[0].getMessage()
    assert "detector's own keypoints" in warnings[0].getMessage()


@pytest.mark.parametrize("overrides,match", [
    (["pose.require_weights=true"], "no pose.weights configured and pose.require_weights is true"),
    (["pose.weights={tmp}/absent.pth"], "pose.weights file .*absent.pth not found"),
    (["pose.weights={tmp}/absent.pth", "pose.require_weights=true"], "pose.weights file .*absent.pth not found"),
    (["pose.backend=onnxruntime", "pose.engine={tmp}/absent.onnx"], "pose.engine file .*absent.onnx not found"),
])
def test_explicit_weights_or_engine_that_are_missing_are_errors(tmp_path, overrides, match):
    """Explicit means required: only an empty pose.weights falls back to the detector's keypoints."""
    from posetrack_app.build import build_pose_stage

    cfg = load_config(None, [o.format(tmp=tmp_path) for o in overrides])
    with pytest.raises(UserError, match=match):
        build_pose_stage(cfg)


def test_configured_weights_build_the_top_down_estimator(tmp_path, monkeypatch):
    """With a weights file present, the pipeline builds TopDownEstimator over the configured backend (the
    network itself is swapped for a small one so the test stays fast; loading is covered in test_checkpoint)."""
    from posetrack_app.build import build_pose_stage
    from posetrack_app.pose import checkpoint
    from test_hrnet import tiny_hrnet

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"stand-in")
    seen = {}

    def fake_load(model_name, weights_path, num_keypoints):
        seen.update(model=model_name, weights=weights_path, k=num_keypoints)
        return tiny_hrnet(num_keypoints).eval()

    monkeypatch.setattr(checkpoint, "load_pose_network", fake_load)
    cfg = load_config("configs/hrnet_w32_256x192.yaml", [f"pose.weights={weights}", "pose.keypoints=posetrack18",
                                                          "pose.flip_test=false", "pose.dark=true"])
    stage = build_pose_stage(cfg)
    assert isinstance(stage, TopDownEstimator)
    assert stage.skeleton is POSETRACK18 and stage.input_hw == (256, 192) and stage.dark and not stage.flip_test
    assert seen == {"model": "hrnet_w32_256x192", "weights": str(weights), "k": 17}
    image = np.zeros((240, 320, 3), np.uint8)
    poses = stage(Frame(0, image), Detections(np.array([[10, 10, 100, 200]], np.float32), np.array([0.9])))
    assert poses.keypoints.shape == (1, 17, 2)


@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_cuda_graph_buckets_are_captured_when_the_stage_is_built(tmp_path, monkeypatch, cuda_graphs):
    """With pose.cuda_graphs every bucket is captured before the stream starts (a lazy capture stalled the stream
    the first time a new number of people appeared); without graphs nothing is run up front."""
    from posetrack_app import build
    from posetrack_app.pose import backends
    from posetrack_app.pose.backends.base import DEFAULT_CUDA_GRAPH_BATCHES

    class RecordingBackend:
        input_hw, num_keypoints, device = INPUT_HW, 17, "cpu"
        warmed = None

        def warmup(self):
            RecordingBackend.warmed = {size: 0.01 for size in DEFAULT_CUDA_GRAPH_BATCHES}
            return RecordingBackend.warmed

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(backends, "create_backend", lambda name, options: RecordingBackend())
    cfg = load_config(None, [f"pose.weights={weights}", f"pose.cuda_graphs={str(cuda_graphs).lower()}"])
    stage = build.build_pose_stage(cfg)
    assert isinstance(stage.backend, RecordingBackend)
    assert RecordingBackend.warmed == ({size: 0.01 for size in DEFAULT_CUDA_GRAPH_BATCHES} if cuda_graphs else None)


def test_pipeline_times_the_estimators_sub_stages():
    """Inside a Pipeline the estimator reports crop / network / decode to the pipeline's timer."""
    from posetrack_app.pipeline import Pipeline
    from posetrack_app.tracking.iou_tracker import IouTracker

    class ZeroBackend:
        input_hw, num_keypoints, device = INPUT_HW, 17, "cpu"

        def infer(self, batch):
            return torch.zeros(batch.shape[0], 17, *HEATMAP_HW)

        def close(self):
            pass

    boxes = np.array([[10, 10, 50, 90], [100, 20, 140, 100]], np.float32)
    estimator = TopDownEstimator(ZeroBackend(), skeleton=COCO17, flip_test=False)
    pipeline = Pipeline(lambda frame: Detections(boxes, [0.9, 0.8]), estimator,
                        IouTracker(skeleton=COCO17), timer=None)
    pipeline.step(Frame(0, np.zeros((120, 160, 3), np.uint8)))
    counts = {name: s.calls for name, s in pipeline.timer.stats().items()}
    assert {k: counts.get(k) for k in ("pose", "pose.crop", "pose.network", "pose.decode")} == \
        {"pose": 1, "pose.crop": 1, "pose.network": 1, "pose.decode": 1}
