//! The CUDA kernels' arithmetic, indexing and launch sequences, checked on the CPU: the same
//! `.cu` sources compiled for the host run over the same grids as on the GPU (cuda::host),
//! and every op's forward and gradients must equal the CPU kernels' (f64 to 1e-12, f32 to
//! 1e-5 relative), on every DARTS configuration, odd sizes, batch 1 and ties. Fresh host
//! buffers start as NaN, so an output element no kernel wrote fails the comparison. The
//! launch geometry tests count how often the kernels' loops visit each index.

use candle_core::{DType, Device, Tensor, Var};
use nas_kernels::cpu::Float;
use nas_kernels::cuda::host::{self, SepShape, StageShape};
use nas_kernels::cuda::launch::{self, BnArgs, DwArgs, Launch, PcArgs, PoolArgs, PwArgs, ValidArgs};
use nas_kernels::testing::check;
use nas_kernels::{self as ops, DwParams, PoolKind, PwParams, RunningStats, StageWeights};
use rand::{Rng, SeedableRng};

type Res<T> = candle_core::Result<T>;

fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn to<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

fn tensor(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// Each named gradient against the CPU op's gradient of the same input, in input order.
fn check_grads<T: Float>(name: &str, got: &[(&str, &[T])], want: &[Vec<f64>], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: gradients");
    for ((what, got), want) in got.iter().zip(want) {
        check(&format!("{name} {what}"), got, want, tol);
    }
}

fn tol<T: Float>() -> f64 {
    if T::DTYPE == DType::F64 {
        1e-12
    } else {
        1e-5
    }
}

/// The CPU op's output and the gradients of Σ out·gy with respect to each input (f64).
fn cpu_grads(
    f: &dyn Fn(&[Tensor]) -> Res<Tensor>,
    inputs: &[(Vec<f64>, Vec<usize>)],
    gy_seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    let vars: Vec<Var> = inputs.iter().map(|(v, d)| Var::from_tensor(&tensor(v, d)).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let gy = rand_vec(y.elem_count(), gy_seed);
    let grads = (&y * tensor(&gy, y.dims())).unwrap().sum_all().unwrap().backward().unwrap();
    let gs = vars.iter().map(|v| grads.get(v.as_tensor()).map(values).unwrap_or_default()).collect();
    (values(&y), gy, gs)
}

/// (kernel, padding, dilation) of sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5.
const DARTS_CONVS: [(usize, usize, usize); 4] = [(3, 1, 1), (5, 2, 1), (3, 2, 2), (5, 4, 2)];

fn for_both(f: impl Fn(bool)) {
    f(true);
    f(false);
}

#[test]
fn argument_structs_have_the_c_layout() {
    let rust = [
        std::mem::size_of::<DwArgs>(),
        std::mem::size_of::<PoolArgs>(),
        std::mem::size_of::<ValidArgs>(),
        std::mem::size_of::<PwArgs>(),
        std::mem::size_of::<BnArgs>(),
        std::mem::size_of::<PcArgs>(),
        std::mem::size_of::<launch::MtList>(),
    ];
    assert_eq!(host::c_struct_sizes(), rust);
    // Every struct of common.cuh, as build.rs generates them (the same order).
    assert_eq!(host::c_struct_sizes(), launch::ARG_STRUCT_SIZES, "{:?}", launch::ARG_STRUCTS);
}

#[test]
fn every_index_is_visited_exactly_once() {
    let ones = |v: &[i64], what: &str| assert!(v.iter().all(|&c| c == 1), "{what}: visits {:?}", &v[..v.len().min(8)]);
    for n in [1usize, 255, 256, 257, 4097, 100_000] {
        ones(&host::visits_elementwise(launch::elementwise(n), n), &format!("elementwise {n}"));
        ones(&host::visits_elementwise(launch::reduce_1d(n), n), &format!("reduce_1d {n}"));
    }
    // A grid far smaller than the data: the loop strides many times.
    let tiny = Launch { grid: [3, 1, 1], block: [32, 1, 1] };
    ones(&host::visits_elementwise(tiny, 10_007), "tiny grid");
    for (c, per) in [(1usize, 1usize), (3, 5000), (16, 2048), (4, 2049), (2, 100_000)] {
        let (splits, chunk) = launch::channel_splits(c, per);
        let l = launch::channel_reduce(c, splits);
        ones(&host::visits_chunks(l, per, chunk), &format!("chunks c{c} per{per}"));
    }
}

fn elementwise_ops<T: Float>() {
    let x = rand_vec(257, 1);
    let relu = |t: &[Tensor]| ops::relu(&t[0]);
    let (y, gy, g) = cpu_grads(&relu, &[(x.clone(), vec![257])], 2);
    let yh = host::relu(&to::<T>(&x)).unwrap();
    check("relu", &yh, &y, tol::<T>());
    check("relu backward", &host::relu_backward(&yh, &to::<T>(&gy)).unwrap(), &g[0], tol::<T>());

    let (a, v) = (rand_vec(300, 3), rand_vec(300, 4));
    let w = 0.37;
    let axpy = |t: &[Tensor]| ops::axpy(&t[0], &t[1], &t[2]);
    let inputs = [(a.clone(), vec![300]), (v.clone(), vec![300]), (vec![w], vec![1])];
    let (y, gy, g) = cpu_grads(&axpy, &inputs, 5);
    check("axpy", &host::axpy(Some(&to::<T>(&a)), &to::<T>(&v), T::from_f64(w)).unwrap(), &y, tol::<T>());
    let (gv, gw) = host::weighted_backward(&to::<T>(&v), T::from_f64(w), &to::<T>(&gy)).unwrap();
    check("axpy ∂y", &gv, &g[1], tol::<T>());
    check("axpy ∂w", &[gw], &g[2], tol::<T>());
    let scale = |t: &[Tensor]| ops::scale(&t[0], &t[1]);
    let (y, _, _) = cpu_grads(&scale, &inputs[1..], 6);
    check("scale", &host::axpy(None, &to::<T>(&v), T::from_f64(w)).unwrap(), &y, tol::<T>());

    let x = rand_vec(3 * 40, 7);
    let m = vec![1.25, 0.0, 1.25];
    let mt = tensor(&m, &[3]);
    let ss = |t: &[Tensor]| ops::scale_samples(&t[0], &mt);
    let (y, _, _) = cpu_grads(&ss, &[(x.clone(), vec![3, 2, 4, 5])], 8);
    check("scale_samples", &host::scale_samples(&to::<T>(&x), &to::<T>(&m)).unwrap(), &y, tol::<T>());
}

#[test]
fn elementwise_kernels_equal_the_cpu_kernels() {
    elementwise_ops::<f64>();
    elementwise_ops::<f32>();
}

/// A convolution of the host-build tests: depthwise (kernel size, parameters) or 1×1 (output
/// channels, parameters).
#[derive(Clone, Copy)]
enum Conv {
    Dw(usize, DwParams),
    Pw(usize, PwParams),
}

/// The host build of a convolution of x (`dims`) with its filter (input ReLU'd with `relu`)
/// against the CPU op: the output and both gradients.
fn conv_case<T: Float>(dims: [usize; 4], conv: Conv, relu: bool) {
    let (name, w_dims, seed) = match conv {
        Conv::Dw(k, p) => (format!("dw {dims:?} k{k} {p:?} relu {relu}"), vec![dims[1], 1, k, k], 11),
        Conv::Pw(co, p) => (format!("conv1x1 {dims:?} co{co} {p:?} relu {relu}"), vec![co, dims[1], 1, 1], 71),
    };
    let f = move |t: &[Tensor]| match conv {
        Conv::Dw(_, p) => ops::depthwise_conv2d(&if relu { ops::relu(&t[0])? } else { t[0].clone() }, &t[1], p),
        Conv::Pw(_, p) if relu => ops::relu_conv1x1(&t[0], &t[1], p),
        Conv::Pw(_, p) => ops::conv1x1(&t[0], &t[1], p),
    };
    let (x, w) = (rand_vec(dims.iter().product(), seed), rand_vec(w_dims.iter().product(), seed + 1));
    let (y, gy, g) = cpu_grads(&f, &[(x.clone(), dims.to_vec()), (w.clone(), w_dims)], seed + 2);
    let (xt, wt, gyt) = (to::<T>(&x), to::<T>(&w), to::<T>(&gy));
    let (out, grads) = match conv {
        Conv::Dw(k, p) => {
            (host::depthwise(&xt, dims, &wt, k, p, relu), host::depthwise_backward(&xt, dims, &wt, k, p, &gyt, relu))
        }
        Conv::Pw(co, p) => {
            (host::conv1x1(&xt, dims, &wt, co, p, relu), host::conv1x1_backward(&xt, dims, &wt, co, p, &gyt, relu))
        }
    };
    check(&name, &out.unwrap(), &y, tol::<T>());
    let (gx, gw) = grads.unwrap();
    check_grads(&name, &[("∂x", &gx), ("∂w", &gw)], &g, tol::<T>());
}

#[test]
fn depthwise_kernels_equal_the_cpu_kernels() {
    for (k, padding, dilation) in DARTS_CONVS {
        for stride in [1, 2] {
            let p = DwParams { stride, padding, dilation };
            for dims in [[2, 3, 8, 8], [1, 2, 7, 7], [3, 2, 9, 7]] {
                for relu in [false, true] {
                    conv_case::<f64>(dims, Conv::Dw(k, p), relu);
                    conv_case::<f32>(dims, Conv::Dw(k, p), relu);
                }
            }
        }
    }
    // Enough outputs per channel for the filter gradient to split into several chunks.
    conv_case::<f64>([2, 2, 36, 36], Conv::Dw(3, DwParams { stride: 1, padding: 1, dilation: 1 }), false);
}

fn dw_pw_case<T: Float>(dims: [usize; 4], k: usize, co: usize, p: DwParams, relu: bool) {
    let name = format!("dw_pw {dims:?} k{k} co{co} {p:?} relu {relu}");
    let c = dims[1];
    let (x, wd, wp) = (rand_vec(dims.iter().product(), 21), rand_vec(c * k * k, 22), rand_vec(co * c, 23));
    let f = move |t: &[Tensor]| {
        if relu {
            ops::relu_dw_pw(&t[0], &t[1], &t[2], p)
        } else {
            ops::dw_pw(&t[0], &t[1], &t[2], p)
        }
    };
    let inputs = [(x.clone(), dims.to_vec()), (wd.clone(), vec![c, 1, k, k]), (wp.clone(), vec![co, c, 1, 1])];
    let (y, gy, g) = cpu_grads(&f, &inputs, 24);
    let (xt, wdt, wpt) = (to::<T>(&x), to::<T>(&wd), to::<T>(&wp));
    let sh = SepShape { dims, k, co, p, relu };
    check(&name, &host::dw_pw(&xt, sh, &wdt, &wpt).unwrap(), &y, tol::<T>());
    let [gx, gdw, gpw] = host::dw_pw_backward(&xt, sh, &wdt, &wpt, &to::<T>(&gy)).unwrap();
    check_grads(&name, &[("∂x", &gx), ("∂w_dw", &gdw), ("∂w_pw", &gpw)], &g, tol::<T>());
}

#[test]
fn fused_depthwise_pointwise_equals_the_cpu_kernels() {
    for (k, padding, dilation) in DARTS_CONVS {
        for stride in [1, 2] {
            let p = DwParams { stride, padding, dilation };
            for_both(|relu| {
                dw_pw_case::<f64>([3, 4, 8, 8], k, 5, p, relu);
                dw_pw_case::<f32>([1, 3, 7, 9], k, 2, p, relu);
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn stage_case<T: Float>(
    dims: [usize; 4],
    k: usize,
    co: usize,
    p: DwParams,
    relu: bool,
    affine: bool,
    drop: bool,
    acc: bool,
) {
    let name = format!("stage {dims:?} k{k} co{co} {p:?} relu {relu} affine {affine} drop {drop} acc {acc}");
    let (b, c) = (dims[0], dims[1]);
    let n_params = c * k * k + co * c + if affine { 2 * co } else { 0 };
    let x = rand_vec(dims.iter().product(), 31);
    let mut params = rand_vec(n_params, 32);
    if affine {
        // γ around 1.
        for v in &mut params[c * k * k + co * c..c * k * k + co * c + co] {
            *v += 1.0;
        }
    }
    let m: Vec<f64> = (0..b).map(|i| if i % 3 == 1 { 0.0 } else { 1.25 }).collect();
    let side = |n: usize| (n + 2 * p.padding - p.dilation * (k - 1) - 1) / p.stride + 1;
    let out_dims = [b, co, side(dims[2]), side(dims[3])];
    let accv = rand_vec(out_dims.iter().product(), 33);
    let (rm0, rv0) = (rand_vec(co, 34), rand_vec(co, 35).iter().map(|v| v.abs() + 0.5).collect::<Vec<_>>());
    let running = (Var::from_tensor(&tensor(&rm0, &[co])).unwrap(), Var::from_tensor(&tensor(&rv0, &[co])).unwrap());
    let mt = tensor(&m, &[b]);
    let f = |t: &[Tensor]| {
        let w = StageWeights { flat: &t[1], k, co, affine };
        let r = RunningStats { mean: &running.0, var: &running.1, momentum: 0.1 };
        ops::dw_pw_bn_train(&t[0], w, p, relu, drop.then_some(&mt), t.get(2), 1e-5, Some(r))
    };
    let mut inputs = vec![(x.clone(), dims.to_vec()), (params.clone(), vec![n_params])];
    if acc {
        inputs.push((accv.clone(), out_dims.to_vec()));
    }
    let (y, gy, g) = cpu_grads(&f, &inputs, 36);
    let sh = StageShape { dims, k, co, affine, p, relu };
    let (xt, pt, mtv, at) = (to::<T>(&x), to::<T>(&params), to::<T>(&m), to::<T>(&accv));
    let (rmt, rvt) = (to::<T>(&rm0), to::<T>(&rv0));
    let fwd =
        host::stage(&xt, sh, &pt, drop.then_some(&mtv[..]), acc.then_some(&at[..]), Some((&rmt, &rvt)), 1e-5).unwrap();
    check(&name, &fwd.y, &y, tol::<T>() * 10.0);
    let (rm, rv) = fwd.running.as_ref().unwrap();
    check(&format!("{name} running mean"), rm, &values(running.0.as_tensor()), tol::<T>());
    check(&format!("{name} running var"), rv, &values(running.1.as_tensor()), tol::<T>());
    let (gx, gp) = host::stage_backward(&xt, sh, &pt, drop.then_some(&mtv[..]), &fwd, &to::<T>(&gy), 1e-5).unwrap();
    check(&format!("{name} ∂x"), &gx, &g[0], tol::<T>() * 10.0);
    check(&format!("{name} ∂weights"), &gp, &g[1], tol::<T>() * 10.0);
}

#[test]
fn fused_stage_equals_the_cpu_kernels() {
    for (k, stride, dilation) in [(3, 1, 1), (5, 2, 1), (3, 2, 2), (5, 1, 2)] {
        let p = DwParams { stride, padding: dilation * (k - 1) / 2, dilation };
        for (affine, drop, acc) in
            [(false, false, false), (true, true, true), (true, false, true), (false, true, false)]
        {
            for_both(|relu| {
                stage_case::<f64>([3, 4, 7, 7], k, 5, p, relu, affine, drop, acc);
                stage_case::<f32>([1, 2, 8, 8], k, 3, p, relu, affine, drop, acc);
            });
        }
    }
}

fn batch_norm_case<T: Float>(dims: &[usize], affine: bool, drop: bool) {
    let name = format!("bn {dims:?} affine {affine} drop {drop}");
    let (b, c) = (dims[0], dims[1]);
    let x: Vec<f64> = rand_vec(dims.iter().product(), 41).iter().map(|v| 2.0 * v + 0.3).collect();
    let gb: Vec<f64> = rand_vec(2 * c, 42).iter().enumerate().map(|(i, v)| if i < c { 1.0 + v } else { *v }).collect();
    let m: Vec<f64> = (0..b).map(|i| if i % 2 == 1 { 0.0 } else { 2.0 }).collect();
    let (rm0, rv0) = (vec![0.0; c], vec![1.0; c]);
    let running = (Var::from_tensor(&tensor(&rm0, &[c])).unwrap(), Var::from_tensor(&tensor(&rv0, &[c])).unwrap());
    let mt = tensor(&m, &[b]);
    let f = |t: &[Tensor]| {
        let r = Some(RunningStats { mean: &running.0, var: &running.1, momentum: 0.1 });
        if affine {
            ops::batch_norm_affine_train(
                &t[0],
                &t[1].narrow(0, 0, c)?,
                &t[1].narrow(0, c, c)?,
                drop.then_some(&mt),
                1e-5,
                r,
            )
        } else {
            ops::batch_norm_train(&t[0], 1e-5, r)
        }
    };
    let (y, gy, g) = cpu_grads(&f, &[(x.clone(), dims.to_vec()), (gb.clone(), vec![2 * c])], 43);
    let (xt, gbt, mtv) = (to::<T>(&x), to::<T>(&gb), to::<T>(&m));
    let (rmt, rvt) = (to::<T>(&rm0), to::<T>(&rv0));
    let gb_arg = affine.then_some(&gbt[..]);
    let m_arg = (affine && drop).then_some(&mtv[..]);
    let fwd = host::batch_norm(&xt, dims, gb_arg, m_arg, None, Some((&rmt, &rvt)), 1e-5).unwrap();
    check(&name, &fwd.y, &y, tol::<T>() * 10.0);
    let (rm, rv) = fwd.running.as_ref().unwrap();
    check(&format!("{name} running mean"), rm, &values(running.0.as_tensor()), tol::<T>());
    check(&format!("{name} running var"), rv, &values(running.1.as_tensor()), tol::<T>());
    // Without affine parameters the backward works from the output x̂, as the op's does.
    let u = if affine { xt.clone() } else { fwd.y.clone() };
    let (gx, ggb) =
        host::batch_norm_backward(&u, dims, gb_arg, m_arg, &fwd.mean, &fwd.var, &to::<T>(&gy), 1e-5).unwrap();
    check(&format!("{name} ∂x"), &gx, &g[0], tol::<T>() * 10.0);
    if affine {
        check(&format!("{name} ∂γβ"), &ggb.unwrap(), &g[1], tol::<T>() * 10.0);
    }
}

#[test]
fn batch_norm_kernels_equal_the_cpu_kernels() {
    for dims in [vec![3, 4, 5, 5], vec![1, 3, 7, 7], vec![2, 3, 40, 40], vec![5, 6]] {
        for (affine, drop) in [(false, false), (true, false), (true, true)] {
            batch_norm_case::<f64>(&dims, affine, drop);
            batch_norm_case::<f32>(&dims, affine, drop);
        }
    }
    // The channel affine map.
    for dims in [[2usize, 3, 4, 4], [1, 5, 7, 9]] {
        let c = dims[1];
        let (x, a, b) = (rand_vec(dims.iter().product(), 51), rand_vec(c, 52), rand_vec(c, 53));
        let f = |t: &[Tensor]| ops::channel_affine(&t[0], &t[1], &t[2]);
        let inputs = [(x.clone(), dims.to_vec()), (a.clone(), vec![c]), (b.clone(), vec![c])];
        let (y, gy, g) = cpu_grads(&f, &inputs, 54);
        check("channel affine", &host::channel_affine(&x, &dims, &a, &b).unwrap(), &y, 1e-12);
        let [gx, ga, gb] = host::channel_affine_backward(&x, &dims, &a, &gy).unwrap();
        check_grads("channel affine", &[("∂x", &gx), ("∂scale", &ga), ("∂shift", &gb)], &g, 1e-12);
    }
}

fn pool_case<T: Float>(x: &[f64], dims: [usize; 4], kind: PoolKind, stride: usize) {
    let name = format!("{kind:?} pool {dims:?} s{stride}");
    let f = move |t: &[Tensor]| ops::pool3x3(&t[0], kind, stride);
    let (y, gy, g) = cpu_grads(&f, &[(x.to_vec(), dims.to_vec())], 61);
    let (yh, taps) = host::pool(&to::<T>(x), dims, kind, stride).unwrap();
    check(&name, &yh, &y, tol::<T>());
    let gx = host::pool_backward(&to::<T>(&gy), taps.as_deref(), dims, kind, stride).unwrap();
    check(&format!("{name} ∂x"), &gx, &g[0], tol::<T>());
}

#[test]
fn pooling_kernels_equal_the_cpu_kernels() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for stride in [1, 2] {
            for dims in [[2, 3, 8, 8], [1, 2, 7, 7], [2, 1, 9, 6]] {
                let x = rand_vec(dims.iter().product(), 62);
                pool_case::<f64>(&x, dims, kind, stride);
                pool_case::<f32>(&x, dims, kind, stride);
                // Ties: a few distinct values, so most windows hold their maximum twice or more.
                let ties: Vec<f64> = x.iter().map(|v| (v * 2.0).round()).collect();
                pool_case::<f64>(&ties, dims, kind, stride);
                pool_case::<f32>(&ties, dims, kind, stride);
            }
        }
    }
    for (k, s, hw) in [(5, 3, 8), (5, 3, 9), (2, 2, 5), (3, 1, 4)] {
        let dims = [2, 3, hw, hw];
        let x = rand_vec(dims.iter().product(), 63);
        let f = move |t: &[Tensor]| ops::avg_pool_valid(&t[0], k, s);
        let (y, gy, g) = cpu_grads(&f, &[(x.clone(), dims.to_vec())], 64);
        check("avg_pool_valid", &host::avg_pool_valid(&x, dims, k, s).unwrap(), &y, 1e-12);
        check("avg_pool_valid ∂x", &host::avg_pool_valid_backward(&gy, dims, k, s).unwrap(), &g[0], 1e-12);
    }
}

#[test]
fn pointwise_kernels_equal_the_cpu_kernels() {
    for (stride, offset) in [(1, 0), (2, 0), (2, 1)] {
        for dims in [[3, 4, 8, 8], [1, 3, 7, 7], [2, 2, 9, 6]] {
            for_both(|relu| {
                conv_case::<f64>(dims, Conv::Pw(5, PwParams { stride, offset }), relu);
                conv_case::<f32>(dims, Conv::Pw(2, PwParams { stride, offset }), relu);
            });
        }
    }
}

#[test]
fn pc_merge_kernels_equal_the_cpu_kernels() {
    for (k, c, stride, hw) in [(4, 8, 1, 6), (4, 8, 2, 6), (2, 6, 2, 7), (3, 6, 1, 5), (4, 4, 2, 9)] {
        let ho = if stride == 2 { hw / 2 } else { hw };
        let dims = [2, c, hw, hw];
        let (y, x) = (rand_vec(2 * (c / k) * ho * ho, 81), rand_vec(dims.iter().product(), 82));
        let f = move |t: &[Tensor]| ops::pc_merge(&t[0], &t[1], k, stride);
        let (out, gout, g) = cpu_grads(&f, &[(y.clone(), vec![2, c / k, ho, ho]), (x.clone(), dims.to_vec())], 83);
        let name = format!("pc_merge K{k} C{c} s{stride} {hw}");
        check(&name, &host::pc_merge(&y, &x, dims, k, stride).unwrap(), &out, 1e-12);
        let [gy, gx] = host::pc_merge_backward(&x, dims, k, stride, &gout).unwrap();
        check_grads(&name, &[("∂y", &gy), ("∂x", &gx)], &g, 1e-12);
    }
}
