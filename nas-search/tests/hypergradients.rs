//! The hypergradient family on a tiny DARTS supernet in f64 (C=4, 3 cells of 2 nodes, 8×8
//! images, batches of 4; the finite-difference comparisons over smooth candidate ops, see
//! `smooth`), against independent ground truth:
//! - truncated unrolling with K = 1 equals DARTS' second order (≤ 1e-8);
//! - with K = 3 it equals central finite differences over α of the validation loss after the
//!   same three virtual SGD steps, recomputed here with plain gradients (≤ 1e-5 relative),
//!   from non-empty momentum buffers (its own products with a 1e-6 step: see the test);
//! - every method leaves the weights, α and nothing else changed, and counts its gradient
//!   evaluations as documented;
//! - the Lanczos estimate of the α-Hessian's dominant eigenvalue equals the largest
//!   eigenvalue of the full finite-difference α-Hessian (≤ 1e-3 relative), and the
//!   diagnostic leaves weights, α, batch-norm statistics and the random stream as they were.

use candle_core::{DType, Device, Tensor, Var};
use nas_core::hypergrad::{alpha_hvp, Bilevel, Hypergradient, TruncatedRad};
use nas_core::nn::{cross_entropy, Mode};
use nas_core::optim::{grads_for, Sgd, SgdConfig};
use nas_search::config::{ArchOptimConfig, Method, MethodConfig};
use nas_search::method::alternating::{alpha_hessian_eigenvalue, sgd_state, Architect, SupernetProblem};
use nas_search::method::bda::BdaConfig;
use nas_search::method::implicit::ImplicitConfig;
use nas_search::method::implicit_cg::ImplicitCgConfig;
use nas_search::method::unrolled::UnrolledConfig;
use nas_search::step::{weight_step, Batch};
use rand::{Rng, SeedableRng};
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};
use search_spaces::{OpsConfig, Supernet};

const SGD: SgdConfig = SgdConfig { lr: 0.025, momentum: 0.9, weight_decay: 3e-4 };

fn batch(seed: u64) -> Batch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = (0..4 * 3 * 8 * 8).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<u32> = (0..4).map(|_| rng.random_range(0..10)).collect();
    Batch { x: Tensor::from_vec(x, (4, 3, 8, 8), &Device::Cpu).unwrap(), y: Tensor::new(y, &Device::Cpu).unwrap() }
}

/// The tiny supernet after two real weight steps (so the momentum buffers are not empty),
/// with α moved off its near-zero start so the ops' weights differ.
fn tiny() -> (DartsSupernet, Sgd) {
    tiny_with(None)
}

/// The tiny supernet over smooth candidate ops only (none, avg_pool_3x3, skip_connect): the
/// ReLUs before the cells remain, but far fewer units sit near a kink. With every op, the
/// three-step trajectory on a batch of four crosses a ReLU or max-pooling kink within the
/// finite differences (over α and over the weights alike) and no step size gives a clean
/// comparison.
fn smooth() -> (DartsSupernet, Sgd) {
    let ops = ["none", "avg_pool_3x3", "skip_connect"].map(String::from).to_vec();
    tiny_with(Some(OpsConfig::Uniform(ops)))
}

fn tiny_with(ops: Option<OpsConfig>) -> (DartsSupernet, Sgd) {
    let cfg = DartsSupernetConfig { channels: 4, layers: 3, steps: 2, multiplier: 2, ops, ..Default::default() };
    let net = DartsSupernet::new(cfg, 7, DType::F64, &Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for a in net.arch().weights() {
        let v: Vec<f64> = (0..a.elem_count()).map(|_| rng.random_range(-0.5..0.5)).collect();
        a.set(&Tensor::from_vec(v, a.dims(), &Device::Cpu).unwrap()).unwrap();
    }
    let mut w_opt = Sgd::new(net.weights().weights(), SGD);
    for s in 0..2 {
        weight_step(&net, &mut w_opt, &[batch(100 + s)], 5.0, None).unwrap();
    }
    (net, w_opt)
}

fn host(ts: &[Tensor]) -> Vec<f64> {
    ts.iter().flat_map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap()).collect()
}

