//! 2-D batch normalisation with PyTorch semantics: training mode normalises with the biased
//! batch variance and updates the running statistics with momentum 0.1 and the unbiased
//! variance; evaluation mode uses the running statistics. `affine=False` (the DARTS search
//! network) has no weight or bias. State-dict names: weight, bias, running_mean, running_var.

use candle_core::{Result, Tensor, Var};

use super::Mode;
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
        let c = x.dim(1)?;
        let y = if mode.train {
            let n = x.elem_count() / c;
            let mean = x.mean_keepdim((0, 2, 3))?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
            let y = xc.broadcast_div(&(var.clone() + self.eps)?.sqrt()?)?;
            self.update_running(&mean.detach(), &var.detach(), n)?;
            y
        } else {
            let shape = (1, c, 1, 1);
            let mean = self.running_mean.as_tensor().reshape(shape)?;
            let std = (self.running_var.as_tensor().reshape(shape)? + self.eps)?.sqrt()?;
            x.broadcast_sub(&mean)?.broadcast_div(&std)?
        };
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => {
                let shape = (1, c, 1, 1);
                y.broadcast_mul(&mode.w(w).reshape(shape)?)?
                    .broadcast_add(&mode.w(b).reshape(shape)?)
            }
            _ => Ok(y),
        }
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = self.momentum;
        let unbiased = if n > 1 {
            n as f64 / (n - 1) as f64
        } else {
            1.0
        };
        let rm = self.running_mean.as_tensor();
        let rv = self.running_var.as_tensor();
        let new_mean = ((rm * (1.0 - m))? + (mean.flatten_all()? * m)?)?;
        let new_var = ((rv * (1.0 - m))? + (var.flatten_all()? * (m * unbiased))?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)
    }
}
