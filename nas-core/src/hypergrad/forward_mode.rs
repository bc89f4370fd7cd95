//! Forward-mode hypergradient (FAD; Franceschi et al., ICML 2017; lucfra/FAR-HO `ForwardHG`):
//! the tangent of the weights with respect to α is carried along the real lower-level steps
//! instead of reversed through virtual ones. With the optimiser's momentum SGD,
//!   m_{t+1} = μ·m_t + ∇_w L_t(w_t, α) + λ·w_t,   w_{t+1} = w_t − ξ·m_{t+1},
//! the tangents Z = dw/dα and Y = dm/dα (dim(w) × dim(α) each) follow
//!   Y_{t+1} = μ·Y_t + ∇²_w L_t·Z_t + ∇²_{w,α} L_t + λ·Z_t,   Z_{t+1} = Z_t − ξ·Y_{t+1},
//! and the hypergradient at any step is ∂L_val/∂α + Zᵀ·∂L_val/∂w. Column j of the two second
//! derivatives together is the directional derivative of ∇_w L_t along (Z_j, e_j) in (w, α):
//! one central difference, two gradient evaluations per α entry and step (2·dim(α) in all),
//! with the perturbation's norm `fd_step` as DARTS' products. Without momentum Y is not kept.
//!
//! The tangents start at zero (w₀ and m₀ do not depend on α) and are set back to zero every
//! `reset` steps (truncated forward mode; 0: never). α moves between the steps (real-time
//! hyperparameter optimisation, the paper's RTHO): each column is the derivative with respect to
//! the α entry along the trajectory actually taken, as FAR-HO's online forward mode takes it.
//! On a problem with a weight box (a toy), a coordinate the projection held on the boundary has
//! no tangent: it is zeroed before each use. The real step's gradient clip is not differentiated
//! (nor is it in the reverse-mode rules' virtual steps).
//!
//! Memory: the tangents are dim(w)·dim(α) numbers each (`ForwardMode::tangent_bytes`), stored
//! per weight as one (dim(α), shape…) tensor and updated column by column in place.

use candle_core::{DType, Result, Tensor, Var};

use super::{both_sides, difference, Bilevel, Hypergradient, SgdState, WeightGuard, DARTS_FD_STEP};

/// Checkpoint names: the tangents per weight and the steps since the last reset.
const Z_STATE: &str = "fad.z.";
const Y_STATE: &str = "fad.y.";
const STEPS_STATE: &str = "fad.steps";

#[derive(Debug, Clone)]
pub struct ForwardMode {
    /// Steps after which the tangents start again from zero (0: never).
    pub reset: usize,
    pub fd_step: f64,
    tangent: Option<Tangent>,
}

#[derive(Debug, Clone)]
struct Tangent {
    /// dw/dα per weight, shape (dim(α), weight shape…).
    z: Vec<Tensor>,
    /// dm/dα per weight, as `z`; empty without momentum.
    y: Vec<Tensor>,
    /// Steps followed since the last reset.
    steps: usize,
}

impl ForwardMode {
    pub fn new(reset: usize) -> Self {
        Self { reset, fd_step: DARTS_FD_STEP, tangent: None }
    }

    /// Bytes of the tangents for `weights` numbers of `dtype`, `arch` α entries, with the
    /// momentum tangent when `momentum`.
    pub fn tangent_bytes(weights: usize, arch: usize, dtype: DType, momentum: bool) -> u128 {
        (1 + momentum as u128) * weights as u128 * arch as u128 * dtype.size_in_bytes() as u128
    }

    /// Steps the tangents have followed since their last reset (0 before the first step).
    pub fn steps(&self) -> usize {
        self.tangent.as_ref().map_or(0, |t| t.steps)
    }

    fn zeros(p: &dyn Bilevel, columns: usize, momentum: bool) -> Result<Tangent> {
        let stacked = |v: &Var| {
            let mut dims = vec![columns];
            dims.extend(v.dims());
            Tensor::zeros(dims, v.dtype(), v.device())
        };
        let z = p.weights().iter().map(stacked).collect::<Result<Vec<_>>>()?;
        let y = if momentum { p.weights().iter().map(stacked).collect::<Result<_>>()? } else { Vec::new() };
        Ok(Tangent { z, y, steps: 0 })
    }
}

/// Zeroes the tangent rows of the coordinates the box holds on its boundary.
fn clear_clamped(p: &dyn Bilevel, t: &mut Tangent) -> Result<()> {
    let Some((lo, hi)) = p.weight_box() else { return Ok(()) };
    for (i, w) in p.weights().iter().enumerate() {
        let w = w.as_tensor();
        let inside = w.gt(lo)?.mul(&w.lt(hi)?)?.to_dtype(w.dtype())?.unsqueeze(0)?;
        t.z[i] = t.z[i].broadcast_mul(&inside)?;
        if let Some(y) = t.y.get_mut(i) {
            *y = y.broadcast_mul(&inside)?;
        }
    }
    Ok(())
}

/// The α entries as columns: (which architecture parameter, flat index in it).
fn columns(arch: &[Var]) -> Vec<(usize, usize)> {
    arch.iter().enumerate().flat_map(|(a, v)| (0..v.elem_count()).map(move |k| (a, k))).collect()
}

impl Hypergradient for ForwardMode {
    fn follows_steps(&self) -> bool {
        true
    }

