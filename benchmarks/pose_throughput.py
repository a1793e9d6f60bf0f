"""Pose network throughput: crops per second and achieved TFLOP/s per backend, precision and batch size.

Sweeps, for each model, every variant available on this machine (torch fp32 / fp16 / bf16, channels_last,
torch.compile, CUDA graphs, ONNX Runtime, TensorRT) over batch sizes (default: the CUDA-graph buckets 1, 2, 4, ..., 64), and
prints crops/s, milliseconds per batch and achieved TFLOP/s against the device's peak. Networks are randomly
initialised (throughput does not depend on the weights). Results go to a JSON file and a PNG plot.

    python benchmarks/pose_throughput.py                                   # everything this machine has
    python benchmarks/pose_throughput.py --batches 1 8 --variants torch-fp32 onnxruntime \
        --out benchmarks/results/pose_throughput_cpu.json                  # the CPU record (a few minutes)

Shape glossary: B crops per batch; H x W network input; FLOPs per crop = 2 x multiply-adds of the network.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posetrack_app.io.atomic import atomic_write, write_json_atomic  # noqa: E402
from posetrack_app.onnx_providers import providers_for_device  # noqa: E402
from posetrack_app.pose.backends.base import DEFAULT_CUDA_GRAPH_BATCHES  # noqa: E402
from posetrack_app.pose.backends.torch_backend import TorchBackend  # noqa: E402
from posetrack_app.pose.models import build_model, get_model_spec  # noqa: E402
from posetrack_app.pose.models.flops import model_multiply_adds  # noqa: E402

log = logging.getLogger("pose_throughput")

DEFAULT_MODELS = ("hrnet_w32_256x192", "hrnet_w48_384x288")
DEFAULT_BATCHES = DEFAULT_CUDA_GRAPH_BATCHES  # the sweep measures every CUDA-graph bucket
# Dense peak TFLOP/s by GPU name fragment and precision (vendor datasheets; fp32 = non-tensor-core FMA rate,
# tf32/fp16/bf16 = dense tensor-core rate). Used only to print utilisation.
GPU_PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H100": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
}


def flops_per_crop(model_name: str) -> float:
    """2 x multiply-adds of one crop (the arithmetic actually done, for achieved TFLOP/s)."""
    return 2.0 * model_multiply_adds(model_name, transposed_at_output=False)


def cpu_peak_tflops(threads: int) -> Optional[float]:
    """threads x max clock x fp32 FLOPs per cycle (2 FMA units: 32 with AVX-512, 16 with AVX2), from lscpu."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "")
    mhz = None
    for key in ("CPU max MHz", "CPU MHz"):
        if key in fields:
            mhz = float(fields[key].strip())
            break
    if mhz is None:
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file():
            line = next((l for l in cpuinfo.read_text().splitlines() if l.startswith("cpu MHz")), None)
            mhz = float(line.split(":")[1]) if line else None
    if mhz is None:
        model_name = fields.get("Model name", "")
        if "@" in model_name and "GHz" in model_name:
            mhz = float(model_name.split("@")[1].split("GHz")[0]) * 1000
    if mhz is None:
        return None
    flops_per_cycle = 64 if "avx512f" in flags else (32 if "avx2" in flags else 8)
    return threads * mhz * 1e6 * flops_per_cycle / 1e12


def gpu_peak_tflops(precision: str) -> Optional[float]:
    name = torch.cuda.get_device_name()
    for fragment, table in GPU_PEAK_TFLOPS.items():
        if fragment in name:
            return table.get("tf32" if precision == "fp32" and torch.backends.cuda.matmul.allow_tf32 else precision,
                             table.get(precision))
    return None


def time_backend(infer: Callable, batch: torch.Tensor, *, warmup: int, min_iters: int, min_seconds: float,
                 synchronize: Callable[[], None]) -> List[float]:
    """Seconds per call: `warmup` untimed calls, then at least `min_iters` calls and `min_seconds` of them."""
    for _ in range(warmup):
        infer(batch)
    synchronize()
    times: List[float] = []
    started = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        infer(batch)
        synchronize()
        times.append(time.perf_counter() - t0)
    return times


