#!/usr/bin/env bash
# The whole GPU measurement of issue 7 in one call (about 4 minutes on an H100/H200).
#
# Run from the repository root on a machine where JAX with CUDA and PyTorch are
# installed (gumbax itself is taken from this checkout through PYTHONPATH, so its
# jax<0.11 pin does not matter):
#
#   bash benchmarks/run_gpu.sh                  # writes under $OUT (default ./gpu_out)
#   GUMBAX_BENCH_SMALL=1 bash benchmarks/run_gpu.sh   # tiny sizes: a dry run on a CPU
#
# Writes env.txt, and NAME.txt (the printed tables) and NAME.json (the rows) for
# NAME in fwd_bwd (goal 1), vae_step (goal 2) and variance (goal 3). Each script has
# its own time limit, so one that hangs does not cost the others their numbers.
set -u -o pipefail

OUT=${OUT:-./gpu_out}
PY=${PYTHON:-python3}
SMALL=${GUMBAX_BENCH_SMALL:-0}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and PyTorch share the GPU's memory
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}

if [ "$SMALL" = "1" ]; then
  FWD_ARGS=(--shapes 4096x10,64x1024,4x32768 --repeats 2 --min-time 0 --torch-compile none)
  VAE_ARGS=(--small --repeats 2 --min-time 0 --no-torch-compile)
  VAR_ARGS=(--small --repeats 2)
  LIMIT_FWD=600 LIMIT_VAE=300 LIMIT_VAR=300
else
  FWD_ARGS=(--repeats 7 --min-time 0.01 --torch-compile gumbel_softmax --torch-compile-dtypes float32)
  VAE_ARGS=(--repeats 15 --min-time 0.02)
  VAR_ARGS=(--samples 1024 --torch-samples 64 --repeats 5 --torch-compile)
  LIMIT_FWD=220 LIMIT_VAE=120 LIMIT_VAR=90
fi

start=$(date +%s)
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "command: bash benchmarks/run_gpu.sh (GUMBAX_BENCH_SMALL=$SMALL)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem \
    --format=csv 2>/dev/null || echo "nvidia-smi: not available"
  "$PY" - <<'EOF'
import platform, jax
print("python", platform.python_version(), "| jax", jax.__version__, "|", jax.devices())
for name in ("jaxlib", "flax", "optax", "numpy"):
  try:
    print(name, __import__(name).__version__)
  except Exception as e:  # noqa: BLE001
    print(name, "not importable:", e)
try:
  import torch
  print("torch", torch.__version__, "| cuda", torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:  # noqa: BLE001
  print("torch: not importable:", e)
EOF
} 2>&1 | tee "$OUT/env.txt"

run() {  # run NAME LIMIT ARGS...: one goal script, its tables teed to $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "== $name: $PY -m benchmarks.$name $* --json $OUT/$name.json (limit ${limit}s)" \
    | tee "$OUT/$name.txt"
  timeout "$limit" "$PY" -m "benchmarks.$name" "$@" --json "$OUT/$name.json" 2>&1 \
    | grep -v -E "^(WARNING|I0000|E0000|W0000)" | tee -a "$OUT/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start ))s" | tee -a "$OUT/$name.txt"
}

run fwd_bwd "$LIMIT_FWD" "${FWD_ARGS[@]}"
run vae_step "$LIMIT_VAE" "${VAE_ARGS[@]}"
run variance "$LIMIT_VAR" "${VAR_ARGS[@]}"
echo "total: $(( $(date +%s) - start ))s" | tee -a "$OUT/env.txt"
