//! NaN and infinity through the kernels as through PyTorch's ops, so that a diverging run
//! stops at the step where a value went wrong instead of training on. ReLU and max pooling
//! (padded 3×3, and the PC-DARTS 2×2 bypass) against PyTorch's outputs and gradients on NaN,
//! ±∞, ±0 and ties; a NaN placed in the input of every other op (convolutions, the fused
//! ReLU+convolution ops and stage, batch norm in training and evaluation form, pooling, the
//! mixed-op sums) and of a cell-like chain of them must reach every output and gradient that
//! depends on that input, as PyTorch's arithmetic carries it, and nothing else. Each on the
//! CPU kernels (f32, f64) and on the CUDA kernels' bodies compiled for the host.
//!
//! The PyTorch values below come from (torch 2.x, CPU, float64):
//!
//! ```python
//! import torch
//! import torch.nn.functional as F
//! nan, inf = float("nan"), float("inf")
//! x = torch.tensor([nan, inf, -inf, -0.0, 0.0, 1.0, -1.0, 2.5], dtype=torch.float64, requires_grad=True)
//! y = torch.relu(x)
//! (gx,) = torch.autograd.grad(y, x, torch.arange(1.0, 9.0, dtype=torch.float64))
//! print("relu", y.tolist(), gx.tolist())
//! p = torch.tensor([[-inf, -inf, 1, nan, 2], [-inf, -inf, 3, 3, inf], [0.5, nan, -inf, 1, 1], [-1, -2, inf, -inf, 4]],
//!                  dtype=torch.float64).reshape(1, 1, 4, 5)
//! for s in (1, 2):
//!     xp = p.clone().requires_grad_()
//!     y, idx = F.max_pool2d(xp, 3, s, 1, return_indices=True)
//!     (gx,) = torch.autograd.grad(y, xp, torch.arange(1.0, y.numel() + 1, dtype=torch.float64).reshape(y.shape))
//!     print("maxpool3 s", s, y.flatten().tolist(), idx.flatten().tolist(), gx.flatten().tolist())
//! q = torch.tensor([[1, nan, 2, 2], [nan, 0, 2, -inf], [-inf, -inf, inf, 1], [-inf, -inf, inf, inf]],
//!                  dtype=torch.float64).reshape(1, 1, 4, 4)
//! xq = q.clone().requires_grad_()
//! y, idx = F.max_pool2d(xq, 2, 2, return_indices=True)
//! (gx,) = torch.autograd.grad(y, xq, torch.arange(1.0, y.numel() + 1, dtype=torch.float64).reshape(y.shape))
//! print("maxpool2", y.flatten().tolist(), idx.flatten().tolist(), gx.flatten().tolist())
//! ```

use candle_core::{DType, Device, Tensor, Var};
use nas_kernels::cpu::Float;
use nas_kernels::cuda::host::{self, SepShape, StageShape};
use nas_kernels::{self as ops, DwParams, PoolKind, PwParams, RunningStats, StageWeights};
use rand::{Rng, SeedableRng};

type Res<T> = candle_core::Result<T>;

const NAN: f64 = f64::NAN;
const INF: f64 = f64::INFINITY;

fn rand_vec(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn to<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

fn back<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| candle_core::WithDType::to_f64(x)).collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// `got` is PyTorch's `want` exactly: NaN where it is NaN, the same infinities, the same
/// finite values and the same sign of zero.
fn same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { g == w && g.is_sign_negative() == w.is_sign_negative() };
        assert!(ok, "{what}: element {i} is {g}, PyTorch gives {w}\n got {got:?}\nwant {want:?}");
    }
}

/// The CPU op `f` in `dt` on `inputs`: its output, then the gradient of Σ out·gy with respect
/// to each input (gy fixed, in [0.5, 1.5)), all flattened into one list.
fn cpu_run(dt: DType, f: &dyn Fn(&[Tensor]) -> Res<Tensor>, inputs: &[(Vec<f64>, Vec<usize>)]) -> Vec<f64> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|(v, d)| {
            let t = Tensor::from_vec(v.clone(), d.as_slice(), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
            Var::from_tensor(&t).unwrap()
        })
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let gy = Tensor::from_vec(rand_vec(y.elem_count(), 7, 0.5, 1.5), y.dims(), &Device::Cpu).unwrap();
    let grads = (&y * gy.to_dtype(dt).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = values(&y);
    for v in &vars {
        out.extend(grads.get(v.as_tensor()).map(values).unwrap_or_default());
    }
    out
}

