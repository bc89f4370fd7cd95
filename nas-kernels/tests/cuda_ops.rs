//! Every custom op on CUDA against the CPU kernels: forward and all gradients (f32 to 1e-4
//! relative, f64 to 1e-10), batch-norm running buffers included. Runs only when
//! NAS_TEST_DEVICE names a CUDA device (`cuda` or `cuda:N`); otherwise each test returns at
//! once, so a CPU machine never calls into the driver.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use nas_kernels::testing::max_rel_err;
use nas_kernels::{self as ops, DwParams, PoolKind, PwParams, RunningStats, StageWeights};
use rand::{Rng, SeedableRng};

type Op = dyn Fn(&[Tensor], Option<RunningStats<'_>>) -> candle_core::Result<Tensor>;

/// The CUDA device of NAS_TEST_DEVICE, or None (the test is skipped).
fn cuda() -> Option<Device> {
    nas_kernels::testing::cuda_test_device()
}

fn randn(shape: &[usize], seed: u64, dtype: DType, dev: &Device) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_device(dev).unwrap()
}

struct Run {
    y: Tensor,
    grads: Vec<Tensor>,
    running: Option<(Tensor, Tensor)>,
}

fn run(f: &Op, shapes: &[&[usize]], dtype: DType, dev: &Device, bn_channels: Option<usize>) -> Run {
    let vars: Vec<Var> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Var::from_tensor(&randn(s, 100 + i as u64, dtype, dev)).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let running = bn_channels.map(|c| {
        (
            Var::from_tensor(&randn(&[c], 7, dtype, dev)).unwrap(),
            Var::from_tensor(&(randn(&[c], 8, dtype, dev).abs().unwrap() + 0.5).unwrap()).unwrap(),
        )
    });
    let r = running.as_ref().map(|(m, v)| RunningStats { mean: m, var: v, momentum: 0.1 });
    let y = f(&ts, r).unwrap();
    let gy = randn(y.dims(), 9, dtype, dev);
    let g = (y.clone() * gy).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = vars.iter().map(|v| g.get(v.as_tensor()).expect("a gradient").clone()).collect();
    Run { y, grads, running: running.map(|(m, v)| (m.as_tensor().clone(), v.as_tensor().clone())) }
}

/// The op on CUDA equals the op on the CPU, value, gradients and running statistics.
fn same_on_cuda(name: &str, f: &Op, shapes: &[&[usize]], bn_channels: Option<usize>) {
    let Some(dev) = cuda() else { return };
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-10)] {
        let cpu = run(f, shapes, dtype, &Device::Cpu, bn_channels);
        let gpu = run(f, shapes, dtype, &dev, bn_channels);
        assert!(gpu.y.device().is_cuda(), "{name}: output not on the GPU");
        let err = |a: &Tensor, b: &Tensor| max_rel_err(&a.to_device(&Device::Cpu).unwrap(), b).unwrap();
        assert_eq!(gpu.y.dims(), cpu.y.dims(), "{name}: shape");
        let e = err(&gpu.y, &cpu.y);
        assert!(e <= tol, "{name} {dtype:?}: forward rel err {e:e}");
        for (i, (a, b)) in gpu.grads.iter().zip(&cpu.grads).enumerate() {
            let e = err(a, b);
            assert!(e <= tol, "{name} {dtype:?}: gradient {i} rel err {e:e}");
        }
        if let (Some((gm, gv)), Some((cm, cv))) = (&gpu.running, &cpu.running) {
            let (em, ev) = (err(gm, cm), err(gv, cv));
            assert!(em <= tol && ev <= tol, "{name} {dtype:?}: running stats rel err {em:e}, {ev:e}");
        }
    }
}

const DARTS_CONVS: [(usize, usize, usize); 4] = [(3, 1, 1), (5, 2, 1), (3, 2, 2), (5, 4, 2)];

#[test]
fn depthwise_and_fused_convolutions() {
    for (k, padding, dilation) in DARTS_CONVS {
        for stride in [1, 2] {
            let p = DwParams { stride, padding, dilation };
            for hw in [8, 7, 9] {
                let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::depthwise_conv2d(&t[0], &t[1], p);
                same_on_cuda(&format!("dw k{k} {p:?} {hw}"), &f, &[&[2, 3, hw, hw], &[3, 1, k, k]], None);
            }
            let shapes: [&[usize]; 3] = [&[3, 4, 8, 8], &[4, 1, k, k], &[5, 4, 1, 1]];
            let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::dw_pw(&t[0], &t[1], &t[2], p);
            same_on_cuda(&format!("dw_pw k{k} {p:?}"), &f, &shapes, None);
            let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::relu_dw_pw(&t[0], &t[1], &t[2], p);
            same_on_cuda(&format!("relu_dw_pw k{k} {p:?}"), &f, &[&[1, 4, 9, 9], &[4, 1, k, k], &[5, 4, 1, 1]], None);
        }
    }
}