    fn before_step(&mut self, p: &dyn Bilevel, st: &SgdState) -> Result<()> {
        let cols = columns(p.arch());
        let momentum = st.momentum != 0.0;
        let restart = match &self.tangent {
            None => true,
            // Also when the weights or the momentum changed under a restored tangent.
            Some(t) => {
                (self.reset > 0 && t.steps >= self.reset)
                    || t.z.len() != p.weights().len()
                    || t.y.is_empty() == momentum
            }
        };
        if restart {
            // The old tangents go before the new ones are allocated: never both at once.
            self.tangent = None;
            self.tangent = Some(Self::zeros(p, cols.len(), momentum)?);
        }
        let Some(t) = self.tangent.as_mut() else { unreachable!("the tangent was just made") };
        clear_clamped(p, t)?;
        let n_w = p.weights().len();
        let vars: Vec<Var> = p.weights().iter().chain(p.arch()).cloned().collect();
        let mut guard = WeightGuard::new(&vars)?;
        let base = guard.saved().to_vec();
        // e_j of each α tensor: rows of an identity, and zeros for the tensors it is not in.
        let eyes =
            p.arch().iter().map(|a| Tensor::eye(a.elem_count(), a.dtype(), a.device())).collect::<Result<Vec<_>>>()?;
        let zeros = p.arch().iter().map(|a| a.as_tensor().zeros_like()).collect::<Result<Vec<_>>>()?;
        for (j, &(a, k)) in cols.iter().enumerate() {
            let mut dir = t.z.iter().map(|z| z.get(j)).collect::<Result<Vec<_>>>()?;
            for (b, z) in zeros.iter().enumerate() {
                dir.push(if b == a { eyes[a].get(k)?.reshape(z.shape())? } else { z.clone() });
            }
            let (plus, minus, inv_2eps) =
                both_sides(&mut guard, &base, &dir, self.fd_step, || Ok(p.train_grads(true, false)?.w))?;
            let d = difference(&plus, &minus, &inv_2eps)?;
            for i in 0..n_w {
                // Y_j ← μY_j + (H Z_j + B_j) + λZ_j;  Z_j ← Z_j − ξY_j.
                let mut dy = (&d[i] + (&dir[i] * st.weight_decay)?)?;
                if momentum {
                    dy = (dy + (t.y[i].get(j)? * st.momentum)?)?;
                }
                let z_next = (&dir[i] - (&dy * st.lr)?)?;
                if momentum {
                    t.y[i].slice_set(&dy.unsqueeze(0)?, 0, j)?;
                }
                t.z[i].slice_set(&z_next.unsqueeze(0)?, 0, j)?;
            }
        }
        guard.restore()?;
        t.steps += 1;
        Ok(())
    }

    fn hypergradient(&mut self, p: &dyn Bilevel, _st: &SgdState) -> Result<Vec<Tensor>> {
        let val = p.val_grads(true, true)?;
        let Some(t) = self.tangent.as_mut() else { return Ok(val.a) };
        clear_clamped(p, t)?;
        // Zᵀ·∂L_val/∂w, one number per α entry.
        let mut total: Option<Tensor> = None;
        for (z, g) in t.z.iter().zip(&val.w) {
            let cols = z.dim(0)?;
            let part = z.reshape((cols, g.elem_count()))?.matmul(&g.reshape((g.elem_count(), 1))?)?;
            total = Some(match total {
                Some(s) => (s + part)?,
                None => part,
            });
        }
        let Some(total) = total else { return Ok(val.a) };
        let total = total.flatten_all()?;
        let mut offset = 0;
        val.a
            .iter()
            .map(|g| {
                let n = g.elem_count();
                let part = total.narrow(0, offset, n)?.reshape(g.shape())?;
                offset += n;
                g + part
            })
            .collect()
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let Some(t) = &self.tangent else { return Vec::new() };
        let mut out: Vec<(String, Tensor)> = Vec::new();
        out.extend(t.z.iter().enumerate().map(|(i, z)| (format!("{Z_STATE}{i}"), z.clone())));
        out.extend(t.y.iter().enumerate().map(|(i, y)| (format!("{Y_STATE}{i}"), y.clone())));
        if let Some(z) = t.z.first() {
            if let Ok(steps) = Tensor::new(&[t.steps as u32], z.device()) {
                out.push((STEPS_STATE.to_string(), steps));
            }
        }
        out
    }

    fn load_state(&mut self, get: &dyn Fn(&str) -> Option<Tensor>) -> Result<()> {
        let read = |prefix: &str| {
            let mut v = Vec::new();
            while let Some(t) = get(&format!("{prefix}{}", v.len())) {
                v.push(t);
            }
            v
        };
        let z = read(Z_STATE);
        if z.is_empty() {
            self.tangent = None;
            return Ok(());
        }
        let y = read(Y_STATE);
        if !y.is_empty() && y.len() != z.len() {
            candle_core::bail!("the checkpoint holds {} momentum tangents for {} weight tangents", y.len(), z.len());
        }
        let Some(steps) = get(STEPS_STATE) else {
            candle_core::bail!("the checkpoint holds the forward-mode tangents without `{STEPS_STATE}`");
        };
        let steps = steps.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let steps = steps.first().copied().unwrap_or(0) as usize;
        // Own storage: the tangents are updated in place.
        let own = |v: Vec<Tensor>| v.iter().map(|t| t.copy()).collect::<Result<Vec<_>>>();
        self.tangent = Some(Tangent { z: own(z)?, y: own(y)?, steps });
        Ok(())
    }
}