fn values(vars: &[Var]) -> Vec<f64> {
    host(&vars.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>())
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    diff / b.iter().map(|y| y.abs()).fold(0.0, f64::max)
}

fn architect(net: &DartsSupernet, hg: &MethodConfig) -> Architect {
    let a = ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 };
    Architect::new(net.weights().weights(), net.arch().weights(), &a, hg.hypergradient().expect("a hypergradient"))
}

fn hypergradient(net: &DartsSupernet, w_opt: &Sgd, hg: &MethodConfig, train: &[Batch], valid: &Batch) -> Vec<f64> {
    let g = architect(net, hg).hypergradient(net, train, valid, w_opt).unwrap();
    host(&g.into_iter().map(Option::unwrap).collect::<Vec<_>>())
}

#[test]
fn unrolling_one_step_is_darts_second_order() {
    let (net, w_opt) = tiny();
    let (train, valid) = ([batch(1)], batch(2));
    let one = hypergradient(&net, &w_opt, &MethodConfig::Unrolled(UnrolledConfig { unroll_steps: 1 }), &train, &valid);
    let second = hypergradient(&net, &w_opt, &Method::SecondOrder.into(), &train, &valid);
    let e = rel_err(&one, &second);
    println!("T-RAD K=1 against second order: rel err {e:.2e}");
    assert!(e < 1e-8, "{e}");
}

/// L_val(w_3(α), α) after three virtual SGD steps on `train` from the current weights and
/// the optimiser's momentum buffers, the steps written out here: m ← μm + g + λw, w ← w − ξm.
fn unrolled_validation_loss(net: &DartsSupernet, w_opt: &Sgd, train: &[Batch], valid: &Batch) -> f64 {
    let vars = net.weights().weights();
    let saved: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let mut m: Vec<Option<Tensor>> = (0..vars.len()).map(|i| w_opt.momentum_buffer(i).cloned()).collect();
    for b in train {
        let loss = cross_entropy(&net.forward(&b.x, Mode::TRAIN_WEIGHTS).unwrap(), &b.y).unwrap();
        let g = grads_for(&loss.backward().unwrap(), &vars);
        for ((v, g), m) in vars.iter().zip(g).zip(m.iter_mut()) {
            let w = v.as_tensor().copy().unwrap();
            let d = (g.unwrap() + (&w * SGD.weight_decay).unwrap()).unwrap();
            let next = match m.take() {
                Some(old) => ((old * SGD.momentum).unwrap() + d).unwrap(),
                None => d,
            };
            v.set(&(w - (&next * SGD.lr).unwrap()).unwrap()).unwrap();
            *m = Some(next);
        }
    }
    let mode = Mode { train: true, grad_weights: false, grad_arch: false };
    let loss = cross_entropy(&net.forward(&valid.x, mode).unwrap(), &valid.y).unwrap().to_scalar::<f64>().unwrap();
    for (v, t) in vars.iter().zip(saved) {
        v.set(&t).unwrap();
    }
    loss
}

