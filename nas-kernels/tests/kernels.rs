//! The custom CPU kernels against independent ground truth: gradients against central finite
//! differences in f64 for every stride/dilation/padding combination the DARTS ops use, and
//! forwards (and gradients) against the same ops composed from candle primitives.

use candle_core::{DType, Device, Tensor, Var};
use nas_kernels::testing::max_rel_err;
use nas_kernels::{self as ops, composed, DwParams, PoolKind, PwParams};
use rand::{Rng, SeedableRng};

type Op = dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// L = Σ f(inputs) ⊙ R for a fixed random R: a scalar whose gradient exercises every output.
fn loss(f: &Op, inputs: &[Tensor], r: &Tensor) -> Tensor {
    (f(inputs).unwrap() * r).unwrap().sum_all().unwrap()
}

/// Checks ∂L/∂input_i of the kernel against central differences, for every input.
fn fd_check(name: &str, f: &Op, shapes: &[&[usize]], tol: f64) {
    let inputs: Vec<Tensor> = shapes.iter().enumerate().map(|(i, s)| randn(s, 100 + i as u64)).collect();
    let out_shape = f(&inputs).unwrap().dims().to_vec();
    let r = randn(&out_shape, 7);
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = loss(f, &tensors, &r).backward().unwrap();
    let h = 1e-6;
    for (i, x) in inputs.iter().enumerate() {
        let analytic = grads.get(vars[i].as_tensor()).unwrap_or_else(|| panic!("{name}: no grad for input {i}"));
        let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mut numeric = vec![0.0; base.len()];
        for (j, num) in numeric.iter_mut().enumerate() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut ins = inputs.clone();
                ins[i] = Tensor::from_vec(v, x.shape(), &Device::Cpu).unwrap();
                loss(f, &ins, &r).to_scalar::<f64>().unwrap()
            };
            *num = (eval(h) - eval(-h)) / (2.0 * h);
        }
        let numeric = Tensor::from_vec(numeric, x.shape(), &Device::Cpu).unwrap();
        let e = max_rel_err(analytic, &numeric).unwrap();
        assert!(e < tol, "{name}: gradient of input {i} rel err {e}");
    }
}

/// The kernel and the composed version agree in value and gradients (f32 and f64).
fn same_as_composed(name: &str, fast: &Op, reference: &Op, shapes: &[&[usize]]) {
    for dtype in [DType::F64, DType::F32] {
        let inputs: Vec<Tensor> =
            shapes.iter().enumerate().map(|(i, s)| randn(s, 200 + i as u64).to_dtype(dtype).unwrap()).collect();
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        let run = |f: &Op| {
            let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let y = f(&ts).unwrap();
            let r = randn(y.dims(), 9).to_dtype(dtype).unwrap();
            let g = (y.clone() * r).unwrap().sum_all().unwrap().backward().unwrap();
            let gs: Vec<Tensor> = vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
            (y, gs)
        };
        let (y1, g1) = run(fast);
        let (y2, g2) = run(reference);
        assert_eq!(y1.dims(), y2.dims(), "{name}: shapes");
        let e = max_rel_err(&y1, &y2).unwrap();
        assert!(e < tol, "{name} {dtype:?}: forward rel err {e}");
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let e = max_rel_err(a, b).unwrap();
            assert!(e < tol, "{name} {dtype:?}: gradient {i} rel err {e}");
        }
    }
}

/// (kernel, padding, dilation) of sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5.
const DARTS_CONVS: [(usize, usize, usize); 4] = [(3, 1, 1), (5, 2, 1), (3, 2, 2), (5, 4, 2)];

#[test]
fn depthwise_conv_gradients_and_forward() {
    for (k, padding, dilation) in DARTS_CONVS {
        for stride in [1, 2] {
            for hw in [8, 7] {
                let p = DwParams { stride, padding, dilation };
                let name = format!("dw k{k} s{stride} p{padding} d{dilation} {hw}x{hw}");
                let fast = move |t: &[Tensor]| ops::depthwise_conv2d(&t[0], &t[1], p);
                let slow = move |t: &[Tensor]| composed::depthwise_conv2d(&t[0], &t[1], p);
                fd_check(&name, &fast, &[&[2, 3, hw, hw], &[3, 1, k, k]], 1e-7);
                same_as_composed(&name, &fast, &slow, &[&[2, 3, hw, hw], &[3, 1, k, k]]);
            }
        }
    }
}

