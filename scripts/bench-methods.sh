#!/usr/bin/env bash
# The search step of each method against first-order DARTS' (`nas bench search`), alternating
# the methods round by round on one machine; prints each method's median step time over the
# rounds and its ratio to first order's.
#
#   scripts/bench-methods.sh [ROUNDS]
#
# Environment: NAS (default target/release/nas), CHANNELS (16), LAYERS (8), BATCH (64),
# STEPS (3), WARMUP (1), SPACE (darts), METHODS (see below; each an argument list, `;`-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
NAS=${NAS:-target/release/nas}
CHANNELS=${CHANNELS:-16}
LAYERS=${LAYERS:-8}
BATCH=${BATCH:-64}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-1}
SPACE=${SPACE:-darts}
METHODS=${METHODS:-"--method first-order;--method beta-darts;--method sdarts --perturb rs;--method sdarts --perturb adv;--method drnas;--method drnas --reg kl"}
IFS=';' read -r -a ARGS <<<"$METHODS"
declare -A TIMES
for r in $(seq "$ROUNDS"); do
  for a in "${ARGS[@]}"; do
    t=$("$NAS" bench search --space "$SPACE" $a --channels "$CHANNELS" --layers "$LAYERS" --batch-size "$BATCH" \
        --steps "$STEPS" --warmup "$WARMUP" | python3 -c 'import json,sys; print(json.load(sys.stdin)["step_s_median"])')
    TIMES[$a]="${TIMES[$a]:-} $t"
    echo "round $r: $a: $t s" >&2
  done
done
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
base=$(median ${TIMES[${ARGS[0]}]})
printf '| %-32s | %12s | %8s |\n' "method" "step s (med)" "ratio"
printf '|%s|%s|%s|\n' "----------------------------------" "--------------" "----------"
for a in "${ARGS[@]}"; do
  m=$(median ${TIMES[$a]})
  printf '| %-32s | %12.3f | %8.2f |\n' "$a" "$m" "$(python3 -c "print($m/$base)")"
done