#[test]
fn unrolling_three_steps_is_the_derivative_of_the_unrolled_validation_loss() {
    let (net, w_opt) = smooth();
    let train = [batch(1), batch(3), batch(4)];
    let valid = batch(2);
    let before = values(&net.weights().weights());
    // DARTS' perturbation of norm 0.01 is large next to this small network's weights (its
    // products are off by tens of percent here), so the products use 1e-6, which f64 affords.
    let (weights, arch) = (net.weights().weights(), net.arch().weights());
    let problem = SupernetProblem::new(&net, &weights, &arch, &train, &valid);
    let st = sgd_state(&w_opt, weights.len());
    assert!(st.momentum_buffers.iter().all(Option::is_some), "the virtual steps start from momentum");
    let g = host(&TruncatedRad { steps: 3, fd_step: 1e-6, aggregate: None }.hypergradient(&problem, &st).unwrap());
    assert_eq!(values(&net.weights().weights()), before, "weights restored exactly");

    // Central differences over every α entry, redoing the three steps at α ± h.
    // (The results agree to ~1e-8 for h from 1e-4 to 1e-6 and products from 1e-4 to 1e-6.)
    let arch = net.arch().weights();
    let flat_index = |k: usize| {
        let mut k = k;
        for (i, a) in arch.iter().enumerate() {
            if k < a.elem_count() {
                return (i, k);
            }
            k -= a.elem_count();
        }
        unreachable!()
    };
    let h = 1e-5;
    let mut want = Vec::new();
    for k in 0..g.len() {
        let (i, j) = flat_index(k);
        let at = |delta: f64| {
            let orig = arch[i].as_tensor().copy().unwrap();
            let mut v = orig.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            v[j] += delta;
            arch[i].set(&Tensor::from_vec(v, arch[i].dims(), &Device::Cpu).unwrap()).unwrap();
            let loss = unrolled_validation_loss(&net, &w_opt, &train, &valid);
            arch[i].set(&orig).unwrap();
            loss
        };
        want.push((at(h) - at(-h)) / (2.0 * h));
    }
    let e = rel_err(&g, &want);
    println!("T-RAD K=3 against central differences over α ({} entries): rel err {e:.2e}", g.len());
    assert!(e < 1e-5, "{e}: {g:?} vs {want:?}");
}

#[test]
fn every_method_restores_the_weights_and_counts_its_evaluations() {
    let (net, w_opt) = smooth();
    let train = [batch(1), batch(3)];
    let valid = batch(2);
    let cases = [
        (MethodConfig::from(Method::FirstOrder), 1),
        (Method::SecondOrder.into(), 4),
        (MethodConfig::Unrolled(UnrolledConfig { unroll_steps: 2 }), 7),
        // Both losses at every virtual step, forward and reverse: 6K + 1.
        (MethodConfig::Bda(BdaConfig { unroll_steps: 2, ..Default::default() }), 13),
        (MethodConfig::Implicit(ImplicitConfig { neumann_steps: 3 }), 2 * 3 + 3),
        // No warm start on the first step: 1 + 2J + 2 at most (fewer if the solve ends early).
        (MethodConfig::ImplicitCg(ImplicitCgConfig { cg_steps: 3, ..Default::default() }), 2 * 3 + 3),
    ];
    let first = hypergradient(&net, &w_opt, &Method::FirstOrder.into(), &train, &valid);
    for (hg, evals) in cases {
        let before = (values(&net.weights().weights()), values(&net.arch().weights()));
        let mut a = architect(&net, &hg);
        let g = a.hypergradient(&net, &train, &valid, &w_opt).unwrap();
        let g = host(&g.into_iter().map(Option::unwrap).collect::<Vec<_>>());
        assert_eq!((values(&net.weights().weights()), values(&net.arch().weights())), before, "{hg:?}");
        if hg.method() == Method::ImplicitCg {
            assert!(a.last_grad_evals() <= evals && a.last_grad_evals() >= 5, "{hg:?}: {}", a.last_grad_evals());
        } else {
            assert_eq!(a.last_grad_evals(), evals, "{hg:?}");
        }
        assert!(g.iter().all(|v| v.is_finite()));
        if hg.method() != Method::FirstOrder {
            // The weight-response term is there: the methods differ from the first order.
            assert!(rel_err(&g, &first) > 1e-6, "{hg:?} equals the first order");
        }
    }
}

