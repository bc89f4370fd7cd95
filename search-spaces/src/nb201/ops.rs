//! The NAS-Bench-201 operation set in the benchmark's order (the column order of α) and the
//! layers behind it: nor_conv_k is ReLU → conv k×k (pad k/2, no bias) → BN, avg_pool_3x3 a
//! 3×3 average pool (pad 1, padding excluded from the count), skip_connect the identity, and
//! none is never computed. Parameter names follow AutoDL (`op.1.weight` is a conv's weight).

use candle_core::{Result, Tensor};
use nas_core::nn::{BatchNorm2d, Conv1x1, Conv2d, Mode};
use nas_core::onnx::Graph;
use nas_core::ops::{self, PoolKind};
use nas_core::params::ParamBuilder;

use crate::op_set::op_set;

op_set! {
    /// The NAS-Bench-201 ops in the benchmark's order.
    pub enum Nb201Op in "nb201" {
        None => "none",
        SkipConnect => "skip_connect",
        NorConv1x1 => "nor_conv_1x1",
        NorConv3x3 => "nor_conv_3x3",
        AvgPool3x3 => "avg_pool_3x3",
    }
}

/// ReLU → conv k×k → BN (`op.1`, `op.2`).
#[derive(Debug, Clone)]
enum NorConv {
    K1(Conv1x1),
    K3(Conv2d),
}

#[derive(Debug, Clone)]
pub(super) struct ReluConvBn {
    conv: NorConv,
    bn: BatchNorm2d,
}

impl ReluConvBn {
    pub(super) fn new(
        pb: &ParamBuilder,
        ci: usize,
        co: usize,
        k: usize,
        stride: usize,
        affine: bool,
    ) -> nas_core::Result<Self> {
        let pb = pb.pp("op");
        let conv = if k == 1 {
            NorConv::K1(Conv1x1::new(&pb.pp(1), ci, co, stride)?)
        } else {
            NorConv::K3(Conv2d::new(&pb.pp(1), ci, co, k, stride, k / 2)?)
        };
        Ok(Self { conv, bn: BatchNorm2d::new(&pb.pp(2), co, affine)? })
    }

    /// `relu` is ReLU(x).
    pub(super) fn forward_relu(&self, relu: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = match &self.conv {
            NorConv::K1(c) => c.forward(relu, mode)?,
            NorConv::K3(c) => c.forward(relu, mode)?,
        };
        self.bn.forward(&y, mode)
    }

    /// BN(conv(ReLU(x))) in evaluation mode as ONNX nodes (`op.1`, `op.2` under the scope).
    pub(super) fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        let r = g.relu(x);
        g.scoped("op", |g| {
            let y = g.scoped(1, |g| match &self.conv {
                NorConv::K1(c) => c.onnx(g, &r),
                NorConv::K3(c) => c.onnx(g, &r),
            })?;
            g.scoped(2, |g| self.bn.onnx(g, &y))
        })
    }
}

#[derive(Debug, Clone)]
pub(super) enum EdgeOp {
    Skip,
    Conv(ReluConvBn),
    AvgPool,
}

impl EdgeOp {
    /// None for `none`, which is never computed.
    pub(super) fn new(op: Nb201Op, pb: &ParamBuilder, c: usize, affine: bool) -> nas_core::Result<Option<Self>> {
        Ok(match op {
            Nb201Op::None => None,
            Nb201Op::SkipConnect => Some(EdgeOp::Skip),
            Nb201Op::NorConv1x1 => Some(EdgeOp::Conv(ReluConvBn::new(pb, c, c, 1, 1, affine)?)),
            Nb201Op::NorConv3x3 => Some(EdgeOp::Conv(ReluConvBn::new(pb, c, c, 3, 1, affine)?)),
            Nb201Op::AvgPool3x3 => Some(EdgeOp::AvgPool),
        })
    }

    pub(super) fn forward(&self, x: &Tensor, relu: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        match self {
            EdgeOp::Skip => Ok(x.clone()),
            EdgeOp::Conv(m) => match relu {
                Some(r) => m.forward_relu(r, mode),
                None => m.forward_relu(&ops::relu(x)?, mode),
            },
            EdgeOp::AvgPool => ops::pool3x3(x, PoolKind::Avg, 1),
        }
    }

    /// The op in evaluation mode as ONNX nodes on `x`.
    pub(super) fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        Ok(match self {
            EdgeOp::Skip => x.to_string(),
            EdgeOp::Conv(m) => m.onnx(g, x)?,
            EdgeOp::AvgPool => g.pool("AveragePool", x, 3, 1, 1),
        })
    }
}
