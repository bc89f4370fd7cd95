//! The curvature diagnostic of R-DARTS (Zela et al. 2020): the dominant (largest) eigenvalue
//! of ∇²_α L_val(w, α), which grows before DARTS collapses onto parameter-free ops. R-DARTS
//! builds the full Hessian by double backward; here the Hessian is only ever applied to a
//! vector, by central differences of ∇_α L_val over α (ε = 1e-4/‖v‖), and the eigenvalue comes
//! from Lanczos iteration with full reorthogonalisation (α has a few hundred entries, so the
//! Lanczos vectors live on the host in f64): the largest Ritz value of the tridiagonal matrix,
//! stopped when it changes by less than 1e-7 (relative) on two successive iterations, after at
//! most `LANCZOS_STEPS` Hessian-vector products (two gradient evaluations each). The start
//! vector is drawn from the seeded `Hessian` stream.

use candle_core::{Device, Result, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};
use rand_distr::{Distribution, StandardNormal};

use super::{both_sides, difference, Bilevel, WeightGuard};
use crate::rng::{self, Purpose};

/// Most Hessian-vector products of one eigenvalue estimate.
pub const LANCZOS_STEPS: usize = 40;

/// The norm of the α perturbation. A supernet's loss is only piecewise smooth in α (ReLU and
/// max pooling switch as the mixture changes), and DARTS' 0.01 already crosses kinks on small
/// batches: with 0.01 the finite-difference Hessian of a tiny supernet is visibly asymmetric,
/// with 1e-4 it agrees with smaller steps, and in f32 it still leaves the rounding of the
/// gradients (~1e-7 relative) far below the curvature.
pub const ALPHA_FD_STEP: f64 = 1e-4;

/// ∇²_α L_val · v (one tensor per architecture parameter), around the current α.
pub fn alpha_hvp(p: &dyn Bilevel, v: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut guard = WeightGuard::new(p.arch())?;
    let base = guard.saved().to_vec();
    let (plus, minus, inv_2eps) = both_sides(&mut guard, &base, v, ALPHA_FD_STEP, || Ok(p.val_grads(false, true)?.a))?;
    guard.restore()?;
    difference(&plus, &minus, &inv_2eps)
}

/// The α tensors' shapes, for moving flat host vectors to the device and back.
struct Layout {
    shapes: Vec<Vec<usize>>,
    dtype: candle_core::DType,
    device: Device,
}

impl Layout {
    fn of(p: &dyn Bilevel) -> Result<Self> {
        let first = p.arch().first().ok_or_else(|| candle_core::Error::Msg("no architecture parameters".into()))?;
        Ok(Self {
            shapes: p.arch().iter().map(|v| v.dims().to_vec()).collect(),
            dtype: first.dtype(),
            device: first.device().clone(),
        })
    }

    fn len(&self) -> usize {
        self.shapes.iter().map(|s| s.iter().product::<usize>()).sum()
    }

    fn to_device(&self, flat: &[f64]) -> Result<Vec<Tensor>> {
        let mut at = 0;
        self.shapes
            .iter()
            .map(|s| {
                let n: usize = s.iter().product();
                let t = Tensor::from_slice(&flat[at..at + n], s.as_slice(), &self.device)?.to_dtype(self.dtype);
                at += n;
                t
            })
            .collect()
    }

    fn to_host(&self, ts: &[Tensor]) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.len());
        for t in ts {
            out.extend(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?);
        }
        Ok(out)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The largest Ritz value of the symmetric tridiagonal matrix (diag, off).
fn largest_ritz(diag: &[f64], off: &[f64]) -> f64 {
    let k = diag.len();
    let t = DMatrix::from_fn(k, k, |i, j| match i.abs_diff(j) {
        0 => diag[i],
        1 => off[i.min(j)],
        _ => 0.0,
    });
    SymmetricEigen::new(t).eigenvalues.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The largest eigenvalue of ∇²_α L_val at the current weights and α; `seed` picks the
/// start vector. Leaves α exactly as it was.
pub fn dominant_eigenvalue(p: &dyn Bilevel, seed: u64) -> Result<f64> {
    let layout = Layout::of(p)?;
    let n = layout.len();
    let mut rng = rng::stream(seed, Purpose::Hessian, 0, 0);
    let mut q: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let norm = dot(&q, &q).sqrt();
    q.iter_mut().for_each(|x| *x /= norm);
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let (mut diag, mut off) = (Vec::new(), Vec::new());
    let (mut last, mut settled) = (f64::NAN, 0);
    for _ in 0..LANCZOS_STEPS.min(n) {
        let mut w = layout.to_host(&alpha_hvp(p, &layout.to_device(&q)?)?)?;
        diag.push(dot(&w, &q));
        basis.push(q);
        // Full reorthogonalisation, twice (Kahan's "twice is enough"), against every earlier
        // vector: it also removes the β·q_{j−1} term of the three-term recurrence.
        for _ in 0..2 {
            for b in &basis {
                let c = dot(&w, b);
                w.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
            }
        }
        let theta = largest_ritz(&diag, &off);
        if !theta.is_finite() {
            candle_core::bail!("the α-Hessian's eigenvalue iteration gave a non-finite value");
        }
        settled = if (theta - last).abs() <= 1e-7 * theta.abs().max(1e-30) { settled + 1 } else { 0 };
        last = theta;
        let beta = dot(&w, &w).sqrt();
        let scale = diag.iter().map(|d| d.abs()).fold(0.0, f64::max).max(1e-30);
        if settled >= 2 || beta <= 1e-12 * scale {
            break;
        }
        off.push(beta);
        q = w.into_iter().map(|x| x / beta).collect();
    }
    Ok(last)
}
