//! The sampling methods' pieces against independent ground truth:
//! - GDAS: from the PyTorch reference's weights, input and Gumbel noise
//!   (tests/fixtures/gen_gdas_golden.py: AutoDL's sample and `forward_gdas` edge written on
//!   shared/bench/darts_ref.py's network), the chosen ops, logits, loss and the gradients of α
//!   and of every weight agree to 1e-4; the hard sample's forward equals the child's alone.
//! - SNAS: the gradient of the loss (with the resource penalty) with respect to α through the
//!   relaxed sample equals central finite differences in f64.
//! - Uniform children: two distinct inputs per node and never `none` (darts), one op per edge
//!   (nb201), every choice about equally often.
//! - The temperature schedules' end points and shapes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use nas_core::checkpoint::load_tensors;
use nas_core::nn::{cross_entropy, Mode};
use nas_core::rng::{self, Purpose};
use nas_core::testing::max_rel_err;
use nas_search::method::sampling::{gdas_sample_with, snas_sample_with};
use nas_search::method::snas::{cost_tensors, resource_penalty, Resource};
use nas_search::method::{gdas, snas};
use search_spaces::darts::{node_edges, DartsSupernet, DartsSupernetConfig};
use search_spaces::nb201::{Nb201Config, Nb201Network};
use search_spaces::{uniform_child, ArchSample, ChildShape, Supernet};

const TOL: f64 = 1e-4;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    load_tensors(&path, &Device::Cpu).expect("fixture").tensors
}

fn gdas_net(golden: &HashMap<String, Tensor>) -> DartsSupernet {
    let cfg = DartsSupernetConfig { channels: 4, layers: 5, ..Default::default() };
    let net = DartsSupernet::new(cfg, 123, DType::F32, &Device::Cpu).unwrap();
    net.weights().load(golden, false).unwrap();
    net.arch().load(golden, false).unwrap();
    net
}

fn gdas_golden_sample(net: &DartsSupernet, golden: &HashMap<String, Tensor>) -> ArchSample {
    let noise = [golden["gumbel_normal"].clone(), golden["gumbel_reduce"].clone()];
    let tau = golden["tau"].to_vec1::<f32>().unwrap()[0] as f64;
    gdas_sample_with(&net.op_logits(Mode::TRAIN_ALL).unwrap(), &noise, tau).unwrap().expect("a finite sample")
}

/// Standard Gumbel noise −ln(−ln U), one tensor like each of `logits` (shape and dtype), from
/// the sample stream of `seed`.
fn gumbel_like(logits: &[Tensor], seed: u64) -> Vec<Tensor> {
    let mut r = rng::stream(seed, Purpose::Sample, 0, 0);
    logits
        .iter()
        .map(|l| {
            let g: Vec<f64> = (0..l.elem_count())
                .map(|_| {
                    let u: f64 = rand::Rng::random_range(&mut r, 1e-9..1.0);
                    -(-u.ln()).ln()
                })
                .collect();
            Tensor::from_vec(g, l.shape(), &Device::Cpu).unwrap().to_dtype(l.dtype()).unwrap()
        })
        .collect()
}

#[test]
fn gdas_matches_the_pytorch_reference_on_the_same_sample() {
    let golden = fixture("gdas_c4_l5.safetensors");
    let net = gdas_net(&golden);
    let sample = gdas_golden_sample(&net, &golden);
    let chosen = sample.chosen.as_ref().unwrap();
    for (t, key) in ["index_normal", "index_reduce"].into_iter().enumerate() {
        let want: Vec<usize> = golden[key].to_vec1::<i64>().unwrap().into_iter().map(|i| i as usize).collect();
        let got: Vec<usize> = chosen[t].iter().map(|c| c[0]).collect();
        assert_eq!(got, want, "{key}");
    }
    // The sample includes `none` on some edges, the case where the edge adds only constants.
    assert!(chosen.iter().flatten().any(|c| c[0] == 0));

    let logits = net.forward_sampled(&golden["input"], Mode::TRAIN_ALL, &sample).unwrap();
    let e = max_rel_err(&logits, &golden["logits"]).unwrap();
    assert!(e < TOL, "logits rel err {e}");
    let y = golden["target"].to_dtype(DType::U32).unwrap();
    let loss = cross_entropy(&logits, &y).unwrap();
    let e = max_rel_err(&loss.reshape(1).unwrap(), &golden["loss"]).unwrap();
    assert!(e < TOL, "loss rel err {e}");

    let grads = loss.backward().unwrap();
    let mut checked = 0;
    let mut bad = Vec::new();
    for p in net.weights().params().into_iter().chain(net.arch().params()) {
        let want = golden.get(&format!("grad.{}", p.name));
        let got = p.grad(&grads).unwrap();
        match (want, got) {
            (Some(w), Some(g)) => {
                let e = max_rel_err(&g, w).unwrap();
                if e >= TOL {
                    bad.push(format!("{} {e:.2e}", p.name));
                }
                checked += 1;
            }
            (Some(_), None) => bad.push(format!("{}: no gradient here", p.name)),
            // An op the sample did not run has no gradient; where the reference has none,
            // ours may only be zero (the unused ops' parameters get none at all here).
            (None, Some(g)) => {
                let m = g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                if m != 0.0 {
                    bad.push(format!("{}: gradient {m} where the reference has none", p.name));
                }
            }
            (None, None) => {}
        }
    }
    assert!(bad.is_empty(), "gradients off: {bad:?}");
    let expected = golden.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(checked, expected, "every reference gradient compared");
    // Every logit of α gets a gradient, also those of the ops that did not run.
    for name in ["alphas_normal", "alphas_reduce"] {
        let g = net.arch().get(name).unwrap().grad(&grads).unwrap().unwrap();
        let zeros = g.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, 0, "{name}: {zeros} logits without a gradient");
    }
}

