//! DrNAS against independent ground truth:
//! - the pathwise gradient of a Dirichlet draw with respect to its concentration, and through
//!   β = ELU(α) + 1 with respect to α, against PyTorch's `Dirichlet(β).rsample()` on its own
//!   draws (tests/fixtures/gen_drnas_golden.py), in every branch of ATen's approximation, from
//!   the host functions and through the surrogate the network sees;
//! - the KL regulariser against its closed form (α = (1, 0): β = (2, 1), KL = ln 2 − ½);
//! - the draws' mean against β/Σβ (seeded, loose);
//! - one α step of the method equals Adam on the gradient assembled by hand: ∂L_val/∂x of the
//!   network at the step's draw x (run as constant weights), through the host vector-Jacobian
//!   product and ELU's slope, plus the KL term's closed-form gradient;
//! - quick searches in nb201 (KL regulariser) and darts (partial channels) that record the
//!   concentration, and stopped mid-epoch and resumed end exactly as uninterrupted ones;
//! - a search in R-DARTS' S4 (noise op) and in S3 with ragged op sets (an edge of two ops
//!   among edges of three) keeps to the op sets, its padding columns weightless;
//! - the settings it refuses, and its preset.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor, Var};
use nas_core::checkpoint::load_tensors;
use nas_core::metrics::CollectSink;
use nas_core::nn::{cross_entropy, Mode};
use nas_core::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use nas_core::rng::{self, Purpose};
use nas_search::config::ArchOptimConfig;
use nas_search::method::drnas::dirichlet::{dirichlet_grad, dirichlet_vjp, kl_to_flat_grad};
use nas_search::method::drnas::{draw_dirichlet, kl_term, pathwise_weights};
use nas_search::method::sampling::{self, ARCH_DRAW};
use nas_search::method::{MethodContext, StepAt, StepBatches, WeightStep};
use nas_search::step::Batch;
use nas_search::{MethodConfig, Search, SearchConfig};
use search_spaces::darts::{edges::edge_index, rdarts_space, DartsSupernet};
use search_spaces::{ArchSample, Genotype, Supernet};
use serde_json::{json, Value};

const CASES: [&str; 6] = ["moderate", "small", "large", "dominant", "rational", "pair"];

fn golden() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drnas_dirichlet_grad.safetensors");
    load_tensors(&path, &Device::Cpu).expect("fixture").tensors
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f64>().unwrap()
}

fn elu1(a: f64) -> f64 {
    if a > 0.0 {
        a + 1.0
    } else {
        a.exp()
    }
}

/// The largest absolute and relative errors of `got` against `want`.
#[derive(Default, Debug)]
struct Worst {
    abs: f64,
    rel: f64,
}

impl Worst {
    fn add(&mut self, got: f64, want: f64) {
        let abs = (got - want).abs();
        self.abs = self.abs.max(abs);
        self.rel = self.rel.max(abs / want.abs().max(1e-300));
    }

    /// Relative error at most `rel`, where values far below the case's scale count by their
    /// absolute error against that scale.
    fn check(&self, what: &str, scale: f64, rel: f64) {
        println!("{what}: max abs {:.3e}, max rel {:.3e} (scale {scale:.3e})", self.abs, self.rel);
        assert!(self.abs <= rel * scale || self.rel <= rel, "{what}: {self:?}");
    }
}

