"""Pose backends: registry by name, lazy runtime imports, torch backend options (CPU here; GPU paths behind
needs_cuda), onnxruntime provider choice and manifest checks, TensorRT manifest refusal (pure, no TensorRT)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from posetrack_app.errors import ConfigError, UserError
from posetrack_app.pose.backends import BACKENDS, BackendOptions, create_backend
from posetrack_app.pose.backends.base import HEATMAP_STRIDE, BackendBase
from posetrack_app.pose.backends.torch_backend import TorchBackend
from test_hrnet import tiny_hrnet

INPUT_HW = (128, 96)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = tiny_hrnet(17).eval()
    # Non-trivial BN statistics so that eval-mode BN is exercised.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_registry_names_and_unknown_name():
    assert set(BACKENDS) == {"torch", "onnxruntime", "tensorrt"}
    with pytest.raises(ConfigError, match="unknown pose.backend 'openvino'; choose one of: onnxruntime, tensorrt, torch"):
        create_backend("openvino", BackendOptions(model_name="hrnet_w32_256x192", num_keypoints=17, input_hw=(256, 192)))


def test_importing_the_package_imports_neither_onnxruntime_nor_tensorrt():
    code = ("import sys; import posetrack_app.pose.backends, posetrack_app.pose.topdown, posetrack_app.pipeline, "
            "posetrack_app.build; "
            "import posetrack_app.pose.backends.tensorrt_backend; "
            "print(sorted(m for m in ('onnxruntime', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_torch_backend_from_options_loads_the_configured_network(monkeypatch):
    from posetrack_app.pose import checkpoint

    seen = {}

    def fake_load(model_name, weights_path, num_keypoints):
        seen.update(model=model_name, weights=weights_path, k=num_keypoints)
        return tiny_hrnet(num_keypoints)

    monkeypatch.setattr(checkpoint, "load_pose_network", fake_load)
    options = BackendOptions(model_name="hrnet_w32_256x192", num_keypoints=15, input_hw=INPUT_HW, weights_path="w.pth",
                             precision="bf16", channels_last=True)
    with create_backend("torch", options) as backend:
        assert isinstance(backend, TorchBackend) and backend.model.final_layer.out_channels == 15
        assert backend.dtype == torch.bfloat16 and not backend.model.training
    assert seen == {"model": "hrnet_w32_256x192", "weights": "w.pth", "k": 15}


def test_batchnorm_folding_keeps_the_output(tiny):
    x = torch.randn((2, 3) + INPUT_HW)
    with torch.no_grad():
        reference = tiny(x)
    with TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, fold_bn=True) as backend:
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backend.model.modules())
        heatmaps = backend.infer(x)
    assert (heatmaps - reference).abs().max().item() < 1e-5 * max(1.0, reference.abs().max().item())


def test_batchnorm_folding_refuses_a_network_it_would_change():
    from posetrack_app.pose.backends.torch_backend import fold_batchnorm

    class BnBeforeConv(torch.nn.Module):
        """conv and bn registered next to each other, but bn runs first (pre-activation style)."""

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.bn(x))

    model = BnBeforeConv().eval()
    model.bn.running_var.fill_(4.0)
    model.bn.running_mean.fill_(0.5)
    assert fold_batchnorm(model, (8, 8)) is model


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("options,tolerance", [
    ({}, 0.0),
    ({"channels_last": True}, 1e-5),
    ({"precision": "bf16"}, 0.1),
], ids=["fp32", "channels_last", "bf16"])
def test_torch_backend_cpu_matches_the_model(tiny, batch, options, tolerance):
    x = torch.randn((batch, 3) + INPUT_HW)
    with torch.no_grad():
        reference = tiny(x)
    with TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, fold_bn=False, **options) as backend:
        heatmaps = backend.infer(x)
    assert heatmaps.dtype == torch.float32 and heatmaps.shape == reference.shape
    scale = reference.abs().max().item()
    assert (heatmaps - reference).abs().max().item() <= tolerance * scale + 1e-6


def tiny_copy(model):
    copy = tiny_hrnet(17)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


@pytest.mark.parametrize("options,match", [
    ({"precision": "fp16"}, "fp16 needs pose.device=cuda"),
    ({"precision": "int4"}, "not one of fp32, fp16, bf16"),
    ({"cuda_graphs": True}, "cuda_graphs needs pose.device=cuda"),
])
def test_torch_backend_rejects_cpu_misconfigurations(tiny, options, match):
    with pytest.raises(ConfigError, match=match):
        TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, fold_bn=False, **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_torch_backend_cuda_without_gpu_says_so(tiny):
    with pytest.raises(ConfigError, match="torch sees no CUDA GPU: set pose.device=cpu"):
        TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, device="cuda", fold_bn=False)


@pytest.mark.parametrize("shape", [(2, 3, 64, 48), (2, 1, 128, 96), (3, 128, 96)])
def test_backend_rejects_wrong_input_shape(tiny, shape):
    with TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, fold_bn=False) as backend:
        with pytest.raises(ValueError, match=r"expects a batch \[B, 3, 128, 96\]"):
            backend.infer(torch.zeros(shape))


def test_empty_batch(tiny):
    with TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, fold_bn=False) as backend:
        assert tuple(backend.infer(torch.zeros((0, 3) + INPUT_HW)).shape) == (0, 17, 32, 24)


class RecordingBackend(BackendBase):
    """The smallest backend: only `_infer`, which records what reaches it."""

    def __init__(self, input_hw=INPUT_HW):
        self.input_hw, self.num_keypoints, self.calls = input_hw, 5, []

    def _infer(self, batch):
        self.calls.append(tuple(batch.shape))
        return torch.ones((batch.shape[0], 5) + self.heatmap_hw)


@pytest.mark.parametrize("shape,expected", [
    ((0, 3, 128, 96), "empty (0, 5, 32, 24), not forwarded"),
    ((2, 3, 128, 96), "forwarded"),
    ((2, 3, 64, 48), "ValueError"),
    ((2, 4, 128, 96), "ValueError"),
    ((3, 128, 96), "ValueError"),
])
def test_base_infer_checks_answers_empty_batches_and_forwards_the_rest(shape, expected):
    backend = RecordingBackend()
    if expected == "ValueError":
        with pytest.raises(ValueError, match=r"RecordingBackend expects a batch \[B, 3, 128, 96\]"):
            backend.infer(torch.zeros(shape))
        assert backend.calls == []
        return
    out = backend.infer(torch.zeros(shape))
    assert out.dtype == torch.float32 and out.shape == (shape[0], 5, 128 // HEATMAP_STRIDE, 96 // HEATMAP_STRIDE)
    assert backend.calls == ([] if shape[0] == 0 else [shape])


def test_torch_backend_warmup_runs_each_size_once_and_reports_its_cost(tiny):
    with TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17) as backend:
        costs = backend.warmup((1, 3))
    assert set(costs) == {1, 3} and all(seconds > 0 for seconds in costs.values())


def test_backend_options_give_the_manifest_fields_the_export_writes():
    from posetrack_app.pose.export import MATCHED_FIELDS, pose_manifest

    options = BackendOptions(model_name="hrnet_w32_256x192", num_keypoints=17, input_hw=(256, 192),
                             keypoint_layout="posetrack18")
    written = pose_manifest(model_name="hrnet_w32_256x192", num_keypoints=17, keypoint_layout="posetrack18",
                            input_hw=(256, 192))
    assert options.manifest_fields() == {k: written[k] for k in MATCHED_FIELDS}


# -- GPU paths (correct by construction here; run where a GPU is present) --

@pytest.mark.needs_cuda
@pytest.mark.parametrize("options,relative_tolerance", [
    ({}, 1e-3),                                  # TF32 convolutions may be enabled
    ({"precision": "fp16"}, 2e-2),
    ({"precision": "bf16"}, 1e-1),
    ({"channels_last": True, "precision": "fp16"}, 2e-2),
    ({"cuda_graphs": True, "cuda_graph_batches": (1, 2, 4)}, 1e-3),
    ({"cuda_graphs": True, "cuda_graph_batches": (1, 2, 4), "precision": "fp16", "channels_last": True}, 2e-2),
    ({"compile": True}, 1e-3),
], ids=["fp32", "fp16", "bf16", "fp16_channels_last", "cuda_graphs", "cuda_graphs_fp16_cl", "compile"])
def test_torch_backend_cuda_matches_cpu_fp32(tiny, options, relative_tolerance):
    x = torch.randn((7,) + (3,) + INPUT_HW)   # 7 crops: buckets 4 + 4 (padded) with graph buckets up to 4
    with torch.no_grad():
        reference = tiny(x)
    with TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, device="cuda", **options) as backend:
        for batch in (x, x[:1], x[:3], x):        # repeated calls reuse captured graphs / compiled code
            heatmaps = backend.infer(batch)
            assert heatmaps.dtype == torch.float32 and heatmaps.device.type == "cuda"
            error = (heatmaps.cpu() - reference[: batch.shape[0]]).abs().max().item()
            assert error <= relative_tolerance * reference.abs().max().item()
        if options.get("cuda_graphs"):
            assert set(backend._graphs) == {1, 4}


@pytest.mark.needs_cuda
def test_cuda_graph_outputs_are_not_overwritten_by_the_next_call(tiny):
    with TorchBackend(tiny_copy(tiny), input_hw=INPUT_HW, num_keypoints=17, device="cuda", cuda_graphs=True,
                      cuda_graph_batches=(2,)) as backend:
        a = torch.randn((2, 3) + INPUT_HW)
        first = backend.infer(a)
        kept = first.clone()
        backend.infer(torch.randn((2, 3) + INPUT_HW))
        assert torch.equal(first, kept)


# -- onnxruntime --

def test_onnxruntime_providers_fall_back_to_cpu():
    from posetrack_app.pose.backends.onnxruntime_backend import select_providers

    assert select_providers(["NoSuchExecutionProvider"]) == ("CPUExecutionProvider",)
    chosen = select_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert chosen[-1] == "CPUExecutionProvider"


def test_onnxruntime_backend_needs_weights_or_an_onnx_file():
    options = BackendOptions(model_name="hrnet_w32_256x192", num_keypoints=17, input_hw=(256, 192))
    with pytest.raises(ConfigError, match="needs pose.weights .* or pose.engine=PATH.onnx"):
        create_backend("onnxruntime", options)
    with pytest.raises(ConfigError, match="needs an .onnx file"):
        create_backend("onnxruntime", BackendOptions(model_name="hrnet_w32_256x192", num_keypoints=17,
                                                     input_hw=(256, 192), engine_path="x.engine"))


# -- TensorRT manifest refusal: pure checks, no TensorRT needed --

ENGINE_MANIFEST = {
    "model": "hrnet_w48_384x288", "num_keypoints": 17, "keypoint_layout": "coco17", "input_hw": [384, 288],
    "mean_rgb": [0.485, 0.456, 0.406], "std_rgb": [0.229, 0.224, 0.225], "weights_sha256": "ab" * 32,
    "format": "tensorrt", "onnx_sha256": "cd" * 32, "tensorrt_version": "10.13.0", "gpu_name": "NVIDIA H100",
    "precision": "fp16", "max_batch": 32,
}
EXPECTED = {k: ENGINE_MANIFEST[k] for k in ("model", "num_keypoints", "keypoint_layout", "input_hw", "mean_rgb",
                                             "std_rgb")}


@pytest.mark.parametrize("change,match", [
    ({}, None),
    ({"keypoint_layout": "posetrack18"}, "keypoint_layout: file 'posetrack18' vs expected 'coco17'"),
    ({"input_hw": [256, 192]}, r"input_hw: file \[256, 192\] vs expected \[384, 288\]"),
    ({"model": "hrnet_w32_384x288"}, "model: file 'hrnet_w32_384x288'"),
    ({"std_rgb": [1.0, 1.0, 1.0]}, "std_rgb"),
    ({"gpu_name": "NVIDIA A100"}, "gpu_name: file 'NVIDIA A100' vs expected 'NVIDIA H100'"),
    ({"tensorrt_version": "10.0.1"}, "tensorrt_version: file '10.0.1' vs expected '10.13.0'"),
])
def test_engine_manifest_must_match_config_gpu_and_tensorrt(tmp_path, change, match):
    from posetrack_app.pose.backends.tensorrt_backend import verify_engine_manifest

    manifest = dict(ENGINE_MANIFEST, **change)
    kwargs = dict(expected=EXPECTED, tensorrt_version="10.13.0", gpu="NVIDIA H100")
    if match is None:
        verify_engine_manifest(manifest, tmp_path / "e.engine", **kwargs)
    else:
        with pytest.raises(UserError, match=match) as info:
            verify_engine_manifest(manifest, tmp_path / "e.engine", **kwargs)
        assert "rebuild it with `posetrack export`" in str(info.value)


def test_engine_without_manifest_is_refused(tmp_path):
    from posetrack_app.pose.backends.tensorrt_backend import verify_engine_manifest

    with pytest.raises(UserError, match="has no manifest .* rebuild it with `posetrack export --format tensorrt`"):
        verify_engine_manifest(None, tmp_path / "e.engine", expected=EXPECTED, tensorrt_version="10.13.0",
                               gpu="NVIDIA H100")


def test_engine_manifest_carries_the_onnx_pose_fields():
    from posetrack_app.pose.backends.tensorrt_backend import engine_manifest

    onnx_manifest = dict(EXPECTED, weights_sha256="ab" * 32, format="onnx", opset=18)
    manifest = engine_manifest(onnx_manifest, onnx_sha256="cd" * 32, tensorrt_version="10.13.0",
                               gpu="NVIDIA H100", precision="fp16", max_batch=32)
    assert manifest == ENGINE_MANIFEST
    json.dumps(manifest)   # plain JSON
