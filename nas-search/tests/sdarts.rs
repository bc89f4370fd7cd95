//! SDARTS against what the reference's perturbation guarantees:
//! - RS: the uniform start lies in the L∞ ball of radius ε around softmax(α), and the weights
//!   the weight step runs are its simplex clip (non-negative rows summing to one);
//! - ADV: on a fixed batch it raises the training loss over RS' perturbation from the same
//!   start (and over softmax(α)), its rows on the clipped simplex;
//! - α after a step is the unperturbed method's: the α step of SDARTS over first order equals
//!   first order's, only the weights differ;
//! - settings: the α step is any hypergradient method, given by name or with its settings, and
//!   another kind of method is refused naming the field;
//! - searches in nb201 (ADV) and in the darts space with PC-DARTS' partial channels and edge
//!   normalisation (RS) record ε, and stopped mid-epoch and resumed end as the uninterrupted
//!   ones.

mod common;

use candle_core::{DType, Device, Tensor};
use nas_core::dist::step_grads;
use nas_core::nn::Mode;
use nas_core::optim::{Sgd, SgdConfig};
use nas_search::config::{ArchOptimConfig, SearchConfig};
use nas_search::method::alternating::WeightMixing;
use nas_search::method::sampling::micro_output;
use nas_search::method::sdarts::{Mixing, Perturbation, SdartsConfig};
use nas_search::method::{Method, MethodContext, StepAt, StepBatches, WeightStep};
use nas_search::step::Batch;
use nas_search::MethodConfig;
use search_spaces::darts::DartsSupernet;
use search_spaces::{ArchSample, Supernet};
use serde_json::json;

fn batch(seed: u64) -> Batch {
    common::random_batch(seed, 8)
}

/// A small supernet in f64 with α spread out (softmax far from uniform).
fn tiny() -> DartsSupernet {
    common::tiny_darts(1.5)
}

fn sdarts(perturb: &str) -> SdartsConfig {
    match MethodConfig::from_json(&json!({"name": "sdarts", "perturb": perturb})).unwrap() {
        MethodConfig::Sdarts(c) => c,
        other => panic!("{other}"),
    }
}

/// The weights of a sample, per α tensor and edge.
fn rows(s: &ArchSample) -> Vec<Vec<Vec<f64>>> {
    s.weights.as_ref().unwrap().iter().map(|w| w.to_dtype(DType::F64).unwrap().to_vec2().unwrap()).collect()
}

fn assert_on_simplex(w: &[Vec<Vec<f64>>]) {
    for row in w.iter().flatten() {
        assert!(row.iter().all(|x| (0.0..=1.0).contains(x)), "{row:?}");
        let sum: f64 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "a row sums to {sum}");
    }
}

/// The training loss (running statistics, as ADV measures it) with mixing weights `w`.
fn loss_with(net: &dyn Supernet, b: &Batch, w: &ArchSample) -> f64 {
    let out = step_grads(std::slice::from_ref(b), &[], |b| micro_output(net, b, Mode::EVAL, Some(w), None)).unwrap();
    out.loss.to_scalar::<f64>().unwrap()
}

#[test]
fn rs_stays_in_the_ball_and_on_the_clipped_simplex() {
    let net = tiny();
    let cfg = sdarts("rs");
    let mut p = Perturbation::new(&cfg, 11);
    let center = Mixing::softmax(&net.op_logits(Mode::EVAL).unwrap()).unwrap();
    for (epoch, epochs) in [(0, 50), (30, 50), (49, 50)] {
        p.begin_epoch(epoch, epochs);
        let eps = 0.03 + 0.27 * epoch as f64 / epochs as f64;
        for step in 0..3 {
            let at = StepAt { epoch, step };
            let start = p.random_start(&center, at);
            let worst = start.values().zip(center.values()).map(|(a, s)| (a - s).abs() as f64).fold(0.0, f64::max);
            assert!(worst <= eps * (1.0 + 1e-6), "start {worst} from softmax(α), ε = {eps}");
            assert!(worst > eps * 0.5, "the noise fills the ball ({worst} of ε = {eps})");
            let got = p.mixing(&net, at, &[batch(1)]).unwrap();
            let w = rows(&got);
            assert_on_simplex(&w);
            let mut clipped = start.clone();
            clipped.clip();
            let want: Vec<f64> = clipped.values().map(|x| *x as f64).collect();
            let flat: Vec<f64> = w.iter().flatten().flatten().copied().collect();
            assert_eq!(flat, want, "the weights are the clipped start");
        }
    }
    // Another step draws other noise.
    let a = p.random_start(&center, StepAt { epoch: 1, step: 0 });
    let b = p.random_start(&center, StepAt { epoch: 1, step: 1 });
    assert_ne!(a, b);
}

