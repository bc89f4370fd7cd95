//! Per-kernel timings at the shapes of the DARTS search network (C=16, batch 64, 32×32, the
//! first cells), forward and forward+backward, next to the same op in plain candle (grouped
//! `conv2d` for depthwise convolutions, composed ops otherwise). Ids name the op, its
//! parameters and the shape: `dwconv/k3-s1-d1/B64-C16-32x32/fwd/kernel`.
//!
//! fwd+bwd includes `sum_all().backward()`, whose broadcast gradient and gradient
//! accumulation candle materialises; `baseline/sum-backward` times that part alone.
//!
//!     cargo bench -p nas-kernels --bench kernels

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nas_kernels::{self as ops, composed, DwParams, PoolKind, PwParams};

const B: usize = 64;
const C: usize = 16;
const HW: usize = 32;

fn input(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
}

/// Times `f` forward only and forward + backward (gradients of every input).
fn bench_op(
    c: &mut Criterion,
    group: &str,
    case: &str,
    impl_name: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Tensor,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    let shape = format!("{case}/B{B}-C{C}-{HW}x{HW}");
    g.bench_function(BenchmarkId::new(format!("{shape}/fwd"), impl_name), |b| b.iter(|| f(inputs)));
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    g.bench_function(BenchmarkId::new(format!("{shape}/fwd+bwd"), impl_name), |b| {
        b.iter(|| f(&ts).sum_all().unwrap().backward().unwrap())
    });
    g.finish();
}

fn depthwise(c: &mut Criterion) {
    for (k, s, d) in [(3, 1, 1), (5, 1, 1), (3, 1, 2), (5, 1, 2), (3, 2, 1), (5, 2, 2)] {
        let p = DwParams { stride: s, padding: d * (k - 1) / 2, dilation: d };
        let ins = [input(&[B, C, HW, HW]), input(&[C, 1, k, k])];
        let case = format!("k{k}-s{s}-d{d}");
        bench_op(c, "dwconv", &case, "kernel", &ins, |t| ops::depthwise_conv2d(&t[0], &t[1], p).unwrap());
        bench_op(c, "dwconv", &case, "candle-grouped-conv2d", &ins, |t| {
            t[0].conv2d(&t[1], p.padding, p.stride, p.dilation, C).unwrap()
        });
    }
    let p = DwParams { stride: 1, padding: 1, dilation: 1 };
    let ins = [input(&[B, C, HW, HW]), input(&[C, 1, 3, 3]), input(&[C, C, 1, 1])];
    bench_op(c, "dw_pw", "k3-s1-d1", "kernel", &ins, |t| ops::dw_pw(&t[0], &t[1], &t[2], p).unwrap());
    bench_op(c, "dw_pw", "k3-s1-d1", "candle-grouped-conv2d+conv2d", &ins, |t| {
        t[0].conv2d(&t[1], 1, 1, 1, C).unwrap().conv2d(&t[2], 0, 1, 1, 1).unwrap()
    });
}

fn pooling(c: &mut Criterion) {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for s in [1, 2] {
            let ins = [input(&[B, C, HW, HW])];
            let case = format!("{kind:?}-s{s}").to_lowercase();
            bench_op(c, "pool3x3", &case, "kernel", &ins, |t| ops::pool3x3(&t[0], kind, s).unwrap());
            bench_op(c, "pool3x3", &case, "candle-composed", &ins, |t| composed::pool3x3(&t[0], kind, s).unwrap());
        }
    }
}

