//! Launch sequences of batch normalisation and the channel affine map (`batch_norm.cu`):
//! per-channel partial sums, a per-channel finish (batch statistics, running statistics in
//! place, the coefficients), one elementwise pass.

use candle_core::Result;

use super::launch::{self, BnArgs};
use super::{launch_n, Args, Backend, Buf, Kernel};
use crate::cpu::Float;

/// The running statistics to update in place: (mean, variance, momentum).
pub(crate) type RunningAddrs = (u64, u64, f64);

/// A forward's output and the batch mean and biased variance ((2, C) f64) it keeps.
pub(crate) struct BnOut<B: Backend, T: Float> {
    pub y: B::Buf<T>,
    pub stats: B::Buf<f64>,
}

/// Per-channel (S1, S2) partial sums of a over each chunk: (Σa, Σa²) without b, else
/// (Σ f·a, Σ f·a·b) with f = m[sample] (1 without m).
fn partial_sums<B: Backend, T: Float>(
    be: &B,
    a: u64,
    b: Option<u64>,
    m: Option<u64>,
    g: &BnArgs,
) -> Result<B::Buf<f64>> {
    let parts = be.alloc::<f64>(g.partial_len())?;
    let l = launch::channel_reduce(g.c as usize, g.splits as usize);
    be.launch(Kernel::BnPartial, T::DTYPE, l, Args::new().ptr(a).opt(b).opt(m).ptr(be.addr(&parts)).pod(g))?;
    Ok(parts)
}

/// y = acc + m[b]·(γ·x̂ + β) into `y` (γ = 1 and β = 0 when absent, m = 1 without drop path),
/// updating `running`; returns the batch statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_into<B: Backend, T: Float>(
    be: &B,
    x: u64,
    gamma: Option<u64>,
    beta: Option<u64>,
    m: Option<u64>,
    acc: Option<u64>,
    running: Option<RunningAddrs>,
    g: &BnArgs,
    eps: f64,
    y: u64,
) -> Result<B::Buf<f64>> {
    let c = g.c as usize;
    let parts = partial_sums::<B, T>(be, x, None, None, g)?;
    let stats = be.alloc::<f64>(2 * c)?;
    let coef = be.alloc::<f64>(2 * c)?;
    let (rm, rv, momentum) = match running {
        Some((rm, rv, mo)) => (Some(rm), Some(rv), mo),
        None => (None, None, 0.0),
    };
    let args = Args::new()
        .ptr(be.addr(&parts))
        .opt(gamma)
        .opt(beta)
        .ptr(be.addr(&stats))
        .ptr(be.addr(&coef))
        .opt(rm)
        .opt(rv)
        .pod(g)
        .f64(eps)
        .f64(momentum);
    launch_n(be, Kernel::BnFwdFinish, T::DTYPE, c, args)?;
    let args = Args::new().ptr(x).ptr(be.addr(&coef)).opt(m).opt(acc).ptr(y).pod(g);
    launch_n(be, Kernel::BnFwdApply, T::DTYPE, g.len(), args)?;
    Ok(stats)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    gamma: Option<u64>,
    beta: Option<u64>,
    m: Option<u64>,
    acc: Option<u64>,
    running: Option<RunningAddrs>,
    g: &BnArgs,
    eps: f64,
) -> Result<BnOut<B, T>> {
    let y = be.alloc::<T>(g.len())?;
    let stats = forward_into::<B, T>(be, x, gamma, beta, m, acc, running, g, eps, be.addr(&y))?;
    Ok(BnOut { y, stats })
}

