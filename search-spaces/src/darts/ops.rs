//! The DARTS operation set (Liu et al., 2019, "DARTS: Differentiable Architecture Search"),
//! in the published order, and the layers that implement each op. All convolutions are
//! bias-free. Module and parameter names follow the original PyTorch code, so that
//! `state_dict` keys match (`op.1.weight` of a SepConv is its first depthwise filter).
//!
//! - sep_conv_k: ReLU, dw k×k (stride s, pad k/2), 1×1, BN, ReLU, dw k×k, 1×1, BN
//! - dil_conv_k: ReLU, dw k×k (stride s, dilation 2, pad k−1), 1×1, BN
//! - skip_connect: identity, or FactorizedReduce at stride 2
//! - max/avg_pool_3x3: pad 1 (average excludes padding); followed by BN(affine=False) in the
//!   search network
//! - none: zeros (never materialised in a mixed op: it contributes nothing but its softmax
//!   weight)
//! - noise: standard normal values of the (strided) input's shape, parameter-free (the S4
//!   space of R-DARTS, Zela et al. 2020, `NoiseOp` of automl/RobustDARTS); not one of the
//!   eight primitives, so only an op set chooses it

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{Device, Result, Shape, Tensor};
use nas_core::nn::{out_side, size_product, BatchNorm2d, Conv1x1, Mode};
use nas_core::onnx::{Attr, ConvParams, Graph};
use nas_core::ops::{self, DwParams, PoolKind, StageWeights};
use nas_core::params::{Init, ParamBuilder};
use nas_core::rng::{self, Purpose};

use crate::op_set::op_set;

op_set! {
    /// The ops of the space in column order: DARTS' primitives in the published order
    /// (`genotypes.py`'s PRIMITIVES) with R-DARTS' noise after `none`.
    pub enum DartsOp in "darts" {
        None => "none",
        Noise => "noise",
        MaxPool3x3 => "max_pool_3x3",
        AvgPool3x3 => "avg_pool_3x3",
        SkipConnect => "skip_connect",
        SepConv3x3 => "sep_conv_3x3",
        SepConv5x5 => "sep_conv_5x5",
        DilConv3x3 => "dil_conv_3x3",
        DilConv5x5 => "dil_conv_5x5",
    }
}

/// ReLU → conv 1×1 → BN (`op.1`, `op.2`): the cell input preprocessing.
#[derive(Debug, Clone)]
pub struct ReluConvBn {
    conv: Conv1x1,
    bn: BatchNorm2d,
}

impl ReluConvBn {
    pub fn new(pb: &ParamBuilder, ci: usize, co: usize, affine: bool) -> nas_core::Result<Self> {
        let pb = pb.pp("op");
        Ok(Self { conv: Conv1x1::new(&pb.pp(1), ci, co, 1)?, bn: BatchNorm2d::new(&pb.pp(2), co, affine)? })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward_relu(x, mode)?, mode)
    }

    /// `forward` in evaluation mode as ONNX nodes (`op.1`, `op.2` under the scope).
    pub fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        let r = g.relu(x);
        g.scoped("op", |g| {
            let y = g.scoped(1, |g| self.conv.onnx(g, &r))?;
            g.scoped(2, |g| self.bn.onnx(g, &y))
        })
    }

    /// Output size and mult-adds for one h×w input (the convolution's).
    pub fn mult_adds(&self, hw: (usize, usize)) -> Option<((usize, usize), u128)> {
        self.conv.mult_adds(hw)
    }
}

/// ReLU → concat[conv1×1 s2 (x), conv1×1 s2 (x[:, :, 1:, 1:])] → BN: halves H and W.
#[derive(Debug, Clone)]
pub struct FactorizedReduce {
    conv_1: Conv1x1,
    conv_2: Conv1x1,
    bn: BatchNorm2d,
}

impl FactorizedReduce {
    pub fn new(pb: &ParamBuilder, ci: usize, co: usize, affine: bool) -> nas_core::Result<Self> {
        if !co.is_multiple_of(2) {
            return Err(nas_core::Error::Invalid(format!("FactorizedReduce needs an even channel count, got {co}")));
        }
        Ok(Self {
            conv_1: Conv1x1::new(&pb.pp("conv_1"), ci, co / 2, 2)?,
            conv_2: Conv1x1::with_offset(&pb.pp("conv_2"), ci, co / 2, 2, 1)?,
            bn: BatchNorm2d::new(&pb.pp("bn"), co, affine)?,
        })
    }

