//! The toy bilevel problems (`nas bilevel`) against closed forms:
//! - non-singleton: every rule that takes the lower level's solution as unique leaves y₂ at
//!   its start (0) and stops where its hypergradient vanishes with y₁ = x: first order at
//!   x = 0, and a rule that weighs the indirect term (y₁ − e) by c at x = c/(1 + c)·e, with
//!   c = ξ for one-stage RAD, c = 1 − (1 − ξ)^(K+1) for Neumann with K terms and
//!   c = 1/(1 + d) for conjugate gradient with damping d; the exact singleton hypergradient
//!   (c = 1) would stop at e/2, never at x* = e;
//! - non-convex: the stated solution is a lower-level minimiser on the box with F = −x*;
//! - ridge: conjugate gradient at the best response reaches the closed-form hypergradient,
//!   and the implicit rules drive x to x*; forward mode along N lower-level steps from the best
//!   response equals the closed form of its tangent, −ξΣ_{s<N}(I − ξH)^s·diag(e^x ⊙ y*), and so
//!   the exact hypergradient as N grows.

use nas_core::hypergrad::toys::{self, ridge_hypergradient, Budget, RidgeData, Toy};
use nas_core::hypergrad::{
    Bilevel, ConjugateGradient, FirstOrder, ForwardMode, Hypergradient, Neumann, OneStageRad, SgdState,
};

fn fixed_point(rule: &mut dyn Hypergradient, xi: f64) -> Vec<f64> {
    let toy = Toy::new("non-singleton", 3).unwrap();
    let budget = Budget { iters: 400, inner: 60, lr_lower: xi, lr_upper: 0.3 };
    let trace = toys::run(&toy, rule, budget).unwrap();
    assert_eq!(trace.len(), 401);
    // y₂ never moved.
    assert!(toy.y().unwrap()[3..].iter().all(|&v| v == 0.0));
    toy.x().unwrap()
}

fn assert_all_near(x: &[f64], want: f64) {
    assert!(x.iter().all(|v| (v - want).abs() < 1e-6), "{x:?}, want {want}");
}

#[test]
fn singleton_rules_stop_where_their_hypergradient_vanishes_on_the_non_singleton_problem() {
    let xi = 0.2;
    assert_all_near(&fixed_point(&mut FirstOrder, xi), 0.0);
    assert_all_near(&fixed_point(&mut OneStageRad, xi), xi / (1.0 + xi));
    let c = 1.0 - (1.0f64 - xi).powi(6);
    assert_all_near(&fixed_point(&mut Neumann { terms: 5 }, xi), c / (1.0 + c));
    let c = 1.0 / (1.0 + 1.0);
    assert_all_near(&fixed_point(&mut ConjugateGradient::new(5, 1.0), xi), c / (1.0 + c));
    // Far from x* = e whatever c ≤ 1 is.
    let toy = Toy::new("non-singleton", 3).unwrap();
    assert_eq!(toy.x_star, vec![1.0; 3]);
}

#[test]
fn the_non_convex_solution_is_a_lower_level_minimiser_with_the_stated_value() {
    let x = 5.5 * std::f64::consts::PI / 2.0;
    let toy = Toy::new("non-convex", 1).unwrap();
    assert!((toy.x_star[0] - x).abs() < 1e-12 && (x - 8.6394).abs() < 1e-4);
    // −sin(x·y) at y = −2 is −1, its minimum; F = x + x·y = −x.
    assert!(((x * -2.0f64).sin() - 1.0).abs() < 1e-12);
    assert!((x + x * -2.0 + x).abs() < 1e-12);
    // From x₀ = 1, y₀ = 2 the start is far from it.
    assert!((toy.distance().unwrap() - (x - 1.0)).abs() < 1e-12);
    assert!((toy.upper_value().unwrap() - 3.0).abs() < 1e-12);
}

