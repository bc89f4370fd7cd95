#!/usr/bin/env bash
# The roofline of docs/performance.md: each step's FLOPs and bytes against the machine's
# measured limits (`nas bench machine`: peak f32 FMA rate, STREAM triad bandwidth).
#
#   FLOPs per step = 2 × mult-adds per image (forward) × batch × forwards' worth of work:
#     a first-order search step is two forward+backward passes (weights on a training
#     batch, α on a validation batch) ≈ 6 forwards; a training step one pass ≈ 3 forwards.
#   bytes per step ≥ 2 × bytes allocated (every buffer written once and read at least once;
#     a step's tensors are far larger than the caches).
#
# NAS names the binary (default target/release/nas), THREADS the threads (2), STEPS the timed
# steps of each benchmark (3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nas="${NAS:-$here/../target/release/nas}"
threads="${THREADS:-2}"
steps="${STEPS:-3}"
run() { "$nas" --threads "$threads" "$@" -q | tail -n1; }
machine="$(run bench machine)"
fo="$(run bench search --method first-order --channels 16 --layers 8 --batch-size 64 --steps "$steps")"
t16="$(run bench train --channels 16 --layers 8 --batch-size 32 --steps "$steps")"
t36="$(run bench train --channels 36 --layers 20 --batch-size 96 --steps "$steps")"
python3 - "$machine" "$fo" "$t16" "$t36" <<'PY'
import json, sys
m = json.loads(sys.argv[1])
fma, fma512, bw = m["fma_gflops"] * 1e9, (m["fma_gflops_avx512"] or 0) * 1e9, m["triad_gbytes_per_s"] * 1e9
peak = max(fma, fma512)
print(f"machine ({m['threads']} threads): FMA {fma / 1e9:.0f} GFLOP/s at the kernels' width (AVX2), "
      f"{fma512 / 1e9:.0f} at AVX-512; triad {bw / 1e9:.1f} GB/s")
print("| step | GFLOP | GB moved (≥) | s | GFLOP/s | % of FMA peak (AVX2 / widest) | GB/s | % of triad | s at the FMA peak | s at the triad |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, raw, forwards in [("first-order search, C=16 L=8 B=64", sys.argv[2], 6),
                            ("training, DARTS_V2 C=16 L=8 B=32", sys.argv[3], 3),
                            ("training, DARTS_V2 C=36 L=20 B=96", sys.argv[4], 3)]:
    r = json.loads(raw)
    batch = (r["config"].get("search") or r["config"].get("train"))["data"]["batch_size"]
    flops = 2 * r["mult_adds_per_image"] * batch * forwards
    moved = 2 * r["alloc_bytes_per_step_median"]
    t = r["step_s_median"]
    print(f"| {name} | {flops / 1e9:.1f} | {moved / 1e9:.1f} | {t:.3f} | {flops / t / 1e9:.0f} | "
          f"{100 * flops / t / fma:.0f}% / {100 * flops / t / peak:.0f}% | {moved / t / 1e9:.1f} | "
          f"{100 * moved / t / bw:.0f}% | {flops / peak:.3f} | {moved / bw:.3f} |")
PY
