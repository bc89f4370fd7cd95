//! A search stopped and resumed from its run directory ends exactly where the uninterrupted
//! search ends (same seed, CPU): same metrics (but wall time), same genotype, and every
//! tensor of the final checkpoint (weights, α, optimiser and method state) bit for bit. Stopped
//! once between epochs and once in the middle of an epoch (Ctrl-C), where the checkpoint holds
//! the step and the epoch's running sums. In R-DARTS' S4 the noise ops draw from the run's
//! stream, whose position the checkpoint keeps. Truncated unrolling with the α-Hessian
//! diagnostic and DARTS-ES, and conjugate gradient with its warm start, resume exactly too.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use nas_core::checkpoint::{load_tensors, CHECKSUM};

use nas_core::metrics::{CollectSink, MetricsSink, Position, StopAfterEpoch, StopAfterStep};
use nas_core::testing::without_time;
use nas_search::config::EarlyStop;
use nas_search::method::implicit_cg::ImplicitCgConfig;
use nas_search::method::unrolled::UnrolledConfig;
use nas_search::run_dir::{CONFIG, GENOTYPE};
use nas_search::MethodConfig;
use nas_search::{Error, Method, RunDir, Search, SearchConfig};
use search_spaces::darts::rdarts_space;
use serde_json::Value;

fn config() -> SearchConfig {
    let mut c = SearchConfig::preset("quick").unwrap();
    c.epochs = 2;
    c.data.subset = Some(64);
    c.data.batch_size = 16;
    c.model.channels = 4;
    c.model.layers = 2;
    c.seed = 11;
    c
}

/// `config` over S4's op sets: {noise, sep_conv_3x3} on every edge.
fn s4_config() -> SearchConfig {
    let mut c = config();
    c.model.darts_mut().unwrap().ops = rdarts_space("s4").map(|s| s.to_config());
    c
}

/// `config` with truncated unrolling through two virtual steps (its extra training batches
/// come from their own stream), the α-Hessian's eigenvalue every epoch and DARTS-ES on (its
/// eigenvalue history is in the checkpoint).
fn unrolled_config() -> SearchConfig {
    let mut c = config();
    c.method = MethodConfig::Unrolled(UnrolledConfig { unroll_steps: 2 });
    c.hessian_every = 1;
    c.early_stop = EarlyStop::DartsEs;
    c
}

/// `config` with the conjugate-gradient implicit gradient, whose warm start is in the
/// checkpoint.
fn cg_config() -> SearchConfig {
    let mut c = config();
    c.method = MethodConfig::ImplicitCg(ImplicitCgConfig { cg_steps: 2, ..Default::default() });
    c
}

/// `config` with a sampling method; ENAS' controller trains for 2 updates of 2 children after
/// every epoch, and ENAS and random sampling select from 3 children (their streams, the
/// controller's parameters, Adam state and baseline and the selection are in the checkpoint).
fn sampling_config(method: Method) -> SearchConfig {
    let mut c = config();
    c.method = method.into();
    match &mut c.method {
        MethodConfig::Enas(e) => (e.controller_steps, e.controller_aggregate, e.select_samples) = (Some(2), Some(2), 3),
        MethodConfig::Random(r) => r.select_samples = 3,
        MethodConfig::Snas(s) => s.resource_weight = 0.5,
        _ => {}
    }
    c
}

/// Runs the search uninterrupted in `a`, and in `b` stopped by `stopper` then resumed; checks
/// that the stop happened at `expected` and that both runs end the same.
fn stop_resume_matches(stopper: impl FnOnce(&AtomicBool) -> Box<dyn MetricsSink + '_>, expected: Position) {
    stop_resume_matches_with(config, stopper, expected)
}

