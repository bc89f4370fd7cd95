//! The continuous relaxation of one edge (DARTS §2.2): ō(x) = Σ_o softmax(α)_o · o(x) over the
//! eight primitives. The `none` op contributes zeros, so it is never computed; its weight still
//! enters the softmax and therefore every gradient. ReLU(x) is computed once and shared by all
//! ops that start with it. Parameters live under `_ops.{k}` with k the primitive's column.
//!
//! With partial channels (PC-DARTS, K > 1) the ops see only the first C/K channels; the other
//! channels bypass them (max-pooled 2×2 on reducing edges), are concatenated after the op
//! mixture and the result is channel-shuffled with K groups.

use candle_core::{Result, Tensor};
use nas_core::nn::Mode;
use nas_core::ops;
use nas_core::params::ParamBuilder;

use super::ops::{DartsOp, OpModule};

#[derive(Debug, Clone)]
pub struct MixedOp {
    /// (column in α, op) for every primitive except `none`.
    ops: Vec<(usize, OpModule)>,
    stride: usize,
    /// Partial-channel factor K (1: all channels).
    k: usize,
}

impl MixedOp {
    /// A mixed op on `c` channels whose ops see c/k of them (`k` must divide `c`).
    pub fn new(pb: &ParamBuilder, c: usize, stride: usize, k: usize) -> nas_core::Result<Self> {
        if k == 0 || c % k != 0 {
            return Err(nas_core::Error::Invalid(format!("partial channels K={k} must divide channels C={c}")));
        }
        let mut ops = Vec::new();
        for (col, &op) in DartsOp::ALL.iter().enumerate() {
            let m = OpModule::new(op, &pb.pp("_ops").pp(col), c / k, stride, false, true)?;
            if !m.is_zero() {
                ops.push((col, m));
            }
        }
        Ok(Self { ops, stride, k })
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// acc + edge·ō(x) for x (B, C, H, W), the edge's op weights `w` (8,) and its optional
    /// edge-normalisation weight `edge` (1,). Without partial channels the edge weight is
    /// folded into the op weights and the ops accumulate straight into the node's running sum,
    /// one chain of fused multiply-adds.
    pub fn forward_into(
        &self,
        acc: Option<Tensor>,
        x: &Tensor,
        w: &Tensor,
        edge: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        if self.k == 1 {
            return self.mix_into(acc, x, w, edge, mode);
        }
        let c = x.dim(1)?;
        let ca = c / self.k;
        let y = self.mix_into(None, &x.narrow(1, 0, ca)?, w, None, mode)?;
        let mut bypass = x.narrow(1, ca, c - ca)?;
        if self.stride == 2 {
            bypass = max_pool_2x2(&bypass)?;
        }
        let out = channel_shuffle(&Tensor::cat(&[&y, &bypass], 1)?, self.k)?;
        match (acc, edge) {
            (None, None) => Ok(out),
            (None, Some(b)) => ops::scale(&out, b),
            (Some(a), None) => a + out,
            (Some(a), Some(b)) => ops::axpy(&a, &out, b),
        }
    }

    fn mix_into(
        &self,
        acc: Option<Tensor>,
        x: &Tensor,
        w: &Tensor,
        edge: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let relu = if self.ops.iter().any(|(_, m)| m.wants_relu()) { Some(ops::relu(x)?) } else { None };
        let mut acc = acc;
        for (k, op) in &self.ops {
            let y = op.forward(x, relu.as_ref(), mode)?;
            let wk = w.narrow(0, *k, 1)?;
            let wk = match edge {
                Some(b) => (wk * b)?,
                None => wk,
            };
            acc = Some(match acc {
                None => ops::scale(&y, &wk)?,
                Some(a) => ops::axpy(&a, &y, &wk)?,
            });
        }
        match acc {
            Some(a) => Ok(a),
            None => candle_core::bail!("mixed op without operations"),
        }
    }

    /// The op mixture of this edge: Σ_o w_o·o(x) (with the partial-channel bypass and
    /// shuffle when K > 1).
    pub fn forward(&self, x: &Tensor, w: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_into(None, x, w, None, mode)
    }
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
