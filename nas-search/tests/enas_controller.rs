//! The ENAS controller: sampling against scoring, closed forms of the reference's logits, the
//! gradient of log p against finite differences, REINFORCE against the exact policy gradient of
//! a bandit, learning the bandit, the baseline's recursion, and the checkpoint round trip.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use nas_search::method::enas::controller::{Controller, ControllerConfig, ControllerSpec, Decisions, Sample};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

const MICRO: ControllerSpec = ControllerSpec::Micro { nodes: 4, ops: 5 };
const NB201: ControllerSpec = ControllerSpec::PerEdge { edges: 6, ops: 5 };

fn presets() -> [(ControllerSpec, ControllerConfig); 2] {
    [(MICRO, ControllerConfig::enas_micro()), (NB201, ControllerConfig::autodl_nb201())]
}

fn scalar(t: &Tensor) -> R<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn values(t: &Tensor) -> R<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Overwrites parameter `name` with `v` (in the controller's dtype).
fn set(c: &Controller, name: &str, v: Vec<f64>) -> R {
    let p = c.store().get(name).ok_or(format!("no parameter {name}"))?;
    let dtype = p.var.dtype();
    p.var.set(&Tensor::from_vec(v, p.dims(), &Device::Cpu)?.to_dtype(dtype)?)?;
    Ok(())
}

/// Every parameter's values, in store order, as bits (for bit-identity).
fn param_bits(c: &Controller) -> R<Bits> {
    c.store()
        .params()
        .into_iter()
        .map(|p| Ok((p.name.clone(), values(&p.value()?)?.iter().map(|v| v.to_bits()).collect())))
        .collect()
}

/// The micro bound at each position written out from the reference's `arc_seq` layout:
/// cell-major, node-major, [input 1, op 1, input 2, op 2]; an input picks one of 2 + node states.
fn micro_bounds(nodes: usize, ops: usize) -> Vec<usize> {
    let mut b = Vec::new();
    for _cell in 0..2 {
        for node in 0..nodes {
            b.extend([2 + node, ops, 2 + node, ops]);
        }
    }
    b
}

#[test]
fn sampling_and_scoring_agree() -> R {
    for (spec, cfg) in presets() {
        let c = Controller::new(spec, cfg, 3, &Device::Cpu)?;
        let bounds = match spec {
            ControllerSpec::Micro { nodes, ops } => micro_bounds(nodes, ops),
            ControllerSpec::PerEdge { edges, ops } => vec![ops; edges],
        };
        let mut distinct = std::collections::HashSet::new();
        let mut worst = 0.0f64;
        for seed in 0..40 {
            let s = c.sample(&mut ChaCha8Rng::seed_from_u64(seed))?;
            let again = c.sample(&mut ChaCha8Rng::seed_from_u64(seed))?;
            assert_eq!(s.decisions, again.decisions, "{spec:?}: the same RNG draws the same architecture");
            assert_eq!(s.decisions.0.len(), bounds.len());
            for (pos, (&d, &b)) in s.decisions.0.iter().zip(&bounds).enumerate() {
                assert!(d < b, "{spec:?} seed {seed}: decision {pos} is {d}, bound {b}");
                assert_eq!(spec.choices(pos), Some(b));
            }
            let sampled = scalar(&s.log_prob)?;
            let scored = scalar(&c.log_prob(&s.decisions)?)?;
            worst = worst.max((sampled - scored).abs());
            assert!((sampled - scored).abs() <= 1e-6, "{spec:?} seed {seed}: {sampled} vs {scored}");
            // The per-decision distributions explain both sums.
            let dists = c.distributions(&s.decisions)?;
            let mut lp = 0.0;
            let mut ent = 0.0;
            for (pos, (p, &d)) in dists.iter().zip(&s.decisions.0).enumerate() {
                assert_eq!(p.len(), bounds[pos]);
                assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                lp += p[d].ln();
                ent -= p.iter().map(|q| q * q.ln()).sum::<f64>();
            }
            assert!((lp - sampled).abs() < 1e-4, "{spec:?}: Σ log p = {lp}, sample says {sampled}");
            assert!((ent - s.entropy).abs() < 1e-9);
            distinct.insert(s.decisions.0.clone());
        }
        assert!(distinct.len() > 30, "{spec:?}: only {} distinct architectures in 40 draws", distinct.len());
        eprintln!("{spec:?}: max |log p(sample) − log p(scored)| = {worst:e}");
    }
    Ok(())
}

/// With every weight zero the LSTM outputs h = 0 (gates ½, cell input tanh 0 = 0), so the
/// attention is uniform over the 2 + node states and the op logits are the reference's
/// transform of `b_soft` alone: (1.1/2.5)·tanh(b) + [0.25, 0.25, −0.25, …] in the normal cell,
/// without the fixed bias in the reduce cell; b_soft starts at [10, 10, 0, 0, 0].
#[test]
fn zero_weights_give_the_references_closed_form() -> R {
    let (nodes, ops) = (2, 5);
    let spec = ControllerSpec::Micro { nodes, ops };
    let c = Controller::with_dtype(spec, ControllerConfig::enas_micro(), 0, DType::F64, &Device::Cpu)?;
    assert_eq!(values(&c.store().get("w_soft.bias").ok_or("bias")?.value()?)?, vec![10.0, 10.0, 0.0, 0.0, 0.0]);
    for p in c.store().params() {
        if p.name != "w_soft.bias" {
            set(&c, &p.name, vec![0.0; p.elem_count()])?;
        }
    }
    let softmax = |l: &[f64]| -> Vec<f64> {
        let z: f64 = l.iter().map(|v| v.exp()).sum();
        l.iter().map(|v| v.exp() / z).collect()
    };
    let b = [10.0f64, 10.0, 0.0, 0.0, 0.0];
    let fixed = [0.25, 0.25, -0.25, -0.25, -0.25];
    let normal: Vec<f64> = (0..ops).map(|i| 1.1 / 2.5 * b[i].tanh() + fixed[i]).collect();
    let reduce: Vec<f64> = (0..ops).map(|i| 1.1 / 2.5 * b[i].tanh()).collect();
    let arc = Decisions(vec![1, 0, 0, 3, 2, 4, 1, 1, 0, 2, 1, 4, 1, 0, 2, 3]);
    let dists = c.distributions(&arc)?;
    let mut expected_lp = 0.0;
    for (pos, (d, &k)) in dists.iter().zip(&arc.0).enumerate() {
        let (cell, node, slot) = (pos / (4 * nodes), (pos % (4 * nodes)) / 4, pos % 4);
        let want = match (slot % 2, cell) {
            (0, _) => vec![1.0 / (2 + node) as f64; 2 + node],
            (_, 0) => softmax(&normal),
            _ => softmax(&reduce),
        };
        for (g, w) in d.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "position {pos}: {d:?} vs {want:?}");
        }
        assert_eq!(d.len(), want.len(), "position {pos}");
        expected_lp += want[k].ln();
    }
    let lp = scalar(&c.log_prob(&arc)?)?;
    assert!((lp - expected_lp).abs() < 1e-12, "{lp} vs {expected_lp}");

    // AutoDL: logits 2.5·tanh((W h + b)/5) with h = 0.
    let spec = ControllerSpec::PerEdge { edges: 3, ops: 3 };
    let c = Controller::with_dtype(spec, ControllerConfig::autodl_nb201(), 0, DType::F64, &Device::Cpu)?;
    for p in c.store().params() {
        set(&c, &p.name, vec![0.0; p.elem_count()])?;
    }
    let bias = vec![0.3, -1.2, 2.0];
    set(&c, "w_soft.bias", bias.clone())?;
    let want = softmax(&bias.iter().map(|v| 2.5 * (v / 5.0).tanh()).collect::<Vec<_>>());
    let arc = Decisions(vec![2, 0, 1]);
    for d in c.distributions(&arc)? {
        assert!(d.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-12), "{d:?} vs {want:?}");
    }
    let lp = scalar(&c.log_prob(&arc)?)?;
    assert!((lp - (want[2] * want[0] * want[1]).ln()).abs() < 1e-12);
    Ok(())
}