fn stop_resume_matches_with(
    config: fn() -> SearchConfig,
    stopper: impl FnOnce(&AtomicBool) -> Box<dyn MetricsSink + '_>,
    expected: Position,
) {
    let tmp = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);

    let dir_a = RunDir::create(&tmp.path().join("a"), false).unwrap();
    dir_a.write_json(CONFIG, &config()).unwrap();
    let mut a = Search::new(config().validate().unwrap()).unwrap();
    let ga = a.run(Some(&dir_a), &mut CollectSink::default(), &never).unwrap();

    let dir_b = RunDir::create(&tmp.path().join("b"), false).unwrap();
    dir_b.write_json(CONFIG, &config()).unwrap();
    let stop = AtomicBool::new(false);
    let mut b = Search::new(config().validate().unwrap()).unwrap();
    let err = b.run(Some(&dir_b), stopper(&stop).as_mut(), &stop).unwrap_err();
    assert!(
        matches!(err, Error::Interrupted { epoch, step } if (epoch, step) == (expected.epoch, expected.step)),
        "{err}"
    );
    assert_eq!(dir_b.read_metrics().unwrap().len(), expected.epoch);
    drop(b);

    let saved: SearchConfig = dir_b.read_json(CONFIG).unwrap();
    let mut resumed = Search::new(saved.validate().unwrap()).unwrap();
    let at = resumed.resume(&dir_b).unwrap();
    assert_eq!((at.epoch, at.step), (expected.epoch, expected.step));
    assert_eq!(at.tally.seen, 16 * expected.step, "the running sums of the interrupted epoch");
    let gb = resumed.run(Some(&dir_b), &mut CollectSink::default(), &never).unwrap();

    assert_eq!(ga, gb);
    assert_eq!(without_time(dir_a.read_metrics().unwrap()), without_time(dir_b.read_metrics().unwrap()));
    let ja: Value = dir_a.read_json(GENOTYPE).unwrap();
    let jb: Value = dir_b.read_json(GENOTYPE).unwrap();
    assert_eq!(ja, jb);
    assert_eq!(final_tensors(&dir_a), final_tensors(&dir_b), "final tensors");
}

/// Every tensor of the final checkpoint (weights, buffers, α, optimiser state, method state)
/// as bits, and the metadata but the checksum.
fn final_tensors(dir: &RunDir) -> (BTreeMap<String, Vec<u64>>, BTreeMap<String, String>) {
    let ck = load_tensors(&dir.file("checkpoint.safetensors"), &Device::Cpu).unwrap();
    let tensors = ck
        .tensors
        .into_iter()
        .map(|(n, t)| {
            let v = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            (n, v.into_iter().map(f64::to_bits).collect())
        })
        .collect();
    let meta = ck.metadata.into_iter().filter(|(k, _)| k != CHECKSUM).collect();
    (tensors, meta)
}

#[test]
fn stopped_between_epochs_and_resumed_equals_uninterrupted() {
    stop_resume_matches(|stop| Box::new(StopAfterEpoch { epoch: 0, stop }), Position::epoch_start(1));
}

/// Two steps per epoch (32 search-train images, batch 16): stopped after the first of epoch 1.
fn resumes_mid_epoch_exactly(config: fn() -> SearchConfig) {
    stop_resume_matches_with(
        config,
        |stop| Box::new(StopAfterStep::new(1, 1, stop)),
        Position { step: 1, ..Position::epoch_start(1) },
    );
}

#[test]
fn stopped_mid_epoch_and_resumed_equals_uninterrupted() {
    resumes_mid_epoch_exactly(config);
}

#[test]
fn a_search_with_noise_ops_resumes_mid_epoch_exactly() {
    resumes_mid_epoch_exactly(s4_config);
}

#[test]
fn unrolled_search_with_hessian_diagnostics_resumes_mid_epoch_exactly() {
    resumes_mid_epoch_exactly(unrolled_config);
}

#[test]
fn conjugate_gradient_search_resumes_mid_epoch_exactly() {
    resumes_mid_epoch_exactly(cg_config);
}

/// IAPTT-GM carries its initialisation auxiliary z from step to step, in the checkpoint.
#[test]
fn iaptt_gm_search_resumes_mid_epoch_exactly() {
    resumes_mid_epoch_exactly(|| {
        let mut c = config();
        c.method = MethodConfig::from_json(&serde_json::json!({"name": "iaptt-gm", "unroll_steps": 3})).unwrap();
        c
    });
}

/// Forward mode in nb201 carries its tangents (weights and momentum) and their step count from
/// step to step, in the checkpoint; a reset every three steps falls before the stop.
#[test]
fn forward_mode_nb201_search_resumes_mid_epoch_exactly() {
    resumes_mid_epoch_exactly(|| {
        let overlay = serde_json::json!({
            "space": "nb201", "method": {"name": "fad", "fad_reset": 3}, "model": {"channels": 4, "layers": 1},
            "data": {"image_size": 8},
        });
        config().with_overlay(&overlay).unwrap()
    });
}