/// ∂x into `gx` from ∂y `gr` and the saved statistics. Without `affine`, `u` is the output
/// x̂ (plain batch norm); with it `u` is the input x, γ (1 when absent) and the factors m
/// apply, and ∂γ, ∂β go to `ggb` ([∂γ | ∂β], 2·C) when given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_into<B: Backend, T: Float>(
    be: &B,
    u: u64,
    gr: u64,
    gamma: Option<u64>,
    m: Option<u64>,
    stats: u64,
    g: &BnArgs,
    eps: f64,
    affine: bool,
    gx: u64,
    ggb: Option<u64>,
) -> Result<()> {
    let c = g.c as usize;
    let m = if affine { m } else { None };
    let parts = partial_sums::<B, T>(be, gr, Some(u), m, g)?;
    let coef = be.alloc::<f64>(3 * c)?;
    let size = std::mem::size_of::<T>() as u64;
    let (gg, gb) = match ggb {
        Some(a) => (Some(a), Some(a + c as u64 * size)),
        None => (None, None),
    };
    let args = Args::new()
        .ptr(be.addr(&parts))
        .opt(gamma)
        .ptr(stats)
        .ptr(be.addr(&coef))
        .opt(gg)
        .opt(gb)
        .pod(g)
        .f64(eps)
        .flag(affine);
    launch_n(be, Kernel::BnBwdFinish, T::DTYPE, c, args)?;
    let args = Args::new().ptr(gr).ptr(u).ptr(be.addr(&coef)).opt(m).ptr(gx).pod(g);
    launch_n(be, Kernel::BnBwdApply, T::DTYPE, g.len(), args)
}

/// ∂x and, when asked, a second gradient.
type GradAndMore<B, T> = (Buf<B, T>, Option<Buf<B, T>>);

/// (∂x, ∂γβ when `want_gb`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    u: u64,
    gr: u64,
    gamma: Option<u64>,
    m: Option<u64>,
    stats: u64,
    g: &BnArgs,
    eps: f64,
    affine: bool,
    want_gb: bool,
) -> Result<GradAndMore<B, T>> {
    let gx = be.alloc::<T>(g.len())?;
    let ggb = if want_gb && affine { Some(be.alloc::<T>(2 * g.c as usize)?) } else { None };
    let ggb_addr = ggb.as_ref().map(|b| be.addr(b));
    backward_into::<B, T>(be, u, gr, gamma, m, stats, g, eps, affine, be.addr(&gx), ggb_addr)?;
    Ok((gx, ggb))
}

/// y = x·scale[c] (+ shift[c]).
pub(crate) fn channel_affine<B: Backend, T: Float>(
    be: &B,
    x: u64,
    scale: u64,
    shift: Option<u64>,
    g: &BnArgs,
) -> Result<B::Buf<T>> {
    let y = be.alloc::<T>(g.len())?;
    launch_n(
        be,
        Kernel::ChanAffine,
        T::DTYPE,
        g.len(),
        Args::new().ptr(x).ptr(scale).opt(shift).ptr(be.addr(&y)).pod(g),
    )?;
    Ok(y)
}

type Grads3<B, T> = (Option<<B as Backend>::Buf<T>>, Option<<B as Backend>::Buf<T>>, Option<<B as Backend>::Buf<T>>);

/// (∂x = g·scale[c], ∂scale = Σ g·x, ∂shift = Σ g) per channel, as `want` asks.
pub(crate) fn channel_affine_backward<B: Backend, T: Float>(
    be: &B,
    x: u64,
    scale: u64,
    gr: u64,
    g: &BnArgs,
    want: [bool; 3],
) -> Result<Grads3<B, T>> {
    let gx = if want[0] { Some(channel_affine::<B, T>(be, gr, scale, None, g)?) } else { None };
    if !(want[1] || want[2]) {
        return Ok((gx, None, None));
    }
    let c = g.c as usize;
    let parts = partial_sums::<B, T>(be, gr, Some(x), None, g)?;
    let gs = if want[1] { Some(be.alloc::<T>(c)?) } else { None };
    let gb = if want[2] { Some(be.alloc::<T>(c)?) } else { None };
    let args = Args::new()
        .ptr(be.addr(&parts))
        .opt(gb.as_ref().map(|b| be.addr(b)))
        .opt(gs.as_ref().map(|b| be.addr(b)))
        .pod(g);
    launch_n(be, Kernel::BnSumsOut, T::DTYPE, c, args)?;
    Ok((gx, gs, gb))
}

/// The ops' CUDA entry points on candle storage and tensors.
#[cfg(feature = "cuda")]
pub(crate) mod glue {
    use candle_core::backend::BackendStorage;
    use candle_core::{bail, CudaStorage, Layout, Result, Tensor};

    use super::super::device::{self, Cuda};
    use super::BnArgs;
    use crate::batch_norm::{BatchNormAffineTrain, BatchNormTrain, Running, SavedStats};
    use crate::cpu::Float;
    use crate::dispatch_dtype;