#[test]
fn ridge_hypergradients_match_the_closed_form_and_implicit_rules_reach_x_star() {
    let d = RidgeData::fixed();
    let toy = Toy::new("ridge", 1).unwrap();
    // The lower level solved exactly (x = 0), then the rule against the closed form.
    let y = d.best_response(&toy.x().unwrap());
    let n = y.len();
    toy.weights()[0].set(&candle_core::Tensor::from_vec(y, n, &candle_core::Device::Cpu).unwrap()).unwrap();
    let st = SgdState { lr: 0.1, momentum: 0.0, weight_decay: 0.0, momentum_buffers: vec![None] };
    let g = ConjugateGradient::new(50, 0.0).hypergradient(&toy, &st).unwrap();
    let got = g[0].to_vec1::<f64>().unwrap();
    let want = ridge_hypergradient(&d, &toy.x().unwrap());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 * scale, "{got:?} vs {want:?}");
    }
    // The default budget takes the implicit rule to x*.
    let toy = Toy::new("ridge", 1).unwrap();
    let trace = toys::run(&toy, &mut Neumann { terms: 5 }, Budget::default_for("ridge")).unwrap();
    assert!(trace.last().unwrap().distance < 0.01, "{:?}", trace.last());
    assert!(trace.last().unwrap().distance < trace[0].distance / 50.0);
}

/// F(x, y_K(x)) on the non-singleton problem with y_K the K aggregated steps from y, on the
/// host: y ← y − ξ[(1 − μ)∇_y f + σμγ0.9^k ∇_y F], ∇_y f = (y₁ − x, 0), ∇_y F = (y₁ − e, y₂ − x).
fn aggregated_upper(x: &[f64], y: &[f64], k_steps: usize, xi: f64, mu: f64, sign: f64) -> f64 {
    let n = x.len();
    let (mut y1, mut y2) = (y[..n].to_vec(), y[n..].to_vec());
    for k in 0..k_steps {
        let c = sign * mu * 0.9f64.powi(k as i32);
        for i in 0..n {
            let d1 = (1.0 - mu) * (y1[i] - x[i]) + c * (y1[i] - 1.0);
            let d2 = c * (y2[i] - x[i]);
            y1[i] -= xi * d1;
            y2[i] -= xi * d2;
        }
    }
    (0..n).map(|i| 0.5 * (x[i] - y2[i]).powi(2) + 0.5 * (y1[i] - 1.0).powi(2)).sum()
}

/// BDA's hypergradient (reverse mode through K aggregated steps, second derivatives of both
/// losses by central differences) is the derivative of F(x, y_K(x)): against central
/// differences over x of the host trajectory, optimistic and pessimistic; with μ = 0 it is
/// truncated unrolling's.
#[test]
fn bda_hypergradient_is_the_derivative_through_the_aggregated_steps() {
    use nas_core::hypergrad::{Aggregation, TruncatedRad};
    let toy = Toy::new("non-singleton", 3).unwrap();
    let (x0, y0) = (vec![0.3, -0.2, 0.7], vec![0.1, 0.5, -0.4, 0.9, -0.6, 0.2]);
    let set = |v: &candle_core::Var, x: &[f64]| {
        v.set(&candle_core::Tensor::from_vec(x.to_vec(), x.len(), &candle_core::Device::Cpu).unwrap()).unwrap()
    };
    set(&toy.arch()[0], &x0);
    set(&toy.weights()[0], &y0);
    let xi = 0.3;
    let st = SgdState { lr: xi, momentum: 0.0, weight_decay: 0.0, momentum_buffers: vec![None] };
    for (k, mu, sign) in [(1, 0.6, 1.0), (4, 0.6, 1.0), (4, 0.3, -1.0)] {
        let agg = Aggregation { mu, gamma: 1.0, sign };
        let g = TruncatedRad::bda(k, agg).hypergradient(&toy, &st).unwrap()[0].to_vec1::<f64>().unwrap();
        let h = 1e-5;
        for i in 0..3 {
            let (mut xp, mut xm) = (x0.clone(), x0.clone());
            xp[i] += h;
            xm[i] -= h;
            let want =
                (aggregated_upper(&xp, &y0, k, xi, mu, sign) - aggregated_upper(&xm, &y0, k, xi, mu, sign)) / (2.0 * h);
            assert!((g[i] - want).abs() < 1e-6, "K={k} μ={mu} σ={sign}: {g:?}, entry {i} wants {want}");
        }
        // The weights are as they were.
        assert_eq!(toy.y().unwrap(), y0);
    }
    let agg = Aggregation { mu: 0.0, gamma: 1.0, sign: 1.0 };
    let bda = TruncatedRad::bda(3, agg).hypergradient(&toy, &st).unwrap()[0].to_vec1::<f64>().unwrap();
    let trad = TruncatedRad::new(3).hypergradient(&toy, &st).unwrap()[0].to_vec1::<f64>().unwrap();
    assert_eq!(bda, trad);
}

