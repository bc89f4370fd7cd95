//! 2-D batch normalisation with PyTorch semantics: training mode normalises with the biased
//! batch variance and updates the running statistics with momentum 0.1 and the unbiased
//! variance; evaluation mode uses the running statistics. `affine=False` (the DARTS search
//! network) has no weight or bias. State-dict names: weight, bias, running_mean, running_var.

use candle_core::{Result, Tensor, Var};

use super::Mode;
use crate::onnx::{Attr, Graph};
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

    /// Only the running statistics: the affine parameters, if any, live elsewhere (a packed
    /// sep_conv/dil_conv stage, `forward_stage`).
    pub fn running_only(pb: &ParamBuilder, channels: usize) -> crate::Result<Self> {
        Self::new(pb, channels, false)
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_scaled(x, mode, None)
    }

    /// The output times a per-sample factor `sample_scale` (B,), without gradient (drop path
    /// on the op this BN ends); in training with affine parameters one fused op.
    pub fn forward_scaled(&self, x: &Tensor, mode: Mode, sample_scale: Option<&Tensor>) -> Result<Tensor> {
        if mode.train {
            if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
                return ops::batch_norm_affine_train(x, &mode.w(w), &mode.w(b), sample_scale, self.eps, self.running());
            }
            let y = ops::batch_norm_train(x, self.eps, self.running())?;
            return match sample_scale {
                Some(m) => ops::scale_samples(&y, m),
                None => Ok(y),
            };
        }
        let (w, b) = (self.weight.as_ref().map(|w| mode.w(w)), self.bias.as_ref().map(|b| mode.w(b)));
        self.eval_affine(x, w.as_ref(), b.as_ref(), sample_scale)
    }

    /// Evaluation mode with the affine parameters `weight`, `bias`: the running statistics
    /// and the affine part folded into one scale and shift, times the per-sample factor.
    fn eval_affine(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        sample_scale: Option<&Tensor>,
    ) -> Result<Tensor> {
        let inv = (self.running_var.as_tensor() + self.eps)?.sqrt()?.recip()?;
        let scale = match weight {
            Some(w) => (w * inv)?,
            None => inv,
        };
        let shift = (self.running_mean.as_tensor() * &scale)?.neg()?;
        let shift = match bias {
            Some(b) => (shift + b)?,
            None => shift,
        };
        let y = ops::channel_affine(x, &scale, &shift)?;
        match sample_scale {
            Some(m) => ops::scale_samples(&y, m),
            None => Ok(y),
        }
    }

    /// `acc + m·BN(pw(dw(x)))` (ReLU(x) first with `relu`): a sep_conv/dil_conv stage ending in
    /// this batch norm (built by `running_only`), its weights packed in `w` (the affine γ, β
    /// among them when `w.affine`), with the drop-path factor `sample_scale` and the node's
    /// other edge `acc`. In training one fused op; in evaluation the ops in turn.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_stage(
        &self,
        x: &Tensor,
        w: ops::StageWeights<'_>,
        p: ops::DwParams,
        relu: bool,
        mode: Mode,
        sample_scale: Option<&Tensor>,
        acc: Option<&Tensor>,
    ) -> Result<Tensor> {
        if mode.train {
            return ops::dw_pw_bn_train(x, w, p, relu, sample_scale, acc, self.eps, self.running());
        }
        let c = x.dim(1)?;
        let (n_dw, n_pw) = (c * w.k * w.k, w.co * c);
        let w_dw = w.flat.narrow(0, 0, n_dw)?.reshape((c, 1, w.k, w.k))?;
        let w_pw = w.flat.narrow(0, n_dw, n_pw)?.reshape((w.co, c, 1, 1))?;
        let t = if relu { ops::relu_dw_pw(x, &w_dw, &w_pw, p)? } else { ops::dw_pw(x, &w_dw, &w_pw, p)? };
        let affine = if w.affine {
            Some((w.flat.narrow(0, n_dw + n_pw, w.co)?, w.flat.narrow(0, n_dw + n_pw + w.co, w.co)?))
        } else {
            None
        };
        let (g, b) = (affine.as_ref().map(|a| &a.0), affine.as_ref().map(|a| &a.1));
        let y = self.eval_affine(&t, g, b, sample_scale)?;
        match acc {
            Some(a) => a + y,
            None => Ok(y),
        }
    }

    /// Evaluation mode as an ONNX BatchNormalization node on `x`, its tensors under the scope.
    pub fn onnx(&self, g: &mut Graph, x: &str) -> crate::Result<String> {
        self.onnx_affine(g, x, self.weight.as_ref(), self.bias.as_ref())
    }

    /// `onnx` with the affine parameters `weight`, `bias` (those of a packed stage; ones and
    /// zeros when None).
    pub fn onnx_affine(
        &self,
        g: &mut Graph,
        x: &str,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
    ) -> crate::Result<String> {
        let c = self.running_mean.dim(0)?;
        let w = match weight {
            Some(w) => g.weight("weight", w)?,
            None => g.constant("weight", &vec![1.0; c], vec![c as i64]),
        };
        let b = match bias {
            Some(b) => g.weight("bias", b)?,
            None => g.constant("bias", &vec![0.0; c], vec![c as i64]),
        };
        let mean = g.weight("running_mean", self.running_mean.as_tensor())?;
        let var = g.weight("running_var", self.running_var.as_tensor())?;
        Ok(g.node("BatchNormalization", &[x, &w, &b, &mean, &var], vec![Attr::Float("epsilon", self.eps as f32)]))
    }

    fn running(&self) -> Option<ops::RunningStats<'_>> {
        Some(ops::RunningStats { mean: &self.running_mean, var: &self.running_var, momentum: self.momentum })
    }
}
