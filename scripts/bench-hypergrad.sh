#!/usr/bin/env bash
# Cost of one architecture step for every hypergradient method, side by side with the PyTorch
# reference's first and second order: `nas bench search` for each method and with
# --weights-only, `darts_ref.py` for first, second and weights_only, alternating runs for
# ROUNDS rounds (the machines are noisy). Prints the median step time, the architecture step
# alone (step − weight-only step) and the gradient evaluations per architecture step.
#
#   scripts/bench-hypergrad.sh ROUNDS "SIZE ARGS (nas)" "SIZE ARGS (darts_ref.py)"
#   scripts/bench-hypergrad.sh 3 "--channels 8 --layers 5 --batch-size 16" "--C 8 --layers 5 --batch 16"
#
# Environment: NAS (binary, default target/release/nas), PYTHON (with torch), REF (path of
# darts_ref.py), THREADS (default 2), WITH_FAD=1 to add forward mode (two timed steps after
# one untimed: its tangent costs 2·dim(α) evaluations per step, 448 in the darts space, so a
# step takes minutes on the CPU).
set -euo pipefail
rounds=${1:?rounds}; nas_size=${2:?nas size args}; ref_size=${3:?ref size args}
NAS=${NAS:-target/release/nas}
PYTHON=${PYTHON:-python3}
REF=${REF:-../shared/bench/darts_ref.py}
THREADS=${THREADS:-2}
methods=(
  "weights-only|--weights-only"
  "first-order|--method first-order"
  "second-order|--method second-order"
  "unrolled K=2|--method unrolled --unroll-steps 2"
  "unrolled K=3|--method unrolled --unroll-steps 3"
  "bda K=2|--method bda --unroll-steps 2"
  "iaptt-gm K=2|--method iaptt-gm --unroll-steps 2"
  "implicit J=5|--method implicit --neumann-steps 5"
  "implicit-cg J=5|--method implicit-cg --cg-steps 5"
)
if [ "${WITH_FAD:-0}" = 1 ]; then
  methods+=("fad|--method fad --steps 2 --warmup 1")
fi
refs=("weights-only|weights_only" "first-order|first" "second-order|second")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
  for m in "${methods[@]}"; do
    # shellcheck disable=SC2086
    echo "nas|${m%%|*}|$("$NAS" --threads "$THREADS" bench search $nas_size ${m#*|})" >>"$out"
  done
  for r in "${refs[@]}"; do
    # shellcheck disable=SC2086
    echo "ref|${r%%|*}|$("$PYTHON" "$REF" --threads "$THREADS" $ref_size --mode ${r#*|} | tail -n1)" >>"$out"
  done
done
"$PYTHON" - "$out" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, name, js = line.rstrip("\n").split("|", 2)
    runs.setdefault((who, name), []).append(json.loads(js))
med = {k: statistics.median(r["step_s_median"] for r in v) for k, v in runs.items()}
ref2 = med[("ref", "second-order")] - med[("ref", "weights-only")]
print(f"{'':4} {'method':16} {'step s':>8} {'α step s':>9} {'α/PyTorch 2nd':>14} {'grad evals':>10}")
for (who, name), v in runs.items():
    alpha = med[(who, name)] - med[(who, "weights-only")]
    evals = v[0].get("grad_evals_per_arch_step", "")
    print(f"{who:4} {name:16} {med[(who, name)]:8.3f} {alpha:9.3f} {alpha / ref2:14.2f} {evals:>10}")
PY
