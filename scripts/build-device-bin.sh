#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine into device-bin/ (git-ignored): the
# `nas` binary and the CUDA test executables (tests/cuda_*.rs of every crate) built with
# `--features cuda`, the device environment script and the PyTorch reference. Runs here, no
# GPU needed; uses its own target directory so the CPU build stays cached.
#   scripts/build-device-bin.sh [SHARED_DIR]     (default ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-${NAS_SHARED_DIR:-../shared}}
# shellcheck disable=SC1091
source "$shared/cuda/setup-cuda-build.sh"
export CARGO_TARGET_DIR="${NAS_CUDA_TARGET_DIR:-$HOME/.cache/nas-cuda-target}"
cargo build --release --features cuda -p nas-cli
rm -rf device-bin && mkdir -p device-bin/tests
cp "$CARGO_TARGET_DIR/release/nas" device-bin/
cp "$shared/cuda/device-env.sh" "$shared/bench/darts_ref.py" device-bin/
# The CUDA test executables: cargo prints each test binary it builds as a JSON artifact.
cargo test --release --workspace --features cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"].startswith("cuda_"):
        shutil.copy(m["executable"], "device-bin/tests/" + m["target"]["name"])
        print("test executable:", m["target"]["name"])
'
du -sh device-bin
