//! The same ops composed from candle primitives (pad, narrow, broadcast multiply, maximum):
//! slow, but obviously correct, differentiable by candle's own autograd and available on every
//! device. They are the reference the custom kernels are tested against, and the fallback on
//! devices that have no kernel for an op.

use candle_core::{DType, Device, Result, Tensor};

use super::depthwise::DwParams;
use super::pointwise::PwParams;
use super::pool::PoolKind;
use super::BnStats;

/// Keeps every `s`-th row and column starting at 0: x[:, :, ::s, ::s].
pub fn subsample(x: &Tensor, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    let (oh, ow) = ((h - 1) / s + 1, (w - 1) / s + 1);
    let x = x.pad_with_zeros(2, 0, oh * s - h)?.pad_with_zeros(3, 0, ow * s - w)?;
    x.reshape((b, c, oh, s, ow, s))?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.reshape((b, c, oh, ow))
}

/// Pads H and W by `p` on every side with the constant `v`.
fn pad_const(x: &Tensor, p: usize, v: f64) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    let rows = Tensor::full(v, (b, c, p, w), x.device())?.to_dtype(x.dtype())?;
    let x = Tensor::cat(&[&rows, x, &rows], 2)?;
    let cols = Tensor::full(v, (b, c, h + 2 * p, p), x.device())?.to_dtype(x.dtype())?;
    Tensor::cat(&[&cols, &x, &cols], 3)
}

pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, p: DwParams) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (_, _, k, _) = w.dims4()?;
    let span = p.dilation * (k - 1) + 1;
    let (fh, fw) = (h + 2 * p.padding - span + 1, wd + 2 * p.padding - span + 1);
    let xp = x.pad_with_zeros(2, p.padding, p.padding)?.pad_with_zeros(3, p.padding, p.padding)?;
    let mut acc: Option<Tensor> = None;
    for kh in 0..k {
        for kw in 0..k {
            let tap = w.narrow(2, kh, 1)?.narrow(3, kw, 1)?.reshape((1, c, 1, 1))?;
            let win = xp.narrow(2, kh * p.dilation, fh)?.narrow(3, kw * p.dilation, fw)?;
            let term = win.broadcast_mul(&tap)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    match acc {
        Some(a) => subsample(&a, p.stride),
        None => candle_core::bail!("depthwise_conv2d: empty kernel"),
    }
}

/// Number of in-image pixels of every 3×3 window (padding 1), shape (1, 1, H, W).
fn window_counts(h: usize, w: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let count = |i: usize, n: usize| (i + 2).min(n) - i.saturating_sub(1);
    let v: Vec<f32> = (0..h).flat_map(|y| (0..w).map(move |x| (count(y, h) * count(x, w)) as f32)).collect();
    Tensor::from_vec(v, (1, 1, h, w), dev)?.to_dtype(dtype)
}

pub fn pool3x3(x: &Tensor, kind: PoolKind, stride: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pad = match kind {
        PoolKind::Max => f64::NEG_INFINITY,
        PoolKind::Avg => 0.0,
    };
    let xp = pad_const(x, 1, pad)?;
    let mut y = xp.narrow(2, 0, h)?.narrow(3, 0, w)?;
    for tap in 1..9 {
        let win = xp.narrow(2, tap / 3, h)?.narrow(3, tap % 3, w)?;
        y = match kind {
            PoolKind::Max => y.maximum(&win)?,
            PoolKind::Avg => (y + win)?,
        };
    }
    if kind == PoolKind::Avg {
        y = y.broadcast_div(&window_counts(h, w, x.dtype(), x.device())?)?;
    }
    subsample(&y, stride)
}

/// Average pooling with a k×k window, stride s and no padding (the auxiliary head's 5×5/3).
pub fn avg_pool_valid(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < k || w < k || s == 0 {
        candle_core::bail!("avg_pool_valid: input {h}x{w} smaller than window {k} or zero stride");
    }
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let (sh, sw) = ((oh - 1) * s + 1, (ow - 1) * s + 1);
    let mut acc = subsample(&x.narrow(2, 0, sh)?.narrow(3, 0, sw)?, s)?;
    for tap in 1..k * k {
        let win = x.narrow(2, tap / k, sh)?.narrow(3, tap % k, sw)?;
        acc = (acc + subsample(&win, s)?)?;
    }
    acc / (k * k) as f64
}

/// 1×1 convolution sampling x at offset + stride·i, as a batched matrix product.
pub fn conv1x1(x: &Tensor, w: &Tensor, p: PwParams) -> Result<Tensor> {
    let x = if p.offset > 0 {
        let (_, _, h, wd) = x.dims4()?;
        x.narrow(2, p.offset, h - p.offset)?.narrow(3, p.offset, wd - p.offset)?
    } else {
        x.clone()
    };
    let x = subsample(&x, p.stride)?;
    let (b, ci, h, wd) = x.dims4()?;
    let co = w.dim(0)?;
    let w = w.reshape((co, ci))?.broadcast_left(b)?;
    w.matmul(&x.reshape((b, ci, h * wd))?)?.reshape((b, co, h, wd))
}

/// Training-mode batch norm without affine parameters from candle reductions.
pub fn batch_norm_train(x: &Tensor, eps: f64) -> Result<(Tensor, BnStats)> {
    let c = x.dim(1)?;
    let mean = x.mean_keepdim((0, 2, 3))?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let y = xc.broadcast_div(&(var.clone() + eps)?.sqrt()?)?;
    let count = x.elem_count() / c;
    Ok((y, BnStats { mean: mean.detach().flatten_all()?, var: var.detach().flatten_all()?, count }))
}

/// y = x·scale[c] + shift[c].
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)
}

/// ShuffleNet's channel shuffle with `groups` groups: channel g·(C/groups) + i moves to
/// i·groups + g, i.e. view (B, groups, C/groups, H, W), swap the two channel axes, flatten.
pub fn channel_shuffle(x: &Tensor, groups: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if groups == 0 || c % groups != 0 {
        candle_core::bail!("channel shuffle: {groups} groups do not divide {c} channels");
    }
    x.reshape((b, groups, c / groups, h, w))?.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))
}

/// 2×2 max pooling with stride 2 (odd trailing rows/columns dropped, as PyTorch's floor
/// mode), composed from a reshape and two max reductions: candle's own max_pool2d backward
/// scales the gradient by 1/4.
pub fn max_pool_2x2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    if ho == 0 || wo == 0 {
        candle_core::bail!("2x2 max pooling of a {h}x{w} input");
    }
    let x = if h % 2 == 1 || w % 2 == 1 { x.narrow(2, 0, 2 * ho)?.narrow(3, 0, 2 * wo)? } else { x.clone() };
    x.reshape((b, c, ho, 2, wo, 2))?.max(5)?.max(3)
}

/// shuffle(cat[y, bypass(x[:, C/K:])], K), composed.
pub fn pc_merge(y: &Tensor, x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let c = x.dim(1)?;
    if k == 0 || c % k != 0 {
        candle_core::bail!("pc_merge: K={k} must divide C={c}");
    }
    let mut bypass = x.narrow(1, c / k, c - c / k)?;
    if stride == 2 {
        bypass = max_pool_2x2(&bypass)?;
    }
    channel_shuffle(&Tensor::cat(&[y, &bypass], 1)?, k)
}