def build_variants(model_name: str, device: str, batches, work_dir: Path) -> Dict[str, Callable[[], object]]:
    """name -> factory of a backend (context manager with .infer), for the variants this machine supports."""
    spec = get_model_spec(model_name)
    hw = spec.input_hw

    def torch_variant(**kwargs):
        return lambda: TorchBackend(build_model(model_name, 17), input_hw=hw, num_keypoints=17, device=device, **kwargs)

    variants: Dict[str, Callable[[], object]] = {
        "torch-fp32": torch_variant(),
        "torch-bf16": torch_variant(precision="bf16"),
        "torch-fp32-channels_last": torch_variant(channels_last=True),
        "torch-compile": torch_variant(compile=True),
    }
    if device.startswith("cuda"):
        variants.update({
            "torch-fp16": torch_variant(precision="fp16"),
            "torch-fp16-channels_last": torch_variant(precision="fp16", channels_last=True),
            "torch-fp16-cuda_graphs": torch_variant(precision="fp16", channels_last=True, cuda_graphs=True,
                                                    cuda_graph_batches=tuple(batches)),
            "torch-fp16-compile-cuda_graphs": torch_variant(precision="fp16", channels_last=True, compile=True,
                                                            cuda_graphs=True, cuda_graph_batches=tuple(batches)),
        })

    def onnx_file(precision: str = "fp32") -> Path:
        from posetrack_app.pose.export import export_onnx, pose_manifest

        path = work_dir / f"{model_name}_{precision}.onnx"
        if not path.is_file():
            manifest = pose_manifest(model_name=model_name, num_keypoints=17, keypoint_layout="coco17", input_hw=hw)
            export_onnx(build_model(model_name, 17), path, input_hw=hw, manifest=manifest, precision=precision)
        return path

    def ort():
        from posetrack_app.pose.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_file(), input_hw=hw, num_keypoints=17, providers=providers_for_device(device))

    variants["onnxruntime"] = ort
    try:
        import importlib.util
        has_trt = importlib.util.find_spec("tensorrt") is not None
    except ImportError:
        has_trt = False
    if has_trt and device.startswith("cuda"):
        def trt(precision: str = "fp16"):
            import tensorrt

            from posetrack_app.pose.backends.tensorrt_backend import EngineBuilder, TensorRTRunner
            from posetrack_app.pose.export import MATCHED_FIELDS, read_manifest

            onnx_precision = precision if not hasattr(tensorrt.BuilderFlag, "FP16") else "fp32"
            onnx_path = onnx_file(onnx_precision)
            engine = work_dir / f"{model_name}_{precision}_b{max(batches)}.engine"
            if not engine.is_file():
                EngineBuilder(onnx_path, max_batch=max(batches), opt_batch=max(batches), precision=precision).build(engine)
            manifest = read_manifest(onnx_path)
            return TensorRTRunner(engine, expected={k: manifest[k] for k in MATCHED_FIELDS})

        variants["tensorrt-fp16"] = trt
    return variants


def check_onnx(model_name: str, work_dir: Path, batches=(1, 5)) -> Dict[str, float]:
    """Max |ONNX Runtime - torch| of the exported network on random crops, per batch size."""
    from posetrack_app.pose.backends.onnxruntime_backend import OnnxRuntimeBackend
    from posetrack_app.pose.export import export_onnx, pose_manifest

    hw = get_model_spec(model_name).input_hw
    torch.manual_seed(0)
    model = build_model(model_name, 17).eval()
    path = work_dir / f"{model_name}_check.onnx"
    export_onnx(model, path, input_hw=hw, manifest=pose_manifest(model_name=model_name, num_keypoints=17,
                                                                 keypoint_layout="coco17", input_hw=hw))
    diffs = {}
    with OnnxRuntimeBackend(path, input_hw=hw, num_keypoints=17) as backend:
        for b in batches:
            x = torch.randn((b, 3) + hw)
            with torch.no_grad():
                reference = model(x)
            diffs[str(b)] = float((backend.infer(x) - reference).abs().max())
    return diffs


