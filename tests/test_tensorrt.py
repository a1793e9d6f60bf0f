"""TensorRT EngineBuilder and TensorRTRunner on a small HRNet (skipped without TensorRT and a CUDA GPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posetrack_app.errors import UserError
from posetrack_app.pose.export import export_onnx, manifest_path_for, pose_manifest
from test_hrnet import tiny_hrnet

pytestmark = pytest.mark.needs_tensorrt

INPUT_HW = (128, 96)
MAX_BATCH = 4
EXPECTED_FIELDS = ("model", "num_keypoints", "keypoint_layout", "input_hw", "mean_rgb", "std_rgb")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import tensorrt as trt

    torch.manual_seed(0)
    model = tiny_hrnet(17).eval()
    folder = tmp_path_factory.mktemp("trt")
    manifest = pose_manifest(model_name="tiny", num_keypoints=17, keypoint_layout="coco17", input_hw=INPUT_HW)
    paths = {"fp32": export_onnx(model, folder / "tiny.onnx", input_hw=INPUT_HW, manifest=manifest)}
    # TensorRT 11 builds strongly typed networks only: fp16 comes from an fp16 graph there.
    fp16_precision = "fp32" if hasattr(trt.BuilderFlag, "FP16") else "fp16"
    paths["fp16"] = paths["fp32"] if fp16_precision == "fp32" else export_onnx(
        model, folder / "tiny_fp16.onnx", input_hw=INPUT_HW, manifest=manifest, precision="fp16")
    return model, paths, manifest


@pytest.fixture(scope="module")
def engines(tiny_onnx):
    from posetrack_app.pose.backends.tensorrt_backend import EngineBuilder

    _, paths, _ = tiny_onnx
    return {precision: EngineBuilder(paths[precision], max_batch=MAX_BATCH, opt_batch=2, precision=precision).build()
            for precision in ("fp32", "fp16")}


def _runner(engine_path, manifest, **changes):
    from posetrack_app.pose.backends.tensorrt_backend import TensorRTRunner

    expected = {k: manifest[k] for k in EXPECTED_FIELDS}
    expected.update(changes)
    return TensorRTRunner(engine_path, expected=expected)


def test_engine_manifest(engines, tiny_onnx):
    import tensorrt as trt

    from posetrack_app.pose.checkpoint import file_sha256

    _, paths, _ = tiny_onnx
    manifest = json.loads(manifest_path_for(engines["fp16"]).read_text())
    assert manifest["format"] == "tensorrt" and manifest["precision"] == "fp16" and manifest["max_batch"] == MAX_BATCH
    assert manifest["tensorrt_version"] == trt.__version__ and manifest["gpu_name"] == torch.cuda.get_device_name()
    assert manifest["onnx_sha256"] == file_sha256(paths["fp16"]) and manifest["input_hw"] == list(INPUT_HW)
    assert manifest["keypoint_layout"] == "coco17" and manifest["mean_rgb"] == [0.485, 0.456, 0.406]


@pytest.mark.parametrize("precision,relative_tolerance", [("fp32", 1e-3), ("fp16", 3e-2)])
@pytest.mark.parametrize("batch", [1, 3, MAX_BATCH, 7])   # 7 > the profile: run in chunks of MAX_BATCH
def test_runner_matches_torch(engines, tiny_onnx, precision, relative_tolerance, batch):
    model, _, manifest = tiny_onnx
    x = torch.randn((batch, 3) + INPUT_HW)
    with torch.no_grad():
        reference = model(x)
    with _runner(engines[precision], manifest) as runner:
        assert (runner.min_batch, runner.max_batch) == (1, MAX_BATCH)
        heatmaps = runner.infer(x.cuda())
        heatmaps_again = runner.infer(x)          # CPU input is moved to the GPU
    assert heatmaps.dtype == torch.float32 and heatmaps.is_cuda and heatmaps.shape == reference.shape
    error = (heatmaps.cpu() - reference).abs().max().item()
    assert error <= relative_tolerance * reference.abs().max().item()
    assert torch.equal(heatmaps, heatmaps_again)


def test_runner_checks_the_profile(engines, tiny_onnx):
    _, _, manifest = tiny_onnx
    with _runner(engines["fp32"], manifest) as runner:
        for bad in (0, MAX_BATCH + 1):
            with pytest.raises(ValueError, match=f"outside the engine's profile 1..{MAX_BATCH}"):
                runner.check_profile(bad)
        assert tuple(runner.infer(torch.zeros((0, 3) + INPUT_HW)).shape) == (0, 17, 32, 24)


@pytest.mark.parametrize("changes,match", [
    ({"keypoint_layout": "posetrack18"}, "keypoint_layout"),
    ({"input_hw": [256, 192]}, "input_hw"),
    ({"model": "hrnet_w48_384x288"}, "model"),
])
def test_runner_refuses_an_engine_built_for_another_config(engines, tiny_onnx, changes, match):
    _, _, manifest = tiny_onnx
    with pytest.raises(UserError, match=match):
        _runner(engines["fp32"], manifest, **changes)


def test_runner_refuses_an_engine_from_another_gpu_or_tensorrt(engines, tiny_onnx, tmp_path):
    _, _, manifest = tiny_onnx
    for field, value in (("gpu_name", "Some Other GPU"), ("tensorrt_version", "0.0.1")):
        engine = tmp_path / f"copy_{field}.engine"
        engine.write_bytes(engines["fp32"].read_bytes())
        data = json.loads(manifest_path_for(engines["fp32"]).read_text())
        data[field] = value
        manifest_path_for(engine).write_text(json.dumps(data))
        with pytest.raises(UserError, match=f"{field}: file '{value}'"):
            _runner(engine, manifest)
    bare = tmp_path / "no_manifest.engine"
    bare.write_bytes(engines["fp32"].read_bytes())
    with pytest.raises(UserError, match="has no manifest"):
        _runner(bare, manifest)


def test_int8_with_calibration_images_and_cache(tiny_onnx, tmp_path):
    import cv2
    import tensorrt as trt

    from posetrack_app.pose.backends.tensorrt_backend import CALIBRATION_CACHE_NAME, EngineBuilder

    model, paths, manifest = tiny_onnx
    builder_kwargs = dict(max_batch=MAX_BATCH, precision="int8", int8_calibration_dir=tmp_path, calibration_batch=4)
    if not hasattr(trt.BuilderFlag, "INT8"):
        with pytest.raises(UserError, match="removed calibration-based INT8"):
            EngineBuilder(paths["fp32"], **builder_kwargs).build(tmp_path / "int8.engine")
        return
    rng = np.random.default_rng(0)
    for i in range(8):
        cv2.imwrite(str(tmp_path / f"person_{i}.png"), rng.integers(0, 255, (200, 120, 3), dtype=np.uint8))
    engine = EngineBuilder(paths["fp32"], **builder_kwargs).build(tmp_path / "int8.engine")
    assert (tmp_path / CALIBRATION_CACHE_NAME).is_file()
    for image in tmp_path.glob("*.png"):
        image.unlink()
    # A second build reads the cache and needs no images.
    engine_again = EngineBuilder(paths["fp32"], **builder_kwargs).build(tmp_path / "int8_from_cache.engine")
    for path in (engine, engine_again):
        with _runner(path, manifest) as runner:
            heatmaps = runner.infer(torch.randn((2, 3) + INPUT_HW))
        assert heatmaps.shape == (2, 17, 32, 24) and torch.isfinite(heatmaps).all()