/// The output gradient the host runs use for an output of `n` values (as `cpu_run`'s).
fn gy<T: Float>(n: usize) -> Vec<T> {
    to(&rand_vec(n, 7, 0.5, 1.5))
}

/// Runs `f` (outputs and gradients, flattened) on `x` with x[at] set to 1e3, then 2e3, then
/// NaN. A value on which the two finite runs disagree depends on x[at] and must be NaN in the
/// third, as PyTorch's arithmetic makes it (a large value also wins every max-pool window, as
/// a NaN does); every other value must be what the finite runs gave. Some value must turn NaN.
fn nan_reaches(what: &str, x: &[f64], at: usize, f: &dyn Fn(&[f64]) -> Vec<f64>) {
    let with = |v: f64| {
        let mut x = x.to_vec();
        x[at] = v;
        f(&x)
    };
    let (a, b, n) = (with(1e3), with(2e3), with(NAN));
    assert!(a.len() == b.len() && a.len() == n.len(), "{what}: lengths");
    let mut reached = 0;
    for i in 0..a.len() {
        assert!(a[i].is_finite() && b[i].is_finite(), "{what}: value {i} is not finite without a NaN");
        if a[i] != b[i] {
            assert!(n[i].is_nan(), "{what}: value {i} depends on the input but is {} when it is NaN", n[i]);
            reached += 1;
        } else {
            assert!(n[i] == a[i], "{what}: value {i} does not depend on the input but is {} when it is NaN", n[i]);
        }
    }
    assert!(reached > 0, "{what}: the NaN reached nothing");
}

/// `case(dt)` for the CPU kernels in f32 and f64.
fn cpu_both(case: impl Fn(DType)) {
    case(DType::F32);
    case(DType::F64);
}

// ReLU and max pooling against PyTorch's values.

const RELU_X: [f64; 8] = [NAN, INF, -INF, -0.0, 0.0, 1.0, -1.0, 2.5];
const RELU_Y: [f64; 8] = [NAN, INF, 0.0, -0.0, 0.0, 1.0, 0.0, 2.5];
/// ∂x for ∂y = 1..8: threshold_backward passes the gradient where y is not ≤ 0 (NaN too).
const RELU_GX: [f64; 8] = [1.0, 2.0, 0.0, 0.0, 0.0, 6.0, 0.0, 8.0];

