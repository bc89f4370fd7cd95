//! Hypergradients against independent ground truth in f64:
//! - the second-order (unrolled) α gradient equals d/dα L_val(w'(α), α) by central finite
//!   differences over α, redoing the virtual step at α ± h;
//! - the finite-difference mixed and weight Hessian-vector products equal closed forms;
//! - the implicit (Neumann) hypergradient converges to the exact hypergradient of ridge
//!   regression with the regulariser as the upper-level variable, and conjugate gradient
//!   reaches it within as many iterations as there are weights;
//! - truncated unrolling (T-RAD) equals the closed-form derivative of the K-step-unrolled
//!   ridge loss (forward mode on the host, with and without a momentum buffer), and K = 1
//!   equals DARTS' second order;
//! - an error half-way through a step leaves the weights exactly as they were.

use std::cell::Cell;

use candle_core::{Device, Tensor, Var, D};
use nas_core::hypergrad::{
    hvp, implicit_hypergradient, mixed_hvp, second_order_hypergradient, unrolled_weights, Bilevel, ConjugateGradient,
    Grads, Hypergradient, SgdState, TruncatedRad,
};
use rand::{Rng, SeedableRng};

type LossFn = Box<dyn Fn(&[Tensor], &[Tensor]) -> candle_core::Result<Tensor>>;

/// A bilevel problem given by two loss closures over (weights, arch).
struct FnProblem {
    w: Vec<Var>,
    a: Vec<Var>,
    train: LossFn,
    /// Training batches 1, 2, … of an unrolled step.
    more_train: Vec<LossFn>,
    val: LossFn,
    fail_after: Option<usize>,
    calls: Cell<usize>,
}

impl FnProblem {
    fn grads(&self, f: &LossFn, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        self.calls.set(self.calls.get() + 1);
        if self.fail_after.is_some_and(|n| self.calls.get() > n) {
            candle_core::bail!("injected failure");
        }
        let pick = |vars: &[Var], want: bool| -> Vec<Tensor> {
            vars.iter().map(|v| if want { v.as_tensor().clone() } else { v.as_tensor().detach() }).collect()
        };
        let loss = f(&pick(&self.w, want_w), &pick(&self.a, want_a))?;
        let g = loss.backward()?;
        let take = |vars: &[Var]| -> Vec<Tensor> {
            vars.iter()
                .map(|v| g.get(v.as_tensor()).cloned().unwrap_or_else(|| v.as_tensor().zeros_like().unwrap()))
                .collect()
        };
        Ok(Grads { w: if want_w { take(&self.w) } else { vec![] }, a: if want_a { take(&self.a) } else { vec![] } })
    }
}

impl Bilevel for FnProblem {
    fn weights(&self) -> &[Var] {
        &self.w
    }
    fn arch(&self) -> &[Var] {
        &self.a
    }
    fn train_batches(&self) -> usize {
        1 + self.more_train.len()
    }
    fn train_grads_on(&self, k: usize, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        self.grads(if k == 0 { &self.train } else { &self.more_train[k - 1] }, want_w, want_a)
    }
    fn val_grads(&self, want_w: bool, want_a: bool) -> candle_core::Result<Grads> {
        self.grads(&self.val, want_w, want_a)
    }
    fn val_loss(&self) -> candle_core::Result<f64> {
        let t = |v: &[Var]| -> Vec<Tensor> { v.iter().map(|v| v.as_tensor().detach()).collect() };
        (self.val)(&t(&self.w), &t(&self.a))?.to_scalar::<f64>()
    }
}

fn rand_tensor(rng: &mut rand_chacha::ChaCha8Rng, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn host(t: &[Tensor]) -> Vec<f64> {
    t.iter().flat_map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap()).collect()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    diff / scale
}