    type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

    /// Runs `f` with the device addresses of the running statistics (locked for the call).
    pub(crate) fn with_running<R>(
        running: Option<&Running>,
        f: impl FnOnce(Option<super::RunningAddrs>) -> Result<R>,
    ) -> Result<R> {
        let Some(r) = running else { return f(None) };
        let (gm, lm) = r.mean.storage_and_layout();
        let (gv, lv) = r.var.storage_and_layout();
        let (candle_core::Storage::Cuda(sm), candle_core::Storage::Cuda(sv)) = (&*gm, &*gv) else {
            bail!("batch_norm: running statistics are not on the GPU")
        };
        let addrs = match r.mean.dtype() {
            candle_core::DType::F32 => (device::addr::<f32>(sm, lm)?, device::addr::<f32>(sv, lv)?),
            candle_core::DType::F64 => (device::addr::<f64>(sm, lm)?, device::addr::<f64>(sv, lv)?),
            d => bail!("batch_norm: running statistics of {d:?}"),
        };
        // The kernel writes the running statistics in place through these addresses: they are
        // device memory that candle does not otherwise touch while the op runs (one stream).
        f(Some((addrs.0, addrs.1, r.momentum)))
    }

    /// The saved (2, C) statistics as a tensor.
    pub(crate) fn saved(
        be: &Cuda,
        stats: candle_core::cuda_backend::cudarc::driver::CudaSlice<f64>,
        c: usize,
    ) -> Result<SavedStats> {
        Ok(SavedStats::Device(be.tensor(stats, (2, c))?))
    }

    /// Training-mode normalisation without affine parameters (`op` keeps the statistics).
    pub(crate) fn forward(s: &CudaStorage, l: &Layout, op: &BatchNormTrain) -> Result<CudaStorage> {
        fn run<T: Float>(s: &CudaStorage, l: &Layout, op: &BatchNormTrain) -> Result<CudaStorage> {
            let be = Cuda::of(s);
            let g = BnArgs::new(l.dims())?;
            if g.is_empty() {
                bail!("batch_norm: empty batch");
            }
            let x = device::addr::<T>(s, l)?;
            let out = with_running(op.running.as_ref(), |r| {
                super::forward::<_, T>(&be, x, None, None, None, None, r, &g, op.eps)
            })?;
            op.stats.put(saved(&be, out.stats, g.c as usize)?);
            Ok(be.storage(out.y))
        }
        dispatch_dtype!("batch_norm", s.dtype(), run(s, l, op))
    }

    /// The plain batch norm's ∂x from its output x̂ (`y`).
    pub(crate) fn backward_plain(y: &Tensor, gy: &Tensor, st: &SavedStats, eps: f64) -> Result<Tensor> {
        fn run<T: Float>(y: &Tensor, gy: &Tensor, stats: &Tensor, eps: f64) -> Result<Tensor> {
            let g = BnArgs::new(y.dims())?;
            device::with_inputs::<T, _>(&[y, gy], |be, a| {
                let stats = stats_addr(stats)?;
                let (gx, _) = super::backward::<_, T>(be, a[0], a[1], None, None, stats, &g, eps, false, false)?;
                be.tensor(gx, y.shape())
            })
        }
        let stats = device_stats(st)?;
        dispatch_dtype!("batch_norm", y.dtype(), run(y, gy, &stats, eps))
    }

    /// y = m[b]·(γ·x̂ + β) (x, γβ (2, C), m (B,)), the statistics kept in `op`.
    pub(crate) fn forward_affine(
        x: (&CudaStorage, &Layout),
        gb: (&CudaStorage, &Layout),
        m: (&CudaStorage, &Layout),
        op: &BatchNormAffineTrain,
    ) -> Result<CudaStorage> {
        fn run<T: Float>(
            x: (&CudaStorage, &Layout),
            gb: (&CudaStorage, &Layout),
            m: (&CudaStorage, &Layout),
            op: &BatchNormAffineTrain,
        ) -> Result<CudaStorage> {
            let be = Cuda::of(x.0);
            let g = BnArgs::new(x.1.dims())?;
            if g.is_empty() {
                bail!("batch_norm_affine: empty batch");
            }
            let (xa, gba, ma) =
                (device::addr::<T>(x.0, x.1)?, device::addr::<T>(gb.0, gb.1)?, device::addr::<T>(m.0, m.1)?);
            let beta = gba + (g.c as u64) * std::mem::size_of::<T>() as u64;
            let out = with_running(op.running.as_ref(), |r| {
                super::forward::<_, T>(&be, xa, Some(gba), Some(beta), Some(ma), None, r, &g, op.eps)
            })?;
            op.stats.put(saved(&be, out.stats, g.c as usize)?);
            Ok(be.storage(out.y))
        }
        dispatch_dtype!("batch_norm_affine", x.0.dtype(), run(x, gb, m, op))
    }