def plot(results: List[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in results})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in results if r["model"] == model]
        for variant in sorted({r["variant"] for r in rows}):
            points = sorted((r["batch"], r["crops_per_s"]) for r in rows if r["variant"] == variant)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (crops)")
        ax.set_ylabel("crops / s")
        ax.set_title(model)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    parser.add_argument("--variants", nargs="+", help="subset of variant names (default: all available)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-iters", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--check-onnx", action="store_true", help="also record max |ORT - torch| at batch 1 and 5")
    parser.add_argument("--peak-tflops", type=float, help="device peak to compare with (default: looked up)")
    parser.add_argument("--out", default="benchmarks/results/pose_throughput.json")
    parser.add_argument("--plot", help="PNG path (default: --out with .png)")
    return parser.parse_args(argv)


def device_description(device: str) -> str:
    """The GPU's name, or the CPU model from lscpu."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return name
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), name)


def measure_variant(model_name: str, variant: str, factory: Callable[[], object], args, flops: float,
                    peak: Optional[float]) -> List[dict]:
    """One row per batch size: median seconds per call after warm-up, and what the first call cost (CUDA-graph
    capture, torch.compile and cuDNN autotuning happen there: the warm-up cost a stream pays once per size)."""
    is_cuda = args.device.startswith("cuda")
    synchronize = torch.cuda.synchronize if is_cuda else (lambda: None)
    hw = get_model_spec(model_name).input_hw
    rows = []
    with factory() as backend:
        for b in args.batches:
            batch = torch.randn((b, 3) + hw)
            if is_cuda:
                batch = batch.to(args.device)
            started = time.perf_counter()
            backend.infer(batch)
            synchronize()
            first_call_s = time.perf_counter() - started
            times = time_backend(backend.infer, batch, warmup=max(args.warmup - 1, 0), min_iters=args.min_iters,
                                 min_seconds=args.min_seconds, synchronize=synchronize)
            seconds = statistics.median(times)
            crops_per_s = b / seconds
            tflops = crops_per_s * flops / 1e12
            rows.append(dict(model=model_name, variant=variant, batch=b, crops_per_s=round(crops_per_s, 3),
                             ms_per_batch=round(1000 * seconds, 3), first_call_s=round(first_call_s, 3),
                             iterations=len(times), achieved_tflops=round(tflops, 4), peak_tflops=peak,
                             utilisation=round(tflops / peak, 4) if peak else None))
            util = f"{100 * tflops / peak:5.1f}% of {peak:.2f}" if peak else "peak unknown"
            print(f"{model_name:20s} {variant:32s} batch {b:3d}: {crops_per_s:9.2f} crops/s  "
                  f"{1000 * seconds:9.1f} ms/batch  {tflops:7.3f} TFLOP/s ({util}); first call {first_call_s:.2f} s",
                  flush=True)
    return rows


def sweep(args, work_dir: Path, threads: int):
    """(result rows, ONNX-vs-torch differences) over every chosen model and variant."""
    is_cuda = args.device.startswith("cuda")
    results: List[dict] = []
    onnx_checks: Dict[str, Dict[str, float]] = {}
    for model_name in args.models:
        flops = flops_per_crop(model_name)
        variants = build_variants(model_name, args.device, args.batches, work_dir)
        for variant in [v for v in variants if not args.variants or v in args.variants]:
            precision = next((p for p in ("fp16", "bf16") if p in variant), "fp32")
            peak = args.peak_tflops or (gpu_peak_tflops(precision) if is_cuda else cpu_peak_tflops(threads))
            try:
                results += measure_variant(model_name, variant, variants[variant], args, flops, peak)
            except Exception as exc:  # a variant this machine cannot run is reported, not fatal
                print(f"{model_name:20s} {variant:32s} skipped: {type(exc).__name__}: {exc}")
        if args.check_onnx:
            onnx_checks[model_name] = check_onnx(model_name, work_dir)
            print(f"{model_name}: max |ORT - torch| by batch: {onnx_checks[model_name]}")
    return results, onnx_checks


def write_record(args, results, onnx_checks, *, device_name: str, threads: int, load_before) -> None:
    import onnxruntime

    record = {
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device, "device_name": device_name, "torch_threads": threads,
        "cpu_count": os.cpu_count(), "torch_version": torch.__version__, "onnxruntime_version": onnxruntime.__version__,
        "flops_per_crop_g": {m: round(flops_per_crop(m) / 1e9, 3) for m in args.models},
        "load_average_before_after": [round(x, 2) for x in load_before] + [round(x, 2) for x in os.getloadavg()],
        "note": "random-init networks; FLOPs = 2 x multiply-adds; peak for CPU = threads x max clock x FMA width; "
                "first_call_s = the first call at that batch size (capture / compile / autotuning included)",
        "results": results,
        "onnx_vs_torch_max_abs_diff": onnx_checks,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, record, indent=2)
    plot_path = Path(args.plot) if args.plot else out.with_suffix(".png")
    plot(results, plot_path, f"pose throughput on {device_name} ({args.device}, {threads} threads)")
    print(f"wrote {out} and {plot_path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pose_bench_") as tmp:
        results, onnx_checks = sweep(args, Path(tmp), threads)
    write_record(args, results, onnx_checks, device_name=device_description(args.device), threads=threads,
                 load_before=load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