/// A small smooth "supernet": three candidate ops mixed by softmax(α), a linear classifier
/// and cross-entropy. Weights W0, W1, W2 (4×3) and V (3×4); α (3,).
fn mixed_model(x: &Tensor, y: &Tensor) -> LossFn {
    let (x, y) = (x.clone(), y.clone());
    Box::new(move |w: &[Tensor], a: &[Tensor]| {
        let mix = candle_nn_softmax(&a[0])?;
        let ops = [x.matmul(&w[0].t()?)?.tanh()?, x.matmul(&w[1].t()?)?.sin()?, (x.matmul(&w[2].t()?)?.sqr()? * 0.3)?];
        let mut h = ops[0].broadcast_mul(&mix.narrow(0, 0, 1)?)?;
        for (k, op) in ops.iter().enumerate().skip(1) {
            h = (h + op.broadcast_mul(&mix.narrow(0, k, 1)?)?)?;
        }
        let logits = h.matmul(&w[3].t()?)?;
        let logp = logits.broadcast_sub(&logits.exp()?.sum_keepdim(1)?.log()?)?;
        (logp * &y)?.sum_all()?.neg()? / x.dim(0)? as f64
    })
}

fn candle_nn_softmax(a: &Tensor) -> candle_core::Result<Tensor> {
    let e = a.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

fn one_hot(labels: &[usize], classes: usize) -> Tensor {
    let mut v = vec![0f64; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l] = 1.0;
    }
    Tensor::from_vec(v, (labels.len(), classes), &Device::Cpu).unwrap()
}

fn mixed_problem(seed: u64) -> FnProblem {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let xt = rand_tensor(&mut rng, &[16, 3], 1.0);
    let xv = rand_tensor(&mut rng, &[16, 3], 1.0);
    let yt = one_hot(&(0..16).map(|i| i % 3).collect::<Vec<_>>(), 3);
    let yv = one_hot(&(0..16).map(|i| (i + 1) % 3).collect::<Vec<_>>(), 3);
    let w = [[4, 3], [4, 3], [4, 3], [3, 4]]
        .iter()
        .map(|s| Var::from_tensor(&rand_tensor(&mut rng, s, 0.8)).unwrap())
        .collect();
    let a = vec![Var::from_tensor(&rand_tensor(&mut rng, &[3], 0.5)).unwrap()];
    FnProblem {
        w,
        a,
        train: mixed_model(&xt, &yt),
        more_train: Vec::new(),
        val: mixed_model(&xv, &yv),
        fail_after: None,
        calls: Cell::new(0),
    }
}

