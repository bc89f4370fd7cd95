#!/usr/bin/env bash
# Resident memory (RSS) of one `nas` run, epoch by epoch: checks that memory stays flat over a
# long run (requirement: RSS growth from epoch 2 to the last epoch ≤ 5%).
#
# Usage:
#   scripts/rss-over-epochs.sh [-i SECONDS] NAS_BIN OUTDIR NAS_ARGS...
# e.g.
#   scripts/rss-over-epochs.sh target/release/nas /tmp/rss-search \
#       --threads 1 search --preset quick --epochs 30 --subset 2000 --seed 1 -q
#
# The script creates OUTDIR (which must not exist or be empty), starts
# `NAS_BIN NAS_ARGS... --out OUTDIR/run` (so NAS_ARGS must not contain --out; global flags such as
# --threads go before the subcommand) with its output in OUTDIR/nas.log, and samples VmRSS and
# VmHWM from /proc/PID/status every SECONDS (default 0.5). An epoch ends when OUTDIR/run/metrics.jsonl
# gains a complete line (each epoch appends one JSON record); at that moment the epoch number
# (1-based: the record's line number), the current RSS, the epoch's peak (the highest RSS sampled
# since the previous epoch ended: the `nas` binary returns its free pages to the kernel at each
# epoch's end, so the RSS at that moment alone understates what the epoch held) and the peak RSS
# so far (VmHWM) are recorded. It prints one line per epoch (also in OUTDIR/rss.tsv), then a
# summary: the epoch's peak at epoch 2 and at the last epoch, the growth in percent between them,
# the highest sampled RSS and the wall time. (The RSS at an epoch's end is shown, not judged: it
# depends on whether the sample fell before or after the purge.)
# Exit status: the run's, or 1 if the growth exceeds MAX_GROWTH_PCT (environment, default 5).
# Needs bash, coreutils and python3 (standard library, for the summary's arithmetic); Linux /proc.
set -euo pipefail

interval=0.5
if [[ ${1:-} == -i ]]; then
    interval=${2:?-i needs a number of seconds}
    shift 2
fi
if (($# < 3)); then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
nas=$1
outdir=$2
shift 2
for a in "$@"; do
    if [[ $a == --out || $a == --out=* ]]; then
        echo "rss-over-epochs: pass no --out; the run goes to OUTDIR/run" >&2
        exit 2
    fi
done
if [[ -e $outdir && -n $(ls -A "$outdir") ]]; then
    echo "rss-over-epochs: $outdir exists and is not empty" >&2
    exit 2
fi
mkdir -p "$outdir"
run=$outdir/run
metrics=$run/metrics.jsonl
tsv=$outdir/rss.tsv
log=$outdir/nas.log
max_growth=${MAX_GROWTH_PCT:-5}

# kB value of FIELD (VmRSS, VmHWM) in /proc/PID/status; empty once the process is gone.
status_kb() {
    local line
    while read -r line; do
        if [[ $line == "$2:"* ]]; then
            line=${line#*:}
            line=${line% kB}
            echo $((line))
            return
        fi
    done <"/proc/$1/status" 2>/dev/null || true
}
# Complete lines (newline-terminated records) in metrics.jsonl.
lines() {
    if [[ -f $metrics ]]; then wc -l <"$metrics"; else echo 0; fi
}

echo "command: $nas $* --out $run" >"$outdir/command.txt"
start=$(date +%s.%N)
"$nas" "$@" --out "$run" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' INT TERM

printf 'epoch\trss_kib\tepoch_peak_kib\thwm_kib\tt_s\n' >"$tsv"
seen=0
rss='' hwm='' peak=0 epoch_peak=0
while kill -0 "$pid" 2>/dev/null; do
    r=$(status_kb "$pid" VmRSS)
    h=$(status_kb "$pid" VmHWM)
    [[ -n $r && -n $h ]] || break  # exited (zombie) between the checks
    rss=$r hwm=$h
    ((rss > peak)) && peak=$rss
    ((rss > epoch_peak)) && epoch_peak=$rss
    n=$(lines)
    while ((seen < n)); do
        seen=$((seen + 1))
        now=$(date +%s.%N)
        printf '%d\t%d\t%d\t%d\t%s\n' "$seen" "$rss" "$epoch_peak" "$hwm" \
            "$(python3 -c "print(f'{$now - $start:.1f}')")" >>"$tsv"
        epoch_peak=$rss
    done
    sleep "$interval"
done
set +e
wait "$pid"
rc=$?
set -e
end=$(date +%s.%N)
# Epochs whose record appeared after the last sample (the process had already exited): the
# last sampled values, flagged in the table.
n=$(lines)
while ((seen < n)); do
    seen=$((seen + 1))
    printf '%d\t%s\t%s\t%s\tafter-exit\n' "$seen" "${rss:-0}" "$epoch_peak" "${hwm:-0}" >>"$tsv"
done

python3 - "$tsv" "$peak" "$start" "$end" "$rc" "$max_growth" "$log" <<'EOF'
import sys
tsv, peak, start, end, rc, max_growth, log = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(tsv)][1:]
mib = lambda kb: int(kb) / 1024
print(f"{'epoch':>5} {'rss_mib':>9} {'peak_mib':>9} {'hwm_mib':>9} {'t_s':>8}")
for e, r, p, h, t in rows:
    print(f"{e:>5} {mib(r):9.1f} {mib(p):9.1f} {mib(h):9.1f} {t:>8}")
wall = float(end) - float(start)
print(f"run exit status {rc}; wall time {wall:.1f} s; highest sampled RSS {mib(peak):.1f} MiB")
if int(rc) != 0:
    print(f"the run failed: see {log}")
if len(rows) < 2:
    print(f"only {len(rows)} epoch(s) recorded: no growth figure")
    sys.exit(int(rc) or 1)
r2, rl = mib(rows[1][2]), mib(rows[-1][2])
g = (rl / r2 - 1) * 100
ok = g <= float(max_growth)
print(f"epoch's peak RSS: epoch 2 {r2:.1f} MiB, epoch {rows[-1][0]} {rl:.1f} MiB, growth {g:+.2f}% "
      f"({'ok' if ok else 'FAIL'}: limit {max_growth}%); HWM at the end {mib(rows[-1][3]):.1f} MiB")
sys.exit(int(rc) or (0 if ok else 1))
EOF