/// The hard sample's forward is the sampled child's: each edge's value is its chosen op's
/// output times 1 − p + p, plus the other columns' −p + p = 0.
fn assert_hard_forward_is_the_child(net: &dyn Supernet, x: &Tensor, sample: &ArchSample) {
    let mode = Mode { train: true, grad_weights: false, grad_arch: false };
    let hard = net.forward_sampled(x, mode, sample).unwrap();
    let child = ArchSample { weights: None, chosen: sample.chosen.clone(), add_unchosen: false };
    let alone = net.forward_sampled(x, mode, &child).unwrap();
    let e = max_rel_err(&hard, &alone).unwrap();
    assert!(e < 1e-5, "hard-sample forward differs from the child's by {e}");
    // And not the relaxed supernet's.
    let relaxed = net.forward(x, mode).unwrap();
    assert!(max_rel_err(&hard, &relaxed).unwrap() > 1e-3);
}

#[test]
fn a_gdas_forward_is_the_sampled_child_in_both_spaces() {
    let golden = fixture("gdas_c4_l5.safetensors");
    let net = gdas_net(&golden);
    assert_hard_forward_is_the_child(&net, &golden["input"], &gdas_golden_sample(&net, &golden));

    let cfg = Nb201Config { channels: 4, cells_per_stage: 1, ..Default::default() };
    let nb = Nb201Network::search(cfg, 3, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &Device::Cpu).unwrap();
    for seed in 0..4u64 {
        let noise = gumbel_like(&nb.op_logits(Mode::TRAIN_ALL).unwrap(), seed);
        let s = gdas_sample_with(&nb.op_logits(Mode::TRAIN_ALL).unwrap(), &noise, 1.0).unwrap().unwrap();
        assert_hard_forward_is_the_child(&nb, &x, &s);
    }
}

/// SNAS on a small f64 supernet: L(α) = CE(f(x; Z(α))) + λ·penalty(Z(α)) with fixed noise, Z
/// the relaxed sample; autograd against central differences over every entry of α.
#[test]
fn snas_gradients_match_central_differences_in_f64() {
    let cfg = DartsSupernetConfig { channels: 2, layers: 2, steps: 2, multiplier: 2, ..Default::default() };
    let net = DartsSupernet::new(cfg, 5, DType::F64, &Device::Cpu).unwrap();
    // Larger logits than the 1e-3 initialisation, so the relaxed weights are far from uniform.
    for v in net.arch().weights() {
        v.set(&(v.as_tensor() * 500.0).unwrap()).unwrap();
    }
    let x = Tensor::randn(0f64, 1.0, (3, 3, 8, 8), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(vec![1u32, 4, 7], 3, &Device::Cpu).unwrap();
    let noise = gumbel_like(&net.op_logits(Mode::EVAL).unwrap(), 9);
    let (tau, lambda) = (0.7, 0.3);
    let like = net.op_logits(Mode::EVAL).unwrap()[0].clone();
    let costs = cost_tensors(&net.op_costs(8, 8), Resource::MultAdds, &like).unwrap();
    let mode = Mode { train: true, grad_weights: false, grad_arch: true };
    let loss = |net: &DartsSupernet| -> Tensor {
        let s = snas_sample_with(&net.op_logits(mode).unwrap(), &noise, tau).unwrap().unwrap();
        let ce = cross_entropy(&net.forward_sampled(&x, mode, &s).unwrap(), &y).unwrap();
        (ce + resource_penalty(s.weights.as_ref().unwrap(), &costs, lambda).unwrap()).unwrap()
    };
    let grads = loss(&net).backward().unwrap();
    let arch: Vec<Var> = net.arch().weights();
    let h = 1e-6;
    let mut worst = 0f64;
    let mut largest = 0f64;
    for v in &arch {
        let g = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut p = base.clone();
                p[i] += d;
                v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap()).unwrap();
                loss(&net).to_scalar::<f64>().unwrap()
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap()).unwrap();
            worst = worst.max((fd - g[i]).abs());
            largest = largest.max(fd.abs());
        }
    }
    assert!(largest > 1e-3, "the gradient is not trivially small ({largest})");
    assert!(worst < 1e-7 * largest.max(1.0), "autograd and central differences differ by {worst} (largest {largest})");
}

