#![allow(dead_code)] // every test file uses a different part
//! Shared checks of the supernet parity tests against golden values from the PyTorch
//! reference (shared/bench/darts_ref.py): loading a fixture into a supernet, matching tensor
//! names, and comparing logits, loss and every gradient to 1e-4 relative (f32).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use nas_core::checkpoint::load_tensors;
use nas_core::nn::{cross_entropy, Mode};
use nas_core::testing::max_rel_err;
use nas_core::ParamStore;
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};

pub const TOL: f64 = 1e-4;

/// Keys of a fixture that are not model tensors.
const DATA_KEYS: [&str; 8] =
    ["input", "target", "valid_input", "valid_target", "logits", "aux_logits", "eval_logits", "loss"];

pub fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    load_tensors(&path, &Device::Cpu).expect("fixture").tensors
}

/// A supernet with the fixture's weights and architecture parameters.
pub fn model(cfg: DartsSupernetConfig, golden: &HashMap<String, Tensor>) -> DartsSupernet {
    let net = DartsSupernet::new(cfg, 123, DType::F32, &Device::Cpu).unwrap();
    net.weights().load(golden, false).unwrap();
    net.arch().load(golden, false).unwrap();
    net
}

/// Every reference model tensor (except names starting with one of `unused`) exists here,
/// and nothing else does.
pub fn assert_same_tensor_names(golden: &HashMap<String, Tensor>, stores: &[&ParamStore], unused: &[&str]) {
    let ours: HashSet<String> = stores.iter().flat_map(|s| s.params()).map(|p| p.name).collect();
    let theirs: Vec<&String> = golden
        .keys()
        .filter(|k| !k.starts_with("grad.") && !k.starts_with("after"))
        .filter(|k| !unused.iter().any(|u| k.starts_with(u)))
        .filter(|k| !DATA_KEYS.contains(&k.as_str()))
        .collect();
    for k in &theirs {
        assert!(ours.contains(*k), "reference tensor {k} missing here");
    }
    assert_eq!(ours.len(), theirs.len(), "tensors here that the reference lacks");
}

/// Logits, loss and the gradient of every parameter the reference has a gradient for.
pub fn assert_forward_backward_parity(golden: &HashMap<String, Tensor>, net: &DartsSupernet) {
    let y = golden["target"].to_dtype(DType::U32).unwrap();
    let logits = net.forward(&golden["input"], Mode::TRAIN_ALL).unwrap();
    let e = max_rel_err(&logits, &golden["logits"]).unwrap();
    assert!(e < TOL, "logits rel err {e}");
    let loss = cross_entropy(&logits, &y).unwrap();
    let e = max_rel_err(&loss.reshape(1).unwrap(), &golden["loss"]).unwrap();
    assert!(e < TOL, "loss rel err {e}");

    assert_gradients(golden, &loss.backward().unwrap(), &[net.weights(), net.arch()]);
}

/// The gradient of every parameter the reference has a gradient for, to `TOL` relative.
pub fn assert_gradients(golden: &HashMap<String, Tensor>, grads: &GradStore, stores: &[&ParamStore]) {
    let mut checked = 0;
    let mut bad = Vec::new();
    for p in stores.iter().flat_map(|s| s.params()) {
        let Some(want) = golden.get(&format!("grad.{}", p.name)) else {
            continue;
        };
        let got = p.grad(grads).unwrap().unwrap_or_else(|| panic!("no gradient for {}", p.name));
        let e = max_rel_err(&got, want).unwrap();
        if e >= TOL {
            bad.push(format!("{} {e:.3e}", p.name));
        }
        checked += 1;
    }
    assert!(bad.is_empty(), "gradients off by more than {TOL} (relative): {bad:?}");
    let expected = golden.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(checked, expected, "every reference gradient compared");
}