fn pointwise_and_norm(c: &mut Criterion) {
    for (s, o) in [(1, 0), (2, 1)] {
        let p = PwParams { stride: s, offset: o };
        let ins = [input(&[B, C, HW, HW]), input(&[C, C, 1, 1])];
        let case = format!("s{s}-o{o}");
        bench_op(c, "conv1x1", &case, "kernel", &ins, |t| ops::conv1x1(&t[0], &t[1], p).unwrap());
        bench_op(c, "conv1x1", &case, "candle-matmul", &ins, |t| composed::conv1x1(&t[0], &t[1], p).unwrap());
    }
    let ins = [input(&[B, C, HW, HW])];
    bench_op(c, "batch_norm", "train", "kernel", &ins, |t| ops::batch_norm_train(&t[0], 1e-5, None).unwrap());
    bench_op(c, "batch_norm", "train", "candle-composed", &ins, |t| composed::batch_norm_train(&t[0], 1e-5).unwrap().0);
    let ins = [input(&[B, C, HW, HW]), input(&[B, C, HW, HW]), input(&[1])];
    bench_op(c, "axpy", "acc+w*y", "kernel", &ins, |t| ops::axpy(&t[0], &t[1], &t[2]).unwrap());
    bench_op(c, "axpy", "acc+w*y", "candle-composed", &ins, |t| (&t[0] + t[1].broadcast_mul(&t[2]).unwrap()).unwrap());
}

fn relu(c: &mut Criterion) {
    let ins = [input(&[B, C, HW, HW])];
    bench_op(c, "relu", "plain", "kernel", &ins, |t| ops::relu(&t[0]).unwrap());
    bench_op(c, "relu", "plain", "candle", &ins, |t| t[0].relu().unwrap());
    let p = PwParams { stride: 1, offset: 0 };
    let ins = [input(&[B, C, HW, HW]), input(&[C, C, 1, 1])];
    bench_op(c, "relu_conv1x1", "s1-o0", "kernel", &ins, |t| ops::relu_conv1x1(&t[0], &t[1], p).unwrap());
}

/// The sliding-window kernels at the three plane sizes of the search network (C=16 at 32×32,
/// 32 at 16×16, 64 at 8×8, batch 64): ReLU·depthwise·1×1 (the sep/dil conv stage without its
/// batch norm) for each kernel size, dilation and stride of the DARTS ops, and the 3×3 pools.
/// fwd+bwd is the output's own backward (candle seeds it with ones), no sum in between.
/// `cargo bench -p nas-kernels --bench kernels -- window`
fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    g.sample_size(20);
    for (c_, hw) in [(C, HW), (2 * C, HW / 2), (4 * C, HW / 4)] {
        let shape = format!("B{B}-C{c_}-{hw}x{hw}");
        let var = |s: &[usize]| Var::from_tensor(&input(s)).unwrap();
        let x = var(&[B, c_, hw, hw]);
        let mut cases: Vec<(String, Box<dyn Fn() -> Tensor>)> = Vec::new();
        for (k, s, d) in [(3, 1, 1), (5, 1, 1), (3, 1, 2), (5, 1, 2), (3, 2, 1), (5, 2, 2)] {
            let p = DwParams { stride: s, padding: d * (k - 1) / 2, dilation: d };
            let (x, wd, wp) = (x.as_tensor().clone(), var(&[c_, 1, k, k]), var(&[c_, c_, 1, 1]));
            cases.push((
                format!("relu_dw_pw-k{k}-s{s}-d{d}"),
                Box::new(move || ops::relu_dw_pw(&x, wd.as_tensor(), wp.as_tensor(), p).unwrap()),
            ));
        }
        for (kind, s) in [(PoolKind::Max, 1), (PoolKind::Avg, 1), (PoolKind::Max, 2)] {
            let x = x.as_tensor().clone();
            cases.push((
                format!("pool3x3-{kind:?}-s{s}").to_lowercase(),
                Box::new(move || ops::pool3x3(&x, kind, s).unwrap()),
            ));
        }
        for (name, f) in &cases {
            g.bench_function(BenchmarkId::new(format!("{name}/{shape}"), "fwd"), |b| b.iter(f));
            g.bench_function(BenchmarkId::new(format!("{name}/{shape}"), "fwd+bwd"), |b| {
                b.iter(|| f().backward().unwrap())
            });
        }
    }
    g.finish();
}

fn baseline(c: &mut Criterion) {
    let ins = [input(&[B, C, HW, HW])];
    bench_op(c, "baseline", "sum-backward", "candle", &ins, |t| t[0].clone());
}

criterion_group!(benches, baseline, relu, depthwise, pooling, pointwise_and_norm, window);
criterion_main!(benches);
