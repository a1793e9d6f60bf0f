"""Batched torch crops (ops/gpu_crop.py) against cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0) on CPU tensors;
the CUDA path (pinned upload, device grid_sample) against the CPU path behind needs_cuda."""
import cv2
import numpy as np
import pytest
import torch

from posetrack_app.ops.affine import boxes_to_regions, region_to_crop_matrices
from posetrack_app.ops.gpu_crop import FrameUploader, crop_batch, sampling_grid, warp_crops_torch

# cv2 quantises sample positions to 1/32 px and rounds to uint8; ours is float. Bounds on |ours - cv2| in grey
# levels (0..255), for a frame of uniform noise (the worst case for position rounding).
MAX_ABS_DIFF = 1.0
MEAN_ABS_DIFF = 0.35
CROP_WH = (48, 64)


def _frame(seed=0, hw=(120, 160)):
    return np.random.default_rng(seed).integers(0, 256, hw + (3,), dtype=np.uint8)


def _rotation(angle_deg, sx, sy, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[sx * np.cos(a), -sy * np.sin(a), tx], [sx * np.sin(a), sy * np.cos(a), ty]])


def _box_matrix(box_xyxy):
    centers, sizes = boxes_to_regions(np.array([box_xyxy], np.float32), CROP_WH[0] / CROP_WH[1])
    return region_to_crop_matrices(centers, sizes, CROP_WH)[0]


MATRICES = {
    "identity": np.array([[1.0, 0, 0], [0, 1.0, 0]]),
    "integer shift": np.array([[1.0, 0, -7], [0, 1.0, -11]]),
    "subpixel shift": np.array([[1.0, 0, -7.3], [0, 1.0, -11.6]]),
    "upscale 2.7": np.array([[2.7, 0, -40.0], [0, 2.7, -60.0]]),
    "downscale 0.37": np.array([[0.37, 0, 1.5], [0, 0.37, 2.5]]),
    "rotation + anisotropic": _rotation(30.0, 1.3, 0.7, 5.0, -3.0),
    "person box inside": _box_matrix([40, 20, 90, 110]),
    "person box over top-left corner": _box_matrix([-20, -10, 40, 50]),
    "person box over bottom-right": _box_matrix([120, 60, 175, 135]),
    "entirely outside": np.array([[1.0, 0, 500.0], [0, 1.0, 500.0]]),
}


def _cv2_crop(image, matrix):
    return cv2.warpAffine(image, matrix, CROP_WH, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0).astype(np.float64)


@pytest.mark.parametrize("name", list(MATRICES))
def test_matches_cv2_warp_affine(name):
    image = _frame()
    matrix = MATRICES[name]
    ours = warp_crops_torch(torch.from_numpy(image).permute(2, 0, 1).float(), matrix[None], CROP_WH)
    assert ours.shape == (1, 3, CROP_WH[1], CROP_WH[0])
    ours = ours[0].permute(1, 2, 0).numpy().astype(np.float64)
    diff = np.abs(ours - _cv2_crop(image, matrix))
    assert diff.max() <= MAX_ABS_DIFF, name
    assert diff.mean() <= MEAN_ABS_DIFF, name


def test_one_batch_equals_crops_one_by_one():
    image = _frame(1)
    matrices = np.stack(list(MATRICES.values()))
    batch = warp_crops_torch(torch.from_numpy(image).permute(2, 0, 1).float(), matrices, CROP_WH)
    for i, matrix in enumerate(matrices):
        single = warp_crops_torch(torch.from_numpy(image).permute(2, 0, 1).float(), matrix[None], CROP_WH)
        assert torch.allclose(batch[i], single[0], atol=1e-4)
    assert torch.all(batch[list(MATRICES).index("entirely outside")] == 0)


def test_torch_matrices_are_accepted_like_numpy():
    image = torch.from_numpy(_frame(2)).permute(2, 0, 1).float()
    matrices = np.stack([MATRICES["rotation + anisotropic"], MATRICES["upscale 2.7"]])
    a = warp_crops_torch(image, matrices, CROP_WH)
    b = warp_crops_torch(image, torch.from_numpy(matrices), CROP_WH)
    assert torch.equal(a, b)


