//! The continuous relaxation of one edge (DARTS §2.2): ō(x) = Σ_o softmax(α)_o · o(x) over the
//! eight primitives. The `none` op contributes zeros, so it is never computed; its weight still
//! enters the softmax and therefore every gradient. ReLU(x) is computed once and shared by all
//! ops that start with it. Parameters live under `_ops.{k}` with k the primitive's column.

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
}

impl MixedOp {
    pub fn new(pb: &ParamBuilder, c: usize, stride: usize) -> nas_core::Result<Self> {
        let mut ops = Vec::new();
        for (k, &op) in DartsOp::ALL.iter().enumerate() {
            let m = OpModule::new(op, &pb.pp("_ops").pp(k), c, stride, false, true)?;
            if !m.is_zero() {
                ops.push((k, m));
            }
        }
        Ok(Self { ops, stride })
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// acc + Σ_o w_o·o(x) for x (B, C, H, W) and the edge's op weights `w` (8,), each scaled by
    /// `edge` when given (PC-DARTS edge normalisation). Accumulating into the node's running
    /// sum makes the whole node one chain of fused multiply-adds.
    pub fn forward_into(
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

    /// Σ_o w_o·o(x).
    pub fn forward(&self, x: &Tensor, w: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_into(None, x, w, None, mode)
    }
}
