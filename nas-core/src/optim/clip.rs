//! Global-norm gradient clipping as `torch.nn.utils.clip_grad_norm_`: every gradient is
//! multiplied by min(1, max_norm / (‖g‖₂ + 1e-6)), ‖g‖₂ taken over all gradients together.
//! The factor stays on the device, so clipping needs no host round-trip.

use candle_core::{Result, Tensor};

/// ‖v‖₂ over all the tensors together, as a scalar tensor (None when there is none): the sums
/// of squares are added in the given order, then the square root is taken. Clipping and the
/// finite-difference step size of the hypergradients both use it.
pub fn global_norm<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<Option<Tensor>> {
    let mut total: Option<Tensor> = None;
    for g in tensors {
        let s = g.sqr()?.sum_all()?;
        total = Some(match total {
            None => s,
            Some(t) => (t + s)?,
        });
    }
    total.map(|t| t.sqrt()).transpose()
}

/// Scales the gradients in place to global norm at most `max_norm`; returns the norm before
/// clipping as a scalar tensor.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<Option<Tensor>> {
    let Some(norm) = global_norm(grads.iter().flatten())? else {
        return Ok(None);
    };
    let coef = ((norm.clone() + 1e-6)?.recip()? * max_norm)?.clamp(0.0, 1.0)?;
    for g in grads.iter_mut().flatten() {
        *g = g.broadcast_mul(&coef)?;
    }
    Ok(Some(norm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clips_only_above_max_norm() -> Result<()> {
        let dev = Device::Cpu;
        let mut g = vec![Some(Tensor::new(&[3.0f64], &dev)?), None, Some(Tensor::new(&[4.0f64], &dev)?)];
        let n = clip_grad_norm(&mut g, 1.0)?.unwrap().to_scalar::<f64>()?;
        assert!((n - 5.0).abs() < 1e-12);
        let c = 1.0 / (5.0 + 1e-6);
        assert!((g[0].as_ref().unwrap().to_vec1::<f64>()?[0] - 3.0 * c).abs() < 1e-12);
        assert!((g[2].as_ref().unwrap().to_vec1::<f64>()?[0] - 4.0 * c).abs() < 1e-12);
        let mut small = vec![Some(Tensor::new(&[0.3f64], &dev)?)];
        clip_grad_norm(&mut small, 1.0)?;
        assert_eq!(small[0].as_ref().unwrap().to_vec1::<f64>()?[0], 0.3);
        Ok(())
    }
}