#[test]
fn uniform_children_have_two_distinct_inputs_per_node_and_no_none() {
    let cfg = DartsSupernetConfig { channels: 2, layers: 3, ..Default::default() };
    let net = DartsSupernet::new(cfg, 1, DType::F32, &Device::Cpu).unwrap();
    let ops = net.edge_ops();
    let shape = net.child_shape();
    assert_eq!(shape, ChildShape::TwoInputsPerNode { steps: 4 });
    let draws = 4000;
    // How often each op column (1..8) and each input of node 3 (0..5) is chosen.
    let mut op_counts = [0usize; 8];
    let mut input_counts = [0usize; 5];
    for d in 0..draws {
        let mut r = rng::stream(2, Purpose::Sample, 0, d);
        let child = uniform_child(&ops, shape, &mut r);
        for cell in &child {
            for node in 0..4 {
                let edges = node_edges(node);
                let picked: Vec<usize> = edges.clone().filter(|&e| !cell[e].is_empty()).collect();
                assert_eq!(picked.len(), 2, "node {node} takes two distinct inputs");
                for &e in &picked {
                    assert_eq!(cell[e].len(), 1);
                    assert_ne!(ops[0][e][cell[e][0]], "none");
                    op_counts[cell[e][0]] += 1;
                    if node == 3 {
                        input_counts[e - edges.start] += 1;
                    }
                }
            }
        }
        net.genotype_of(&child).unwrap();
    }
    assert_eq!(op_counts[0], 0);
    // 2 cells × 8 edges per child: 64000 op choices over 7 ops; 16000 input choices over 5.
    let expect_op = (draws as usize * 16) as f64 / 7.0;
    for &c in &op_counts[1..] {
        assert!((c as f64 - expect_op).abs() < 5.0 * expect_op.sqrt(), "op counts {op_counts:?}");
    }
    let expect_in = (draws as usize * 2 * 2) as f64 / 5.0;
    for &c in &input_counts {
        assert!((c as f64 - expect_in).abs() < 5.0 * expect_in.sqrt(), "input counts {input_counts:?}");
    }
}

#[test]
fn uniform_nb201_children_take_one_op_per_edge_none_included() {
    let nb = Nb201Network::search(
        Nb201Config { channels: 4, cells_per_stage: 1, ..Default::default() },
        3,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ops = nb.edge_ops();
    let mut counts = [0usize; 5];
    for d in 0..2000 {
        let child = uniform_child(&ops, nb.child_shape(), &mut rng::stream(4, Purpose::Sample, 1, d));
        assert!(child[0].iter().all(|c| c.len() == 1));
        for c in &child[0] {
            counts[c[0]] += 1;
        }
        let g = nb.genotype_of(&child).unwrap();
        assert_eq!(nb.child_of(&g).unwrap(), child, "child_of inverts genotype_of");
    }
    let expect = 12000.0 / 5.0;
    for &c in &counts {
        assert!((c as f64 - expect).abs() < 5.0 * f64::sqrt(expect), "op counts {counts:?}");
    }
}

#[test]
fn temperatures_fall_from_tau_max_to_tau_min() {
    // GDAS, linear (AutoDL: tau_max − (tau_max − tau_min)·epoch/(total − 1)).
    assert_eq!(gdas::temperature((10.0, 0.1), 0, 250), 10.0);
    assert!((gdas::temperature((10.0, 0.1), 249, 250) - 0.1).abs() < 1e-12);
    assert!((gdas::temperature((10.0, 0.1), 1, 3) - 5.05).abs() < 1e-12);
    // SNAS, geometric: the middle epoch is the geometric mean.
    assert_eq!(snas::temperature((1.0, 0.03), 0, 51), 1.0);
    assert!((snas::temperature((1.0, 0.03), 50, 51) - 0.03).abs() < 1e-12);
    assert!((snas::temperature((1.0, 0.03), 25, 51) - 0.03f64.sqrt()).abs() < 1e-12);
    // One epoch: the first temperature.
    assert_eq!(gdas::temperature((10.0, 0.1), 0, 1), 10.0);
}