#[test]
fn fused_depthwise_pointwise_gradients_and_forward() {
    for (k, padding, dilation) in DARTS_CONVS {
        for stride in [1, 2] {
            let p = DwParams { stride, padding, dilation };
            let name = format!("dw_pw k{k} s{stride} p{padding} d{dilation}");
            let fast = move |t: &[Tensor]| ops::dw_pw(&t[0], &t[1], &t[2], p);
            let slow = move |t: &[Tensor]| {
                composed::conv1x1(
                    &composed::depthwise_conv2d(&t[0], &t[1], p)?,
                    &t[2],
                    PwParams { stride: 1, offset: 0 },
                )
            };
            let shapes: [&[usize]; 3] = [&[3, 4, 8, 8], &[4, 1, k, k], &[5, 4, 1, 1]];
            fd_check(&name, &fast, &shapes, 1e-7);
            same_as_composed(&name, &fast, &slow, &shapes);
            // With the leading ReLU fused in: against ReLU then the composed op.
            let name = format!("relu_dw_pw k{k} s{stride} p{padding} d{dilation}");
            let fast = move |t: &[Tensor]| ops::relu_dw_pw(&t[0], &t[1], &t[2], p);
            let slow = move |t: &[Tensor]| {
                composed::conv1x1(
                    &composed::depthwise_conv2d(&t[0].relu()?, &t[1], p)?,
                    &t[2],
                    PwParams { stride: 1, offset: 0 },
                )
            };
            fd_check(&name, &fast, &shapes, 1e-7);
            same_as_composed(&name, &fast, &slow, &shapes);
        }
    }
}

#[test]
fn pooling_gradients_and_forward() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for stride in [1, 2] {
            for hw in [6, 5] {
                let name = format!("{kind:?} pool s{stride} {hw}x{hw}");
                let fast = move |t: &[Tensor]| ops::pool3x3(&t[0], kind, stride);
                let slow = move |t: &[Tensor]| composed::pool3x3(&t[0], kind, stride);
                fd_check(&name, &fast, &[&[2, 3, hw, hw]], 1e-7);
                same_as_composed(&name, &fast, &slow, &[&[2, 3, hw, hw]]);
            }
        }
    }
}

