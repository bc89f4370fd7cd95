//! The continuous relaxation of one edge (DARTS §2.2): ō(x) = Σ_o softmax(α)_o · o(x) over the
//! edge's ops (the eight primitives, or its op set). The `none` op contributes zeros, so it is
//! never computed; its weight still enters the softmax and therefore every gradient. ReLU(x) is
//! computed once and shared by all ops that start with it. Parameters live under `_ops.{k}`
//! with k the op's column in the edge's list.
//!
//! With partial channels (PC-DARTS, K > 1) the ops see only the first C/K channels; the other
//! channels bypass them (max-pooled 2×2 on reducing edges), are concatenated after the op
//! mixture and the result is channel-shuffled with K groups.

use candle_core::{Result, Tensor};
use nas_core::nn::Mode;
use nas_core::ops;
use nas_core::params::ParamBuilder;

use std::sync::Arc;

use super::ops::{DartsOp, OpModule, RandomStream};
use crate::supernet::EdgePick;

#[derive(Debug, Clone)]
pub struct MixedOp {
    /// (column in α, op) for every op of the edge except `none`.
    ops: Vec<(usize, OpModule)>,
    stride: usize,
    /// Partial-channel factor K (1: all channels).
    k: usize,
    /// Columns of the edge's row of α (its ops, `none` included).
    width: usize,
    random: Arc<RandomStream>,
}

impl MixedOp {
    /// A mixed op over `candidates` on `c` channels whose ops see c/k of them (`k` must divide
    /// `c`).
    pub fn new(
        pb: &ParamBuilder,
        c: usize,
        stride: usize,
        k: usize,
        candidates: &[DartsOp],
        random: &Arc<RandomStream>,
    ) -> nas_core::Result<Self> {
        if k == 0 || !c.is_multiple_of(k) {
            return Err(nas_core::Error::Invalid(format!("partial channels K={k} must divide channels C={c}")));
        }
        let mut ops = Vec::new();
        for (col, &op) in candidates.iter().enumerate() {
            let m = OpModule::new(op, &pb.pp("_ops").pp(col), c / k, stride, false, true, random)?;
            if !m.is_zero() {
                ops.push((col, m));
            }
        }
        Ok(Self { ops, stride, k, width: candidates.len(), random: random.clone() })
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// acc + edge·ō(x) for x (B, C, H, W), the edge's op weights `w` (one per op) and its optional
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
        let y = self.mix_into(None, &x.narrow(1, 0, ca)?.contiguous()?, w, None, mode)?;
        ops::accumulate(acc, ops::pc_merge(&y, x, self.k, self.stride)?, edge)
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
            // P-DARTS: dropout after the identity (skip_connect at stride 1) in training.
            let y = if op.is_identity() && mode.train { self.random.skip_dropout_of(&y)? } else { y };
            let wk = w.narrow(0, *k, 1)?;
            let wk = match edge {
                Some(b) => (wk * b)?,
                None => wk,
            };
            acc = Some(ops::accumulate(acc, y, Some(&wk))?);
        }
        match acc {
            Some(a) => Ok(a),
            None => candle_core::bail!("mixed op without operations"),
        }
    }

    /// The sampled ops of this edge, `pick.cols`, each scaled by its weight in `w` when there
    /// are weights, accumulated into `acc`; `none` adds nothing. With `pick.add_unchosen` the
    /// sum of the other columns' weights comes back too, a (1,) tensor the node adds to its
    /// output: zero in value, it gives their logits a gradient (GDAS).
    pub fn forward_picked(
        &self,
        acc: Option<Tensor>,
        x: &Tensor,
        w: Option<&Tensor>,
        pick: EdgePick,
        mode: Mode,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.k != 1 {
            candle_core::bail!("sampled ops with partial channels (K = {})", self.k);
        }
        if let Some(&c) = pick.cols.iter().find(|&&c| c >= self.width) {
            candle_core::bail!("sampled column {c} of an edge with {} ops", self.width);
        }
        let op_at = |col: usize| self.ops.iter().find(|(k, _)| *k == col).map(|(_, m)| m);
        let relu = if pick.cols.iter().any(|&c| op_at(c).is_some_and(OpModule::wants_relu)) {
            Some(ops::relu(x)?)
        } else {
            None
        };
        let mut acc = acc;
        for &col in pick.cols {
            let Some(op) = op_at(col) else { continue };
            let y = op.forward(x, relu.as_ref(), mode)?;
            let y = if op.is_identity() && mode.train { self.random.skip_dropout_of(&y)? } else { y };
            let wk = w.map(|w| w.narrow(0, col, 1)).transpose()?;
            acc = Some(ops::accumulate(acc, y, wk.as_ref())?);
        }
        let others = w.map(|w| pick.unchosen_sum(w, self.width)).transpose()?.flatten();
        Ok((acc, others))
    }

    /// The op mixture of this edge: Σ_o w_o·o(x) (with the partial-channel bypass and
    /// shuffle when K > 1).
    pub fn forward(&self, x: &Tensor, w: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_into(None, x, w, None, mode)
    }
}