#[test]
fn log_prob_gradient_matches_finite_differences() -> R {
    let specs = [
        (
            ControllerSpec::Micro { nodes: 2, ops: 4 },
            ControllerConfig { lstm_size: 6, ..ControllerConfig::enas_micro() },
        ),
        (
            ControllerSpec::PerEdge { edges: 3, ops: 4 },
            ControllerConfig { lstm_size: 6, ..ControllerConfig::autodl_nb201() },
        ),
    ];
    let step = 1e-5;
    for (spec, cfg) in specs {
        let c = Controller::with_dtype(spec, cfg, 11, DType::F64, &Device::Cpu)?;
        // ENAS' b_soft starts at 10, where tanh is flat and the head's gradient vanishes;
        // moved where every path carries gradient.
        set(&c, "w_soft.bias", vec![0.3, -0.2, 0.1, -0.4])?;
        let arc = c.sample(&mut ChaCha8Rng::seed_from_u64(4))?.decisions;
        let grads = c.log_prob(&arc)?.backward()?;
        let mut worst = 0.0f64;
        let mut checked = 0;
        for p in c.store().params() {
            let g = values(grads.get(p.var.as_tensor()).ok_or(format!("{spec:?}: no gradient reaches {}", p.name))?)?;
            let w0 = values(&p.value()?)?;
            let n = w0.len();
            let mut idx = vec![0, n / 3, n / 2, n - 1];
            idx.dedup();
            for k in idx {
                let at = |delta: f64| -> R<f64> {
                    let mut w = w0.clone();
                    w[k] += delta;
                    set(&c, &p.name, w)?;
                    scalar(&c.log_prob(&arc)?)
                };
                let fd = (at(step)? - at(-step)?) / (2.0 * step);
                set(&c, &p.name, w0.clone())?;
                let err = (g[k] - fd).abs();
                worst = worst.max(err);
                checked += 1;
                assert!(err <= 1e-8 + 1e-6 * fd.abs(), "{spec:?} {}[{k}]: backward {} vs FD {fd}", p.name, g[k]);
            }
        }
        eprintln!("{spec:?}: {checked} entries, max |backward − central FD (h = {step:e})| = {worst:e}");
    }
    Ok(())
}