MEAN_RGB, STD_RGB = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("to_rgb, normalise", [(True, True), (False, True), (True, False), (False, False)])
def test_crop_batch_colour_order_and_normalisation(to_rgb, normalise):
    image = _frame(3)
    matrices = np.stack([MATRICES["person box inside"], MATRICES["person box over top-left corner"]])
    kwargs = {"mean_rgb": MEAN_RGB, "std_rgb": STD_RGB} if normalise else {}
    ours = crop_batch(image, matrices, CROP_WH, to_rgb=to_rgb, **kwargs).numpy().astype(np.float64)
    for i, matrix in enumerate(matrices):
        expected = _cv2_crop(image, matrix)  # BGR, 0..255
        if to_rgb:
            expected = expected[..., ::-1]
        expected = expected.transpose(2, 0, 1)
        tolerance = MAX_ABS_DIFF
        if normalise:
            mean, std = np.array(MEAN_RGB), np.array(STD_RGB)
            if not to_rgb:
                mean, std = mean[::-1], std[::-1]
            expected = (expected / 255.0 - mean[:, None, None]) / std[:, None, None]
            tolerance = MAX_ABS_DIFF / 255.0 / min(STD_RGB)
        assert np.abs(ours[i] - expected).max() <= tolerance + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_crop_batch_output_dtype_and_empty_batch(dtype):
    image = _frame(4)
    out = crop_batch(image, np.zeros((0, 2, 3)), CROP_WH, dtype=dtype)
    assert out.shape == (0, 3, CROP_WH[1], CROP_WH[0]) and out.dtype == dtype
    out = crop_batch(image, MATRICES["identity"][None], CROP_WH, dtype=dtype)
    assert out.shape == (1, 3, CROP_WH[1], CROP_WH[0]) and out.dtype == dtype


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 10), np.uint8), "uint8 \\[H, W, C\\]"),
    (np.zeros((10, 10, 3), np.float32), "uint8 \\[H, W, C\\]"),
])
def test_uploader_rejects_bad_frames(bad, message):
    with pytest.raises(ValueError, match=message):
        FrameUploader("cpu").upload(bad)


def test_mean_without_std_is_rejected():
    with pytest.raises(ValueError, match="mean_rgb and std_rgb"):
        crop_batch(_frame(), MATRICES["identity"][None], CROP_WH, mean_rgb=MEAN_RGB)


def test_grid_maps_crop_pixels_to_the_image_pixels_the_inverse_map_names():
    # A crop pixel (x, y) must sample image pixel inverse(M) (x, y, 1); check the grid's normalised coordinates.
    matrix = MATRICES["rotation + anisotropic"]
    image_hw = (120, 160)
    grid = sampling_grid(matrix[None], image_hw, CROP_WH)[0].numpy().astype(np.float64)
    inverse = cv2.invertAffineTransform(matrix)
    for x, y in [(0, 0), (47, 0), (0, 63), (20, 33)]:
        sx, sy = inverse @ np.array([x, y, 1.0])
        expected = ((2 * sx + 1) / image_hw[1] - 1, (2 * sy + 1) / image_hw[0] - 1)
        assert grid[y, x] == pytest.approx(expected, abs=1e-5)


@pytest.mark.needs_cuda
def test_cuda_crops_match_cpu_crops():
    image = _frame(5, (480, 640))
    matrices = np.stack(list(MATRICES.values()))
    cpu = crop_batch(image, matrices, CROP_WH, mean_rgb=MEAN_RGB, std_rgb=STD_RGB)
    gpu = crop_batch(image, matrices, CROP_WH, device="cuda", mean_rgb=MEAN_RGB, std_rgb=STD_RGB)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-3)


@pytest.mark.needs_cuda
def test_cuda_uploader_reuses_its_pinned_buffer_without_corrupting_frames():
    uploader = FrameUploader("cuda")
    frames = [_frame(seed, (360, 480)) for seed in range(4)]
    uploaded = [uploader.upload(f) for f in frames]  # no synchronize between: the event must guard the buffer
    assert len(uploader._pinned) == 1
    for frame, tensor in zip(frames, uploaded):
        assert tensor.is_cuda
        assert torch.equal(tensor.cpu(), torch.from_numpy(frame).permute(2, 0, 1).float())