/// Two micro-batches of 8 per step (the same two steps per epoch as `config`), second order:
/// the step's micro-batches and every gradient evaluation over them resume exactly.
#[test]
fn an_accumulating_second_order_search_resumes_mid_epoch_exactly() {
    resumes_mid_epoch_exactly(|| {
        let mut c = config();
        c.method = Method::SecondOrder.into();
        c.data.batch_size = 8;
        c.data.accumulate = 2;
        c
    });
}

#[test]
fn gdas_resumes_mid_epoch_and_between_epochs_exactly() {
    resumes_mid_epoch_exactly(|| sampling_config(Method::Gdas));
    stop_resume_matches_with(
        || sampling_config(Method::Gdas),
        |stop| Box::new(StopAfterEpoch { epoch: 0, stop }),
        Position::epoch_start(1),
    );
}

#[test]
fn snas_with_a_resource_penalty_resumes_mid_epoch_exactly() {
    resumes_mid_epoch_exactly(|| sampling_config(Method::Snas));
}

#[test]
fn enas_resumes_mid_epoch_and_between_epochs_exactly() {
    resumes_mid_epoch_exactly(|| sampling_config(Method::Enas));
    stop_resume_matches_with(
        || sampling_config(Method::Enas),
        |stop| Box::new(StopAfterEpoch { epoch: 0, stop }),
        Position::epoch_start(1),
    );
}

#[test]
fn random_sampling_resumes_between_epochs_exactly() {
    stop_resume_matches_with(
        || sampling_config(Method::Random),
        |stop| Box::new(StopAfterEpoch { epoch: 0, stop }),
        Position::epoch_start(1),
    );
}

/// The eigenvalue is recorded at the epochs it is due, and computing it changes nothing
/// else: the run's metrics (but the eigenvalue and time), α and genotype equal those of the
/// same run without it.
#[test]
fn the_hessian_diagnostic_is_recorded_and_leaves_the_search_unchanged() {
    let never = AtomicBool::new(false);
    let run = |hessian_every: usize| {
        let mut c = config();
        c.epochs = 3;
        c.hessian_every = hessian_every;
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(&tmp.path().join("run"), false).unwrap();
        let mut search = Search::new(c.validate().unwrap()).unwrap();
        let g = search.run(Some(&dir), &mut CollectSink::default(), &never).unwrap();
        (g, dir.read_metrics().unwrap())
    };
    let (g0, m0) = run(0);
    let (g2, mut m2) = run(2);
    assert_eq!(g0, g2);
    // Every 2 epochs, and the last: epochs 0 and 2 of 3.
    let eig: Vec<Option<f64>> = m2.iter().map(|r| r.get("hessian_eig").and_then(Value::as_f64)).collect();
    assert!(eig[0].is_some_and(f64::is_finite) && eig[1].is_none() && eig[2].is_some_and(f64::is_finite), "{eig:?}");
    assert!(m0.iter().all(|r| r.get("hessian_eig").is_none()));
    for r in &mut m2 {
        r.as_object_mut().unwrap().remove("hessian_eig");
    }
    assert_eq!(without_time(m0), without_time(m2));
}

/// A search stopped after its first epoch: its directory, the search, and its checkpoint's
/// bytes.
fn after_one_epoch() -> (tempfile::TempDir, RunDir, Search, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(&tmp.path().join("run"), false).unwrap();
    dir.write_json(CONFIG, &config()).unwrap();
    let stop = AtomicBool::new(false);
    let mut search = Search::new(config().validate().unwrap()).unwrap();
    let err = search.run(Some(&dir), &mut StopAfterEpoch { epoch: 0, stop: &stop }, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted { epoch: 1, step: 0 }), "{err}");
    let good = std::fs::read(dir.file("checkpoint.safetensors")).unwrap();
    (tmp, dir, search, good)
}

