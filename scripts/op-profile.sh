#!/usr/bin/env bash
# Per-op profile of one `nas` command (docs/performance.md, "Roofline and per-op profile"):
# where the time goes (perf samples with call stacks) or, with BYTES=1, where the allocated
# bytes go (uprobes on jemalloc's malloc; needs root for the probes). Each sample is charged
# to its op by scripts/op_profile.py.
#
#   scripts/op-profile.sh bench train --channels 16 --layers 8 --batch-size 32 --steps 5 --threads 2
#   BYTES=1 scripts/op-profile.sh bench search --channels 8 --layers 5 --batch-size 16 --steps 1 --warmup 0
#
# NAS names the binary (default: target/release/nas), FREQ the sampling rate (499), TOP the
# rows shown (25).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nas="${NAS:-$here/../target/release/nas}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ "${BYTES:-0}" == 1 ]]; then
    probes=(-e nasalloc:jm -e nasalloc:jmx)
    perf probe -q --del 'nasalloc:*' 2>/dev/null || true
    perf probe -q -x "$nas" --add 'nasalloc:jm=_rjem_malloc size=%di:u64'
    perf probe -q -x "$nas" --add 'nasalloc:jmx=_rjem_mallocx size=%di:u64'
    trap 'perf probe -q --del "nasalloc:*" 2>/dev/null || true; rm -rf "$tmp"' EXIT
    perf record -q "${probes[@]}" --call-graph dwarf,32768 -o "$tmp/perf.data" -- "$nas" "$@" -q >/dev/null
    perf script -i "$tmp/perf.data" 2>/dev/null | python3 "$here/op_profile.py" --bytes --top "${TOP:-25}"
else
    perf record -q -F "${FREQ:-499}" --call-graph dwarf,16384 -o "$tmp/perf.data" -- "$nas" "$@" -q >/dev/null
    perf script -i "$tmp/perf.data" 2>/dev/null | python3 "$here/op_profile.py" --top "${TOP:-25}"
fi