/// Plain steps y ← y − ξ∇_y f from `z` on the non-singleton problem: F after each step.
fn plain_trajectory(x: &[f64], z: &[f64], k_steps: usize, xi: f64) -> Vec<f64> {
    let n = x.len();
    let (mut y1, y2) = (z[..n].to_vec(), z[n..].to_vec());
    let mut values = Vec::new();
    for _ in 0..k_steps {
        for i in 0..n {
            y1[i] -= xi * (y1[i] - x[i]);
        }
        values.push((0..n).map(|i| 0.5 * (x[i] - y2[i]).powi(2) + 0.5 * (y1[i] - 1.0).powi(2)).sum());
    }
    values
}

/// IAPTT-GM on a quadratic: the truncation k̄ is the step where F is largest, the α gradient
/// and z's gradient are the derivatives of F after k̄ steps from z (central differences over
/// x and over z on the host), z moves by −η_z times its gradient; and on IAPTT-GM's numerical
/// example, with the reference's settings, x reaches x* = 5.5π/2 where every other method
/// stays at its lower bound.
#[test]
fn iaptt_gm_differentiates_the_pessimistic_truncation_and_solves_its_example() {
    use nas_core::hypergrad::Iaptt;
    let set = |v: &candle_core::Var, x: &[f64]| {
        v.set(&candle_core::Tensor::from_vec(x.to_vec(), x.len(), &candle_core::Device::Cpu).unwrap()).unwrap()
    };
    // y₁ moves toward x along a path on which ½‖y₁ − e‖² is convex, so F is largest at the
    // first step or the last: y₁ passing e toward x > e keeps all K steps, y₁ coming down from
    // far above e toward x ≈ e keeps only the first.
    let (k, xi, eta) = (6, 0.3, 0.5);
    for ((x0, z0), want_kbar) in
        [((vec![2.5, 1.8], vec![0.9, 1.1, 0.2, -0.3]), k), ((vec![1.5, 1.2], vec![5.0, 4.0, 0.2, -0.3]), 1)]
    {
        let toy = Toy::new("non-singleton", 2).unwrap();
        set(&toy.arch()[0], &x0);
        set(&toy.weights()[0], &z0);
        let mut rule = Iaptt::new(k, eta);
        let st = SgdState { lr: xi, momentum: 0.0, weight_decay: 0.0, momentum_buffers: vec![None] };
        let g = rule.hypergradient(&toy, &st).unwrap()[0].to_vec1::<f64>().unwrap();
        let values = plain_trajectory(&x0, &z0, k, xi);
        let kbar = 1 + (0..k).fold(0, |b, i| if values[i] > values[b] { i } else { b });
        assert_eq!((rule.truncation(), kbar), (want_kbar, want_kbar));
        let phi = |x: &[f64], z: &[f64]| plain_trajectory(x, z, kbar, xi)[kbar - 1];
        let h = 1e-5;
        for i in 0..2 {
            let (mut xp, mut xm) = (x0.clone(), x0.clone());
            xp[i] += h;
            xm[i] -= h;
            let want = (phi(&xp, &z0) - phi(&xm, &z0)) / (2.0 * h);
            assert!((g[i] - want).abs() < 1e-6, "∂/∂x {i}: {} vs {want}", g[i]);
        }
        let z1 = rule.z().unwrap()[0].to_vec1::<f64>().unwrap();
        for i in 0..4 {
            let (mut zp, mut zm) = (z0.clone(), z0.clone());
            zp[i] += h;
            zm[i] -= h;
            let want = (phi(&x0, &zp) - phi(&x0, &zm)) / (2.0 * h);
            assert!(((z0[i] - z1[i]) / eta - want).abs() < 1e-6, "∂/∂z {i}: {} vs {want}", (z0[i] - z1[i]) / eta);
        }
        assert_eq!(toy.y().unwrap(), z0, "the weights are as they were");
    }

    let toy = Toy::new("non-convex", 1).unwrap();
    let trace = toys::run(&toy, &mut Iaptt::new(40, 0.1), Budget::default_for("non-convex")).unwrap();
    let end = trace.last().unwrap().distance;
    assert!(end < 0.05, "IAPTT-GM ends {end} from x*");
    let toy = Toy::new("non-convex", 1).unwrap();
    let trace = toys::run(&toy, &mut Neumann { terms: 5 }, Budget::default_for("non-convex")).unwrap();
    assert!((toy.x().unwrap()[0] - 1.0).abs() < 1e-12 && trace.last().unwrap().distance > 7.0);
}

