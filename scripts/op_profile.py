#!/usr/bin/env python3
"""Per-op profile of a `nas` run from `perf script` output (samples with call stacks).

Each sample is charged to the op it ran in: the innermost frame that names one of the
kernels' ops (`<nas_kernels::…::X as Kernels<N>>::fwd|bwd`, their CPU bodies), a candle tensor
method (`Tensor::add`, `Tensor::conv2d`, …), the optimiser, or candle's backward pass itself
(the gradient sums between ops); whether it ran in the backward pass (under
`Tensor::backward`) or the forward one is kept apart. With --bytes the samples are the
allocator probes of scripts/op-profile.sh and each weighs its `size=` (bytes allocated).

    perf script -i perf.data | python3 op_profile.py [--bytes] [--top N]
"""
import argparse
import re
import sys
from collections import Counter

RULES = [
    (re.compile(r"<nas_kernels::(?:\w+::)*(\w+) as nas_kernels::op::Kernels<\d+_usize>>::(?:cpu_)?(fwd|bwd)"), "{0} {1}"),
    (re.compile(r"^(?:cpu_fwd|bwd)<nas_kernels::(?:\w+::)*(\w+)>"), "{0}"),
    (re.compile(r"^nas_kernels::(?:\w+::)*(\w+)::cpu_(?:fwd|grads)"), "{0}"),
    (re.compile(r"nas_kernels::cpu::(?!simd|plane)(\w+)::([a-z_]\w*)"), "{0}::{1}"),
    (re.compile(r"^candle_core::tensor::Tensor::(\w+)"), "candle {0}"),
    (re.compile(r"^candle_core::tensor_cat::<impl candle_core::tensor::Tensor>::(\w+)"), "candle {0}"),
    (re.compile(r"^candle_core::conv::<impl candle_core::tensor::Tensor>::(\w+)"), "candle {0}"),
    (re.compile(r"^nas_core::optim::(?:\w+::)*(\w+)"), "optimiser ({0})"),
    (re.compile(r"^candle_core::backprop::"), "candle backward (gradient sums)"),
]
# Charged only when no frame of the sample matches RULES (work on a pool thread whose stack
# does not reach the op that handed it out).
FALLBACK = [
    (re.compile(r"candle_core::cpu_backend::(?:\w+::)*(\w+)"), "candle cpu {0}"),
    (re.compile(r"nas_kernels::cpu::(\w+)"), "{0}"),
    (re.compile(r"gemm_\w+::"), "matrix products (gemm)"),
]
BACKWARD = re.compile(r"candle_core::backprop::<impl candle_core::tensor::Tensor>::backward")
STEP = re.compile(r"^nas_(?:eval|search|core)::")
FRAME = re.compile(r"^\s+[0-9a-f]+ (.+?)(?:\+0x[0-9a-f]+)? \((.*)\)$")
SIZE = re.compile(r"size=(\d+)")


def samples(lines):
    head, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
        elif head is None:
            head = line
        else:
            m = FRAME.match(line)
            if m:
                frames.append(m.group(1))
    if head is not None:
        yield head, frames


def first_match(frames, rules):
    for sym in frames:
        for rule, fmt in rules:
            m = rule.search(sym)
            if m:
                return fmt.format(*m.groups())
    return None


def classify(frames):
    op = first_match(frames, RULES) or first_match(frames, FALLBACK)
    if op is None:
        op = "other (data, loss, bookkeeping)" if any("nas_" in f for f in frames) else "outside the step"
    # The kernels' own names tell their pass; a pool thread's stack does not reach the step.
    if not op.startswith("candle") or not any(STEP.search(f) for f in frames):
        return op
    phase = "backward" if any(BACKWARD.search(f) for f in frames) else "forward"
    return f"{op} [{phase}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", action="store_true", help="weigh allocator probe samples by their size=")
    ap.add_argument("--min-bytes", type=int, default=4096, help="with --bytes, skip smaller allocations")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    total, by_op = 0, Counter()
    for head, frames in samples(sys.stdin):
        w = 1
        if a.bytes:
            m = SIZE.search(head)
            if not m or int(m.group(1)) < a.min_bytes:
                continue
            w = int(m.group(1))
        op = classify(frames)
        if op == "outside the step":
            continue
        by_op[op] += w
        total += w
    unit = "bytes allocated" if a.bytes else "samples"
    print(f"| op | share of {unit} |")
    print("|---|---:|")
    for op, w in by_op.most_common(a.top):
        print(f"| {op} | {100 * w / total:.1f}% |")
    rest = total - sum(w for _, w in by_op.most_common(a.top))
    if rest:
        print(f"| (the rest) | {100 * rest / total:.1f}% |")


if __name__ == "__main__":
    main()
