//! Launch sequence of the multi-tensor SGD step with global-norm clipping (`optim.cu`): with
//! a clip, one sum-of-squares launch per list of up to `MT_MAX` tensors and one launch for the
//! factor; then one update launch per list. The factor never leaves the device.

use candle_core::Result;

use super::launch::{self, MtList};
use super::{Args, Backend, Kernel};
use crate::cpu::Float;

/// SGD's hyper-parameters for one step.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Global-norm clip (None or ≤ 0: no clipping).
    pub max_norm: Option<f64>,
}

/// Updates every (param, grad, momentum, len) entry in place; returns the (factor, norm)
/// buffer when clipping.
pub(crate) fn sgd_step<B: Backend, T: Float>(
    be: &B,
    entries: &[(u64, u64, u64, usize)],
    s: &SgdStep,
) -> Result<Option<B::Buf<f64>>> {
    let lists = MtList::chunks(entries);
    let factor = match s.max_norm.filter(|&m| m > 0.0) {
        Some(max_norm) if !lists.is_empty() => {
            let launches: Vec<_> = lists.iter().map(launch::multi_tensor).collect();
            let total: usize = launches.iter().map(|l| (l.grid[0] * l.grid[1]) as usize).sum();
            let parts = be.alloc::<f64>(total)?;
            let mut offset = 0u64;
            for (l, geom) in lists.iter().zip(&launches) {
                let at = be.addr(&parts) + offset * 8;
                be.launch(Kernel::MtSumsq, T::DTYPE, *geom, Args::new().pod(l).ptr(at))?;
                offset += (geom.grid[0] * geom.grid[1]) as u64;
            }
            let out = be.alloc::<f64>(2)?;
            let one = launch::Launch { grid: [1, 1, 1], block: [launch::REDUCE_THREADS, 1, 1] };
            let args = Args::new().ptr(be.addr(&parts)).i64(total as i64).f64(max_norm).ptr(be.addr(&out));
            be.launch(Kernel::MtClipFactor, T::DTYPE, one, args)?;
            Some(out)
        }
        _ => None,
    };
    let f = factor.as_ref().map(|b| be.addr(b));
    for l in &lists {
        let args = Args::new().pod(l).opt(f).f64(s.lr).f64(s.momentum).f64(s.weight_decay);
        be.launch(Kernel::MtSgd, T::DTYPE, launch::multi_tensor(l), args)?;
    }
    Ok(factor)
}

/// The step's CUDA entry point on candle tensors.
#[cfg(feature = "cuda")]
pub mod glue {
    use candle_core::{bail, Result, Tensor};

    use super::SgdStep;
    use crate::cuda::device::with_inputs;
    use crate::op::with_float;

    /// Updates `params` and `moms` in place from `grads` (all contiguous, on one GPU, one
    /// dtype, pairwise equal shapes).
    pub fn sgd_step(params: &[Tensor], grads: &[Tensor], moms: &[Tensor], s: &SgdStep) -> Result<()> {
        if params.len() != grads.len() || params.len() != moms.len() {
            bail!("sgd: {} params, {} gradients, {} buffers", params.len(), grads.len(), moms.len());
        }
        let Some(first) = params.first() else { return Ok(()) };
        for (p, g) in params.iter().zip(grads) {
            if p.shape() != g.shape() || !p.is_contiguous() {
                bail!("sgd: gradient {:?} for parameter {:?}", g.dims(), p.dims());
            }
        }
        let all: Vec<&Tensor> = params.iter().chain(grads).chain(moms).collect();
        let n = params.len();
        with_float!("sgd", first.dtype(), |T| {
            with_inputs::<T, _>(&all, |be, a| {
                let entries: Vec<_> = (0..n).map(|i| (a[i], a[n + i], a[2 * n + i], params[i].elem_count())).collect();
                super::sgd_step::<_, T>(be, &entries, s)?;
                Ok(())
            })
        })
    }
}
