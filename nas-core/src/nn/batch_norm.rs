//! 2-D batch normalisation with PyTorch semantics: training mode normalises with the biased
//! batch variance and updates the running statistics with momentum 0.1 and the unbiased
//! variance; evaluation mode uses the running statistics. `affine=False` (the DARTS search
//! network) has no weight or bias. State-dict names: weight, bias, running_mean, running_var.

use candle_core::{Result, Tensor, Var};

use super::Mode;
use crate::ops;
use crate::params::{Init, ParamBuilder};

#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    pub fn new(pb: &ParamBuilder, channels: usize, affine: bool) -> crate::Result<Self> {
        let (weight, bias) = if affine {
            (
                Some(pb.weight("weight", channels, Init::Const(1.0))?),
                Some(pb.weight("bias", channels, Init::Const(0.0))?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            weight,
            bias,
            running_mean: pb.buffer("running_mean", channels, Init::Const(0.0))?,
            running_var: pb.buffer("running_var", channels, Init::Const(1.0))?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_scaled(x, mode, None)
    }

    /// The output times a per-sample factor `sample_scale` (B,), without gradient (drop path
    /// on the op this BN ends); in training with affine parameters one fused op.
    pub fn forward_scaled(&self, x: &Tensor, mode: Mode, sample_scale: Option<&Tensor>) -> Result<Tensor> {
        let c = x.dim(1)?;
        let scaled = |y: Tensor| match sample_scale {
            Some(m) => ops::scale_samples(&y, m),
            None => Ok(y),
        };
        if mode.train {
            if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
                return ops::batch_norm_affine_train(x, &mode.w(w), &mode.w(b), sample_scale, self.eps, self.running());
            }
            scaled(ops::batch_norm_train(x, self.eps, self.running())?)
        } else {
            // Fold the running statistics and the affine part into one scale and shift.
            let inv = (self.running_var.as_tensor() + self.eps)?.sqrt()?.recip()?;
            let scale = match &self.weight {
                Some(w) => (mode.w(w) * inv)?,
                None => inv,
            };
            let shift = (self.running_mean.as_tensor() * &scale)?.neg()?;
            let shift = match &self.bias {
                Some(b) => (shift + mode.w(b))?,
                None => shift,
            };
            debug_assert_eq!(scale.dim(0)?, c);
            scaled(ops::channel_affine(x, &scale, &shift)?)
        }
    }

    /// `acc + m·BN(pw(dw(x)))` (ReLU(x) first with `relu`): a sep_conv/dil_conv stage ending in
    /// this batch norm, with the drop-path factor `sample_scale` and the node's other edge
    /// `acc`. In training one fused op; in evaluation the ops in turn.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_after_dw_pw(
        &self,
        x: &Tensor,
        (w_dw, w_pw): (&Tensor, &Tensor),
        p: ops::DwParams,
        relu: bool,
        mode: Mode,
        sample_scale: Option<&Tensor>,
        acc: Option<&Tensor>,
    ) -> Result<Tensor> {
        if !mode.train {
            let t = if relu { ops::relu_dw_pw(x, w_dw, w_pw, p)? } else { ops::dw_pw(x, w_dw, w_pw, p)? };
            let y = self.forward_scaled(&t, mode, sample_scale)?;
            return match acc {
                Some(a) => a + y,
                None => Ok(y),
            };
        }
        let mut parts = vec![w_dw.flatten_all()?, w_pw.flatten_all()?];
        if let (Some(g), Some(b)) = (&self.weight, &self.bias) {
            parts.extend([mode.w(g), mode.w(b)]);
        }
        let flat = Tensor::cat(&parts, 0)?;
        let w = ops::StageWeights { flat: &flat, k: w_dw.dim(2)?, co: w_pw.dim(0)?, affine: self.weight.is_some() };
        ops::dw_pw_bn_train(x, w, p, relu, sample_scale, acc, self.eps, self.running())
    }

    fn running(&self) -> Option<ops::RunningStats<'_>> {
        Some(ops::RunningStats { mean: &self.running_mean, var: &self.running_var, momentum: self.momentum })
    }
}
