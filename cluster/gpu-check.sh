#!/usr/bin/env bash
# `make gpu-check`: the GPU path end to end, on a machine with NVIDIA GPUs (see cluster/README.md).
#
#   1. a venv of its own (.venv-gpu): torch from requirements/gpu.txt with its CUDA runtime
#      libraries, then everything pinned there (fbgemm-gpu, torchrec, common.txt) without their
#      dependencies, as `make setup` installs the CPU stack;
#   2. the CUDA, torch, fbgemm-gpu and TorchRec versions it got;
#   3. pytest -m gpu (CPU against CUDA per torch path; tests/gpu: TorchRec on 1 and 2 GPUs);
#   4. the demo (configs/mf/demo.yaml) on CPU workers, on 1 GPU and, where there are two, on 2 GPUs
#      with row-wise sharding and fused Adam, and each run's training samples/s.
#
# Exit code: 2 without an NVIDIA driver, else the first failing step's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${GPU_VENV:-.venv-gpu}
PY=$VENV/bin/python
OUT=${OUT:-runs/gpu-check/$(date +%Y%m%d-%H%M%S)}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU or driver here (nvidia-smi is missing or fails); run it on a GPU machine" >&2
  exit 2
fi
nvidia-smi -L

echo "== installing requirements/gpu.txt into $VENV"
test -x "$PY" || "$PYTHON" -m venv "$VENV"
index=$(grep -E '^--(extra-)?index-url' requirements/gpu.txt || true)
torch_pin=$(grep -E '^torch==' requirements/gpu.txt)
# shellcheck disable=SC2086  # $index is zero or two words
"$PY" -m pip install -q --disable-pip-version-check $index "$torch_pin"
"$PY" -m pip install -q --disable-pip-version-check --no-deps -r requirements/gpu.txt
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

echo "== versions"
"$PY" - <<'EOF'
import importlib.metadata as md

import torch

print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
for package in ("fbgemm-gpu", "torchrec", "ray"):
    print(f"{package} {md.version(package)}")
if not torch.cuda.is_available():
    raise SystemExit("torch sees no GPU: the installed torch is not a CUDA build for this driver")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
import fbgemm_gpu  # noqa: F401  the CUDA kernels load (a CPU build beside it would shadow them)
import torchrec  # noqa: F401
EOF

echo "== pytest -m gpu"
"$PY" -m pytest -q -m gpu tests

echo "== the demo on CPU and GPU workers ($OUT)"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
"$PY" jobs/prepare.py synthetic --like ml-100k --out "$OUT/data" >/dev/null
demo() {
  local name=$1
  shift
  "$PY" jobs/train.py --config configs/mf/demo.yaml --quiet data.path="$OUT/data" output_dir="$OUT/$name" \
    ray.storage_path="$OUT/ray" ray.name="gpu-check-$name" "$@" >"$OUT/$name.log" 2>&1 \
    || { echo "demo $name failed; its log:" >&2; tail -40 "$OUT/$name.log" >&2; return 1; }
}
ROW_WISE_ADAM=(optim.sparse=adam optim.sparse_lr=0.01 sharding.types.user=row_wise sharding.types.item=row_wise)
demo cpu-2workers
demo gpu-1 ray.use_gpu=true ray.num_workers=1 "${ROW_WISE_ADAM[@]}"
runs=(cpu-2workers gpu-1)
if [ "$GPUS" -ge 2 ]; then
  demo gpu-2 ray.use_gpu=true ray.num_workers=2 "${ROW_WISE_ADAM[@]}"
  runs+=(gpu-2)
else
  echo "(one GPU: the 2-GPU demo is skipped)"
fi
"$PY" - "$OUT" "${runs[@]}" <<'EOF'
import json
import statistics
import sys

out, runs = sys.argv[1], sys.argv[2:]
print(f"{'run':<14} {'epochs':>6} {'samples/s (median epoch)':>26} {'vs cpu':>7} {'test RMSE':>10}")
base = None
for run in runs:
    history = json.load(open(f"{out}/{run}/history.json"))
    metrics = json.load(open(f"{out}/{run}/metrics.json"))
    rate = statistics.median(h["train_samples_per_s"] for h in history[1:] or history)  # the first epoch warms up
    base = base or rate
    print(f"{run:<14} {len(history):>6} {rate:>26,.0f} {rate / base:>6.2f}× {metrics.get('test_rmse', float('nan')):>10.4f}")
EOF
