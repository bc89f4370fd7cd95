#!/usr/bin/env bash
# Side-by-side step timing: `nas bench search` (or `bench train` with WHAT=train) against the PyTorch reference darts_ref.py,
# alternating runs (the machines are noisy), reporting the median of the per-run medians and
# the ratio nas/PyTorch, and the peak resident memory (max RSS, GNU time) of both processes.
#
#   scripts/bench-vs-ref.sh ROUNDS "NAS ARGS" "REF ARGS"
#   scripts/bench-vs-ref.sh 3 "--channels 8 --layers 5 --batch-size 16 --method first-order" \
#                             "--C 8 --layers 5 --batch 16 --mode first"
#   WHAT=train scripts/bench-vs-ref.sh 3 "--genotype DARTS_V2 --channels 16 --layers 8 --batch-size 32" \
#                             "--net eval --genotype DARTS_V2 --C 16 --layers 8 --batch 32"
#
# Environment: NAS (binary, default target/release/nas), PYTHON (with torch), REF (path of
# darts_ref.py), THREADS (default 2), WHAT (search or train, default search), BEFORE (a
# second binary, e.g. of the commit before a change: run before NAS in every round, and its
# median, ratio to PyTorch and NAS's ratio to it reported too).
set -euo pipefail
rounds=${1:?rounds}; nas_args=${2:?nas args}; ref_args=${3:?ref args}
NAS=${NAS:-target/release/nas}
PYTHON=${PYTHON:-python3}
REF=${REF:-../shared/bench/darts_ref.py}
THREADS=${THREADS:-2}
WHAT=${WHAT:-search}
field() { "$PYTHON" -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
rss=$(mktemp)
trap 'rm -f "$rss"' EXIT
ours=(); theirs=(); ours_rss=(); theirs_rss=(); before=()
for _ in $(seq "$rounds"); do
  if [ -n "${BEFORE:-}" ]; then
    # shellcheck disable=SC2086
    before+=("$("$BEFORE" --threads "$THREADS" bench "$WHAT" $nas_args | field step_s_median)")
  fi
  # shellcheck disable=SC2086
  ours+=("$(/usr/bin/time -f %M -o "$rss" "$NAS" --threads "$THREADS" bench "$WHAT" $nas_args | field step_s_median)")
  ours_rss+=("$(tail -n1 "$rss")")
  # shellcheck disable=SC2086
  theirs+=("$(/usr/bin/time -f %M -o "$rss" "$PYTHON" "$REF" --threads "$THREADS" $ref_args | field step_s_median)")
  theirs_rss+=("$(tail -n1 "$rss")")
done
"$PYTHON" - "${ours[*]}" "${theirs[*]}" "${ours_rss[*]}" "${theirs_rss[*]}" "${before[*]:-}" <<'PY'
import statistics, sys
a, b, ra, rb = ([float(x) for x in arg.split()] for arg in sys.argv[1:5])
before = [float(x) for x in sys.argv[5].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"nas      step_s_median per run: {a} -> median {ma:.3f}")
print(f"pytorch  step_s_median per run: {b} -> median {mb:.3f}")
print(f"ratio nas/pytorch: {ma / mb:.3f}")
if before:
    m0 = statistics.median(before)
    print(f"before   step_s_median per run: {before} -> median {m0:.3f}")
    print(f"ratio before/pytorch: {m0 / mb:.3f}; nas/before: {ma / m0:.3f}")
pa, pb = statistics.median(ra) / 2**20, statistics.median(rb) / 2**20
print(f"peak RSS: nas {pa:.2f} GiB, pytorch {pb:.2f} GiB, ratio {pa / pb:.3f}")
PY