#[test]
fn the_pathwise_gradient_matches_pytorchs_rsample() {
    let g = golden();
    let mut branches = [0usize; 4];
    for case in CASES {
        let get = |k: &str| g[&format!("{case}.{k}")].clone();
        let (alpha, x, grad) = (rows(&get("alpha")), rows(&get("x")), rows(&get("grad")));
        for b in get("branch").flatten_all().unwrap().to_vec1::<f64>().unwrap() {
            branches[b as usize] += 1;
        }
        let beta: Vec<Vec<f64>> = alpha.iter().map(|r| r.iter().map(|&a| elu1(a)).collect()).collect();

        // _dirichlet_grad, coordinate by coordinate.
        let mut worst = Worst::default();
        let mut scale = 0f64;
        for ((x, b), want) in x.iter().zip(&beta).zip(&grad) {
            for (got, want) in dirichlet_grad(x, b).iter().zip(want) {
                worst.add(*got, *want);
                scale = scale.max(want.abs());
            }
        }
        worst.check(&format!("{case}: _dirichlet_grad"), scale, 1e-10);

        let (go, dalpha, dbeta) = (get("grad_out"), get("dalpha"), get("dbeta"));
        let var = Var::from_tensor(&get("alpha")).unwrap();
        let weights = pathwise_weights(var.as_tensor(), &x).unwrap();
        assert_eq!(rows(&weights), x, "{case}: the surrogate's value is the draw");
        for r in 0..go.dim(0).unwrap() {
            let (go, dalpha, dbeta) = (go.get(r).unwrap(), rows(&dalpha.get(r).unwrap()), rows(&dbeta.get(r).unwrap()));
            // The vector-Jacobian product in β on the host.
            let mut worst_b = Worst::default();
            let scale_b = dbeta.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
            for (((x, b), o), want) in x.iter().zip(&beta).zip(rows(&go)).zip(&dbeta) {
                for (got, want) in dirichlet_vjp(x, b, &o).iter().zip(want) {
                    worst_b.add(*got, *want);
                }
            }
            worst_b.check(&format!("{case} #{r}: dβ"), scale_b, 1e-10);
            // Through the surrogate and ELU with candle's autograd.
            let loss = (&weights * &go).unwrap().sum_all().unwrap();
            let got = rows(loss.backward().unwrap().get(var.as_tensor()).unwrap());
            let mut worst_a = Worst::default();
            let scale_a = dalpha.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
            for (got, want) in got.iter().flatten().zip(dalpha.iter().flatten()) {
                worst_a.add(*got, *want);
            }
            worst_a.check(&format!("{case} #{r}: dα"), scale_a, 1e-10);
        }
    }
    assert!(branches.iter().all(|&n| n > 0), "every branch of the approximation is covered: {branches:?}");
}

#[test]
fn the_kl_term_has_its_closed_form() {
    let pi2 = std::f64::consts::PI.powi(2);
    // ψ′(2) = π²/6 − 1, ψ′(3) = π²/6 − 5/4; ∂KL/∂β_k = (β_k − 1)ψ′(β_k) − (β₀ − K)ψ′(β₀).
    let grad = [(pi2 / 6.0 - 1.0) - (pi2 / 6.0 - 1.25), -(pi2 / 6.0 - 1.25)];
    let scale = 0.5;
    // The second matrix has a padding column (−∞), which counts for nothing.
    let a = Var::from_tensor(&Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::new(&[[1.0f64, 0.0, f64::NEG_INFINITY]], &Device::Cpu).unwrap()).unwrap();
    let term = kl_term(&[a.as_tensor().clone(), b.as_tensor().clone()], scale).unwrap();
    let want = scale * 2.0 * (2f64.ln() - 0.5);
    let got = term.to_scalar::<f64>().unwrap();
    assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    let grads = term.backward().unwrap();
    // dβ/dα = 1 at α = 1 and at α = 0 (ELU's slope).
    for (v, width) in [(&a, 2), (&b, 3)] {
        let g = rows(grads.get(v.as_tensor()).unwrap());
        for k in 0..width {
            let want = if k < 2 { scale * grad[k] } else { 0.0 };
            assert!((g[0][k] - want).abs() < 1e-13, "column {k}: {} vs {want}", g[0][k]);
        }
    }
}

#[test]
fn draws_average_to_the_dirichlet_mean() {
    let alpha = [[-1.2f64, 0.0, 3.0, -3.0], [2.0, 2.0, 0.5, f64::NEG_INFINITY]];
    let t = Tensor::new(&alpha, &Device::Cpu).unwrap();
    let mut rng = rng::stream(3, Purpose::Sample, 0, 0);
    let n = 20_000;
    let mut sum = [[0f64; 4]; 2];
    let mut sq = [[0f64; 4]; 2];
    for _ in 0..n {
        let x = draw_dirichlet(&t, &mut rng).unwrap();
        for (e, row) in x.iter().enumerate() {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            for (k, v) in row.iter().enumerate() {
                sum[e][k] += v;
                sq[e][k] += v * v;
            }
        }
    }
    for (e, row) in alpha.iter().enumerate() {
        let beta: Vec<f64> = row.iter().map(|&a| if a.is_finite() { elu1(a) } else { 0.0 }).collect();
        let total: f64 = beta.iter().sum();
        for k in 0..4 {
            let (m, mean) = (beta[k] / total, sum[e][k] / n as f64);
            let var = m * (1.0 - m) / (total + 1.0);
            let got_var = sq[e][k] / n as f64 - mean * mean;
            // Seven standard errors of the mean; the variance within 10%.
            assert!((mean - m).abs() <= 7.0 * (var / n as f64).sqrt() + 1e-15, "edge {e} op {k}: {mean} vs {m}");
            assert!((got_var - var).abs() <= 0.1 * var + 1e-15, "edge {e} op {k}: variance {got_var} vs {var}");
        }
    }
}

