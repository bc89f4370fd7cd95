//! Launch sequences of batch normalisation and the channel affine map (`batch_norm.cu`):
//! per-channel partial sums, a per-channel finish (batch statistics, running statistics in
//! place, the coefficients), one elementwise pass.

use candle_core::Result;

use super::launch::{self, BnArgs};
use super::{launch_n, Args, Backend, Buf, Grads, Kernel};
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

/// What a forward reads: x and the optional γ, β (1 and 0 when absent), per-sample factors m
/// (1 without drop path), accumulator and running statistics to update in place.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BnIn {
    pub x: u64,
    pub gamma: Option<u64>,
    pub beta: Option<u64>,
    pub m: Option<u64>,
    pub acc: Option<u64>,
    pub running: Option<RunningAddrs>,
}

/// y = acc + m[b]·(γ·x̂ + β) into `y`, updating the running statistics; returns the batch
/// statistics.
pub(crate) fn forward_into<B: Backend, T: Float>(
    be: &B,
    i: &BnIn,
    g: &BnArgs,
    eps: f64,
    y: u64,
) -> Result<B::Buf<f64>> {
    let c = g.c as usize;
    let parts = partial_sums::<B, T>(be, i.x, None, None, g)?;
    let stats = be.alloc::<f64>(2 * c)?;
    let coef = be.alloc::<f64>(2 * c)?;
    let (rm, rv, momentum) = match i.running {
        Some((rm, rv, mo)) => (Some(rm), Some(rv), mo),
        None => (None, None, 0.0),
    };
    let args = Args::new()
        .ptr(be.addr(&parts))
        .opt(i.gamma)
        .opt(i.beta)
        .ptr(be.addr(&stats))
        .ptr(be.addr(&coef))
        .opt(rm)
        .opt(rv)
        .pod(g)
        .f64(eps)
        .f64(momentum);
    launch_n(be, Kernel::BnFwdFinish, T::DTYPE, c, args)?;
    let args = Args::new().ptr(i.x).ptr(be.addr(&coef)).opt(i.m).opt(i.acc).ptr(y).pod(g);
    launch_n(be, Kernel::BnFwdApply, T::DTYPE, g.len(), args)?;
    Ok(stats)
}

/// `forward_into` a new output.
pub(crate) fn forward<B: Backend, T: Float>(be: &B, i: &BnIn, g: &BnArgs, eps: f64) -> Result<BnOut<B, T>> {
    let y = be.alloc::<T>(g.len())?;
    let stats = forward_into::<B, T>(be, i, g, eps, be.addr(&y))?;
    Ok(BnOut { y, stats })
}

/// What a backward reads: ∂y `gr` and the saved statistics (mean, variance). Without `affine`,
/// `u` is the output x̂ (plain batch norm); with it `u` is the input x, and γ (1 when absent)
/// and the factors m apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BnGrad {
    pub u: u64,
    pub gr: u64,
    pub gamma: Option<u64>,
    pub m: Option<u64>,
    pub stats: u64,
    pub affine: bool,
}

/// ∂x into `gx` and, with `affine`, ∂γ, ∂β into `ggb` ([∂γ | ∂β], 2·C) when given.
pub(crate) fn backward_into<B: Backend, T: Float>(
    be: &B,
    i: &BnGrad,
    g: &BnArgs,
    eps: f64,
    gx: u64,
    ggb: Option<u64>,
) -> Result<()> {
    let c = g.c as usize;
    let m = if i.affine { i.m } else { None };
    let parts = partial_sums::<B, T>(be, i.gr, Some(i.u), m, g)?;
    let coef = be.alloc::<f64>(3 * c)?;
    let size = std::mem::size_of::<T>() as u64;
    let (gg, gb) = match ggb {
        Some(a) => (Some(a), Some(a + c as u64 * size)),
        None => (None, None),
    };
    let args = Args::new()
        .ptr(be.addr(&parts))
        .opt(i.gamma)
        .ptr(i.stats)
        .ptr(be.addr(&coef))
        .opt(gg)
        .opt(gb)
        .pod(g)
        .f64(eps)
        .flag(i.affine);
    launch_n(be, Kernel::BnBwdFinish, T::DTYPE, c, args)?;
    let args = Args::new().ptr(i.gr).ptr(i.u).ptr(be.addr(&coef)).opt(m).ptr(gx).pod(g);
    launch_n(be, Kernel::BnBwdApply, T::DTYPE, g.len(), args)
}

/// ∂x and, when asked, a second gradient.
type GradAndMore<B, T> = (Buf<B, T>, Option<Buf<B, T>>);

/// (∂x, ∂γβ when `want_gb` and affine).
pub(crate) fn backward<B: Backend, T: Float>(
    be: &B,
    i: &BnGrad,
    g: &BnArgs,
    eps: f64,
    want_gb: bool,
) -> Result<GradAndMore<B, T>> {
    let gx = be.alloc::<T>(g.len())?;
    let ggb = if want_gb && i.affine { Some(be.alloc::<T>(2 * g.c as usize)?) } else { None };
    backward_into::<B, T>(be, i, g, eps, be.addr(&gx), ggb.as_ref().map(|b| be.addr(b)))?;
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

/// (∂x = g·scale[c], ∂scale = Σ g·x, ∂shift = Σ g) per channel, as `want` asks.
pub(crate) fn channel_affine_backward<B: Backend, T: Float>(
    be: &B,
    [x, scale, gr]: [u64; 3],
    g: &BnArgs,
    want: [bool; 3],
) -> Result<Grads<B, T, 3>> {
    let gx = if want[0] { Some(channel_affine::<B, T>(be, gr, scale, None, g)?) } else { None };
    if !(want[1] || want[2]) {
        return Ok([gx, None, None]);
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
    Ok([gx, gs, gb])
}