#[test]
fn adv_raises_the_training_loss_over_rs() {
    let net = tiny();
    let b = batch(5);
    let at = StepAt { epoch: 40, step: 2 };
    let with = |perturb: &str| {
        let mut p = Perturbation::new(&sdarts(perturb), 11);
        p.begin_epoch(40, 50);
        p.mixing(&net, at, std::slice::from_ref(&b)).unwrap()
    };
    let (rs, adv) = (with("rs"), with("adv"));
    assert_on_simplex(&rows(&adv));
    let softmax: Vec<Tensor> =
        net.op_logits(Mode::EVAL).unwrap().iter().map(|l| candle_nn::ops::softmax_last_dim(l).unwrap()).collect();
    let center = ArchSample { weights: Some(softmax), chosen: None, add_unchosen: false };
    let (l_s, l_rs, l_adv) = (loss_with(&net, &b, &center), loss_with(&net, &b, &rs), loss_with(&net, &b, &adv));
    assert!(l_adv > l_rs && l_adv > l_s, "ADV {l_adv}, RS {l_rs}, softmax(α) {l_s}");
}

fn arch_values(net: &dyn Supernet) -> Vec<Vec<f64>> {
    net.arch().weights().iter().map(|a| a.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect()
}

fn weight_values(net: &dyn Supernet) -> Vec<f64> {
    net.weights()
        .weights()
        .iter()
        .flat_map(|w| w.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap())
        .collect()
}

#[test]
fn alpha_is_the_unperturbed_methods() {
    let arch_cfg = ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 };
    let step = |method: MethodConfig, with_valid: bool| {
        let net = tiny();
        let mut w_opt = Sgd::new(net.weights().weights(), SgdConfig { lr: 0.025, momentum: 0.9, weight_decay: 3e-4 });
        let ctx = MethodContext {
            net: &net,
            arch_optimizer: &arch_cfg,
            seed: 0,
            epochs: 10,
            device: &Device::Cpu,
            weight_momentum: 0.9,
        };
        let mut m = method.build(&ctx).unwrap();
        m.begin_epoch(4);
        let valid = with_valid.then(|| vec![batch(2)]);
        let batches = StepBatches { train: vec![batch(1)], valid, more_train: Vec::new() };
        m.step(&net, WeightStep { opt: &mut w_opt, clip: 5.0 }, StepAt { epoch: 4, step: 0 }, batches).unwrap();
        (arch_values(&net), weight_values(&net))
    };
    let before = arch_values(&tiny());
    let (a_sd, w_sd) = step(MethodConfig::Sdarts(sdarts("rs")), true);
    let (a_fo, w_fo) = step(Method::FirstOrder.into(), true);
    assert_eq!(a_sd, a_fo, "SDARTS' α step is first order's");
    assert_ne!(a_sd, before);
    assert_ne!(w_sd, w_fo, "the weight step ran perturbed weights");
    let (a_none, _) = step(MethodConfig::Sdarts(sdarts("adv")), false);
    assert_eq!(a_none, before, "a weight step leaves α as it was");
}

#[test]
fn the_alpha_step_is_any_hypergradient_method() {
    let quick = SearchConfig::preset("quick").unwrap();
    let with = |method: serde_json::Value| quick.clone().with_overlay(&json!({ "method": method })).unwrap().validate();
    let cg = with(json!({"name": "sdarts", "arch_step": {"name": "implicit-cg", "cg_steps": 3}})).unwrap();
    let MethodConfig::Sdarts(c) = &cg.method else { panic!("{}", cg.method) };
    assert_eq!(c.arch_step.to_json().unwrap(), json!({"name": "implicit-cg", "cg_steps": 3, "cg_damping": 1.0}));
    // config.json keeps the nested section as it was given.
    let round = SearchConfig::from_value(serde_json::to_value(&*cg).unwrap()).unwrap();
    assert_eq!(round.method, cg.method);
    assert!(with(json!({"name": "sdarts", "arch_step": {"name": "beta-darts"}})).is_ok());
    for bad in ["gdas", "sdarts"] {
        let err = with(json!({"name": "sdarts", "arch_step": {"name": bad}})).unwrap_err().to_string();
        assert!(err.contains("method.arch_step.name") && err.contains("first-order"), "{err}");
    }
    let err = with(json!({"name": "sdarts", "adv_steps": 0})).unwrap_err().to_string();
    assert!(err.contains("method.adv_steps"), "{err}");
}

fn resumes_exactly(config: SearchConfig) {
    let records = common::resumes_mid_epoch_exactly(&config);
    assert_eq!(records[0]["epsilon"].as_f64(), Some(0.03));
    assert!((records[1]["epsilon"].as_f64().unwrap() - 0.165).abs() < 1e-12);
}

#[test]
fn an_nb201_adv_search_resumes_mid_epoch_exactly() {
    let overlay = json!({
        "space": "nb201", "method": {"name": "sdarts", "perturb": "adv", "adv_steps": 2}, "epochs": 2, "seed": 5,
        "data": {"subset": 64, "batch_size": 16}, "model": {"channels": 4, "layers": 1},
    });
    resumes_exactly(SearchConfig::preset("quick").unwrap().with_overlay(&overlay).unwrap());
}

#[test]
fn a_pc_darts_rs_search_resumes_mid_epoch_exactly() {
    let overlay = json!({
        "method": {"name": "sdarts"}, "epochs": 2, "seed": 5,
        "data": {"subset": 64, "batch_size": 16},
        "model": {"channels": 4, "layers": 3, "partial_channels": 2, "edge_norm": true},
    });
    resumes_exactly(SearchConfig::preset("quick").unwrap().with_overlay(&overlay).unwrap());
}