/// Forward mode on the ridge problem from the lower level's solution: the steps stay there
/// (∇_y f = 0), so after N steps the tangent is Z_N = −ξΣ_{s<N}(I − ξH)^s·B with
/// B = ∂²f/∂y∂x = diag(e^x ⊙ y*), and the hypergradient Z_Nᵀ(y* − y_target) — computed here on
/// the host — tends to the exact one, −B·H⁻¹(y* − y_target).
#[test]
fn forward_mode_on_ridge_follows_the_closed_form_of_its_tangent() {
    let d = RidgeData::fixed();
    let toy = Toy::new("ridge", 1).unwrap();
    let x = toy.x().unwrap();
    let y = d.best_response(&x);
    let n = y.len();
    toy.weights()[0].set(&candle_core::Tensor::from_vec(y.clone(), n, &candle_core::Device::Cpu).unwrap()).unwrap();
    let xi = 0.1;
    let st = SgdState { lr: xi, momentum: 0.0, weight_decay: 0.0, momentum_buffers: vec![None] };
    let h = d.hessian(&x);
    let r: Vec<f64> = y.iter().zip(&d.target).map(|(a, b)| a - b).collect();
    let b: Vec<f64> = (0..n).map(|i| x[i].exp() * y[i]).collect();
    // Host tangent: Z ← (I − ξH)Z − ξB, column j of B being b_j·e_j.
    let mut z = vec![vec![0.0; n]; n]; // z[j] = dy/dx_j
    let mut fad = ForwardMode::new(0);
    fad.fd_step = 1e-6;
    for steps in 1..=200 {
        fad.before_step(&toy, &st).unwrap();
        for (j, zj) in z.iter_mut().enumerate() {
            let hz: Vec<f64> = (0..n).map(|i| (0..n).map(|k| h[i][k] * zj[k]).sum()).collect();
            for i in 0..n {
                zj[i] -= xi * (hz[i] + if i == j { b[j] } else { 0.0 });
            }
        }
        // The real step: y stays at the solution (its gradient is zero there, up to rounding).
        let g = toy.train_grads(true, false).unwrap().w[0].to_vec1::<f64>().unwrap();
        assert!(g.iter().all(|v| v.abs() < 1e-12), "{g:?}");
        if [1, 10, 200].contains(&steps) {
            let got = fad.hypergradient(&toy, &st).unwrap()[0].to_vec1::<f64>().unwrap();
            let want: Vec<f64> = z.iter().map(|zj| zj.iter().zip(&r).map(|(a, b)| a * b).sum()).collect();
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (a, w) in got.iter().zip(&want) {
                assert!((a - w).abs() <= 1e-8 * scale, "after {steps} steps: {got:?} vs {want:?}");
            }
            if steps == 200 {
                let exact = ridge_hypergradient(&d, &x);
                for (a, w) in got.iter().zip(&exact) {
                    assert!((a - w).abs() <= 1e-6 * scale, "{got:?} vs the exact {exact:?}");
                }
            }
        }
    }
}
