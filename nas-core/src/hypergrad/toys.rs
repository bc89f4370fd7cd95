//! Small bilevel problems with known solutions, on which the hypergradient rules can be told
//! apart (`nas bilevel`): the upper variable x plays α, the lower variable y plays the
//! weights, F is the validation loss and f the training loss. Each is a `Bilevel` (f64 on the
//! CPU, gradients by autodiff), and `run` drives any `Hypergradient` on it with the budget
//! every method gets alike: per outer iteration, `inner` gradient steps on f from the current y
//! (the lower level), then one step on x along the rule's hypergradient, both projected onto
//! the problem's box where it has one. A rule that follows the lower level's steps (forward
//! mode) follows these `inner` steps.
//!
//! - `non-singleton` (Liu et al. 2020, BDA's counterexample): F = ½‖x − y₂‖² + ½‖y₁ − e‖²,
//!   f = ½‖y₁‖² − xᵀy₁, x, y₁, y₂ ∈ ℝⁿ. Every y₂ is a lower-level solution; the optimistic
//!   solution is x* = e, y* = (e, e), F* = 0. f never moves y₂, so a method that takes the
//!   lower level's answer as unique keeps y₂ at its start and stops at x = (e + y₂⁰)/2.
//! - `non-convex` (Liu et al. 2021, IAPTT-GM's numerical example): F = x + x·y,
//!   f = −sin(x·y), y ∈ [−2, 2], x ∈ [1, 10], x₀ = 1, y₀ = 2; the solution x* = 5.5π/2
//!   (≈ 8.6394), y* = −2, F* = −x*.
//! - `ridge`: f = ½‖Ay − b‖² + ½ Σᵢ e^{xᵢ} yᵢ², F = ½‖y − y_target‖² with y_target the best
//!   response at x_true, so x* = x_true, F* = 0; f is strongly convex in y, and every rule's
//!   hypergradient has a closed form (`ridge_hypergradient` gives the exact one).

use candle_core::{Device, Result, Tensor, Var};

use super::{Bilevel, Grads, Hypergradient, SgdState};

/// A loss of (y, x).
type Loss = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor>>;

/// One of the problems above with its state (x and y as variables).
pub struct Toy {
    pub name: &'static str,
    y: Vec<Var>,
    x: Vec<Var>,
    upper: Loss,
    lower: Loss,
    /// The box x and y are projected onto after every step, (lo, hi) per variable.
    x_box: Option<(f64, f64)>,
    y_box: Option<(f64, f64)>,
    /// The known solution x*.
    pub x_star: Vec<f64>,
}

/// The problems' names, for the command line.
pub const PROBLEMS: [&str; 3] = ["non-singleton", "non-convex", "ridge"];

fn var(v: Vec<f64>) -> Result<Var> {
    let n = v.len();
    Var::from_tensor(&Tensor::from_vec(v, n, &Device::Cpu)?)
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_vec1::<f64>()
}

/// The ridge problem's data: A (m×n), b, y_target and x_true.
pub struct RidgeData {
    pub a: Vec<Vec<f64>>,
    pub b: Vec<f64>,
    pub x_true: Vec<f64>,
    pub target: Vec<f64>,
}

impl RidgeData {
    /// A fixed, well-conditioned instance with n = 4 unknowns and m = 6 rows.
    pub fn fixed() -> Self {
        let (m, n) = (6, 4);
        let a: Vec<Vec<f64>> = (0..m)
            .map(|i| (0..n).map(|j| ((i * 7 + j * 3) % 5) as f64 / 2.0 - 1.0 + (i == j) as u8 as f64).collect())
            .collect();
        let b: Vec<f64> = (0..m).map(|i| (i as f64 * 0.7).sin() + 0.5).collect();
        let x_true = vec![0.5, -0.3, 0.1, -0.8];
        let mut d = Self { a, b, x_true: x_true.clone(), target: vec![] };
        d.target = d.best_response(&x_true);
        d
    }

    /// H(x) = AᵀA + diag(e^x).
    pub fn hessian(&self, x: &[f64]) -> Vec<Vec<f64>> {
        let n = x.len();
        let mut h = vec![vec![0.0; n]; n];
        for (r, hr) in h.iter_mut().enumerate() {
            for (c, v) in hr.iter_mut().enumerate() {
                *v = self.a.iter().map(|row| row[r] * row[c]).sum::<f64>() + if r == c { x[r].exp() } else { 0.0 };
            }
        }
        h
    }