/// A two-edge, three-op bandit (9 arms) with a fixed reward table.
const BANDIT: ControllerSpec = ControllerSpec::PerEdge { edges: 2, ops: 3 };
const TABLE: [f64; 9] = [0.1, 0.5, 0.3, 0.9, 0.2, 0.6, 0.4, 0.8, 0.7];

fn arm_reward(d: &Decisions) -> f64 {
    TABLE[d.0[0] * 3 + d.0[1]]
}

fn arms() -> Vec<Decisions> {
    (0..9).map(|a| Decisions(vec![a / 3, a % 3])).collect()
}

/// The gradient of `loss` over all the controller's parameters, flattened in store order.
fn flat_grad(c: &Controller, loss: &Tensor) -> R<Vec<f64>> {
    let grads = loss.backward()?;
    let mut out = Vec::new();
    for p in c.store().params() {
        match grads.get(p.var.as_tensor()) {
            Some(g) => out.extend(values(g)?),
            None => out.extend(vec![0.0; p.elem_count()]),
        }
    }
    Ok(out)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// ∇E_p[r] = Σ_a p(a)(r(a) − b)∇log p(a) (exact, by enumeration) against the REINFORCE
/// estimate mean_i (r(a_i) − b)∇log p(a_i) over N samples of `sample`, with b = 0.5 fixed.
/// The estimate's expected squared error is tr Cov / N, where tr Cov = Σ_a p(a)(r(a) − b)²
/// ‖∇log p(a)‖² − ‖∇E‖², known in closed form here; the test demands the error be within 3
/// standard errors at N = 100 and N = 20000 (and below 5 % at 20000), and that it shrink.
/// One LSTM layer of 8 keeps the 20100 samples and their backward passes quick.
#[test]
fn reinforce_estimate_converges_to_the_exact_policy_gradient() -> R {
    let cfg = ControllerConfig { lstm_size: 8, lstm_layers: 1, ..ControllerConfig::autodl_nb201() };
    let c = Controller::with_dtype(BANDIT, cfg, 21, DType::F64, &Device::Cpu)?;
    let b = 0.5;
    let mut per_arm = Vec::new();
    let mut total_p = 0.0;
    for arm in arms() {
        let lp = c.log_prob(&arm)?;
        let p = scalar(&lp)?.exp();
        total_p += p;
        per_arm.push((p, arm_reward(&arm) - b, flat_grad(&c, &lp)?));
    }
    assert!((total_p - 1.0).abs() < 1e-12, "Σ p = {total_p}");
    let dim = per_arm[0].2.len();
    let mut exact = vec![0.0; dim];
    let mut second_moment = 0.0;
    for (p, adv, g) in &per_arm {
        for (e, gi) in exact.iter_mut().zip(g) {
            *e += p * adv * gi;
        }
        second_moment += p * adv * adv * norm(g).powi(2);
    }
    let exact_norm = norm(&exact);
    let tr_cov = second_moment - exact_norm.powi(2);

    // The closed form is the derivative of E_p[r] = Σ_a p(a) r(a) (the baseline cancels):
    // checked by central differences on a few entries of the head's bias and weight.
    let expected_reward = |c: &Controller| -> R<f64> {
        let mut e = 0.0;
        for arm in arms() {
            e += scalar(&c.log_prob(&arm)?)?.exp() * arm_reward(&arm);
        }
        Ok(e)
    };
    let mut offset = 0;
    for p in c.store().params() {
        let w0 = values(&p.value()?)?;
        if p.name.starts_with("w_soft") || p.name == "g_emb" {
            for k in [0, w0.len() - 1] {
                let at = |d: f64| -> R<f64> {
                    let mut w = w0.clone();
                    w[k] += d;
                    set(&c, &p.name, w)?;
                    expected_reward(&c)
                };
                let fd = (at(1e-5)? - at(-1e-5)?) / 2e-5;
                set(&c, &p.name, w0.clone())?;
                let g = exact[offset + k];
                assert!((g - fd).abs() < 1e-9 + 1e-6 * fd.abs(), "{}[{k}]: closed form {g} vs FD {fd}", p.name);
            }
        }
        offset += w0.len();
    }

    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let mut rel = Vec::new();
    for n in [100usize, 20_000] {
        let mut estimate = vec![0.0; dim];
        let mut left = n;
        while left > 0 {
            let chunk = left.min(1000);
            let samples: Vec<Sample> = (0..chunk).map(|_| c.sample(&mut rng)).collect::<Result<_, _>>()?;
            let terms: Vec<(&Sample, f64)> = samples.iter().map(|s| (s, arm_reward(&s.decisions) - b)).collect();
            // The loss is −mean(A·log p): its gradient is minus the chunk's estimate.
            let g = flat_grad(&c, &c.reinforce_loss(&terms)?)?;
            for (e, gi) in estimate.iter_mut().zip(&g) {
                *e -= gi * chunk as f64 / n as f64;
            }
            left -= chunk;
        }
        let err: Vec<f64> = estimate.iter().zip(&exact).map(|(e, x)| e - x).collect();
        let standard_error = (tr_cov / n as f64).sqrt();
        let r = norm(&err) / exact_norm;
        eprintln!(
            "N = {n}: ‖ĝ − ∇E‖/‖∇E‖ = {r:.4} (‖∇E‖ = {exact_norm:.4e}, standard error/‖∇E‖ = {:.4})",
            standard_error / exact_norm
        );
        assert!(norm(&err) < 3.0 * standard_error, "N = {n}: error {} vs standard error {standard_error}", norm(&err));
        rel.push(r);
    }
    assert!(rel[1] < 0.05, "relative error at N = 20000 is {}", rel[1]);
    assert!(rel[0] > 3.0 * rel[1], "the error did not shrink with N: {rel:?}");
    Ok(())
}

/// Repeated updates on a one-edge, four-arm bandit (rewards 0.2, 0.5, 0.9, 0.4) with the
/// AutoDL settings but lr 0.05 and no entropy bonus: 10 samples per update, 40 updates.
#[test]
fn updates_drive_the_bandit_to_its_best_arm() -> R {
    let spec = ControllerSpec::PerEdge { edges: 1, ops: 4 };
    let mut cfg = ControllerConfig { lstm_size: 16, entropy_weight: 0.0, ..ControllerConfig::autodl_nb201() };
    cfg.adam.lr = 0.05;
    let mut c = Controller::new(spec, cfg, 8, &Device::Cpu)?;
    let rewards = [0.2, 0.5, 0.9, 0.4];
    let best = Decisions(vec![2]);
    let p_best = |c: &Controller| -> R<f64> { Ok(c.distributions(&best)?[0][2]) };
    let start = p_best(&c)?;
    assert!(start < 0.4, "the best arm starts at p = {start}");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let updates = 40;
    let mut reached = None;
    for k in 0..updates {
        let samples: Vec<(Sample, f64)> = (0..10)
            .map(|_| c.sample(&mut rng).map(|s| (s.clone(), rewards[s.decisions.0[0]])))
            .collect::<Result<_, _>>()?;
        c.update(&samples)?;
        if reached.is_none() && p_best(&c)? > 0.9 {
            reached = Some(k + 1);
        }
    }
    let end = p_best(&c)?;
    eprintln!("p(best arm): {start:.3} at the start, {end:.3} after {updates} updates (> 0.9 after {reached:?})");
    assert!(end > 0.9, "p(best arm) = {end} after {updates} updates");
    Ok(())
}

/// ENAS' `build_trainer`: b ← b − (1 − 0.99)(b − R) from b = 0, per sample, before the
/// advantage R − b; AutoDL starts the baseline at the first accuracy. The loss is the mean of
/// −log p·(R − b), here recomputed from the samples' own log-probabilities.
#[test]
fn the_baseline_moves_before_the_advantage() -> R {
    for (spec, cfg) in presets() {
        let mut c = Controller::with_dtype(spec, cfg, 2, DType::F64, &Device::Cpu)?;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let accs = [0.5, 0.7, 0.2];
        let samples: Vec<(Sample, f64)> =
            accs.iter().map(|&a| c.sample(&mut rng).map(|s| (s, a))).collect::<Result<_, _>>()?;
        let mut b = cfg.initial_baseline;
        let mut loss = 0.0;
        for (s, acc) in &samples {
            let reward = acc + 1e-4 * s.entropy;
            let nb = match b {
                None => *acc,
                Some(b) => b - 0.01 * (b - reward),
            };
            loss -= scalar(&s.log_prob)? * (reward - nb) / 3.0;
            b = Some(nb);
        }
        let stats = c.update(&samples)?;
        let want = b.ok_or("no baseline")?;
        assert!((stats.baseline - want).abs() < 1e-15 && c.baseline() == Some(stats.baseline), "{spec:?}");
        assert!((stats.loss - loss).abs() < 1e-12, "{spec:?}: loss {} vs {loss}", stats.loss);
        let mean_ent = samples.iter().map(|(s, _)| s.entropy).sum::<f64>() / 3.0;
        assert!((stats.mean_reward - (accs.iter().sum::<f64>() / 3.0 + 1e-4 * mean_ent)).abs() < 1e-12);
        assert_eq!(c.steps(), 1);
    }
    Ok(())
}

/// A reward that depends on the whole architecture, for the round trip.
fn hashed_reward(d: &Decisions) -> f64 {
    let h = d.0.iter().enumerate().fold(0usize, |h, (i, &x)| (h * 31 + (i + 1) * (x + 1)) % 1009);
    h as f64 / 1009.0
}

fn run_updates(c: &mut Controller, seeds: std::ops::Range<u64>) -> R {
    for seed in seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let samples: Vec<(Sample, f64)> = (0..4)
            .map(|_| c.sample(&mut rng).map(|s| (s.clone(), hashed_reward(&s.decisions))))
            .collect::<Result<_, _>>()?;
        c.update(&samples)?;
    }
    Ok(())
}