    /// `x_relu` is ReLU(x); the output is scaled per sample by `drop` when given.
    pub fn forward_relu(&self, x_relu: &Tensor, mode: Mode, drop: Option<&Tensor>) -> Result<Tensor> {
        let a = self.conv_1.forward(x_relu, mode)?;
        let b = self.conv_2.forward(x_relu, mode)?;
        self.bn.forward_scaled(&Tensor::cat(&[&a, &b], 1)?, mode, drop)
    }

    /// Output size and mult-adds for one h×w input; None when the two halves differ in size
    /// (an odd input side) or nothing is left to sample.
    pub fn mult_adds(&self, hw: (usize, usize)) -> Option<((usize, usize), u128)> {
        let (a, ma) = self.conv_1.mult_adds(hw)?;
        let (b, mb) = self.conv_2.mult_adds(hw)?;
        (a == b).then_some((a, ma + mb))
    }

    /// `forward` in evaluation mode as ONNX nodes (`conv_1`, `conv_2`, `bn` under the scope).
    pub fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        let r = g.relu(x);
        let a = g.scoped("conv_1", |g| self.conv_1.onnx(g, &r))?;
        let b = g.scoped("conv_2", |g| self.conv_2.onnx(g, &r))?;
        let y = g.concat(&[a, b], 1);
        g.scoped("bn", |g| self.bn.onnx(g, &y))
    }

    /// ReLU fused into both convolutions (x is read twice, ReLU(x) never stored).
    pub fn forward(&self, x: &Tensor, mode: Mode, drop: Option<&Tensor>) -> Result<Tensor> {
        let a = self.conv_1.forward_relu(x, mode)?;
        let b = self.conv_2.forward_relu(x, mode)?;
        self.bn.forward_scaled(&Tensor::cat(&[&a, &b], 1)?, mode, drop)
    }
}

/// One depthwise → pointwise → BN stage of a separable or dilated convolution.
#[derive(Debug, Clone)]
pub struct DwPwBn {
    /// [w_dw | w_pw | γ | β] packed in one variable (γ, β with affine BN).
    flat: Tensor,
    /// The index of its depthwise filter in the op's `Sequential` (`op.{first}`).
    first: usize,
    k: usize,
    ci: usize,
    co: usize,
    affine: bool,
    dwp: DwParams,
    bn: BatchNorm2d,
}

impl DwPwBn {
    /// Parameters at `op.{first}`, `op.{first+1}`, `op.{first+2}` (the depthwise and the
    /// pointwise filter and the BN's affine parameters, packed in one variable in that order,
    /// which is also the order their values are drawn in), BN buffers at `op.{first+2}`.
    fn new(
        pb: &ParamBuilder,
        first: usize,
        ci: usize,
        co: usize,
        k: usize,
        dwp: DwParams,
        affine: bool,
    ) -> nas_core::Result<Self> {
        let mut pieces: Vec<(String, Shape, Init)> = vec![
            (format!("{first}.weight"), (ci, 1, k, k).into(), Init::Uniform(1.0 / k as f64)),
            (format!("{}.weight", first + 1), (co, ci, 1, 1).into(), Init::Uniform(1.0 / (ci as f64).sqrt())),
        ];
        if affine {
            pieces.push((format!("{}.weight", first + 2), co.into(), Init::Const(1.0)));
            pieces.push((format!("{}.bias", first + 2), co.into(), Init::Const(0.0)));
        }
        let flat = pb.packed(&pieces)?;
        Ok(Self { flat, first, k, ci, co, affine, dwp, bn: BatchNorm2d::running_only(&pb.pp(first + 2), co)? })
    }

    /// Output size and mult-adds for one h×w input: the depthwise K²·C_in and the pointwise
    /// C_in·C_out per output pixel.
    fn mult_adds(&self, (h, w): (usize, usize)) -> Option<((usize, usize), u128)> {
        let DwParams { stride, padding, dilation } = self.dwp;
        let ho = out_side(h, self.k, stride, padding, dilation)?;
        let wo = out_side(w, self.k, stride, padding, dilation)?;
        let (k, ci, co) = (self.k, self.ci, self.co);
        Some(((ho, wo), size_product(&[k, k, ci, ho, wo]) + size_product(&[ci, co, ho, wo])))
    }