    /// y*(x) = H(x)⁻¹ Aᵀb.
    pub fn best_response(&self, x: &[f64]) -> Vec<f64> {
        let atb: Vec<f64> = (0..x.len()).map(|c| self.a.iter().zip(&self.b).map(|(row, b)| row[c] * b).sum()).collect();
        solve(self.hessian(x), atb)
    }
}

/// Solves h·z = r (a small dense symmetric positive definite system: the ridge Hessian).
pub fn solve(h: Vec<Vec<f64>>, r: Vec<f64>) -> Vec<f64> {
    let n = r.len();
    let m = nalgebra::DMatrix::from_fn(n, n, |i, j| h[i][j]);
    let z =
        m.lu().solve(&nalgebra::DVector::from_vec(r)).unwrap_or_else(|| nalgebra::DVector::from_element(n, f64::NAN));
    z.iter().copied().collect()
}

/// The exact hypergradient of the ridge problem at x with the lower level solved:
/// dF/dx = −diag(e^x ⊙ y*)·H⁻¹(y* − y_target).
pub fn ridge_hypergradient(d: &RidgeData, x: &[f64]) -> Vec<f64> {
    let y = d.best_response(x);
    let v = solve(d.hessian(x), y.iter().zip(&d.target).map(|(a, b)| a - b).collect());
    (0..x.len()).map(|i| -x[i].exp() * y[i] * v[i]).collect()
}

impl Toy {
    /// The problem `name` at its start; `n` is the non-singleton problem's dimension.
    pub fn new(name: &str, n: usize) -> Result<Self> {
        Ok(match name {
            "non-singleton" => {
                if n == 0 {
                    candle_core::bail!("the non-singleton problem needs a positive dimension");
                }
                let e = Tensor::ones(n, candle_core::DType::F64, &Device::Cpu)?;
                let e2 = e.clone();
                Toy {
                    name: "non-singleton",
                    y: vec![var(vec![0.0; 2 * n])?],
                    x: vec![var(vec![0.0; n])?],
                    upper: Box::new(move |y, x| {
                        let (y1, y2) = (y.narrow(0, 0, n)?, y.narrow(0, n, n)?);
                        ((x - y2)?.sqr()?.sum_all()? * 0.5)? + ((y1 - &e)?.sqr()?.sum_all()? * 0.5)?
                    }),
                    lower: Box::new(move |y, x| {
                        let y1 = y.narrow(0, 0, n)?;
                        (y1.sqr()?.sum_all()? * 0.5)? - (x * &y1)?.sum_all()?
                    }),
                    x_box: None,
                    y_box: None,
                    x_star: host(&e2)?,
                }
            }
            "non-convex" => Toy {
                name: "non-convex",
                y: vec![var(vec![2.0])?],
                x: vec![var(vec![1.0])?],
                upper: Box::new(|y, x| (x + (x * y)?)?.sum_all()),
                lower: Box::new(|y, x| (x * y)?.sin()?.neg()?.sum_all()),
                x_box: Some((1.0, 10.0)),
                y_box: Some((-2.0, 2.0)),
                x_star: vec![5.5 * std::f64::consts::PI / 2.0],
            },
            "ridge" => {
                let d = RidgeData::fixed();
                let (m, k) = (d.a.len(), d.x_true.len());
                let a = Tensor::from_vec(d.a.concat(), (m, k), &Device::Cpu)?;
                let b = Tensor::from_vec(d.b.clone(), m, &Device::Cpu)?;
                let target = Tensor::from_vec(d.target.clone(), k, &Device::Cpu)?;
                Toy {
                    name: "ridge",
                    y: vec![var(vec![0.0; k])?],
                    x: vec![var(vec![0.0; k])?],
                    upper: Box::new(move |y, _x| (y - &target)?.sqr()?.sum_all()? * 0.5),
                    lower: Box::new(move |y, x| {
                        let r = (a.matmul(&y.unsqueeze(1)?)?.squeeze(1)? - &b)?;
                        (r.sqr()?.sum_all()? * 0.5)? + ((x.exp()? * y.sqr()?)?.sum_all()? * 0.5)?
                    }),
                    x_box: None,
                    y_box: None,
                    x_star: d.x_true,
                }
            }
            other => candle_core::bail!("unknown problem `{other}` (expected {})", PROBLEMS.join(", ")),
        })
    }

    pub fn x(&self) -> Result<Vec<f64>> {
        host(self.x[0].as_tensor())
    }