type State = (HashMap<String, Tensor>, HashMap<String, String>);

fn state_maps(c: &Controller) -> R<State> {
    let (t, m) = c.state("controller")?;
    Ok((t.into_iter().collect(), m.into_iter().collect()))
}

fn load(c: &mut Controller, (t, m): &State) -> nas_search::Result<()> {
    c.load_state("controller", &|n| t.get(n).cloned(), &|k| m.get(k).cloned())
}

/// Named values as bits.
type Bits = Vec<(String, Vec<u64>)>;

fn state_bits(c: &Controller) -> R<(Bits, Vec<(String, String)>)> {
    let (t, m) = c.state("controller")?;
    let t = t.into_iter().map(|(n, t)| Ok((n, values(&t)?.iter().map(|v| v.to_bits()).collect()))).collect::<R<_>>()?;
    Ok((t, m))
}

#[test]
fn a_restored_controller_continues_bit_identically() -> R {
    for (spec, cfg) in presets() {
        // A fresh controller's state (no moments, AutoDL's baseline still unset) round-trips too.
        let fresh = Controller::new(spec, cfg, 5, &Device::Cpu)?;
        let mut other = Controller::new(spec, cfg, 6, &Device::Cpu)?;
        load(&mut other, &state_maps(&fresh)?)?;
        assert_eq!(state_bits(&other)?, state_bits(&fresh)?);

        let mut a = Controller::new(spec, cfg, 5, &Device::Cpu)?;
        run_updates(&mut a, 100..103)?;
        let saved = state_maps(&a)?;
        assert!(saved.0.keys().any(|k| k.starts_with("controller.adam.m.")), "the moments are saved");
        let mut b = Controller::new(spec, cfg, 99, &Device::Cpu)?;
        assert_ne!(param_bits(&b)?, param_bits(&a)?, "another seed starts elsewhere");
        load(&mut b, &saved)?;
        assert_eq!(param_bits(&b)?, param_bits(&a)?);
        assert_eq!(b.baseline().map(f64::to_bits), a.baseline().map(f64::to_bits));
        assert_eq!(b.steps(), 3);
        run_updates(&mut a, 200..204)?;
        run_updates(&mut b, 200..204)?;
        assert_eq!(state_bits(&b)?, state_bits(&a)?, "{spec:?}: parameters, moments, baseline and steps");
        // Without the restored moments the continuation differs, so the comparison can fail.
        let mut c = Controller::new(spec, cfg, 99, &Device::Cpu)?;
        let (mut t, m) = saved.clone();
        t.retain(|k, _| !k.starts_with("controller.adam."));
        load(&mut c, &(t, m))?;
        run_updates(&mut c, 200..204)?;
        assert_ne!(param_bits(&c)?, param_bits(&a)?);
    }
    Ok(())
}

