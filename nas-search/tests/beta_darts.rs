//! β-DARTS against independent ground truth:
//! - the β-decay term λ·mean_edges logsumexp(α_edge) and its gradient λ·softmax(α_edge)/E
//!   against their closed forms in f64 (padding columns count for nothing);
//! - one α step equals Adam on ∇_α L_val (the first-order gradient) plus that closed-form
//!   gradient, and λ follows its schedule;
//! - three search steps agree in f64 with a PyTorch golden of the reference architect's step
//!   (tests/fixtures/gen_beta_darts_golden.py);
//! - a search in nb201 records λ, and stopped mid-epoch and resumed it ends exactly as the
//!   uninterrupted one.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use nas_core::hypergrad::Bilevel;
use nas_core::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use nas_search::config::{ArchOptimConfig, SearchConfig};
use nas_search::method::alternating::SupernetProblem;
use nas_search::method::beta_darts::{beta_decay_term, beta_weight};
use nas_search::method::{MethodContext, StepAt, StepBatches, WeightStep};
use nas_search::step::Batch;
use nas_search::MethodConfig;
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};
use serde_json::json;

fn softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

fn logsumexp(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

#[test]
fn the_term_and_its_gradient_have_their_closed_forms() {
    let normal = vec![vec![0.3, -1.2, 2.0, 0.1], vec![1.5, 1.5, -0.7, 0.0], vec![-3.0, 0.2, 0.4, 0.9]];
    // A ragged matrix: its second edge has three ops, the fourth column is padding (−∞).
    let reduce = vec![vec![0.5, 0.25, -0.5, 1.0], vec![2.0, -1.0, 0.0, f64::NEG_INFINITY]];
    let var = |rows: &Vec<Vec<f64>>| {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        Var::from_tensor(&Tensor::from_vec(flat, (rows.len(), 4), &Device::Cpu).unwrap()).unwrap()
    };
    let (vn, vr) = (var(&normal), var(&reduce));
    let lambda = 12.5;
    let term = beta_decay_term(&[vn.as_tensor().clone(), vr.as_tensor().clone()], lambda).unwrap();
    let mean = |rows: &Vec<Vec<f64>>| {
        rows.iter().map(|r| logsumexp(&r.iter().copied().filter(|v| v.is_finite()).collect::<Vec<_>>())).sum::<f64>()
            / rows.len() as f64
    };
    let want = lambda * (mean(&normal) + mean(&reduce));
    let got = term.to_scalar::<f64>().unwrap();
    assert!((got - want).abs() < 1e-12 * want.abs(), "{got} vs {want}");

    let grads = term.backward().unwrap();
    for (v, rows) in [(&vn, &normal), (&vr, &reduce)] {
        let g = grads.get(v.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        for (e, row) in rows.iter().enumerate() {
            let want: Vec<f64> = softmax(row).iter().map(|p| lambda * p / rows.len() as f64).collect();
            for (k, (a, b)) in g[e].iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-14, "edge {e} op {k}: {a} vs {b}");
            }
        }
    }
    // α_edge = (1, 0): λ·logsumexp = λ·ln(1 + e).
    let one = Var::from_tensor(&Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu).unwrap()).unwrap();
    let t = beta_decay_term(&[one.as_tensor().clone()], 2.0).unwrap().to_scalar::<f64>().unwrap();
    assert!((t - 2.0 * (1.0 + std::f64::consts::E).ln()).abs() < 1e-14);
    // λ grows linearly from 0 over the run: 50·e/100 at the reference's 100 epochs.
    assert_eq!((beta_weight(50.0, 0, 100), beta_weight(50.0, 99, 100), beta_weight(50.0, 5, 10)), (0.0, 49.5, 25.0));
}

fn batch(seed: u64) -> Batch {
    common::random_batch(seed, 4)
}

fn tiny() -> DartsSupernet {
    common::tiny_darts(1.0)
}

#[test]
fn an_alpha_step_is_adam_on_the_first_order_gradient_plus_the_decay() {
    let arch_cfg = ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 };
    let (train, valid) = (batch(1), batch(2));
    let (epoch, epochs, decay) = (3, 8, 40.0);
    let lambda = beta_weight(decay, epoch, epochs);

    // Ground truth: ∇_α L_val, plus λ·softmax(α_edge)/E per matrix, then one Adam step.
    let net = tiny();
    let (weights, arch) = (net.weights().weights(), net.arch().weights());
    let first = SupernetProblem::new(&net, &weights, &arch, &[], &valid).val_grads(false, true).unwrap().a;
    let mut want = Vec::new();
    for (v, g) in arch.iter().zip(first) {
        let rows = v.as_tensor().to_vec2::<f64>().unwrap();
        let decay: Vec<f64> =
            rows.iter().flat_map(|r| softmax(r).into_iter().map(|p| lambda * p / rows.len() as f64)).collect();
        let decay = Tensor::from_vec(decay, v.dims(), &Device::Cpu).unwrap();
        want.push(Some((g + decay).unwrap()));
    }
    let cfg = AdamConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, eps: 1e-8, weight_decay: 1e-3 };
    Adam::new(arch.clone(), cfg).step(&want).unwrap();
    let expected: Vec<Vec<f64>> =
        arch.iter().map(|a| a.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect();

    let net = tiny();
    let mut w_opt = Sgd::new(net.weights().weights(), SgdConfig { lr: 0.025, momentum: 0.9, weight_decay: 3e-4 });
    let method = MethodConfig::from_json(&json!({"name": "beta-darts", "beta_decay": decay})).unwrap();
    let ctx = MethodContext {
        net: &net,
        arch_optimizer: &arch_cfg,
        seed: 0,
        epochs,
        device: &Device::Cpu,
        weight_momentum: 0.9,
    };
    let mut m = method.build(&ctx).unwrap();
    m.begin_epoch(epoch);
    let batches = StepBatches { train: vec![train], valid: Some(vec![valid]), more_train: Vec::new() };
    m.step(&net, WeightStep { opt: &mut w_opt, clip: 5.0 }, StepAt { epoch, step: 0 }, batches).unwrap();
    assert_eq!(m.last_arch_grad_evals(), 1);
    for (a, want) in net.arch().weights().iter().zip(&expected) {
        let got: Vec<f64> = a.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let worst = got.iter().zip(want).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-15, "α off by {worst}");
    }
}