#[test]
fn lanczos_finds_the_largest_eigenvalue_of_the_alpha_hessian() {
    let (net, _) = tiny();
    let valid = batch(2);
    let (weights, arch) = (net.weights().weights(), net.arch().weights());
    let buffers = net.weights().buffers();
    let before = (values(&weights), values(&arch), values(&buffers), net.stream_position());
    let ev = alpha_hessian_eigenvalue(&net, &valid, 1).unwrap();
    assert_eq!((values(&weights), values(&arch), values(&buffers), net.stream_position()), before);

    // The full finite-difference α-Hessian, one column per unit vector.
    let problem = SupernetProblem::new(&net, &weights, &arch, &[], &valid);
    let n: usize = arch.iter().map(|a| a.elem_count()).sum();
    let mut h = nalgebra::DMatrix::<f64>::zeros(n, n);
    for k in 0..n {
        let mut unit = vec![0.0; n];
        unit[k] = 1.0;
        let mut at = 0;
        let v: Vec<Tensor> = problem
            .arch()
            .iter()
            .map(|a| {
                let t = Tensor::from_slice(&unit[at..at + a.elem_count()], a.dims(), &Device::Cpu).unwrap();
                at += a.elem_count();
                t
            })
            .collect();
        let col = host(&alpha_hvp(&problem, &v).unwrap());
        h.set_column(k, &nalgebra::DVector::from_vec(col));
    }
    let asym = (&h - h.transpose()).abs().max() / h.abs().max();
    let sym = (&h + h.transpose()) * 0.5;
    let eig = nalgebra::SymmetricEigen::new(sym).eigenvalues;
    let (largest, smallest) = (eig.max(), eig.min());
    let e = ((ev - largest) / largest).abs();
    println!(
        "α-Hessian ({n}×{n}, asymmetry {asym:.1e}): eigenvalues {smallest:.5} … {largest:.5}; Lanczos {ev:.6}, rel err {e:.2e}"
    );
    assert!(largest > 0.0);
    assert!(e < 1e-3, "Lanczos {ev} vs eigendecomposition {largest}");
}

/// Forward mode along three real weight steps (the search's own `weight_step`, the tangent
/// following each through `Architect::before_weight_step`) equals T-RAD through the same three
/// steps as virtual ones from the same weights and momentum buffers: both are the derivative of
/// L_val(w_3(α), α) with w_0 and m_0 fixed. The real steps' clip is set out of reach (the
/// tangent does not differentiate it). Every step's tangent costs 2·dim(α) evaluations, and the
/// batch-norm statistics and random stream are left for the step itself.
#[test]
fn forward_mode_along_real_steps_equals_truncated_reverse_mode() {
    use nas_core::hypergrad::ForwardMode;
    let (net, mut w_opt) = smooth();
    let train = [batch(1), batch(3), batch(4)];
    let valid = batch(2);
    let (weights, arch) = (net.weights().weights(), net.arch().weights());
    let reverse = {
        let problem = SupernetProblem::new(&net, &weights, &arch, &train, &valid);
        let st = sgd_state(&w_opt, weights.len());
        host(&TruncatedRad { steps: 3, fd_step: 1e-6, aggregate: None }.hypergradient(&problem, &st).unwrap())
    };
    let a = ArchOptimConfig { lr: 3e-4, beta1: 0.5, beta2: 0.999, weight_decay: 1e-3 };
    let mut fad = ForwardMode::new(0);
    fad.fd_step = 1e-6;
    let mut architect = Architect::new(weights.clone(), arch.clone(), &a, Box::new(fad));
    let columns: usize = arch.iter().map(|a| a.elem_count()).sum();
    let buffers = net.weights().buffers();
    for b in &train {
        let before = (values(&weights), values(&arch), values(&buffers), net.stream_position());
        let evals = architect.last_grad_evals();
        architect.before_weight_step(&net, std::slice::from_ref(b), &w_opt).unwrap();
        assert_eq!((values(&weights), values(&arch), values(&buffers), net.stream_position()), before);
        assert_eq!(architect.last_grad_evals() - evals, 2 * columns);
        weight_step(&net, &mut w_opt, std::slice::from_ref(b), 1e12, None).unwrap();
    }
    let forward = hypergradient_of(&mut architect, &net, &w_opt, &valid);
    let e = rel_err(&forward, &reverse);
    println!("forward mode along 3 real steps against T-RAD K=3 ({columns} α entries): rel err {e:.2e}");
    assert!(e < 1e-6, "{e}: {forward:?} vs {reverse:?}");
}

fn hypergradient_of(a: &mut Architect, net: &DartsSupernet, w_opt: &Sgd, valid: &Batch) -> Vec<f64> {
    let g = a.hypergradient(net, &[batch(9)], valid, w_opt).unwrap();
    host(&g.into_iter().map(Option::unwrap).collect::<Vec<_>>())
}