#[test]
fn valid_average_pooling_gradients_and_forward() {
    // The auxiliary head's 5×5/3 on 8×8 maps, plus windows that leave a ragged border.
    for (k, s, hw) in [(5, 3, 8), (5, 3, 9), (2, 2, 5), (3, 1, 4)] {
        let name = format!("avg_pool_valid k{k} s{s} {hw}x{hw}");
        let fast = move |t: &[Tensor]| ops::avg_pool_valid(&t[0], k, s);
        let slow = move |t: &[Tensor]| composed::avg_pool_valid(&t[0], k, s);
        fd_check(&name, &fast, &[&[2, 3, hw, hw]], 1e-7);
        same_as_composed(&name, &fast, &slow, &[&[2, 3, hw, hw]]);
    }
    // Closed form: one 2×2 window over 1..4 averages to 2.5.
    let x = Tensor::from_vec(vec![1f64, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let y = ops::avg_pool_valid(&x, 2, 1).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(y, vec![2.5]);
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    // A constant plane: every window is all ties; PyTorch routes each gradient to the first
    // element of its window in row-major order.
    let x = Var::from_tensor(&Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu).unwrap()).unwrap();
    let y = ops::pool3x3(x.as_tensor(), PoolKind::Max, 1).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    // Windows start at (0,0) for outputs (0..2, 0..2), (0,1) for (0..2, 2), (1,0) …
    assert_eq!(gx, vec![4.0, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn pointwise_conv_gradients_and_forward() {
    // Co > Ci and Ci > Co (the weight gradient's product is taken the other way round).
    for ((stride, offset), co) in [(1, 0), (2, 0), (2, 1)].into_iter().flat_map(|s| [(s, 5), (s, 2)]) {
        for hw in [8, 7] {
            let p = PwParams { stride, offset };
            let name = format!("conv1x1 s{stride} o{offset} {hw}x{hw} Co{co}");
            let fast = move |t: &[Tensor]| ops::conv1x1(&t[0], &t[1], p);
            let slow = move |t: &[Tensor]| composed::conv1x1(&t[0], &t[1], p);
            fd_check(&name, &fast, &[&[3, 4, hw, hw], &[co, 4, 1, 1]], 1e-7);
            same_as_composed(&name, &fast, &slow, &[&[3, 4, hw, hw], &[co, 4, 1, 1]]);
            let name = format!("relu_conv1x1 s{stride} o{offset} {hw}x{hw} Co{co}");
            let fast = move |t: &[Tensor]| ops::relu_conv1x1(&t[0], &t[1], p);
            let slow = move |t: &[Tensor]| composed::conv1x1(&t[0].relu()?, &t[1], p);
            fd_check(&name, &fast, &[&[3, 4, hw, hw], &[co, 4, 1, 1]], 1e-7);
            same_as_composed(&name, &fast, &slow, &[&[3, 4, hw, hw], &[co, 4, 1, 1]]);
        }
    }
}

/// Dense convolution (im2col) against finite differences and candle's own `conv2d`: the
/// stems' 3×3 (stride 1 and 2, padding 1), 2×2 kernels with and without padding, a 5×5
/// whose window reaches two pixels into the padding, odd sizes and a batch of one.
#[test]
fn dense_conv_gradients_and_forward() {
    // Co 4 below Ci·K² and Co 14 above 12 = 3·2² (the weight gradient's product either way).
    for (k, stride, padding, hw, b, co) in [
        (3, 1, 1, 7, 2, 4),
        (3, 2, 1, 7, 2, 4),
        (3, 2, 1, 8, 1, 4),
        (2, 1, 0, 5, 2, 4),
        (2, 2, 1, 5, 2, 14),
        (5, 2, 2, 6, 2, 4),
        (3, 3, 0, 7, 1, 4),
    ] {
        let name = format!("conv2d k{k} s{stride} p{padding} {hw}x{hw} B{b} Co{co}");
        let fast = move |t: &[Tensor]| ops::conv2d(&t[0], &t[1], stride, padding);
        let slow = move |t: &[Tensor]| t[0].conv2d(&t[1], padding, stride, 1, 1);
        let shapes: [&[usize]; 2] = [&[b, 3, hw, hw], &[co, 3, k, k]];
        fd_check(&name, &fast, &shapes, 1e-7);
        same_as_composed(&name, &fast, &slow, &shapes);
        // Each output summed in PyTorch's (and candle's) order, (kh, kw, c) with fused
        // multiply-adds: the same f32 bits.
        let (x, w) =
            (randn(shapes[0], 31).to_dtype(DType::F32).unwrap(), randn(shapes[1], 32).to_dtype(DType::F32).unwrap());
        let (a, b) = (fast(&[x.clone(), w.clone()]).unwrap(), slow(&[x, w]).unwrap());
        let differ = a.ne(&b).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(differ, 0.0, "{name}: f32 outputs that differ from candle's in the last bits");
    }
}

#[test]
fn batch_norm_gradients_and_forward() {
    let fast = |t: &[Tensor]| ops::batch_norm_train(&t[0], 1e-5, None);
    let slow = |t: &[Tensor]| composed::batch_norm_train(&t[0], 1e-5).map(|(y, _)| y);
    fd_check("batch norm", &fast, &[&[3, 4, 5, 5]], 1e-6);
    same_as_composed("batch norm", &fast, &slow, &[&[3, 4, 5, 5]]);
    // The running statistics move towards the batch mean and the unbiased variance.
    let x = randn(&[3, 4, 5, 5], 1);
    let (rm, rv) = running_after(|r| ops::batch_norm_train(&x, 1e-5, Some(r)).map(|_| ()));
    let (mean, var) = batch_moments(&x);
    assert!(max_rel_err(&rm, &(mean * 0.1).unwrap()).unwrap() < 1e-12);
    assert!(max_rel_err(&rv, &((var * (0.1 * 75.0 / 74.0)).unwrap() + 0.9).unwrap()).unwrap() < 1e-12);

    let fast = |t: &[Tensor]| ops::channel_affine(&t[0], &t[1], &t[2]);
    let slow = |t: &[Tensor]| composed::channel_affine(&t[0], &t[1], &t[2]);
    fd_check("channel affine", &fast, &[&[2, 3, 4, 4], &[3], &[3]], 1e-7);
    same_as_composed("channel affine", &fast, &slow, &[&[2, 3, 4, 4], &[3], &[3]]);
}

#[test]
fn fused_affine_batch_norm_with_sample_factors() {
    // Drop-path style factors: one sample dropped, the others scaled by 1/keep.
    let m = Tensor::from_vec(vec![1.25f64, 0.0, 1.25], 3, &Device::Cpu).unwrap();
    for mask in [None, Some(m)] {
        let name = format!("bn affine, factors {}", mask.is_some());
        let mf = mask.clone();
        let fast = move |t: &[Tensor]| ops::batch_norm_affine_train(&t[0], &t[1], &t[2], mf.as_ref(), 1e-5, None);
        let ms = mask.clone();
        let slow = move |t: &[Tensor]| {
            let y = composed::channel_affine(&composed::batch_norm_train(&t[0], 1e-5)?.0, &t[1], &t[2])?;
            match &ms {
                Some(m) => y.broadcast_mul(&m.to_dtype(y.dtype())?.reshape((3, 1, 1, 1))?),
                None => Ok(y),
            }
        };
        let shapes: [&[usize]; 3] = [&[3, 4, 5, 5], &[4], &[4]];
        fd_check(&name, &fast, &shapes, 1e-6);
        same_as_composed(&name, &fast, &slow, &shapes);
    }
    // The running statistics are those of the input, whatever the factors.
    let x = randn(&[3, 4, 5, 5], 1);
    let plain = running_after(|r| ops::batch_norm_train(&x, 1e-5, Some(r)).map(|_| ()));
    let g = randn(&[4], 2);
    let m = Tensor::from_vec(vec![2.0f64, 0.0, 1.0], 3, &Device::Cpu).unwrap();
    let fused = running_after(|r| ops::batch_norm_affine_train(&x, &g, &g, Some(&m), 1e-5, Some(r)).map(|_| ()));
    assert!(max_rel_err(&plain.0, &fused.0).unwrap() < 1e-12);
    assert!(max_rel_err(&plain.1, &fused.1).unwrap() < 1e-12);
}

/// Per-channel batch mean and biased variance of x (B, C, H, W), shape (C,).
fn batch_moments(x: &Tensor) -> (Tensor, Tensor) {
    let mean = x.mean_keepdim((0, 2, 3)).unwrap();
    let var = x.broadcast_sub(&mean).unwrap().sqr().unwrap().mean_keepdim((0, 2, 3)).unwrap();
    (mean.flatten_all().unwrap(), var.flatten_all().unwrap())
}

/// The running mean and variance (from 0 and 1, momentum 0.1) after `f` ran a forward with
/// them.
fn running_after(f: impl FnOnce(ops::RunningStats<'_>) -> candle_core::Result<()>) -> (Tensor, Tensor) {
    let c = 4;
    let mean = Var::from_tensor(&Tensor::zeros(c, DType::F64, &Device::Cpu).unwrap()).unwrap();
    let var = Var::from_tensor(&Tensor::ones(c, DType::F64, &Device::Cpu).unwrap()).unwrap();
    f(ops::RunningStats { mean: &mean, var: &var, momentum: 0.1 }).unwrap();
    (mean.as_tensor().clone(), var.as_tensor().clone())
}

#[test]
fn fused_sep_stage_with_drop_path_and_accumulator() {
    // [ReLU →] dw → pw → BN(γ, β) → × m[b] [→ + acc], against the ops one by one.
    let m = Tensor::from_vec(vec![1.25f64, 0.0, 1.25], 3, &Device::Cpu).unwrap();
    for (k, stride, dilation) in [(3, 1, 1), (5, 2, 2)] {
        let p = DwParams { stride, padding: dilation * (k - 1) / 2, dilation };
        let out = if stride == 1 { 6 } else { 3 };
        for relu in [false, true] {
            for (mask, with_acc) in [(None, false), (Some(m.clone()), true)] {
                let name = format!("dw_pw_bn k{k} s{stride} relu {relu} drop {} acc {with_acc}", mask.is_some());
                let mf = mask.clone();
                let fast = move |t: &[Tensor]| {
                    let flat = Tensor::cat(&[t[1].flatten_all()?, t[2].flatten_all()?, t[3].clone(), t[4].clone()], 0)?;
                    let w = ops::StageWeights { flat: &flat, k, co: 5, affine: true };
                    ops::dw_pw_bn_train(&t[0], w, p, relu, mf.as_ref(), t.get(5), 1e-5, None)
                };
                let ms = mask.clone();
                let slow = move |t: &[Tensor]| {
                    let x = if relu { t[0].relu()? } else { t[0].clone() };
                    let y = composed::conv1x1(
                        &composed::depthwise_conv2d(&x, &t[1], p)?,
                        &t[2],
                        PwParams { stride: 1, offset: 0 },
                    )?;
                    let y = composed::channel_affine(&composed::batch_norm_train(&y, 1e-5)?.0, &t[3], &t[4])?;
                    let y = match &ms {
                        Some(m) => y.broadcast_mul(&m.to_dtype(y.dtype())?.reshape((3, 1, 1, 1))?)?,
                        None => y,
                    };
                    match t.get(5) {
                        Some(a) => a + y,
                        None => Ok(y),
                    }
                };
                let dw_shape = [4, 1, k, k];
                let acc_shape = [3, 5, out, out];
                let mut shapes: Vec<&[usize]> = vec![&[3, 4, 6, 6], &dw_shape, &[5, 4, 1, 1], &[5], &[5]];
                if with_acc {
                    shapes.push(&acc_shape);
                }
                fd_check(&name, &fast, &shapes, 1e-6);
                same_as_composed(&name, &fast, &slow, &shapes);
            }
        }
    }
}

#[test]
fn elementwise_gradients_and_forward() {
    let fast = |t: &[Tensor]| ops::relu(&t[0]);
    let slow = |t: &[Tensor]| t[0].relu();
    fd_check("relu", &fast, &[&[2, 3, 4, 4]], 1e-7);
    same_as_composed("relu", &fast, &slow, &[&[2, 3, 4, 4]]);

    let fast = |t: &[Tensor]| ops::scale(&t[0], &t[1]);
    let slow = |t: &[Tensor]| t[0].broadcast_mul(&t[1]);
    fd_check("scale", &fast, &[&[2, 3, 4, 4], &[1]], 1e-7);
    same_as_composed("scale", &fast, &slow, &[&[2, 3, 4, 4], &[1]]);

    let fast = |t: &[Tensor]| ops::axpy(&t[0], &t[1], &t[2]);
    let slow = |t: &[Tensor]| &t[0] + t[1].broadcast_mul(&t[2])?;
    fd_check("axpy", &fast, &[&[2, 3, 4, 4], &[2, 3, 4, 4], &[1]], 1e-7);
    same_as_composed("axpy", &fast, &slow, &[&[2, 3, 4, 4], &[2, 3, 4, 4], &[1]]);
}

#[test]
fn detached_inputs_get_no_gradient_work() {
    // Only the tracked input receives a gradient; the kernels skip the others.
    let x = Var::from_tensor(&randn(&[2, 3, 6, 6], 1)).unwrap();
    let w = randn(&[3, 1, 3, 3], 2);
    let p = DwParams { stride: 1, padding: 1, dilation: 1 };
    let g = ops::depthwise_conv2d(x.as_tensor(), &w, p).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(x.as_tensor()).is_some());
    assert!(g.get(&w).is_none());
}

/// The PC-DARTS edge output (concat of the op mixture with the bypass channels, 2×2 max
/// pooling on reducing edges, channel shuffle): FD gradients for both inputs and equality
/// with the composed narrow/pool/cat/shuffle version, even and odd sizes.
#[test]
fn pc_merge_gradients_and_forward() {
    for (k, c, stride, hw) in [(4, 8, 1, 6), (4, 8, 2, 6), (2, 6, 2, 7), (3, 6, 1, 5)] {
        let ho = if stride == 2 { hw / 2 } else { hw };
        let name = format!("pc_merge K{k} C{c} s{stride} {hw}x{hw}");
        let fast = move |t: &[Tensor]| ops::pc_merge(&t[0], &t[1], k, stride);
        let slow = move |t: &[Tensor]| ops::composed::pc_merge(&t[0], &t[1], k, stride);
        let shapes: [&[usize]; 2] = [&[2, c / k, ho, ho], &[2, c, hw, hw]];
        fd_check(&name, &fast, &shapes, 1e-7);
        same_as_composed(&name, &fast, &slow, &shapes);
    }
}

/// Drop path's per-sample scaling: FD gradient for x, the broadcast product for the value,
/// and no gradient for the factors.
#[test]
fn scale_samples_gradient_and_forward() {
    let m = Tensor::new(&[1.25f64, 0.0, 1.25], &Device::Cpu).unwrap();
    let (m1, m2) = (m.clone(), m.clone());
    let fast = move |t: &[Tensor]| ops::scale_samples(&t[0], &m1);
    let slow = move |t: &[Tensor]| t[0].broadcast_mul(&m2.to_dtype(t[0].dtype())?.reshape((3, 1, 1, 1))?);
    let shapes: [&[usize]; 1] = [&[3, 2, 4, 5]];
    fd_check("scale_samples", &fast, &shapes, 1e-7);
    same_as_composed("scale_samples", &fast, &slow, &shapes);
    let mv = Var::from_tensor(&m).unwrap();
    let x = Var::from_tensor(&randn(&[3, 2, 2, 2], 3)).unwrap();
    let g = ops::scale_samples(x.as_tensor(), mv.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(mv.as_tensor()).is_none());
}