#[test]
fn load_state_rejects_what_does_not_fit_and_changes_nothing() -> R {
    let cfg = ControllerConfig::autodl_nb201();
    let mut a = Controller::new(NB201, cfg, 1, &Device::Cpu)?;
    run_updates(&mut a, 0..2)?;
    let saved = state_maps(&a)?;
    let mut b = Controller::new(NB201, cfg, 2, &Device::Cpu)?;
    let before = state_bits(&b)?;

    let mut four = Controller::new(ControllerSpec::PerEdge { edges: 4, ops: 5 }, cfg, 2, &Device::Cpu)?;
    let err = load(&mut four, &saved).err().ok_or("a state for 6 edges loaded into 4")?.to_string();
    assert!(err.contains("PerEdge { edges: 6, ops: 5 }"), "{err}");

    let (mut t, m) = saved.clone();
    t.remove("controller.w_lstm.bias_hh_l1");
    let err = load(&mut b, &(t, m)).err().ok_or("a missing tensor loaded")?.to_string();
    assert!(err.contains("controller.w_lstm.bias_hh_l1"), "{err}");

    let (mut t, m) = saved.clone();
    t.insert("controller.adam.v.0".into(), Tensor::zeros(3, DType::F32, &Device::Cpu)?);
    let err = load(&mut b, &(t, m)).err().ok_or("a moment of the wrong shape loaded")?.to_string();
    assert!(err.contains("controller.adam"), "{err}");

    let (t, mut m) = saved.clone();
    m.insert("controller.baseline_bits".into(), "half".into());
    let err = load(&mut b, &(t, m)).err().ok_or("a bad baseline loaded")?.to_string();
    assert!(err.contains("controller.baseline_bits"), "{err}");

    assert_eq!(state_bits(&b)?, before, "failed loads leave the controller as it was");
    Ok(())
}

