//! Whole search steps on CUDA against the same steps on the CPU: from the same weights, α,
//! optimiser state and batches, two steps (architecture step, then the clipped weight step)
//! of first-order DARTS, second-order DARTS, the unrolled (K=2), Neumann and conjugate-gradient
//! hypergradients, PC-DARTS (K=4, edge normalisation) and the sampling methods (GDAS, SNAS with
//! its resource penalty, ENAS and random children, drawn from the same host streams) leave every
//! weight, α, β and running statistic within 1e-3 of the CPU's, relative to the size of the
//! updates, and the losses within 1e-3. Runs only with NAS_TEST_DEVICE=cuda.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use nas_core::optim::{Sgd, SgdConfig};
use nas_core::testing::{cuda_test_device, update_rel_err};
use nas_search::config::{ArchOptimConfig, Method, MethodConfig};
use nas_search::method::{MethodContext, StepAt, StepBatches, WeightStep};
use nas_search::step::Batch;
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};
use serde_json::json;

const TOL: f64 = 1e-3;

fn batch(seed: u64, dev: &Device) -> Batch {
    // A fixed batch from the seed, the same on both devices.
    let n = 16 * 3 * 32 * 32;
    let v: Vec<f32> = (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0).collect();
    let x = Tensor::from_vec(v, (16, 3, 32, 32), dev).unwrap();
    let y: Vec<u32> = (0..16).map(|i| ((i * 7 + seed as usize) % 10) as u32).collect();
    Batch { x, y: Tensor::from_vec(y, 16, dev).unwrap() }
}

struct Run {
    net: DartsSupernet,
    losses: Vec<f32>,
}

/// The method with the settings of these tests: K=2, J=3, SNAS' penalty at 0.2.
fn settings(method: Method) -> MethodConfig {
    let mut v = match method {
        Method::Unrolled => json!({"unroll_steps": 2}),
        Method::Implicit => json!({"neumann_steps": 3}),
        Method::ImplicitCg => json!({"cg_steps": 3}),
        Method::Bda => json!({"unroll_steps": 2}),
        Method::IapttGm => json!({"unroll_steps": 2}),
        Method::Snas => json!({"resource_weight": 0.2}),
        _ => json!({}),
    };
    v["name"] = json!(method.name());
    MethodConfig::from_json(&v).unwrap()
}

fn two_steps(cfg: &DartsSupernetConfig, method: Method, dev: &Device) -> Run {
    let net = DartsSupernet::new(cfg.clone(), 3, DType::F32, dev).unwrap();
    let mut w_opt = Sgd::new(net.weights().weights(), SgdConfig { lr: 0.025, momentum: 0.9, weight_decay: 3e-4 });
    let arch_cfg = ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 };
    let ctx =
        MethodContext { net: &net, arch_optimizer: &arch_cfg, seed: 3, epochs: 10, device: dev, weight_momentum: 0.9 };
    let mut m = settings(method).build(&ctx).unwrap();
    let mut losses = Vec::new();
    for s in 0..2 {
        let more = (0..m.extra_train_batches()).map(|k| vec![batch(100 + s + k as u64, dev)]).collect();
        let batches = StepBatches {
            train: vec![batch(2 * s, dev)],
            valid: m.reads_valid().then(|| vec![batch(2 * s + 1, dev)]),
            more_train: more,
        };
        let w = WeightStep { opt: &mut w_opt, clip: 5.0 };
        let out = m.step(&net, w, StepAt { epoch: 0, step: s as usize }, batches).unwrap();
        losses.push(out.loss.to_scalar::<f32>().unwrap());
    }
    Run { net, losses }
}

fn same_on_cuda(cfg: DartsSupernetConfig, method: Method) {
    let Some(dev) = cuda_test_device() else { return };
    let init = DartsSupernet::new(cfg.clone(), 3, DType::F32, &Device::Cpu).unwrap();
    let cpu = two_steps(&cfg, method, &Device::Cpu);
    let gpu = two_steps(&cfg, method, &dev);
    for (a, b) in cpu.losses.iter().zip(&gpu.losses) {
        assert!(((a - b) / a).abs() < TOL as f32, "{method}: losses {:?} vs {:?}", cpu.losses, gpu.losses);
    }
    let stores = |n: &DartsSupernet| {
        let mut v = n.weights().named_tensors("");
        v.extend(n.arch().named_tensors(""));
        v
    };
    for (((name, b), (_, c)), (_, g)) in stores(&init).into_iter().zip(stores(&cpu.net)).zip(stores(&gpu.net)) {
        assert!(g.device().is_cuda(), "{name} not on the GPU");
        let e = update_rel_err(&b, &c, &g).unwrap();
        assert!(e < TOL, "{method}: {name} differs by {e:e} of its update");
    }
}

fn darts() -> DartsSupernetConfig {
    DartsSupernetConfig { channels: 8, layers: 5, ..Default::default() }
}

#[test]
fn first_order_step_on_cuda() {
    same_on_cuda(darts(), Method::FirstOrder);
}

#[test]
fn second_order_step_on_cuda() {
    same_on_cuda(darts(), Method::SecondOrder);
}

#[test]
fn unrolled_and_implicit_steps_on_cuda() {
    for method in [Method::Unrolled, Method::Bda, Method::IapttGm, Method::Implicit, Method::ImplicitCg] {
        same_on_cuda(darts(), method);
    }
}

#[test]
fn pc_darts_step_on_cuda() {
    same_on_cuda(DartsSupernetConfig { partial_channels: 4, edge_norm: true, ..darts() }, Method::FirstOrder);
}

#[test]
fn sampling_method_steps_on_cuda() {
    for method in [Method::Gdas, Method::Snas, Method::Enas, Method::Random] {
        same_on_cuda(darts(), method);
    }
}