    /// BN(pw(dw(ReLU(x)))) in evaluation mode as ONNX nodes, its weights under the scope
    /// (`op`) at their `Sequential` indices.
    fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        let w = StageWeights { flat: &self.flat, k: self.k, co: self.co, affine: self.affine };
        let (w_dw, w_pw, gb) = w.split(self.ci)?;
        let DwParams { stride, padding, dilation } = self.dwp;
        let r = g.relu(x);
        let dw = g.scoped(self.first, |g| g.weight("weight", &w_dw))?;
        let h = g.conv(&r, &dw, self.k, ConvParams { stride, padding, dilation, groups: self.ci });
        let pw = g.scoped(self.first + 1, |g| g.weight("weight", &w_pw))?;
        let h = g.conv(&h, &pw, 1, ConvParams::dense(1, 0));
        let (gamma, beta) = (gb.as_ref().map(|p| &p.0), gb.as_ref().map(|p| &p.1));
        g.scoped(self.first + 2, |g| self.bn.onnx_affine(g, &h, gamma, beta))
    }

    /// acc + drop·BN(pw(dw(x))) (ReLU(x) with `relu`), one fused op in training.
    fn forward(
        &self,
        x: &Tensor,
        relu: bool,
        mode: Mode,
        drop: Option<&Tensor>,
        acc: Option<&Tensor>,
    ) -> Result<Tensor> {
        let flat = mode.w(&self.flat);
        let w = StageWeights { flat: &flat, k: self.k, co: self.co, affine: self.affine };
        self.bn.forward_stage(x, w, self.dwp, relu, mode, drop, acc)
    }
}

/// The random stream of a network: the values of its noise ops and the masks of the dropout
/// after skip_connect (P-DARTS). Draw n comes from the stream (seed, noise, n), so a run that
/// restores the position (the number of draws so far) continues with the values the
/// uninterrupted run would have drawn. The values are drawn on the host and uploaded.
#[derive(Debug)]
pub struct RandomStream {
    seed: u64,
    draws: AtomicU64,
    /// The dropout probability after skip_connect in training (f64 bits).
    skip_dropout: AtomicU64,
}

impl RandomStream {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self { seed, draws: AtomicU64::new(0), skip_dropout: AtomicU64::new(0f64.to_bits()) })
    }

    /// Draws so far.
    pub fn position(&self) -> u64 {
        self.draws.load(Ordering::Relaxed)
    }

    pub fn set_position(&self, draws: u64) {
        self.draws.store(draws, Ordering::Relaxed);
    }

    pub fn skip_dropout(&self) -> f64 {
        f64::from_bits(self.skip_dropout.load(Ordering::Relaxed))
    }

    pub fn set_skip_dropout(&self, p: f64) {
        self.skip_dropout.store(p.to_bits(), Ordering::Relaxed);
    }

    fn next(&self) -> rng::Rng {
        rng::stream(self.seed, Purpose::Noise, self.draws.fetch_add(1, Ordering::Relaxed), 0)
    }

    /// Standard normal values of `shape`, in `like`'s dtype on its device.
    fn sample(&self, shape: &[usize], like: &Tensor) -> Result<Tensor> {
        use rand_distr::Distribution;
        let n = shape.iter().product();
        let v: Vec<f32> = rand_distr::StandardNormal.sample_iter(self.next()).take(n).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(like.dtype())?.to_device(like.device())
    }

    /// Dropout of `x` with the skip-dropout probability p (`nn.Dropout`): every element kept
    /// with probability 1 − p and scaled by 1/(1 − p); x itself when p is 0.
    pub fn skip_dropout_of(&self, x: &Tensor) -> Result<Tensor> {
        use rand::Rng as _;
        let p = self.skip_dropout();
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let scale = if p < 1.0 { (1.0 / (1.0 - p)) as f32 } else { 0.0 };
        let mut rng = self.next();
        let m: Vec<f32> = (0..x.elem_count()).map(|_| if rng.random::<f64>() >= p { scale } else { 0.0 }).collect();
        let mask = Tensor::from_vec(m, x.dims(), &Device::Cpu)?.to_dtype(x.dtype())?.to_device(x.device())?;
        x * mask
    }
}

/// A parametrised op instance of the DARTS space.
#[derive(Debug, Clone)]
pub enum OpModule {
    Zero { stride: usize },
    Noise { stride: usize, stream: Arc<RandomStream> },
    Identity,
    FactorizedReduce(FactorizedReduce),
    Pool { kind: PoolKind, stride: usize, bn: Option<BatchNorm2d> },
    SepConv([DwPwBn; 2]),
    DilConv(DwPwBn),
}