#[test]
fn updates_take_only_fresh_samples_of_their_own_controller() -> R {
    let cfg = ControllerConfig::autodl_nb201();
    let mut a = Controller::new(NB201, cfg, 1, &Device::Cpu)?;
    let other = Controller::new(NB201, cfg, 1, &Device::Cpu)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let s = a.sample(&mut rng)?;
    assert!(a.update(&[]).is_err());
    assert!(a.update(&[(s.clone(), f64::NAN)]).is_err());
    assert!(a.update(&[(other.sample(&mut rng)?, 0.5)]).is_err(), "another controller's sample");
    assert_eq!(a.steps(), 0);
    a.update(&[(s.clone(), 0.5)])?;
    let err = a.update(&[(s, 0.5)]).err().ok_or("a stale sample was taken")?.to_string();
    assert!(err.contains("current step 1"), "{err}");
    assert!(a.log_prob(&Decisions(vec![0; 5])).is_err(), "5 decisions for 6 edges");
    assert!(a.log_prob(&Decisions(vec![0, 1, 2, 3, 4, 5])).is_err(), "op 5 of 5");
    Ok(())
}

#[test]
fn invalid_settings_name_their_field() {
    let enas = ControllerConfig::enas_micro();
    let autodl = ControllerConfig::autodl_nb201();
    let cases = [
        (MICRO, ControllerConfig { lstm_size: 0, ..enas }, "controller.lstm_size"),
        (MICRO, ControllerConfig { temperature: Some(0.0), ..enas }, "controller.temperature"),
        (MICRO, ControllerConfig { tanh_constant: Some(f64::NAN), ..enas }, "controller.tanh_constant"),
        (MICRO, ControllerConfig { baseline_decay: 1.5, ..enas }, "controller.baseline_decay"),
        (NB201, ControllerConfig { normal_op_bias: true, ..autodl }, "controller.normal_op_bias"),
        (NB201, ControllerConfig { grad_clip: Some(-1.0), ..autodl }, "controller.grad_clip"),
    ];
    for (spec, cfg, name) in cases {
        let err = Controller::new(spec, cfg, 0, &Device::Cpu).err().expect("an invalid setting was accepted");
        let fields: Vec<String> =
            err.config_error().map(|c| c.fields().map(String::from).collect()).unwrap_or_default();
        assert_eq!(fields, vec![name.to_string()], "{err}");
    }
    let mut beta = enas;
    beta.adam.beta2 = 1.0;
    assert!(Controller::new(MICRO, beta, 0, &Device::Cpu).is_err());
    assert!(Controller::new(ControllerSpec::Micro { nodes: 0, ops: 5 }, enas, 0, &Device::Cpu).is_err());
    assert!(Controller::new(ControllerSpec::PerEdge { edges: 6, ops: 0 }, autodl, 0, &Device::Cpu).is_err());
}