/// After one epoch the weight `name` turns NaN: the run stops at the next step with a NaN loss,
/// the last good checkpoint and the one record kept.
fn a_nan_weight_stops_the_run_at_its_step(name: &str) {
    let (_tmp, dir, mut search, good) = after_one_epoch();
    let w = search.net().weights().get(name).unwrap_or_else(|| panic!("no weight {name}")).var;
    w.set(&(w.as_tensor() * f64::NAN).unwrap()).unwrap();
    let never = AtomicBool::new(false);
    let err = search.run(Some(&dir), &mut CollectSink::default(), &never).unwrap_err();
    assert!(matches!(err, Error::Diverged { epoch: 1, step: 0, .. }), "{err}");
    assert!(err.to_string().contains("loss is NaN"), "{err}");
    assert_eq!(std::fs::read(dir.file("checkpoint.safetensors")).unwrap(), good, "checkpoint overwritten");
    assert_eq!(dir.read_metrics().unwrap().len(), 1);
}

/// A weight turned NaN (as a too-large step would leave it): the next loss is NaN.
#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    a_nan_weight_stops_the_run_at_its_step("classifier.weight");
}

/// An early activation turned NaN (the stem's filter, so that every activation entering the
/// first cell is NaN): its ReLUs carry the NaN on to the loss as PyTorch's do, and the run
/// stops at that step with the checkpoint of the epoch before (a ReLU that cleared the NaN to
/// 0 gave a finite loss here, and the run trained on).
#[test]
fn a_nan_early_activation_stops_the_run_at_its_step() {
    a_nan_weight_stops_the_run_at_its_step("stem.0.weight");
}

/// A network whose evaluation gives a NaN loss while training still works (a running
/// statistic of the last cell turned NaN; training mode normalises with the batch's own):
/// the run stops with the evaluation's divergence, numbered from 1 as the other messages
/// are, and keeps the checkpoint of the epoch before.
#[test]
fn a_non_finite_evaluation_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let (_tmp, dir, mut search, good) = after_one_epoch();

    // The last cell's last batch norm.
    let stats = search.net().weights().params();
    let s = stats.iter().rev().find(|p| p.name.ends_with("running_var")).expect("a running variance");
    s.var.set(&(s.var.as_tensor() * f64::NAN).unwrap()).unwrap();
    let never = AtomicBool::new(false);
    let err = search.run(Some(&dir), &mut CollectSink::default(), &never).unwrap_err();
    assert!(matches!(err, Error::DivergedValid { epoch: 1, .. }), "{err}");
    assert_eq!(err.to_string(), "training diverged in epoch 2: the evaluation loss after it is NaN");
    assert_eq!(std::fs::read(dir.file("checkpoint.safetensors")).unwrap(), good, "checkpoint overwritten");
    assert_eq!(dir.read_metrics().unwrap().len(), 1);
}

/// A crash between appending an epoch's record and writing its checkpoint leaves one record
/// too many; the resume drops it and the run ends as the uninterrupted one.
#[test]
fn a_record_beyond_the_checkpoint_is_dropped_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let dir_a = RunDir::create(&tmp.path().join("a"), false).unwrap();
    dir_a.write_json(CONFIG, &config()).unwrap();
    Search::new(config().validate().unwrap()).unwrap().run(Some(&dir_a), &mut CollectSink::default(), &never).unwrap();

    let dir_b = RunDir::create(&tmp.path().join("b"), false).unwrap();
    dir_b.write_json(CONFIG, &config()).unwrap();
    let stop = AtomicBool::new(false);
    let mut b = Search::new(config().validate().unwrap()).unwrap();
    b.run(Some(&dir_b), &mut StopAfterEpoch { epoch: 0, stop: &stop }, &stop).unwrap_err();
    drop(b);
    // The record epoch 1 would have written, without its checkpoint.
    let extra = dir_a.read_metrics().unwrap()[1].clone();
    dir_b.append_metrics(&extra).unwrap();
    assert_eq!(dir_b.read_metrics().unwrap().len(), 2);

    let mut resumed = Search::new(config().validate().unwrap()).unwrap();
    let at = resumed.resume(&dir_b).unwrap();
    assert_eq!((at.epoch, at.step), (1, 0));
    assert_eq!(dir_b.read_metrics().unwrap().len(), 1, "the record beyond the checkpoint stays");
    resumed.run(Some(&dir_b), &mut CollectSink::default(), &never).unwrap();
    assert_eq!(without_time(dir_a.read_metrics().unwrap()), without_time(dir_b.read_metrics().unwrap()));
    assert_eq!(final_tensors(&dir_a), final_tensors(&dir_b));
}
