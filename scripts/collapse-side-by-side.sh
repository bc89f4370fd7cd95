#!/usr/bin/env bash
# DARTS' collapse onto skip connections, side by side: each method searches R-DARTS' S2
# (skip_connect, sep_conv_3x3) and S3 (none, skip_connect, sep_conv_3x3) spaces at the same
# small size, and the table counts the skip_connect ops of each derived normal cell (of 8).
# `pt` is DARTS-PT's selection (`nas select --method pt`) on the first-order DARTS supernet.
# Interrupted runs are resumed and finished ones kept when the script runs again.
#
#   scripts/collapse-side-by-side.sh [OUT_DIR]
#
# Environment: NAS (the binary, default target/release/nas), DATA (default synthetic),
# EPOCHS (15), SUBSET (1024), BATCH (32), CHANNELS (8), LAYERS (5), SEED (2),
# SPACES ("s2 s3"), METHODS ("first-order beta-darts sdarts-rs drnas pt sdarts-adv"),
# PT_INTERVAL (1, epochs between PT's projections).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-collapse-runs}
NAS=${NAS:-target/release/nas}
DATA=${DATA:-synthetic}
EPOCHS=${EPOCHS:-15}
SUBSET=${SUBSET:-1024}
BATCH=${BATCH:-32}
CHANNELS=${CHANNELS:-8}
LAYERS=${LAYERS:-5}
SEED=${SEED:-2}
SPACES=${SPACES:-"s2 s3"}
METHODS=${METHODS:-"first-order beta-darts sdarts-rs drnas pt sdarts-adv"}
PT_INTERVAL=${PT_INTERVAL:-1}
mkdir -p "$OUT"

skips() {
  python3 -c 'import json,sys; g=json.load(open(sys.argv[1])); print(sum(op=="skip_connect" for op,_ in g["normal"]))' "$1"
}

method_args() {
  case "$1" in
    sdarts-rs) echo "--method sdarts --perturb rs" ;;
    sdarts-adv) echo "--method sdarts --perturb adv" ;;
    *) echo "--method $1" ;;
  esac
}

printf '%-12s' method
for s in $SPACES; do printf ' %14s' "$s skips (s)"; done
echo
for m in $METHODS; do
  printf '%-12s' "$m"
  for s in $SPACES; do
    run="$OUT/$s-$m"
    start=$(date +%s)
    if [ "$m" = pt ]; then
      base="$OUT/$s-first-order"
      [ -f "$base/genotype.json" ] || { printf ' %14s' "no darts run"; continue; }
      [ -f "$run/genotype.json" ] || "$NAS" select --run "$base" --method pt --proj-interval "$PT_INTERVAL" \
        --out "$run" -q >"$OUT/$s-$m.log" 2>&1 || { printf ' %14s' failed; continue; }
    else
      if [ -f "$run/checkpoint.safetensors" ] && [ ! -f "$run/genotype.json" ]; then
        "$NAS" search --resume --out "$run" -q >>"$OUT/$s-$m.log" 2>&1 || { printf ' %14s' failed; continue; }
      elif [ ! -f "$run/genotype.json" ]; then
        "$NAS" search --space "$s" $(method_args "$m") --data "$DATA" \
          --epochs "$EPOCHS" --subset "$SUBSET" --batch-size "$BATCH" --channels "$CHANNELS" \
          --layers "$LAYERS" --seed "$SEED" --out "$run" -q >"$OUT/$s-$m.log" 2>&1 \
          || { printf ' %14s' failed; continue; }
      fi
    fi
    printf ' %14s' "$(skips "$run/genotype.json") ($(( $(date +%s) - start )))"
  done
  echo
done