fn batch(seed: u64) -> Batch {
    common::random_batch(seed, 4)
}

/// A small darts supernet in f64 with α spread over (−2, 2) (concentrations below and above 1).
fn tiny() -> DartsSupernet {
    common::tiny_darts(2.0)
}

#[test]
fn an_alpha_step_is_adam_on_the_pathwise_gradient_plus_the_kl_term() {
    let (seed, epoch, step, reg_scale) = (9, 1, 2, 0.5);
    let (train, valid) = (batch(1), batch(2));

    // The step's draw, then ∂L_val/∂x with x as constant weights, assembled by hand.
    let net = tiny();
    let mut rng = sampling::draw(seed, epoch, ARCH_DRAW + step as u64);
    let logits = net.op_logits(Mode::EVAL).unwrap();
    let draws: Vec<Vec<Vec<f64>>> = logits.iter().map(|l| draw_dirichlet(l, &mut rng).unwrap()).collect();
    let xs: Vec<Var> =
        draws.iter().map(|x| Var::from_tensor(&Tensor::new(x.clone(), &Device::Cpu).unwrap()).unwrap()).collect();
    let sample = ArchSample {
        weights: Some(xs.iter().map(|v| v.as_tensor().clone()).collect()),
        chosen: None,
        add_unchosen: false,
    };
    let loss = cross_entropy(&net.forward_sampled(&valid.x, Mode::TRAIN_ARCH, &sample).unwrap(), &valid.y).unwrap();
    let grads = loss.backward().unwrap();
    let mut want = Vec::new();
    for ((l, x), v) in logits.iter().zip(&draws).zip(&xs) {
        let g_x = rows(grads.get(v.as_tensor()).unwrap());
        let mut g = Vec::new();
        for ((a, x), g_x) in rows(l).iter().zip(x).zip(&g_x) {
            let beta: Vec<f64> = a.iter().map(|&a| elu1(a)).collect();
            let kl = kl_to_flat_grad(&beta);
            for (k, d) in dirichlet_vjp(x, &beta, g_x).iter().enumerate() {
                let slope = if a[k] > 0.0 { 1.0 } else { a[k].exp() };
                g.push((d + reg_scale * kl[k]) * slope);
            }
        }
        want.push(Some(Tensor::from_vec(g, l.shape(), &Device::Cpu).unwrap()));
    }
    // The KL regulariser takes Adam's weight decay away.
    let cfg = AdamConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let arch = net.arch().weights();
    Adam::new(arch.clone(), cfg).step(&want).unwrap();
    let expected: Vec<Vec<f64>> =
        arch.iter().map(|a| a.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();

    let net = tiny();
    let arch_cfg = ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 };
    let mut w_opt = Sgd::new(net.weights().weights(), SgdConfig { lr: 0.025, momentum: 0.9, weight_decay: 3e-4 });
    let method = MethodConfig::from_json(&json!({"name": "drnas", "reg": "kl", "reg_scale": reg_scale})).unwrap();
    let ctx = MethodContext {
        net: &net,
        arch_optimizer: &arch_cfg,
        seed,
        epochs: 4,
        device: &Device::Cpu,
        weight_momentum: 0.9,
    };
    let mut m = method.build(&ctx).unwrap();
    m.begin_epoch(epoch);
    let batches = StepBatches { train: vec![train], valid: Some(vec![valid]), more_train: Vec::new() };
    m.step(&net, WeightStep { opt: &mut w_opt, clip: 5.0 }, StepAt { epoch, step }, batches).unwrap();
    assert_eq!(m.last_arch_grad_evals(), 1);
    for (a, want) in net.arch().weights().iter().zip(&expected) {
        let got: Vec<f64> = a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let worst = got.iter().zip(want).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-14, "α off by {worst}");
    }
}

