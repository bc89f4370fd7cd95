#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU and a prebuilt CUDA binary, runs a short search,
# retrain and evaluation on CUDA, any CUDA test executables, and the step benchmarks against
# the PyTorch reference on the same GPU (`darts_ref.py --device cuda`).
#
# Build here (no GPU needed), then copy what the GPU machine needs into device-bin/ (git-ignored):
#   source ../shared/cuda/setup-cuda-build.sh
#   CARGO_TARGET_DIR=~/.cache/nas-cuda-target cargo build --release --features cuda
#   mkdir -p device-bin && cp ~/.cache/nas-cuda-target/release/nas ../shared/cuda/device-env.sh ../shared/bench/darts_ref.py device-bin/
#   # optional: CUDA test executables (cargo test --release --features cuda --no-run) into device-bin/tests/
# On the GPU machine, from the repository root:
#   scripts/gpu-check.sh [device-bin]
# Environment: PYTHON (with torch, default python3), DEVICE (default cuda:0).
set -uo pipefail
dir=${1:-device-bin}
NAS="$dir/nas"; REF="$dir/darts_ref.py"
PYTHON=${PYTHON:-python3}; DEVICE=${DEVICE:-cuda:0}
# shellcheck disable=SC1091
[ -f "$dir/device-env.sh" ] && source "$dir/device-env.sh"
status=0
step() { echo; echo "== $*"; }
run() { echo "\$ $*"; "$@" || { echo "FAILED: $*"; status=1; }; }
out=$(mktemp -d)

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
run "$NAS" --version

step "CUDA test executables"
for t in "$dir"/tests/*; do [ -x "$t" ] && run env NAS_TEST_DEVICE="$DEVICE" "$t" --test-threads 1; done

step "short search, retrain and evaluation on $DEVICE"
run "$NAS" search --preset quick --epochs 1 --device "$DEVICE" --out "$out/search" -q
run "$NAS" search --preset pc-darts --epochs 1 --arch-start-epoch 0 --subset 2048 --device "$DEVICE" --out "$out/pc" -q
run "$NAS" train --genotype "$out/search" --channels 16 --layers 8 --epochs 1 --subset 2048 --device "$DEVICE" --out "$out/train" -q
run "$NAS" eval --run "$out/train"

step "benchmarks: nas vs PyTorch on the same GPU (step_s_median, peak memory)"
bench() { # name, nas args, ref args
  local a b
  a=$("$NAS" bench $2 --device "$DEVICE" --steps 10 --warmup 3 | tail -n1)
  b=$("$PYTHON" "$REF" $3 --device cuda --steps 10 --warmup 3 | tail -n1)
  "$PYTHON" - "$1" "$a" "$b" <<'PY'
import json, sys
name, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ra = a["step_s_median"] / b["step_s_median"]
print(f"{name}: nas {a['step_s_median']:.4f} s, pytorch {b['step_s_median']:.4f} s, ratio {ra:.3f}; "
      f"peak mem nas {a.get('peak_mem_bytes')} pytorch {b.get('peak_mem_bytes', b.get('max_memory_allocated'))}")
PY
}
bench "first-order C16 L8 B64" "search --channels 16 --layers 8 --batch-size 64 --method first-order" "--C 16 --layers 8 --batch 64 --mode first"
bench "second-order C16 L8 B64" "search --channels 16 --layers 8 --batch-size 64 --method second-order" "--C 16 --layers 8 --batch 64 --mode second"
bench "PC-DARTS K4 C16 L8 B256" "search --channels 16 --layers 8 --batch-size 256 --partial-channels 4" "--C 16 --layers 8 --batch 256 --k 4 --mode first"
bench "train DARTS_V2 C36 L20 B96" "train --genotype DARTS_V2 --channels 36 --layers 20 --batch-size 96" "--net eval --genotype DARTS_V2 --C 36 --layers 20 --batch 96"

rm -rf "$out"
echo
[ "$status" = 0 ] && echo "== GPU check passed" || echo "== GPU check had failures"
exit "$status"