#[test]
fn relu_follows_pytorch_on_nan_infinities_and_signed_zero() {
    let g: Vec<f64> = (1..=8).map(f64::from).collect();
    cpu_both(|dt| {
        let x = Var::from_tensor(&Tensor::new(&RELU_X, &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
        let y = ops::relu(x.as_tensor()).unwrap();
        same(&format!("relu {dt:?}"), &values(&y), &RELU_Y);
        let gt = Tensor::new(g.as_slice(), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
        let grads = (&y * gt).unwrap().sum_all().unwrap().backward().unwrap();
        same(&format!("relu ∂x {dt:?}"), &values(grads.get(x.as_tensor()).unwrap()), &RELU_GX);
    });
    fn host_case<T: Float>() {
        let y = host::relu(&to::<T>(&RELU_X)).unwrap();
        same("host relu", &back(&y), &RELU_Y);
        same(
            "host relu ∂x",
            &back(&host::relu_backward(&y, &to::<T>(&(1..=8).map(f64::from).collect::<Vec<_>>())).unwrap()),
            &RELU_GX,
        );
    }
    host_case::<f32>();
    host_case::<f64>();
}

/// A 4×5 plane with a window of −∞ in a corner, NaNs (two in some windows), ±∞ and ties.
const POOL_X: [f64; 20] =
    [-INF, -INF, 1.0, NAN, 2.0, -INF, -INF, 3.0, 3.0, INF, 0.5, NAN, -INF, 1.0, 1.0, -1.0, -2.0, INF, -INF, 4.0];
/// PyTorch's max_pool2d(3, s, padding 1) of POOL_X, and ∂x for ∂y = 1, 2, …, for s = 1, 2.
/// (Its indices: s1 [0, 7, 3, 3, 3, 11, 11, 11, 3, 3, 11, 11, 11, 9, 9, 11, 11, 11, 17, 19],
/// s2 [0, 3, 3, 11, 11, 9]: the last NaN of a window, the first of tied maxima, the first
/// in-image pixel of a window of −∞.)
const POOL_S1_Y: [f64; 20] =
    [-INF, 3.0, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, INF, INF, NAN, NAN, NAN, INF, 4.0];
const POOL_S1_GX: [f64; 20] =
    [1.0, 0.0, 0.0, 31.0, 0.0, 0.0, 0.0, 2.0, 0.0, 29.0, 0.0, 108.0, 0.0, 0.0, 0.0, 0.0, 0.0, 19.0, 0.0, 20.0];
const POOL_S2_Y: [f64; 6] = [-INF, NAN, NAN, NAN, NAN, INF];
const POOL_S2_GX: [f64; 20] =
    [1.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];

#[test]
fn max_pool_follows_pytorch_on_nan_and_infinities() {
    let dims = [1usize, 1, 4, 5];
    for (s, want_y, want_gx) in [(1, &POOL_S1_Y[..], &POOL_S1_GX[..]), (2, &POOL_S2_Y[..], &POOL_S2_GX[..])] {
        let g: Vec<f64> = (1..=want_y.len()).map(|v| v as f64).collect();
        cpu_both(|dt| {
            let t = Tensor::from_vec(POOL_X.to_vec(), &dims, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
            let x = Var::from_tensor(&t).unwrap();
            let y = ops::pool3x3(x.as_tensor(), PoolKind::Max, s).unwrap();
            same(&format!("max pool s{s} {dt:?}"), &values(&y), want_y);
            let gt = Tensor::from_vec(g.clone(), y.dims(), &Device::Cpu).unwrap().to_dtype(dt).unwrap();
            let grads = (&y * gt).unwrap().sum_all().unwrap().backward().unwrap();
            same(&format!("max pool s{s} ∂x {dt:?}"), &values(grads.get(x.as_tensor()).unwrap()), want_gx);
        });
        fn host_case<T: Float>(s: usize, g: &[f64], want_y: &[f64], want_gx: &[f64]) {
            let dims = [1, 1, 4, 5];
            let (y, taps) = host::pool(&to::<T>(&POOL_X), dims, PoolKind::Max, s).unwrap();
            same(&format!("host max pool s{s}"), &back(&y), want_y);
            let gx = host::pool_backward(&to::<T>(g), taps.as_deref(), dims, PoolKind::Max, s).unwrap();
            same(&format!("host max pool s{s} ∂x"), &back(&gx), want_gx);
        }
        host_case::<f32>(s, &g, want_y, want_gx);
        host_case::<f64>(s, &g, want_y, want_gx);
    }
}

/// A 4×4 plane for the 2×2 max pooling (stride 2) of the PC-DARTS bypass.
const PC_X: [f64; 16] = [1.0, NAN, 2.0, 2.0, NAN, 0.0, 2.0, -INF, -INF, -INF, INF, 1.0, -INF, -INF, INF, INF];
/// PyTorch's max_pool2d(2, 2) and ∂x for ∂y = 1..4 (indices [4, 2, 8, 10]).
const PC_Y: [f64; 4] = [NAN, 2.0, -INF, INF];
const PC_GX: [f64; 16] = [0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0];

#[test]
fn pc_merge_max_pool_follows_pytorch_on_nan_and_infinities() {
    // C = 2 channels in K = 2 groups: x's channel 1 is bypassed and pooled into output channel
    // 1; channel 0 (the ops' input) and y (their output, channel 0) are zeros.
    let x: Vec<f64> = [0.0; 16].iter().chain(&PC_X).copied().collect();
    let y = vec![0.0; 4];
    let gout: Vec<f64> = [0.0; 4].into_iter().chain([1.0, 2.0, 3.0, 4.0]).collect();
    cpu_both(|dt| {
        let t = |v: &[f64], d: &[usize]| Tensor::from_vec(v.to_vec(), d, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
        let xv = Var::from_tensor(&t(&x, &[1, 2, 4, 4])).unwrap();
        let out = ops::pc_merge(&t(&y, &[1, 1, 2, 2]), xv.as_tensor(), 2, 2).unwrap();
        same(&format!("pc_merge {dt:?}"), &values(&out)[4..], &PC_Y);
        let grads = (&out * t(&gout, &[1, 2, 2, 2])).unwrap().sum_all().unwrap().backward().unwrap();
        same(&format!("pc_merge ∂x {dt:?}"), &values(grads.get(xv.as_tensor()).unwrap())[16..], &PC_GX);
    });
    fn host_case<T: Float>(x: &[f64], y: &[f64], gout: &[f64]) {
        let out = host::pc_merge(&to::<T>(y), &to::<T>(x), [1, 2, 4, 4], 2, 2).unwrap();
        same("host pc_merge", &back(&out)[4..], &PC_Y);
        let [_, gx] = host::pc_merge_backward(&to::<T>(x), [1, 2, 4, 4], 2, 2, &to::<T>(gout)).unwrap();
        same("host pc_merge ∂x", &back(&gx)[16..], &PC_GX);
    }
    host_case::<f32>(&x, &y, &gout);
    host_case::<f64>(&x, &y, &gout);
}

// A NaN in the input of every other op.

/// x (2, 3, 7, 7) and the position of its NaN: sample 0, channel 1, row 3, column 3 (read by
/// every stride-2 op here; the 1×1 convolution with stride 2 reads it with offset 1).
const DIMS: [usize; 4] = [2, 3, 7, 7];
const AT: usize = 49 + 3 * 7 + 3;

fn input() -> Vec<f64> {
    rand_vec(DIMS.iter().product(), 1, -1.0, 1.0)
}

#[test]
fn a_nan_in_a_convolution_input_reaches_its_outputs() {
    let x = input();
    let c = DIMS[1];
    // sep_conv_3x3, dil_conv_3x3, and a reducing sep_conv_5x5 (whose stride reads the NaN's row).
    let convs = [(3, 1, 1, 1), (3, 1, 2, 2), (5, 2, 2, 1)]
        .map(|(k, stride, padding, dilation)| (k, DwParams { stride, padding, dilation }));
    for (k, p) in convs {
        let w = rand_vec(c * k * k, 2, 0.1, 1.0);
        for relu in [false, true] {
            let name = format!("depthwise k{k} {p:?} relu {relu}");
            let f = move |t: &[Tensor]| {
                ops::depthwise_conv2d(&if relu { ops::relu(&t[0])? } else { t[0].clone() }, &t[1], p)
            };
            cpu_both(|dt| {
                nan_reaches(&format!("{name} {dt:?}"), &x, AT, &|x| {
                    cpu_run(dt, &f, &[(x.to_vec(), DIMS.to_vec()), (w.clone(), vec![c, 1, k, k])])
                })
            });
            fn host_case<T: Float>(name: &str, x: &[f64], w: &[f64], k: usize, p: DwParams, relu: bool) {
                nan_reaches(name, x, AT, &|x| {
                    let (xt, wt) = (to::<T>(x), to::<T>(w));
                    let y = host::depthwise(&xt, DIMS, &wt, k, p, relu).unwrap();
                    let (gx, gw) = host::depthwise_backward(&xt, DIMS, &wt, k, p, &gy::<T>(y.len()), relu).unwrap();
                    [y, gx, gw].iter().flat_map(|v| back(v)).collect()
                });
            }
            host_case::<f32>(&format!("host {name} f32"), &x, &w, k, p, relu);
            host_case::<f64>(&format!("host {name} f64"), &x, &w, k, p, relu);
        }
    }
    let co = 4;
    let w = rand_vec(co * c, 3, 0.1, 1.0);
    for p in [PwParams { stride: 1, offset: 0 }, PwParams { stride: 2, offset: 1 }] {
        for relu in [false, true] {
            let name = format!("conv1x1 {p:?} relu {relu}");
            let f = move |t: &[Tensor]| {
                if relu {
                    ops::relu_conv1x1(&t[0], &t[1], p)
                } else {
                    ops::conv1x1(&t[0], &t[1], p)
                }
            };
            cpu_both(|dt| {
                nan_reaches(&format!("{name} {dt:?}"), &x, AT, &|x| {
                    cpu_run(dt, &f, &[(x.to_vec(), DIMS.to_vec()), (w.clone(), vec![co, c, 1, 1])])
                })
            });
            fn host_case<T: Float>(name: &str, x: &[f64], w: &[f64], co: usize, p: PwParams, relu: bool) {
                nan_reaches(name, x, AT, &|x| {
                    let (xt, wt) = (to::<T>(x), to::<T>(w));
                    let y = host::conv1x1(&xt, DIMS, &wt, co, p, relu).unwrap();
                    let (gx, gw) = host::conv1x1_backward(&xt, DIMS, &wt, co, p, &gy::<T>(y.len()), relu).unwrap();
                    [y, gx, gw].iter().flat_map(|v| back(v)).collect()
                });
            }
            host_case::<f32>(&format!("host {name} f32"), &x, &w, co, p, relu);
            host_case::<f64>(&format!("host {name} f64"), &x, &w, co, p, relu);
        }
    }
    // The fused depthwise + 1×1 op (sep_conv's and dil_conv's first half), with its ReLU.
    let (k, p) = (3, DwParams { stride: 1, padding: 1, dilation: 1 });
    let (wd, wp) = (rand_vec(c * k * k, 4, 0.1, 1.0), rand_vec(co * c, 5, 0.1, 1.0));
    for relu in [false, true] {
        let name = format!("dw_pw relu {relu}");
        let f = move |t: &[Tensor]| {
            if relu {
                ops::relu_dw_pw(&t[0], &t[1], &t[2], p)
            } else {
                ops::dw_pw(&t[0], &t[1], &t[2], p)
            }
        };
        cpu_both(|dt| {
            nan_reaches(&format!("{name} {dt:?}"), &x, AT, &|x| {
                let ins =
                    [(x.to_vec(), DIMS.to_vec()), (wd.clone(), vec![c, 1, k, k]), (wp.clone(), vec![co, c, 1, 1])];
                cpu_run(dt, &f, &ins)
            })
        });
        fn host_case<T: Float>(name: &str, x: &[f64], wd: &[f64], wp: &[f64], sh: SepShape) {
            nan_reaches(name, x, AT, &|x| {
                let (xt, wdt, wpt) = (to::<T>(x), to::<T>(wd), to::<T>(wp));
                let y = host::dw_pw(&xt, sh, &wdt, &wpt).unwrap();
                let [gx, gdw, gpw] = host::dw_pw_backward(&xt, sh, &wdt, &wpt, &gy::<T>(y.len())).unwrap();
                [y, gx, gdw, gpw].iter().flat_map(|v| back(v)).collect()
            });
        }
        let sh = SepShape { dims: DIMS, k, co, p, relu };
        host_case::<f32>(&format!("host {name} f32"), &x, &wd, &wp, sh);
        host_case::<f64>(&format!("host {name} f64"), &x, &wd, &wp, sh);
    }
}

#[test]
fn a_nan_in_a_batch_norm_input_reaches_its_outputs() {
    let x = input();
    let c = DIMS[1];
    let gb: Vec<f64> = rand_vec(2 * c, 6, 0.5, 1.5);
    // Per-sample factors (drop path) kept non-zero: PyTorch's 0·NaN is NaN, which a run with
    // finite values cannot tell from an independent 0.
    let m = [1.25, 0.75];
    for affine in [false, true] {
        let name = format!("batch norm train affine {affine}");
        let f = move |t: &[Tensor]| {
            if affine {
                let mt = Tensor::new(&m, &Device::Cpu)?.to_dtype(t[0].dtype())?;
                ops::batch_norm_affine_train(
                    &t[0],
                    &t[1].narrow(0, 0, c)?,
                    &t[1].narrow(0, c, c)?,
                    Some(&mt),
                    1e-5,
                    None,
                )
            } else {
                ops::batch_norm_train(&t[0], 1e-5, None)
            }
        };
        cpu_both(|dt| {
            nan_reaches(&format!("{name} {dt:?}"), &x, AT, &|x| {
                cpu_run(dt, &f, &[(x.to_vec(), DIMS.to_vec()), (gb.clone(), vec![2 * c])])
            })
        });
        fn host_case<T: Float>(name: &str, x: &[f64], gb: &[f64], m: &[f64], affine: bool) {
            nan_reaches(name, x, AT, &|x| {
                let (xt, gbt, mt) = (to::<T>(x), to::<T>(gb), to::<T>(m));
                let (gb_arg, m_arg) = (affine.then_some(&gbt[..]), affine.then_some(&mt[..]));
                let f = host::batch_norm(&xt, &DIMS, gb_arg, m_arg, None, None, 1e-5).unwrap();
                let u = if affine { xt.clone() } else { f.y.clone() };
                let g = gy::<T>(f.y.len());
                let (gx, ggb) = host::batch_norm_backward(&u, &DIMS, gb_arg, m_arg, &f.mean, &f.var, &g, 1e-5).unwrap();
                let mut out = back(&f.y);
                out.extend(back(&gx));
                out.extend(ggb.map(|v| back(&v)).unwrap_or_default());
                out
            });
        }
        host_case::<f32>(&format!("host {name} f32"), &x, &gb, &m, affine);
        host_case::<f64>(&format!("host {name} f64"), &x, &gb, &m, affine);
    }
    // Evaluation form: the channel affine map of the running statistics.
    let (a, b) = (rand_vec(c, 8, 0.5, 1.5), rand_vec(c, 9, -1.0, 1.0));
    let f = |t: &[Tensor]| ops::channel_affine(&t[0], &t[1], &t[2]);
    cpu_both(|dt| {
        nan_reaches(&format!("channel affine {dt:?}"), &x, AT, &|x| {
            cpu_run(dt, &f, &[(x.to_vec(), DIMS.to_vec()), (a.clone(), vec![c]), (b.clone(), vec![c])])
        })
    });
    nan_reaches("host channel affine f64", &x, AT, &|x| {
        let y = host::channel_affine(x, &DIMS, &a, &b).unwrap();
        let [gx, ga, gbv] = host::channel_affine_backward(x, &DIMS, &a, &gy::<f64>(y.len())).unwrap();
        [y, gx, ga, gbv].concat()
    });
    // The fused sep_conv/dil_conv stage: acc + m·BN(pw(dw(ReLU x))).
    let (k, co, p) = (3, 4, DwParams { stride: 1, padding: 1, dilation: 1 });
    let n_params = c * k * k + co * c + 2 * co;
    let params = rand_vec(n_params, 10, 0.5, 1.5);
    let acc_dims = [DIMS[0], co, DIMS[2], DIMS[3]];
    let accv = rand_vec(acc_dims.iter().product(), 11, -1.0, 1.0);
    let f = move |t: &[Tensor]| {
        let mt = Tensor::new(&m, &Device::Cpu)?.to_dtype(t[0].dtype())?;
        ops::dw_pw_bn_train(
            &t[0],
            StageWeights { flat: &t[1], k, co, affine: true },
            p,
            true,
            Some(&mt),
            Some(&t[2]),
            1e-5,
            None,
        )
    };
    cpu_both(|dt| {
        nan_reaches(&format!("dw_pw_bn stage {dt:?}"), &x, AT, &|x| {
            let ins =
                [(x.to_vec(), DIMS.to_vec()), (params.clone(), vec![n_params]), (accv.clone(), acc_dims.to_vec())];
            cpu_run(dt, &f, &ins)
        })
    });
    fn host_case<T: Float>(name: &str, x: &[f64], params: &[f64], m: &[f64], accv: &[f64], sh: StageShape) {
        nan_reaches(name, x, AT, &|x| {
            let (xt, pt, mt, at) = (to::<T>(x), to::<T>(params), to::<T>(m), to::<T>(accv));
            let fwd = host::stage(&xt, sh, &pt, Some(&mt), Some(&at), None, 1e-5).unwrap();
            let (gx, gp) = host::stage_backward(&xt, sh, &pt, Some(&mt), &fwd, &gy::<T>(fwd.y.len()), 1e-5).unwrap();
            [back(&fwd.y), back(&gx), back(&gp)].concat()
        });
    }
    let sh = StageShape { dims: DIMS, k, co, affine: true, p, relu: true };
    host_case::<f32>("host dw_pw_bn stage f32", &x, &params, &m, &accv, sh);
    host_case::<f64>("host dw_pw_bn stage f64", &x, &params, &m, &accv, sh);
}

/// PyTorch's running statistics take the batch's NaN mean and variance (a clamp of a
/// rounding-negative variance must not turn a NaN into 0).
#[test]
fn a_nan_in_a_batch_norm_input_reaches_its_running_statistics() {
    let mut x = input();
    x[AT] = NAN;
    let c = DIMS[1];
    let nan_in = |what: &str, v: &[f64]| {
        for (ch, &s) in v.iter().enumerate() {
            assert_eq!(s.is_nan(), ch == 1, "{what}: channel {ch} is {s}");
        }
    };
    cpu_both(|dt| {
        let t = Tensor::from_vec(x.clone(), &DIMS, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
        let mean = Var::from_tensor(&Tensor::zeros(c, dt, &Device::Cpu).unwrap()).unwrap();
        let var = Var::from_tensor(&Tensor::ones(c, dt, &Device::Cpu).unwrap()).unwrap();
        ops::batch_norm_train(&t, 1e-5, Some(RunningStats { mean: &mean, var: &var, momentum: 0.1 })).unwrap();
        nan_in(&format!("running mean {dt:?}"), &values(mean.as_tensor()));
        nan_in(&format!("running var {dt:?}"), &values(var.as_tensor()));
    });
    fn host_case<T: Float>(x: &[f64], nan_in: &dyn Fn(&str, &[f64])) {
        let c = DIMS[1];
        let (rm, rv) = (to::<T>(&vec![0.0; c]), to::<T>(&vec![1.0; c]));
        let f = host::batch_norm(&to::<T>(x), &DIMS, None, None, None, Some((&rm, &rv)), 1e-5).unwrap();
        let (m, v) = f.running.unwrap();
        nan_in("host running mean", &back(&m));
        nan_in("host running var", &back(&v));
        nan_in("host batch var", &f.var);
    }
    host_case::<f32>(&x, &nan_in);
    host_case::<f64>(&x, &nan_in);
}

#[test]
fn a_nan_in_a_pooling_or_mixed_sum_input_reaches_its_outputs() {
    let x = input();
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for s in [1, 2] {
            let name = format!("{kind:?} pool s{s}");
            let f = move |t: &[Tensor]| ops::pool3x3(&t[0], kind, s);
            cpu_both(|dt| {
                nan_reaches(&format!("{name} {dt:?}"), &x, AT, &|x| cpu_run(dt, &f, &[(x.to_vec(), DIMS.to_vec())]))
            });
            fn host_case<T: Float>(name: &str, x: &[f64], kind: PoolKind, s: usize) {
                nan_reaches(name, x, AT, &|x| {
                    let (y, taps) = host::pool(&to::<T>(x), DIMS, kind, s).unwrap();
                    let gx = host::pool_backward(&gy::<T>(y.len()), taps.as_deref(), DIMS, kind, s).unwrap();
                    [back(&y), back(&gx)].concat()
                });
            }
            host_case::<f32>(&format!("host {name} f32"), &x, kind, s);
            host_case::<f64>(&format!("host {name} f64"), &x, kind, s);
        }
    }
    let f = |t: &[Tensor]| ops::avg_pool_valid(&t[0], 5, 2);
    cpu_both(|dt| {
        nan_reaches(&format!("avg_pool_valid {dt:?}"), &x, AT, &|x| cpu_run(dt, &f, &[(x.to_vec(), DIMS.to_vec())]))
    });
    nan_reaches("host avg_pool_valid f64", &x, AT, &|x| host::avg_pool_valid(x, DIMS, 5, 2).unwrap());
    // acc + w·y, the mixed op's weighted sum, with the NaN in y and then in acc.
    let other = rand_vec(x.len(), 12, -1.0, 1.0);
    let w = [0.3];
    for nan_in_y in [true, false] {
        let name = format!("axpy NaN in {}", if nan_in_y { "y" } else { "acc" });
        let f = |t: &[Tensor]| ops::axpy(&t[0], &t[1], &t[2]);
        let ins = |x: &[f64]| {
            let (acc, y) = if nan_in_y { (other.clone(), x.to_vec()) } else { (x.to_vec(), other.clone()) };
            [(acc, DIMS.to_vec()), (y, DIMS.to_vec()), (w.to_vec(), vec![1])]
        };
        cpu_both(|dt| nan_reaches(&format!("{name} {dt:?}"), &x, AT, &|x| cpu_run(dt, &f, &ins(x))));
        nan_reaches(&format!("host {name}"), &x, AT, &|x| {
            let [(acc, _), (y, _), _] = ins(x);
            let out = host::axpy(Some(&acc), &y, w[0]).unwrap();
            let (gy_, gw) = host::weighted_backward(&y, w[0], &gy::<f64>(out.len())).unwrap();
            [out, gy_, vec![gw]].concat()
        });
    }
}

/// A cell's edge as the search network runs it, on the kernels: the preprocessing
/// ReLU → 1×1 convolution → batch norm, then a mixed op (the weighted sum of max pooling,
/// average pooling, a ReLU'd separable stage and the identity), then the head's pooling. A
/// NaN placed before the first ReLU reaches the result and its gradients.
#[test]
fn a_nan_before_a_cells_first_relu_reaches_the_cell_output() {
    let x = input();
    let c = DIMS[1];
    let (w_pre, w_dw, w_pw) =
        (rand_vec(c * c, 13, 0.1, 1.0), rand_vec(c * 9, 14, 0.1, 1.0), rand_vec(c * c, 15, 0.1, 1.0));
    let alpha = [0.1, 0.2, 0.3, 0.4];
    let p = DwParams { stride: 1, padding: 1, dilation: 1 };
    let cell = |t: &[Tensor]| {
        let s =
            ops::batch_norm_train(&ops::relu_conv1x1(&t[0], &t[1], PwParams { stride: 1, offset: 0 })?, 1e-5, None)?;
        let a = Tensor::new(&alpha, &Device::Cpu)?.to_dtype(s.dtype())?;
        let mut acc = ops::scale(&ops::pool3x3(&s, PoolKind::Max, 1)?, &a.narrow(0, 0, 1)?)?;
        acc = ops::axpy(&acc, &ops::pool3x3(&s, PoolKind::Avg, 1)?, &a.narrow(0, 1, 1)?)?;
        let sep = ops::batch_norm_train(&ops::relu_dw_pw(&s, &t[2], &t[3], p)?, 1e-5, None)?;
        acc = ops::axpy(&acc, &sep, &a.narrow(0, 2, 1)?)?;
        acc = ops::axpy(&acc, &s, &a.narrow(0, 3, 1)?)?;
        ops::avg_pool_valid(&acc, 7, 1)
    };
    cpu_both(|dt| {
        nan_reaches(&format!("cell {dt:?}"), &x, AT, &|x| {
            let ins = [
                (x.to_vec(), DIMS.to_vec()),
                (w_pre.clone(), vec![c, c, 1, 1]),
                (w_dw.clone(), vec![c, 1, 3, 3]),
                (w_pw.clone(), vec![c, c, 1, 1]),
            ];
            cpu_run(dt, &cell, &ins)
        })
    });
    fn host_cell<T: Float>(x: &[f64], w_pre: &[f64], w_dw: &[f64], w_pw: &[f64], alpha: [f64; 4]) -> Vec<f64> {
        let c = DIMS[1];
        let pw = PwParams { stride: 1, offset: 0 };
        let pre = host::conv1x1(&to::<T>(x), DIMS, &to::<T>(w_pre), c, pw, true).unwrap();
        let s = host::batch_norm(&pre, &DIMS, None, None, None, None, 1e-5).unwrap().y;
        let a = alpha.map(T::from_f64);
        let mut acc = host::axpy(None, &host::pool(&s, DIMS, PoolKind::Max, 1).unwrap().0, a[0]).unwrap();
        acc = host::axpy(Some(&acc), &host::pool(&s, DIMS, PoolKind::Avg, 1).unwrap().0, a[1]).unwrap();
        let sh = SepShape { dims: DIMS, k: 3, co: c, p: DwParams { stride: 1, padding: 1, dilation: 1 }, relu: true };
        let sep = host::dw_pw(&s, sh, &to::<T>(w_dw), &to::<T>(w_pw)).unwrap();
        let sep = host::batch_norm(&sep, &DIMS, None, None, None, None, 1e-5).unwrap().y;
        acc = host::axpy(Some(&acc), &sep, a[2]).unwrap();
        acc = host::axpy(Some(&acc), &s, a[3]).unwrap();
        back(&host::avg_pool_valid(&acc, DIMS, 7, 1).unwrap())
    }
    nan_reaches("host cell f32", &x, AT, &|x| host_cell::<f32>(x, &w_pre, &w_dw, &w_pw, alpha));
    nan_reaches("host cell f64", &x, AT, &|x| host_cell::<f64>(x, &w_pre, &w_dw, &w_pw, alpha));
}
