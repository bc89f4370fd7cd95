//! The continuous relaxation of one edge (DARTS §2.2): ō(x) = Σ_o softmax(α)_o · o(x) over the
//! eight primitives. The `none` op contributes zeros, so it is never computed; its weight still
//! enters the softmax and therefore every gradient. ReLU(x) is computed once and shared by all
//! ops that start with it. Parameters live under `_ops.{k}` with k the primitive's column.

use candle_core::{Result, Tensor};
use nas_core::nn::Mode;
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

    /// x (B, C, H, W), `w` the edge's op weights (8,) → (B, C, H/s, W/s).
    pub fn forward(&self, x: &Tensor, w: &Tensor, mode: Mode) -> Result<Tensor> {
        let relu = if self.ops.iter().any(|(_, m)| m.wants_relu()) {
            Some(x.relu()?)
        } else {
            None
        };
        let mut acc: Option<Tensor> = None;
        for (k, op) in &self.ops {
            let y = op.forward(x, relu.as_ref(), mode)?;
            let term = y.broadcast_mul(&w.narrow(0, *k, 1)?)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
        match acc {
            Some(a) => Ok(a),
            None => candle_core::bail!("mixed op without operations"),
        }
    }
}