impl OpModule {
    /// Builds `op` on `c` channels. `pool_bn` adds the BN(affine=False) that the search network
    /// puts after every pooling op (its running statistics are named `1.*`); a noise op draws
    /// from `noise`.
    pub fn new(
        op: DartsOp,
        pb: &ParamBuilder,
        c: usize,
        stride: usize,
        affine: bool,
        pool_bn: bool,
        noise: &Arc<RandomStream>,
    ) -> nas_core::Result<Self> {
        let conv = |k: usize, dilation: usize| DwParams { stride, padding: dilation * (k - 1) / 2, dilation };
        Ok(match op {
            DartsOp::None => OpModule::Zero { stride },
            DartsOp::Noise => OpModule::Noise { stride, stream: noise.clone() },
            DartsOp::MaxPool3x3 | DartsOp::AvgPool3x3 => OpModule::Pool {
                kind: if op == DartsOp::MaxPool3x3 { PoolKind::Max } else { PoolKind::Avg },
                stride,
                bn: if pool_bn { Some(BatchNorm2d::new(&pb.pp(1), c, false)?) } else { None },
            },
            DartsOp::SkipConnect if stride == 1 => OpModule::Identity,
            DartsOp::SkipConnect => OpModule::FactorizedReduce(FactorizedReduce::new(pb, c, c, affine)?),
            DartsOp::SepConv3x3 | DartsOp::SepConv5x5 => {
                let k = if op == DartsOp::SepConv3x3 { 3 } else { 5 };
                let pb = pb.pp("op");
                let first = DwPwBn::new(&pb, 1, c, c, k, conv(k, 1), affine)?;
                let second = DwPwBn::new(&pb, 5, c, c, k, DwParams { stride: 1, ..conv(k, 1) }, affine)?;
                OpModule::SepConv([first, second])
            }
            DartsOp::DilConv3x3 | DartsOp::DilConv5x5 => {
                let k = if op == DartsOp::DilConv3x3 { 3 } else { 5 };
                OpModule::DilConv(DwPwBn::new(&pb.pp("op"), 1, c, c, k, conv(k, 2), affine)?)
            }
        })
    }

    /// Output size and mult-adds of the op for one h×w input: convolutions count K²·C_in/groups
    /// multiply-accumulates per output value; pooling, zeros, noise and the identity none.
    /// None when the op does not fit the input.
    pub fn mult_adds(&self, (h, w): (usize, usize)) -> Option<((usize, usize), u128)> {
        match self {
            OpModule::Zero { stride } | OpModule::Noise { stride, .. } => {
                (*stride > 0).then(|| ((h.div_ceil(*stride), w.div_ceil(*stride)), 0))
            }
            OpModule::Identity => Some(((h, w), 0)),
            OpModule::FactorizedReduce(fr) => fr.mult_adds((h, w)),
            OpModule::Pool { stride, .. } => {
                Some(((out_side(h, 3, *stride, 1, 1)?, out_side(w, 3, *stride, 1, 1)?), 0))
            }
            OpModule::SepConv([a, b]) => {
                let (hw, ma) = a.mult_adds((h, w))?;
                let (hw, mb) = b.mult_adds(hw)?;
                Some((hw, ma + mb))
            }
            OpModule::DilConv(a) => a.mult_adds((h, w)),
        }
    }

    pub fn is_identity(&self) -> bool {
        matches!(self, OpModule::Identity)
    }

