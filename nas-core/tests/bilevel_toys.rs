//! The toy bilevel problems (`nas bilevel`) against closed forms:
//! - non-singleton: every rule that takes the lower level's solution as unique leaves y₂ at
//!   its start (0) and stops where its hypergradient vanishes with y₁ = x: first order at
//!   x = 0, and a rule that weighs the indirect term (y₁ − e) by c at x = c/(1 + c)·e, with
//!   c = ξ for one-stage RAD, c = 1 − (1 − ξ)^(K+1) for Neumann with K terms and
//!   c = 1/(1 + d) for conjugate gradient with damping d; the exact singleton hypergradient
//!   (c = 1) would stop at e/2, never at x* = e;
//! - non-convex: the stated solution is a lower-level minimiser on the box with F = −x*;
//! - ridge: conjugate gradient at the best response reaches the closed-form hypergradient,
//!   and the implicit rules drive x to x*.

use nas_core::hypergrad::toys::{self, ridge_hypergradient, Budget, RidgeData, Toy};
use nas_core::hypergrad::{Bilevel, ConjugateGradient, FirstOrder, Hypergradient, Neumann, OneStageRad, SgdState};

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