#[test]
fn second_order_gradient_is_the_derivative_of_the_unrolled_validation_loss() {
    let p = mixed_problem(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let bufs: Vec<Tensor> = p.w.iter().map(|w| rand_tensor(&mut rng, w.dims(), 0.1)).collect();
    let st = SgdState { lr: 0.1, momentum: 0.9, weight_decay: 3e-4, momentum_buffers: bufs.iter().map(Some).collect() };
    let before = host(&p.w.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>());
    let g = host(&second_order_hypergradient(&p, &st).unwrap());
    let after = host(&p.w.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>());
    assert_eq!(before, after, "weights restored exactly");

    // d/dα L_val(w'(α), α) by central differences over α, recomputing the virtual step.
    let w0: Vec<Tensor> = p.w.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let a0 = p.a[0].as_tensor().copy().unwrap().to_vec1::<f64>().unwrap();
    let unrolled_val = |alpha: &[f64]| -> f64 {
        let a = [Tensor::new(alpha, &Device::Cpu).unwrap()];
        let vars: Vec<Var> = w0.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ws: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let gw = (p.train)(&ws, &a).unwrap().backward().unwrap();
        let gw: Vec<Tensor> = vars.iter().map(|v| gw.get(v.as_tensor()).unwrap().clone()).collect();
        let w1 = unrolled_weights(&w0, &gw, &st).unwrap();
        (p.val)(&w1, &a).unwrap().to_scalar::<f64>().unwrap()
    };
    let h = 1e-5;
    let fd: Vec<f64> = (0..a0.len())
        .map(|i| {
            let (mut up, mut down) = (a0.clone(), a0.clone());
            up[i] += h;
            down[i] -= h;
            (unrolled_val(&up) - unrolled_val(&down)) / (2.0 * h)
        })
        .collect();
    let e = rel_err(&g, &fd);
    println!("second-order hypergradient vs finite differences over alpha: rel err {e:.2e}");
    assert!(e < 1e-4, "rel err {e}: {g:?} vs {fd:?}");
}

/// L(w, α) = Σ_ij M_ij sin(α_i) w_j² + ½ Σ_j c_j w_j²: ∇²_{α,w}L·v has the closed form
/// Σ_j 2 M_ij cos(α_i) w_j v_j and ∇²_w L·v = (2 Σ_i M_ij sin(α_i) + c_j) v_j.
#[test]
fn finite_difference_hessian_vector_products_match_closed_forms() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let m = rand_tensor(&mut rng, &[4, 6], 1.0);
    let c = rand_tensor(&mut rng, &[6], 1.0);
    let loss: LossFn = {
        let (m, c) = (m.clone(), c.clone());
        Box::new(move |w: &[Tensor], a: &[Tensor]| {
            let w2 = w[0].sqr()?;
            let quad = a[0].sin()?.unsqueeze(0)?.matmul(&m)?.squeeze(0)?;
            (quad * &w2)?.sum_all()? + ((&c * &w2)?.sum_all()? * 0.5)?
        })
    };
    let w = rand_tensor(&mut rng, &[6], 1.0);
    let a = rand_tensor(&mut rng, &[4], 1.0);
    let v = rand_tensor(&mut rng, &[6], 1.0);
    let p = FnProblem {
        w: vec![Var::from_tensor(&w).unwrap()],
        a: vec![Var::from_tensor(&a).unwrap()],
        train: loss,
        more_train: Vec::new(),
        val: Box::new(|w: &[Tensor], _: &[Tensor]| w[0].sum_all()),
        fail_after: None,
        calls: Cell::new(0),
    };
    let (mh, wv, av, vv) = (
        m.to_vec2::<f64>().unwrap(),
        w.to_vec1::<f64>().unwrap(),
        a.to_vec1::<f64>().unwrap(),
        v.to_vec1::<f64>().unwrap(),
    );
    let cv = c.to_vec1::<f64>().unwrap();
    let mixed_exact: Vec<f64> =
        (0..4).map(|i| (0..6).map(|j| 2.0 * mh[i][j] * av[i].cos() * wv[j] * vv[j]).sum()).collect();
    let hvp_exact: Vec<f64> =
        (0..6).map(|j| ((0..4).map(|i| 2.0 * mh[i][j] * av[i].sin()).sum::<f64>() + cv[j]) * vv[j]).collect();
    let e1 = rel_err(&host(&mixed_hvp(&p, std::slice::from_ref(&v)).unwrap()), &mixed_exact);
    let e2 = rel_err(&host(&hvp(&p, std::slice::from_ref(&v)).unwrap()), &hvp_exact);
    println!("mixed HVP rel err {e1:.2e}, HVP rel err {e2:.2e}");
    assert!(e1 < 1e-5 && e2 < 1e-5, "{e1} {e2}");
}