    pub fn y(&self) -> Result<Vec<f64>> {
        host(self.y[0].as_tensor())
    }

    /// F at the current (x, y).
    pub fn upper_value(&self) -> Result<f64> {
        (self.upper)(self.y[0].as_tensor(), self.x[0].as_tensor())?.to_scalar::<f64>()
    }

    /// ‖x − x*‖₂.
    pub fn distance(&self) -> Result<f64> {
        Ok(self.x()?.iter().zip(&self.x_star).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt())
    }

    fn grads(&self, f: &Loss, want_w: bool, want_a: bool) -> Result<Grads> {
        let pick = |v: &Var, want: bool| if want { v.as_tensor().clone() } else { v.as_tensor().detach() };
        let loss = f(&pick(&self.y[0], want_w), &pick(&self.x[0], want_a))?;
        let g = loss.backward()?;
        let take = |v: &Var| g.get(v.as_tensor()).cloned().map_or_else(|| v.as_tensor().zeros_like(), Ok);
        Ok(Grads {
            w: if want_w { vec![take(&self.y[0])?] } else { vec![] },
            a: if want_a { vec![take(&self.x[0])?] } else { vec![] },
        })
    }

    /// v ← clamp(v − lr·g) onto `bounds`.
    fn step(v: &Var, g: &Tensor, lr: f64, bounds: Option<(f64, f64)>) -> Result<()> {
        let next = (v.as_tensor() - (g * lr)?)?;
        v.set(&match bounds {
            Some((lo, hi)) => next.clamp(lo, hi)?,
            None => next,
        })
    }
}

impl Bilevel for Toy {
    fn weights(&self) -> &[Var] {
        &self.y
    }
    fn arch(&self) -> &[Var] {
        &self.x
    }
    fn train_batches(&self) -> usize {
        // The same f for every virtual step of an unrolled rule.
        usize::MAX
    }
    fn train_grads_on(&self, _k: usize, want_w: bool, want_a: bool) -> Result<Grads> {
        self.grads(&self.lower, want_w, want_a)
    }
    fn val_grads(&self, want_w: bool, want_a: bool) -> Result<Grads> {
        self.grads(&self.upper, want_w, want_a)
    }
    fn val_loss(&self) -> Result<f64> {
        self.upper_value()
    }
    fn weight_box(&self) -> Option<(f64, f64)> {
        self.y_box
    }
}

/// The budget every method gets: outer iterations, inner steps per iteration and the two
/// step sizes.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub iters: usize,
    pub inner: usize,
    pub lr_lower: f64,
    pub lr_upper: f64,
}

impl Budget {
    /// Each problem's default budget (the non-convex one IAPTT-GM's: 500 outer iterations, K = 40
    /// steps at 5e-4, x's step 0.1).
    pub fn default_for(problem: &str) -> Budget {
        match problem {
            "non-convex" => Budget { iters: 500, inner: 40, lr_lower: 5e-4, lr_upper: 0.1 },
            "ridge" => Budget { iters: 300, inner: 20, lr_lower: 0.1, lr_upper: 10.0 },
            _ => Budget { iters: 300, inner: 20, lr_lower: 0.2, lr_upper: 0.1 },
        }
    }
}

/// One outer iteration's record: ‖x − x*‖ and F after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub distance: f64,
    pub upper: f64,
}

/// Runs `rule` on `toy` for `budget`: the record after every outer iteration (the first entry
/// is the start).
pub fn run(toy: &Toy, rule: &mut dyn Hypergradient, budget: Budget) -> Result<Vec<Point>> {
    let point = || -> Result<Point> { Ok(Point { distance: toy.distance()?, upper: toy.upper_value()? }) };
    let mut trace = vec![point()?];
    let st = SgdState { lr: budget.lr_lower, momentum: 0.0, weight_decay: 0.0, momentum_buffers: vec![None] };
    for _ in 0..budget.iters {
        for _ in 0..budget.inner {
            if rule.follows_steps() {
                rule.before_step(toy, &st)?;
            }
            let g = toy.train_grads(true, false)?.w;
            Toy::step(&toy.y[0], &g[0], budget.lr_lower, toy.y_box)?;
        }
        let g = rule.hypergradient(toy, &st)?;
        Toy::step(&toy.x[0], &g[0], budget.lr_upper, toy.x_box)?;
        trace.push(point()?);
    }
    Ok(trace)
}