#[test]
fn fused_stage_with_batch_statistics() {
    for (k, stride, dilation) in [(3, 1, 1), (5, 2, 2)] {
        let p = DwParams { stride, padding: dilation * (k - 1) / 2, dilation };
        let out = if stride == 1 { 7 } else { 4 };
        for (affine, drop, acc, relu) in
            [(true, true, true, true), (false, false, false, false), (true, false, true, false)]
        {
            let n = 4 * k * k + 5 * 4 + if affine { 10 } else { 0 };
            let f = move |t: &[Tensor], r: Option<RunningStats<'_>>| {
                let m = Tensor::new(&[1.25f64, 0.0, 1.25], t[0].device())?.to_dtype(t[0].dtype())?;
                let w = StageWeights { flat: &t[1], k, co: 5, affine };
                ops::dw_pw_bn_train(&t[0], w, p, relu, drop.then_some(&m), t.get(2), 1e-5, r)
            };
            let acc_shape = [3, 5, out, out];
            let flat = [n];
            let mut shapes: Vec<&[usize]> = vec![&[3, 4, 7, 7], &flat];
            if acc {
                shapes.push(&acc_shape);
            }
            same_on_cuda(&format!("stage k{k} s{stride} affine {affine} drop {drop} acc {acc}"), &f, &shapes, Some(5));
        }
    }
}

#[test]
fn batch_norm_and_channel_affine() {
    for dims in [[3usize, 4, 5, 5], [1, 4, 7, 7], [2, 4, 40, 40]] {
        let f = |t: &[Tensor], r: Option<RunningStats<'_>>| ops::batch_norm_train(&t[0], 1e-5, r);
        same_on_cuda(&format!("bn {dims:?}"), &f, &[&dims], Some(4));
        let f = |t: &[Tensor], r: Option<RunningStats<'_>>| {
            let m =
                Tensor::new(&[2.0f64, 0.0, 1.0], t[0].device())?.to_dtype(t[0].dtype())?.narrow(0, 0, t[0].dim(0)?)?;
            ops::batch_norm_affine_train(&t[0], &t[1], &t[2], Some(&m), 1e-5, r)
        };
        same_on_cuda(&format!("bn affine {dims:?}"), &f, &[&dims, &[4], &[4]], Some(4));
    }
    let f = |t: &[Tensor], _: Option<RunningStats<'_>>| ops::channel_affine(&t[0], &t[1], &t[2]);
    same_on_cuda("channel affine", &f, &[&[2, 3, 4, 4], &[3], &[3]], None);
}

#[test]
fn pools() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for stride in [1, 2] {
            for hw in [8, 7] {
                let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::pool3x3(&t[0], kind, stride);
                same_on_cuda(&format!("{kind:?} pool s{stride} {hw}"), &f, &[&[2, 3, hw, hw]], None);
                // Ties: rounded values.
                let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| {
                    ops::pool3x3(&(&t[0] * 2.0)?.round()?, kind, stride)
                };
                same_on_cuda(&format!("{kind:?} pool ties s{stride} {hw}"), &f, &[&[2, 3, hw, hw]], None);
            }
        }
    }
    for (k, s, hw) in [(5, 3, 8), (2, 2, 5)] {
        let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::avg_pool_valid(&t[0], k, s);
        same_on_cuda(&format!("avg_pool_valid k{k} s{s}"), &f, &[&[2, 3, hw, hw]], None);
    }
}

#[test]
fn pointwise_and_partial_channels() {
    for (stride, offset) in [(1, 0), (2, 0), (2, 1)] {
        for hw in [8, 7] {
            let p = PwParams { stride, offset };
            let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::conv1x1(&t[0], &t[1], p);
            same_on_cuda(&format!("conv1x1 {p:?} {hw}"), &f, &[&[3, 4, hw, hw], &[5, 4, 1, 1]], None);
            let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::relu_conv1x1(&t[0], &t[1], p);
            same_on_cuda(&format!("relu_conv1x1 {p:?} {hw}"), &f, &[&[3, 4, hw, hw], &[5, 4, 1, 1]], None);
        }
    }
    for (k, c, stride, hw) in [(4, 8, 1, 6), (4, 8, 2, 6), (2, 6, 2, 7)] {
        let ho = if stride == 2 { hw / 2 } else { hw };
        let f = move |t: &[Tensor], _: Option<RunningStats<'_>>| ops::pc_merge(&t[0], &t[1], k, stride);
        same_on_cuda(&format!("pc_merge K{k} s{stride}"), &f, &[&[2, c / k, ho, ho], &[2, c, hw, hw]], None);
    }
}

#[test]
fn elementwise() {
    let f = |t: &[Tensor], _: Option<RunningStats<'_>>| ops::relu(&t[0]);
    same_on_cuda("relu", &f, &[&[2, 3, 4, 4]], None);
    let f = |t: &[Tensor], _: Option<RunningStats<'_>>| ops::scale(&t[0], &t[1]);
    same_on_cuda("scale", &f, &[&[2, 3, 4, 4], &[1]], None);
    let f = |t: &[Tensor], _: Option<RunningStats<'_>>| ops::axpy(&t[0], &t[1], &t[2]);
    same_on_cuda("axpy", &f, &[&[2, 3, 4, 4], &[2, 3, 4, 4], &[1]], None);
    let f = |t: &[Tensor], _: Option<RunningStats<'_>>| {
        let m = Tensor::new(&[1.25f64, 0.0, 1.25], t[0].device())?.to_dtype(t[0].dtype())?;
        ops::scale_samples(&t[0], &m)
    };
    same_on_cuda("scale_samples", &f, &[&[3, 2, 4, 5]], None);
    // A large reduction (many block partial sums) for the mixed-op weight's gradient.
    let f = |t: &[Tensor], _: Option<RunningStats<'_>>| ops::scale(&t[0], &t[1]);
    same_on_cuda("scale large", &f, &[&[64, 16, 32, 32], &[1]], None);
}