/// Solves the d×d system A x = b by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let d = b.len();
    for col in 0..d {
        let piv = (col..d).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap();
        a.swap(col, piv);
        b.swap(col, piv);
        let pivot_row = a[col].clone();
        for r in col + 1..d {
            let f = a[r][col] / pivot_row[col];
            for (x, p) in a[r][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; d];
    for r in (0..d).rev() {
        x[r] = (b[r] - (r + 1..d).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    x
}

/// ½‖Xw − y‖²/n (+ ½ Σ_j e^{α_j} w_j² when α is given: one α for all weights, or one each).
fn ridge_loss(x: &Tensor, y: &Tensor) -> LossFn {
    let (x, y) = (x.clone(), y.clone());
    Box::new(move |w: &[Tensor], a: &[Tensor]| {
        let r = (x.matmul(&w[0])? - &y)?;
        let data = (r.sqr()?.sum_all()? * (0.5 / x.dim(0)? as f64))?;
        if a.is_empty() {
            return Ok(data);
        }
        let reg = a[0].exp()?.reshape(((), 1))?.broadcast_mul(&w[0].sqr()?)?.sum_all()?;
        data + (reg * 0.5)?
    })
}

/// Host copies of a data batch: X (n×d) and y (n).
fn host_batch(x: &Tensor, y: &Tensor) -> (Vec<Vec<f64>>, Vec<f64>) {
    (x.to_vec2::<f64>().unwrap(), y.flatten_all().unwrap().to_vec1().unwrap())
}

/// XᵀX/n and Xᵀy/n.
fn normal_equations(x: &[Vec<f64>], y: &[f64]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let (n, d) = (x.len(), x[0].len());
    let xtx =
        (0..d).map(|i| (0..d).map(|j| (0..n).map(|k| x[k][i] * x[k][j]).sum::<f64>() / n as f64).collect()).collect();
    let xty = (0..d).map(|i| (0..n).map(|k| x[k][i] * y[k]).sum::<f64>() / n as f64).collect();
    (xtx, xty)
}

/// Ridge regression: L_train = ½‖Xw − y‖²/n + ½e^α‖w‖², L_val = ½‖X_v w − y_v‖²/n_v, with the
/// closed-form best response w*(α) = (XᵀX/n + e^α I)⁻¹Xᵀy/n and hypergradient
/// dL_val/dα = −e^α w*ᵀ H⁻¹ ∇_w L_val(w*). The problem sits at w*; returns it and the exact
/// hypergradient.
fn ridge_at_best_response() -> (FnProblem, f64) {
    let (n, d) = (50, 5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let x = rand_tensor(&mut rng, &[n, d], 1.7);
    let xv = rand_tensor(&mut rng, &[n, d], 1.7);
    let w_true = rand_tensor(&mut rng, &[d, 1], 1.0);
    let y = (x.matmul(&w_true).unwrap() + rand_tensor(&mut rng, &[n, 1], 0.3)).unwrap();
    let yv = (xv.matmul(&w_true).unwrap() + rand_tensor(&mut rng, &[n, 1], 0.3)).unwrap();
    let alpha = (0.1f64).ln();
    let train = ridge_loss(&x, &y);
    let val_data = ridge_loss(&xv, &yv);
    let val: LossFn = Box::new(move |w: &[Tensor], _: &[Tensor]| val_data(w, &[]));

    // Closed form on the host.
    let (xh, yh) = host_batch(&x, &y);
    let (xvh, yvh) = host_batch(&xv, &yv);
    let lam = alpha.exp();
    let (mut h, xty) = normal_equations(&xh, &yh);
    (0..d).for_each(|i| h[i][i] += lam);
    let w_star = solve(h.clone(), xty);
    let resid: Vec<f64> = (0..n).map(|k| (0..d).map(|j| xvh[k][j] * w_star[j]).sum::<f64>() - yvh[k]).collect();
    let v: Vec<f64> = (0..d).map(|j| (0..n).map(|k| xvh[k][j] * resid[k]).sum::<f64>() / n as f64).collect();
    let hinv_v = solve(h, v);
    let exact = -lam * (0..d).map(|j| w_star[j] * hinv_v[j]).sum::<f64>();

    let p = FnProblem {
        w: vec![Var::from_tensor(&Tensor::from_vec(w_star, (d, 1), &Device::Cpu).unwrap()).unwrap()],
        a: vec![Var::from_tensor(&Tensor::new(&[alpha], &Device::Cpu).unwrap()).unwrap()],
        train,
        more_train: Vec::new(),
        val,
        fail_after: None,
        calls: Cell::new(0),
    };
    (p, exact)
}

#[test]
fn implicit_hypergradient_converges_on_ridge_regression() {
    let (p, exact) = ridge_at_best_response();
    let mut errs = Vec::new();
    for j in [1, 5, 20, 100] {
        let g = host(&implicit_hypergradient(&p, 0.5, j).unwrap())[0];
        let e = ((g - exact) / exact).abs();
        println!("implicit hypergradient, J = {j:>3}: {g:.10} vs exact {exact:.10}, rel err {e:.3e}");
        errs.push(e);
    }
    assert!(errs.windows(2).all(|w| w[1] < w[0]), "error must fall with J: {errs:?}");
    assert!(errs[3] < 1e-6, "{errs:?}");
    assert!(errs[0] > 1e-3, "J = 1 should still be visibly off: {errs:?}");
}

fn no_momentum() -> SgdState<'static> {
    SgdState { lr: 0.1, momentum: 0.9, weight_decay: 0.0, momentum_buffers: vec![None] }
}

/// Conjugate gradient solves the d×d ridge system exactly in at most d iterations (exact
/// arithmetic; the finite-difference products are exact for a quadratic up to rounding).
#[test]
fn conjugate_gradient_reaches_the_implicit_hypergradient_within_dim_steps() {
    let (p, exact) = ridge_at_best_response();
    let d = 5;
    let mut errs = Vec::new();
    for j in 1..=d {
        let g = host(&ConjugateGradient::new(j, 0.0).hypergradient(&p, &no_momentum()).unwrap())[0];
        let e = ((g - exact) / exact).abs();
        println!("conjugate-gradient hypergradient, J = {j}: {g:.12} vs exact {exact:.12}, rel err {e:.3e}");
        errs.push(e);
    }
    assert!(errs[d - 1] < 1e-8, "J = d must be exact: {errs:?}");
    assert!(errs[0] > 1e-4, "J = 1 should still be off: {errs:?}");
    // Warm-started from an exact solution, one iteration (indeed none) is enough; the calls
    // count the warm start's residual product.
    let mut cg = ConjugateGradient::new(d, 0.0);
    cg.hypergradient(&p, &no_momentum()).unwrap();
    cg.steps = 1;
    p.calls.set(0);
    let g = host(&cg.hypergradient(&p, &no_momentum()).unwrap())[0];
    assert!(((g - exact) / exact).abs() < 1e-8, "warm start: {g} vs {exact}");
    assert!(p.calls.get() <= 1 + 2 + 2 + 2, "{} evaluations", p.calls.get());
    // Its state round-trips through a checkpoint's names.
    let state = cg.state();
    let mut restored = ConjugateGradient::new(1, 0.0);
    restored.load_state(&|n| state.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone())).unwrap();
    assert_eq!(host(restored.solution().unwrap()), host(cg.solution().unwrap()));
    // Damping solves (H + λI)p = v instead: the answer moves.
    let damped = host(&ConjugateGradient::new(d, 1.0).hypergradient(&p, &no_momentum()).unwrap())[0];
    assert!(((damped - exact) / exact).abs() > 1e-2, "damping had no effect: {damped} vs {exact}");
}

/// The K-step unrolled ridge problem in closed form: training batches (X_t, y_t),
/// L_t = ½‖X_t w − y_t‖²/n + ½ Σ_j e^{α_j} w_j², one α per weight,
/// L_val = ½‖X_v w − y_v‖²/n + 0.05 Σ_j sin(α_j). The iterates m_{t+1} = μ m_t + A_t w_t − b_t + λ w_t,
/// w_{t+1} = w_t − ξ m_{t+1} (A_t = X_tᵀX_t/n + diag e^α, b_t = X_tᵀy_t/n) and their
/// derivatives in α by forward mode: dm_{t+1} = μ dm_t + (A_t + λ) dw_t + e^{α_j} w_{t,j} e_j,
/// dw_{t+1} = dw_t − ξ dm_{t+1}; dL/dα_j = ∇L_val(w_K)·dw_K/dα_j + 0.05 cos α_j.
#[test]
fn truncated_rad_is_the_exact_derivative_of_the_unrolled_ridge_loss() {
    let (n, d) = (30, 4);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let batches: Vec<(Tensor, Tensor)> =
        (0..6).map(|_| (rand_tensor(&mut rng, &[n, d], 1.0), rand_tensor(&mut rng, &[n, 1], 1.0))).collect();
    let w0 = rand_tensor(&mut rng, &[d, 1], 1.0);
    let m0 = rand_tensor(&mut rng, &[d, 1], 0.3);
    let alpha = rand_tensor(&mut rng, &[d], 1.0);
    let (xv, yv) = (rand_tensor(&mut rng, &[n, d], 1.0), rand_tensor(&mut rng, &[n, 1], 1.0));
    let (lr, mu, wd) = (0.2, 0.9, 0.01);

    let host_w0: Vec<f64> = w0.flatten_all().unwrap().to_vec1().unwrap();
    let host_m0: Vec<f64> = m0.flatten_all().unwrap().to_vec1().unwrap();
    let host_a: Vec<f64> = alpha.to_vec1().unwrap();
    let (xvh, yvh) = host_batch(&xv, &yv);
    let exact = |k: usize, momentum: bool| -> Vec<f64> {
        let mut w = host_w0.clone();
        let mut m = if momentum { host_m0.clone() } else { vec![0.0; d] };
        let mut dw = vec![vec![0.0; d]; d]; // dw[j] = dw/dα_j
        let mut dm = vec![vec![0.0; d]; d];
        for (x, y) in &batches[..k] {
            let (xh, yh) = host_batch(x, y);
            let (mut a, b) = normal_equations(&xh, &yh);
            (0..d).for_each(|i| a[i][i] += host_a[i].exp());
            let aw = |v: &[f64], i: usize| (0..d).map(|c| a[i][c] * v[c]).sum::<f64>();
            for j in 0..d {
                for i in 0..d {
                    let extra = if i == j { host_a[j].exp() * w[j] } else { 0.0 };
                    dm[j][i] = mu * dm[j][i] + aw(&dw[j], i) + wd * dw[j][i] + extra;
                }
                for i in 0..d {
                    dw[j][i] -= lr * dm[j][i];
                }
            }
            let m_next: Vec<f64> = (0..d).map(|i| mu * m[i] + aw(&w, i) - b[i] + wd * w[i]).collect();
            w = (0..d).map(|i| w[i] - lr * m_next[i]).collect();
            m = m_next;
        }
        let resid: Vec<f64> = (0..n).map(|r| (0..d).map(|c| xvh[r][c] * w[c]).sum::<f64>() - yvh[r]).collect();
        let gval: Vec<f64> = (0..d).map(|c| (0..n).map(|r| xvh[r][c] * resid[r]).sum::<f64>() / n as f64).collect();
        (0..d).map(|j| (0..d).map(|i| gval[i] * dw[j][i]).sum::<f64>() + 0.05 * host_a[j].cos()).collect()
    };

    let problem = || {
        let val_data = ridge_loss(&xv, &yv);
        let val: LossFn = Box::new(move |w: &[Tensor], a: &[Tensor]| {
            let data = val_data(w, &[])?;
            if a.is_empty() {
                return Ok(data);
            }
            data + (a[0].sin()?.sum_all()? * 0.05)?
        });
        let mut train = batches.iter().map(|(x, y)| ridge_loss(x, y));
        FnProblem {
            w: vec![Var::from_tensor(&w0).unwrap()],
            a: vec![Var::from_tensor(&alpha).unwrap()],
            train: train.next().unwrap(),
            more_train: train.collect(),
            val,
            fail_after: None,
            calls: Cell::new(0),
        }
    };
    for momentum in [false, true] {
        for k in [1, 2, 5] {
            let p = problem();
            let bufs = if momentum { vec![Some(&m0)] } else { vec![None] };
            let st = SgdState { lr, momentum: mu, weight_decay: wd, momentum_buffers: bufs };
            let g = host(&TruncatedRad::new(k).hypergradient(&p, &st).unwrap());
            let want = exact(k, momentum);
            let e = rel_err(&g, &want);
            println!("T-RAD, K = {k}, momentum buffer {momentum}: rel err {e:.3e} against the closed form");
            assert!(e < 1e-6, "K = {k}: {g:?} vs {want:?}");
            assert_eq!(p.calls.get(), 3 * k + 1, "gradient evaluations of K = {k}");
            assert_eq!(host(&[p.w[0].as_tensor().clone()]), host(std::slice::from_ref(&w0)), "weights restored");
            if k == 1 {
                // One-stage RAD is DARTS' second order.
                let p2 = problem();
                let g2 = host(&second_order_hypergradient(&p2, &st).unwrap());
                assert!(rel_err(&g, &g2) < 1e-12, "K = 1 against second order: {g:?} vs {g2:?}");
            }
        }
    }
    // More steps than batches is an error, not a silent reuse.
    let p = problem();
    let st = SgdState { lr, momentum: mu, weight_decay: wd, momentum_buffers: vec![None] };
    assert!(TruncatedRad::new(7).hypergradient(&p, &st).is_err());
}

#[test]
fn an_error_mid_step_leaves_the_weights_untouched() {
    for fail_after in 1..4 {
        let mut p = mixed_problem(2);
        p.fail_after = Some(fail_after);
        let before: Vec<Vec<f64>> =
            p.w.iter().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
        let st = SgdState { lr: 0.1, momentum: 0.9, weight_decay: 3e-4, momentum_buffers: vec![None; 4] };
        assert!(second_order_hypergradient(&p, &st).is_err());
        let after: Vec<Vec<f64>> =
            p.w.iter().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();
        assert_eq!(before, after, "weights perturbed after a failure at call {}", fail_after + 1);
    }
}

/// FAR-HO's own check of `ForwardHG` against `ReverseHG` (tests/check forward.ipynb):
/// v₁ = [[1, −1, 1], [2, 10, 2]], v₂ = [−1, 1, 0.2], λ = 1; L_train = mean(v₁²) + Σλ·v₂²,
/// L_val = mean(v₁·v₂); 10 momentum steps with η = 0.1, μ = 0.5. The notebook prints the λ
/// hypergradient (float32) [−0.018393531, 0.055180617, 0.0036787055]. Forward mode along the
/// ten real steps equals T-RAD through the same ten steps in f64 to 1e-10 (the products are
/// exact here: ∇L_train is bilinear in (λ, v₂)), and both equal the notebook's figures to
/// float32 precision.
fn far_ho_problem() -> FnProblem {
    let v1 = Tensor::new(&[[1.0f64, -1.0, 1.0], [2.0, 10.0, 2.0]], &Device::Cpu).unwrap();
    let v2 = Tensor::new(&[-1.0f64, 1.0, 0.2], &Device::Cpu).unwrap();
    let lambda = Tensor::ones(3, candle_core::DType::F64, &Device::Cpu).unwrap();
    let train = || -> LossFn {
        Box::new(|w: &[Tensor], a: &[Tensor]| w[0].sqr()?.mean_all()? + (&a[0] * w[1].sqr()?)?.sum_all()?)
    };
    FnProblem {
        w: vec![Var::from_tensor(&v1).unwrap(), Var::from_tensor(&v2).unwrap()],
        a: vec![Var::from_tensor(&lambda).unwrap()],
        train: train(),
        more_train: (0..9).map(|_| train()).collect(),
        val: Box::new(|w: &[Tensor], _a: &[Tensor]| w[0].broadcast_mul(&w[1])?.mean_all()),
        fail_after: None,
        calls: Cell::new(0),
    }
}

#[test]
fn forward_mode_equals_reverse_mode_on_far_ho_check() {
    use nas_core::hypergrad::ForwardMode;
    let p = far_ho_problem();
    let (lr, mu) = (0.1, 0.5);
    let start = SgdState { lr, momentum: mu, weight_decay: 0.0, momentum_buffers: vec![None, None] };
    let reverse = host(&TruncatedRad::new(10).hypergradient(&p, &start).unwrap());

    // Ten real momentum steps, the tangent following each; then the hypergradient at w_10.
    let mut fad = ForwardMode::new(0);
    let mut m: Vec<Option<Tensor>> = vec![None, None];
    for _ in 0..10 {
        let st =
            SgdState { lr, momentum: mu, weight_decay: 0.0, momentum_buffers: m.iter().map(Option::as_ref).collect() };
        fad.before_step(&p, &st).unwrap();
        let g = p.train_grads(true, false).unwrap().w;
        for ((v, g), m) in p.w.iter().zip(g).zip(m.iter_mut()) {
            let next = match m.take() {
                Some(old) => ((old * mu).unwrap() + g).unwrap(),
                None => g,
            };
            v.set(&(v.as_tensor() - (&next * lr).unwrap()).unwrap()).unwrap();
            *m = Some(next);
        }
    }
    assert_eq!(fad.steps(), 10);
    let forward = host(&fad.hypergradient(&p, &start).unwrap());
    let diff = forward.iter().zip(&reverse).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!("FAR-HO check: forward {forward:?}, reverse {reverse:?}, max diff {diff:.1e}");
    assert!(diff < 1e-10, "{forward:?} vs {reverse:?}");
    let notebook = [-0.018393531, 0.055180617, 0.0036787055];
    for (a, b) in forward.iter().zip(notebook) {
        assert!((a - b).abs() < 1e-6 * (1.0 + b.abs()), "{forward:?} vs FAR-HO's {notebook:?}");
    }
}

/// Resetting every N steps keeps only the last N steps' dependence: after 10 steps with a reset
/// every 4, the tangent equals one that started fresh two steps ago (steps 8 and 9), and a
/// checkpoint of its state restores it exactly.
#[test]
fn forward_mode_reset_truncates_and_its_state_restores() {
    use nas_core::hypergrad::ForwardMode;
    let p = far_ho_problem();
    let st = SgdState { lr: 0.1, momentum: 0.0, weight_decay: 0.01, momentum_buffers: vec![None, None] };
    let step = |p: &FnProblem| {
        let g = p.train_grads(true, false).unwrap().w;
        for (v, g) in p.w.iter().zip(g) {
            let d = (g + (v.as_tensor() * 0.01).unwrap()).unwrap();
            v.set(&(v.as_tensor() - (d * 0.1).unwrap()).unwrap()).unwrap();
        }
    };
    let mut reset = ForwardMode::new(4);
    let mut fresh = ForwardMode::new(0);
    for t in 0..10 {
        reset.before_step(&p, &st).unwrap();
        if t >= 8 {
            fresh.before_step(&p, &st).unwrap();
        }
        step(&p);
    }
    assert_eq!(reset.steps(), 2);
    let (a, b) = (host(&reset.hypergradient(&p, &st).unwrap()), host(&fresh.hypergradient(&p, &st).unwrap()));
    assert_eq!(a, b);
    // No momentum: no momentum tangent in the state.
    let state = reset.state();
    assert!(
        state.iter().all(|(n, _)| !n.starts_with("fad.y.")),
        "{:?}",
        state.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let mut back = ForwardMode::new(4);
    back.load_state(&|n| state.iter().find(|(k, _)| k == n).map(|(_, t)| t.clone())).unwrap();
    assert_eq!(back.steps(), 2);
    for _ in 0..3 {
        back.before_step(&p, &st).unwrap();
        reset.before_step(&p, &st).unwrap();
        step(&p);
    }
    assert_eq!(back.steps(), 1, "reset after the fourth step");
    assert_eq!(host(&back.hypergradient(&p, &st).unwrap()), host(&reset.hypergradient(&p, &st).unwrap()));
}