fn nb201_config() -> SearchConfig {
    let overlay = json!({
        "space": "nb201", "method": {"name": "beta-darts"}, "epochs": 2, "seed": 5,
        "data": {"subset": 64, "batch_size": 16}, "model": {"channels": 4, "layers": 1},
    });
    SearchConfig::preset("quick").unwrap().with_overlay(&overlay).unwrap()
}

#[test]
fn an_nb201_search_records_lambda_and_resumes_mid_epoch_exactly() {
    let records = common::resumes_mid_epoch_exactly(&nb201_config());
    assert_eq!((records[0]["beta_weight"].as_f64(), records[1]["beta_weight"].as_f64()), (Some(0.0), Some(25.0)));
    assert!(records[1]["alpha"]["arch_parameters"].is_array());
}

fn fixture(path: &str) -> std::collections::HashMap<String, Tensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    nas_core::checkpoint::load_tensors(&path, &Device::Cpu).expect("fixture").tensors
}

/// Three search steps against Sunshine-Ye/Beta-DARTS' architect (`_backward_step`: the
/// validation loss plus (50·epoch/100)·mean logsumexp(α), Adam) in PyTorch from the same
/// weights, α and batches (tests/fixtures/gen_beta_darts_golden.py), both in f64: α after every
/// step to 1e-7 of its update, and the weight step's loss to 1e-9.
#[test]
fn three_search_steps_match_the_pytorch_reference_architect() {
    let base: std::collections::HashMap<String, Tensor> =
        fixture("../search-spaces/tests/fixtures/darts_c4_l5.safetensors")
            .into_iter()
            .map(|(k, t)| {
                let t = if t.dtype() == DType::F32 { t.to_dtype(DType::F64).unwrap() } else { t };
                (k, t)
            })
            .collect();
    let golden = fixture("tests/fixtures/beta_darts_c4_l5.safetensors");
    let cfg = DartsSupernetConfig { channels: 4, layers: 5, ..Default::default() };
    let net = DartsSupernet::new(cfg, 0, DType::F64, &Device::Cpu).unwrap();
    net.weights().load(&base, false).unwrap();
    let arch = net.arch().params();
    let start = arch.iter().map(|p| (p.name.clone(), golden[&format!("start.{}", p.name)].clone())).collect();
    net.arch().load(&start, false).unwrap();
    let preset = SearchConfig::preset("darts-1st").unwrap();
    let mut w_opt = Sgd::new(net.weights().weights(), preset.weight_optimizer.sgd());
    let (epoch, epochs) = (4, 100);
    assert_eq!(golden["lambda"].to_vec1::<f64>().unwrap(), vec![beta_weight(50.0, epoch, epochs)]);
    let ctx = MethodContext {
        net: &net,
        arch_optimizer: &preset.arch_optimizer,
        seed: 0,
        epochs,
        device: &Device::Cpu,
        weight_momentum: 0.9,
    };
    let mut m = MethodConfig::from_json(&json!({"name": "beta-darts"})).unwrap().build(&ctx).unwrap();
    m.begin_epoch(epoch);
    let batch = |x: &str, y: &str| Batch { x: base[x].clone(), y: base[y].to_dtype(DType::U32).unwrap() };
    let (t, v) = (batch("input", "target"), batch("valid_input", "valid_target"));
    for (k, (train, valid)) in [(&t, &v), (&v, &t), (&t, &v)].into_iter().enumerate() {
        let k = k + 1;
        let batches =
            StepBatches { train: vec![train.clone()], valid: Some(vec![valid.clone()]), more_train: Vec::new() };
        let w = WeightStep { opt: &mut w_opt, clip: preset.weight_optimizer.grad_clip };
        let out = m.step(&net, w, StepAt { epoch, step: k - 1 }, batches).unwrap();
        let loss = out.loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let want_loss = golden[&format!("step{k}.loss")].to_vec1::<f64>().unwrap()[0];
        assert!((loss - want_loss).abs() < 1e-9 * want_loss, "step {k}: loss {loss} vs {want_loss}");
        for p in &arch {
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let (start, want, got) = (
                flat(&golden[&format!("start.{}", p.name)]),
                flat(&golden[&format!("step{k}.{}", p.name)]),
                flat(&p.value().unwrap()),
            );
            let scale = want.iter().zip(&start).map(|(w, s)| (w - s).abs()).fold(0.0, f64::max);
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / scale).fold(0.0, f64::max);
            assert!(worst < 1e-7, "step {k}: {} off by {worst} of its update ({scale:e})", p.name);
        }
    }
}