    /// The op in evaluation mode as ONNX nodes on `x`, its weights under the scope (the op's
    /// state_dict prefix). Zeros are `ConstantOfShape` of the strided input's shape; noise is
    /// `RandomNormalLike` (fresh values at every inference, as the op draws them).
    pub fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        Ok(match self {
            OpModule::Zero { stride } => {
                let s = g.subsample(x, 0, *stride);
                g.zeros_like(&s)
            }
            OpModule::Noise { stride, .. } => {
                let s = g.subsample(x, 0, *stride);
                g.node("RandomNormalLike", &[&s], vec![Attr::Float("mean", 0.0), Attr::Float("scale", 1.0)])
            }
            OpModule::Identity => x.to_string(),
            OpModule::FactorizedReduce(fr) => fr.onnx(g, x)?,
            OpModule::Pool { kind, stride, bn } => {
                let op = if *kind == PoolKind::Max { "MaxPool" } else { "AveragePool" };
                let y = g.pool(op, x, 3, *stride, 1);
                match bn {
                    Some(bn) => g.scoped(1, |g| bn.onnx(g, &y))?,
                    None => y,
                }
            }
            OpModule::SepConv([a, b]) => g.scoped("op", |g| {
                let h = a.onnx(g, x)?;
                b.onnx(g, &h)
            })?,
            OpModule::DilConv(a) => g.scoped("op", |g| a.onnx(g, x))?,
        })
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, OpModule::Zero { .. })
    }

    /// Whether `forward` wants ReLU(x) as well as x.
    pub fn wants_relu(&self) -> bool {
        matches!(self, OpModule::SepConv(_) | OpModule::DilConv(_) | OpModule::FactorizedReduce(_))
    }

    /// Applies the op to `x`; `x_relu` must be ReLU(x) when `wants_relu`.
    pub fn forward(&self, x: &Tensor, x_relu: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        self.forward_dropped(x, x_relu, mode, None)
    }

    /// `forward` with the output scaled per sample by `drop` (B,) (drop path, never on the
    /// identity); folded into the op's last batch norm where it has one.
    pub fn forward_dropped(
        &self,
        x: &Tensor,
        x_relu: Option<&Tensor>,
        mode: Mode,
        drop: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_into(x, x_relu, mode, drop, None)
    }

    /// The pooling of a pool op without batch norm (the derived network's), which depends on
    /// its input alone: ops that pool one input the same way share it (`pooled_into`).
    pub fn plain_pool(&self) -> Option<(PoolKind, usize)> {
        match self {
            OpModule::Pool { kind, stride, bn: None } => Some((*kind, *stride)),
            _ => None,
        }
    }

    /// `forward_into` of a `plain_pool` op from its pooled input `y`: times the drop-path
    /// factors, plus `acc`.
    pub fn pooled_into(y: Tensor, drop: Option<&Tensor>, acc: Option<&Tensor>) -> Result<Tensor> {
        let y = match drop {
            Some(m) => ops::scale_samples(&y, m)?,
            None => y,
        };
        match acc {
            Some(a) => a + y,
            None => Ok(y),
        }
    }

    /// Whether `forward_into` adds `acc` inside the op's own last step (sep_conv, dil_conv)
    /// rather than as a separate sum.
    pub fn fuses_acc(&self) -> bool {
        matches!(self, OpModule::SepConv(_) | OpModule::DilConv(_))
    }

    /// `acc + forward_dropped(…)`: a node's sum of two edges, the other edge added inside this
    /// op where it can (`fuses_acc`).
    pub fn forward_into(
        &self,
        x: &Tensor,
        x_relu: Option<&Tensor>,
        mode: Mode,
        drop: Option<&Tensor>,
        acc: Option<&Tensor>,
    ) -> Result<Tensor> {
        let plus_acc = |y: Tensor| match acc {
            Some(a) => a + y,
            None => Ok(y),
        };
        match self {
            OpModule::Zero { stride } => plus_acc(ops::subsample(x, *stride)?.zeros_like()?),
            OpModule::Noise { stride, stream } => {
                let (b, c, h, w) = x.dims4()?;
                let y = stream.sample(&[b, c, h.div_ceil(*stride), w.div_ceil(*stride)], x)?;
                plus_acc(match drop {
                    Some(m) => ops::scale_samples(&y, m)?,
                    None => y,
                })
            }
            OpModule::Identity => plus_acc(x.clone()),
            OpModule::FactorizedReduce(fr) => plus_acc(match x_relu {
                Some(r) => fr.forward_relu(r, mode, drop)?,
                None => fr.forward(x, mode, drop)?,
            }),
            OpModule::Pool { kind, stride, bn } => {
                let y = ops::pool3x3(x, *kind, *stride)?;
                match bn {
                    Some(bn) => plus_acc(bn.forward_scaled(&y, mode, drop)?),
                    None => Self::pooled_into(y, drop, acc),
                }
            }
            // The leading ReLU is fused into the first stage unless the caller shares ReLU(x).
            OpModule::SepConv([a, b]) => {
                let h = match x_relu {
                    Some(r) => a.forward(r, false, mode, None, None)?,
                    None => a.forward(x, true, mode, None, None)?,
                };
                b.forward(&h, true, mode, drop, acc)
            }
            OpModule::DilConv(a) => match x_relu {
                Some(r) => a.forward(r, false, mode, drop, acc),
                None => a.forward(x, true, mode, drop, acc),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_published_order() {
        let names: Vec<_> = super::super::op_sets::PRIMITIVES.iter().map(|o| o.name()).collect();
        assert_eq!(
            names,
            [
                "none",
                "max_pool_3x3",
                "avg_pool_3x3",
                "skip_connect",
                "sep_conv_3x3",
                "sep_conv_5x5",
                "dil_conv_3x3",
                "dil_conv_5x5"
            ]
        );
        for (i, o) in DartsOp::ALL.iter().enumerate() {
            assert_eq!(o.name().parse::<DartsOp>().unwrap(), *o);
            assert_eq!(o.index(), i);
        }
        let e = "conv_7x1_1x7".parse::<DartsOp>().unwrap_err().to_string();
        assert!(e.contains("unknown op `conv_7x1_1x7`"), "{e}");
    }
}