    /// (∂x, ∂γβ, None) of `forward_affine`.
    pub(crate) fn backward_affine(
        x: &Tensor,
        gb: &Tensor,
        m: &Tensor,
        gy: &Tensor,
        st: &SavedStats,
        eps: f64,
    ) -> Result<Grads3> {
        fn run<T: Float>(x: &Tensor, gb: &Tensor, m: &Tensor, gy: &Tensor, stats: &Tensor, eps: f64) -> Result<Grads3> {
            let g = BnArgs::new(x.dims())?;
            device::with_inputs::<T, _>(&[x, gb, m, gy], |be, a| {
                let stats = stats_addr(stats)?;
                let (gx, ggb) = super::backward::<_, T>(
                    be,
                    a[0],
                    a[3],
                    Some(a[1]),
                    Some(a[2]),
                    stats,
                    &g,
                    eps,
                    true,
                    gb.track_op(),
                )?;
                Ok((
                    x.track_op().then(|| be.tensor(gx, x.shape())).transpose()?,
                    ggb.map(|b| be.tensor(b, gb.shape())).transpose()?,
                    None,
                ))
            })
        }
        let stats = device_stats(st)?;
        dispatch_dtype!("batch_norm_affine", x.dtype(), run(x, gb, m, gy, &stats, eps))
    }

    pub(crate) fn channel_affine(s: [(&CudaStorage, &Layout); 3]) -> Result<CudaStorage> {
        fn run<T: Float>(s: [(&CudaStorage, &Layout); 3]) -> Result<CudaStorage> {
            let be = Cuda::of(s[0].0);
            let g = BnArgs::new(s[0].1.dims())?;
            let [x, a, b] = [0, 1, 2].map(|i| device::addr::<T>(s[i].0, s[i].1));
            Ok(be.storage(super::channel_affine::<_, T>(&be, x?, a?, Some(b?), &g)?))
        }
        dispatch_dtype!("channel_affine", s[0].0.dtype(), run(s))
    }

    pub(crate) fn channel_affine_backward(x: &Tensor, a: &Tensor, b: &Tensor, gy: &Tensor) -> Result<Grads3> {
        fn run<T: Float>(x: &Tensor, a: &Tensor, b: &Tensor, gy: &Tensor) -> Result<Grads3> {
            let g = BnArgs::new(x.dims())?;
            device::with_inputs::<T, _>(&[x, a, gy], |be, p| {
                let want = [x.track_op(), a.track_op(), b.track_op()];
                let (gx, gs, gb) = super::channel_affine_backward::<_, T>(be, p[0], p[1], p[2], &g, want)?;
                Ok((
                    gx.map(|v| be.tensor(v, x.shape())).transpose()?,
                    gs.map(|v| be.tensor(v, a.shape())).transpose()?,
                    gb.map(|v| be.tensor(v, b.shape())).transpose()?,
                ))
            })
        }
        dispatch_dtype!("channel_affine", x.dtype(), run(x, a, b, gy))
    }

    /// The device statistics a CUDA forward saved.
    pub(crate) fn device_stats(st: &SavedStats) -> Result<Tensor> {
        match st {
            SavedStats::Device(t) => Ok(t.clone()),
            SavedStats::Host(_) => bail!("batch_norm: host statistics for a CUDA backward"),
        }
    }

    /// The device address of saved statistics.
    pub(crate) fn stats_addr(stats: &Tensor) -> Result<u64> {
        let (g, l) = stats.storage_and_layout();
        match &*g {
            candle_core::Storage::Cuda(s) => device::addr::<f64>(s, l),
            _ => bail!("batch_norm: statistics are not on the GPU"),
        }
    }
}