fn quick(overlay: Value) -> SearchConfig {
    let base = json!({
        "method": {"name": "drnas"}, "epochs": 2, "seed": 5,
        "data": {"subset": 64, "batch_size": 16}, "model": {"channels": 4, "layers": 2},
    });
    let c = SearchConfig::preset("quick").unwrap().with_overlay(&base).unwrap();
    c.with_overlay(&overlay).unwrap()
}

fn nb201() -> SearchConfig {
    quick(json!({"space": "nb201", "method": {"name": "drnas", "reg": "kl", "reg_scale": 0.01},
                 "model": {"channels": 4, "layers": 1}}))
}

fn darts() -> SearchConfig {
    quick(json!({"model": {"partial_channels": 2}}))
}

/// Runs `config` uninterrupted, and stopped after step 1 of epoch 1 then resumed; both end with
/// the same genotype and records, which carry the concentration.
fn resumes_exactly(config: fn() -> SearchConfig) {
    for r in &common::resumes_mid_epoch_exactly(&config()) {
        let (mean, max) = (r["concentration_mean"].as_f64().unwrap(), r["concentration_max"].as_f64().unwrap());
        assert!(0.0 < mean && mean <= max && r["dirichlet_kl"].as_f64().unwrap() >= 0.0, "{r}");
    }
}

#[test]
fn an_nb201_search_with_the_kl_term_resumes_mid_epoch_exactly() {
    resumes_exactly(nb201);
}

#[test]
fn a_darts_search_with_partial_channels_resumes_mid_epoch_exactly() {
    resumes_exactly(darts);
}

#[test]
fn rdarts_searches_keep_to_their_op_sets_ragged_ones_included() {
    for name in ["s4", "s3"] {
        let mut sets = rdarts_space(name).unwrap();
        if name == "s3" {
            sets.normal[0].truncate(2);
            sets.reduce[3].remove(0);
        }
        let mut c = quick(json!({"epochs": 1, "data": {"subset": 32, "batch_size": 8}, "model": {"layers": 3}}));
        c.model.darts_mut().unwrap().ops = Some(sets.to_config());
        let mut search = Search::new(c.validate().unwrap()).unwrap();
        let g = search.run(None, &mut CollectSink::default(), &AtomicBool::new(false)).unwrap();
        let Genotype::Darts(g) = g else { panic!("a darts genotype") };
        for (cell, lists) in [(&g.normal, &sets.normal), (&g.reduce, &sets.reduce)] {
            for (p, &(op, input)) in cell.iter().enumerate() {
                let e = edge_index(p / 2, input);
                assert!(lists[e].contains(&op), "{name}: {op} on edge {e}, set {:?}", lists[e]);
            }
        }
    }
}

fn refusal(c: SearchConfig) -> String {
    match c.validate() {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn it_refuses_what_it_cannot_do_and_has_the_references_preset() {
    let e = refusal(quick(json!({"model": {"edge_norm": true}})));
    assert!(e.contains("model.edge_norm"), "{e}");
    let e = refusal(quick(json!({"method": {"name": "drnas", "reg_scale": -1.0}})));
    assert!(e.contains("method.reg_scale"), "{e}");
    let e = refusal(quick(json!({"hessian_every": 1})));
    assert!(e.contains("hessian_every"), "{e}");

    let p = SearchConfig::preset("drnas").unwrap().to_value().unwrap();
    assert_eq!((&p["space"], &p["epochs"], &p["method"]["name"]), (&json!("nb201"), &json!(100), &json!("drnas")));
    assert_eq!((&p["method"]["reg"], &p["data"]["batch_size"]), (&json!("l2"), &json!(64)));
    assert_eq!((&p["model"]["channels"], &p["model"]["layers"]), (&json!(16), &json!(5)));
    assert_eq!((&p["arch_optimizer"]["lr"], &p["arch_optimizer"]["weight_decay"]), (&json!(3e-4), &json!(1e-3)));
}
