#!/usr/bin/env bash
# GPU check, run on a machine with an NVIDIA GPU from a prebuilt CUDA build (the GPU machine
# needs no Rust). Two stages, so that a failure costs one short rerun:
#   tests  the CUDA test executables (every op, and search/retrain steps, against the CPU),
#          then a short search, PC-DARTS search, retrain and evaluation on the GPU;
#   bench  the four benchmark rows side by side with the PyTorch reference on the same GPU:
#          step time, peak GPU memory, launches per step, and the projected time of a 50-epoch
#          PC-DARTS CIFAR-10 search.
# Results go to $OUT/gpu-check.json (or ./gpu-check.json) as one JSON object; the log to stdout.
#
# Prepare here (no GPU needed), then carry device-bin/ to the GPU machine:
#   scripts/build-device-bin.sh            # builds nas, the CUDA test executables, copies the rest
# On the GPU machine, from the repository root:
#   scripts/gpu-check.sh [tests|bench|all] [device-bin]
# Environment: PYTHON (with torch; default python3), DEVICE (default cuda:0), STEPS (10),
# WARMUP (3).
set -uo pipefail
stage=${1:-all}
dir=${2:-device-bin}
NAS="$dir/nas"; REF="$dir/darts_ref.py"; PROF="$(dirname "$0")/ref_profile.py"
PYTHON=${PYTHON:-python3}; DEVICE=${DEVICE:-cuda:0}; STEPS=${STEPS:-10}; WARMUP=${WARMUP:-3}
summary="${OUT:-.}/gpu-check.json"
# shellcheck disable=SC1091
[ -f "$dir/device-env.sh" ] && source "$dir/device-env.sh"
# CUPTI (launch counts) from the Python environment's NVIDIA wheels, when there is one.
if [ -z "${NAS_CUPTI_LIB:-}" ]; then
  cupti=$(find / -path /proc -prune -o -name 'libcupti.so*' -print 2>/dev/null | sort | head -n1)
  [ -n "$cupti" ] && export NAS_CUPTI_LIB="$cupti"
fi
work=$(mktemp -d)
results="$work/results.jsonl"
: > "$results"
status=0
record() { # name, ok (true/false), seconds, json detail
  printf '{"name": %s, "ok": %s, "seconds": %s, "detail": %s}\n' "$(printf '%s' "$1" | "$PYTHON" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" "$2" "$3" "${4:-null}" >> "$results"
}
check() { # name, command...
  local name=$1; shift
  echo; echo "== $name"; echo "\$ $*"
  local t0=$SECONDS
  if "$@"; then record "$name" true $((SECONDS - t0)); else echo "FAILED: $name"; record "$name" false $((SECONDS - t0)); status=1; fi
}

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$NAS" --version || { echo "no nas binary in $dir"; exit 1; }

if [ "$stage" = tests ] || [ "$stage" = all ]; then
  for t in "$dir"/tests/*; do
    [ -x "$t" ] && check "test $(basename "$t")" env NAS_TEST_DEVICE="$DEVICE" "$t" --test-threads 1
  done
  check "search quick, 1 epoch" "$NAS" search --preset quick --epochs 1 --device "$DEVICE" --out "$work/search" -q
  check "search pc-darts, 1 epoch" "$NAS" search --preset pc-darts --epochs 1 --arch-start-epoch 0 --subset 2048 --device "$DEVICE" --out "$work/pc" -q
  check "train 1 epoch" "$NAS" train --genotype "$work/search" --channels 16 --layers 8 --epochs 1 --subset 2048 --device "$DEVICE" --out "$work/train" -q
  check "eval" "$NAS" eval --run "$work/train"
fi

if [ "$stage" = bench ] || [ "$stage" = all ]; then
  bench() { # name, nas bench args, reference args
    local name=$1 a b
    echo; echo "== bench: $name"
    local t0=$SECONDS
    a=$("$NAS" bench $2 --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" --count-launches | tail -n1)
    b=$("$PYTHON" "$PROF" --ref "$REF" $3 --device cuda --steps "$STEPS" --warmup "$WARMUP" | tail -n1)
    local row
    if row=$("$PYTHON" - "$name" "$a" "$b" <<'PY'
import json, sys
name, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
row = {"nas": a, "pytorch": b, "time_ratio": a["step_s_median"] / b["step_s_median"]}
if a.get("peak_mem_bytes") and b.get("peak_mem_bytes"):
    row["mem_ratio"] = a["peak_mem_bytes"] / b["peak_mem_bytes"]
print(f"{name}: nas {a['step_s_median']:.4f} s, pytorch {b['step_s_median']:.4f} s, ratio {row['time_ratio']:.3f}; "
      f"peak mem nas {a.get('peak_mem_bytes')} pytorch {b.get('peak_mem_bytes')}; "
      f"launches nas {a.get('launches_per_step')} pytorch {b.get('launches_per_step')}", file=sys.stderr)
print(json.dumps(row))
PY
); then record "bench $name" true $((SECONDS - t0)) "$row"; else record "bench $name" false $((SECONDS - t0)); status=1; fi
  }
  bench "first-order C16 L8 B64" "search --channels 16 --layers 8 --batch-size 64 --method first-order" "--C 16 --layers 8 --batch 64 --mode first"
  bench "second-order C16 L8 B64" "search --channels 16 --layers 8 --batch-size 64 --method second-order" "--C 16 --layers 8 --batch 64 --mode second"
  bench "PC-DARTS K4 C16 L8 B256" "search --channels 16 --layers 8 --batch-size 256 --partial-channels 4" "--C 16 --layers 8 --batch 256 --k 4 --mode first"
  bench "PC-DARTS K4 C16 L8 B256 weights only" "search --channels 16 --layers 8 --batch-size 256 --partial-channels 4 --weights-only" "--C 16 --layers 8 --batch 256 --k 4 --mode weights_only"
  bench "train DARTS_V2 C36 L20 B96" "train --genotype DARTS_V2 --channels 36 --layers 20 --batch-size 96" "--net eval --genotype DARTS_V2 --C 36 --layers 20 --batch 96"
fi

# The summary, with the projected 50-epoch PC-DARTS CIFAR-10 search: 25,000 search-train
# images in batches of 256 (97 steps an epoch), weights only for the first 15 epochs, and an
# evaluation pass over the 25,000 search-valid images (98 batches) after each epoch.
"$PYTHON" - "$results" "$summary" "$status" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = {"ok": sys.argv[3] == "0", "checks": rows}
bench = {r["name"][6:]: r["detail"] for r in rows if r["name"].startswith("bench ") and r["detail"]}
full, wo = bench.get("PC-DARTS K4 C16 L8 B256"), bench.get("PC-DARTS K4 C16 L8 B256 weights only")
if full and wo:
    t_full, t_wo = full["nas"]["step_s_median"], wo["nas"]["step_s_median"]
    t_eval = full["nas"].get("eval_step_s_median", t_wo / 3)
    secs = 15 * 97 * t_wo + 35 * 97 * t_full + 50 * 98 * t_eval
    out["pc_darts_50_epochs_projected_minutes"] = secs / 60
    print(f"projected 50-epoch PC-DARTS CIFAR-10 search: {secs / 60:.1f} min", file=sys.stderr)
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(f"summary: {sys.argv[2]}", file=sys.stderr)
PY
rm -rf "$work"
echo
[ "$status" = 0 ] && echo "== GPU check passed" || echo "== GPU check had failures"
exit "$status"
