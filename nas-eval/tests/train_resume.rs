//! Retraining stopped and resumed from the run directory ends exactly where the uninterrupted
//! run ends (same seed, CPU), with drop path and the auxiliary head on: same metrics (but wall
//! time), same final weights; `evaluate_run` then reproduces the last epoch's test figures from
//! the saved weights. Stopped once after the first epoch and once in the middle of an epoch
//! (Ctrl-C), where the checkpoint holds the step and the epoch's running sums.

use std::sync::atomic::AtomicBool;

use nas_core::checkpoint::load_tensors;
use nas_core::metrics::{CollectSink, MetricsSink, NullSink, Position, StopAfterEpoch, StopAfterStep};
use nas_core::run_dir::{CONFIG, WEIGHTS};
use nas_core::testing::without_time;
use nas_core::RunDir;
use nas_eval::{evaluate_run, Error, TrainConfig, Trainer};
use search_spaces::Genotype;

fn config() -> TrainConfig {
    let mut c = TrainConfig::for_genotype(&Genotype::load("DARTS_V2").unwrap());
    c.epochs = 2;
    c.model.channels = 4;
    c.model.layers = 3;
    c.data.subset = Some(48);
    c.data.batch_size = 16;
    c.seed = 5;
    c
}

/// Trains uninterrupted in `a`, and in `b` stopped by `stopper` then resumed; checks that the
/// stop happened at `expected` and that both runs end the same.
fn stop_resume_matches(stopper: impl FnOnce(&AtomicBool) -> Box<dyn MetricsSink + '_>, expected: Position) {
    let tmp = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);

    let dir_a = RunDir::create(&tmp.path().join("a"), false).unwrap();
    dir_a.write_json(CONFIG, &config()).unwrap();
    let mut a = Trainer::new(config().validate().unwrap()).unwrap();
    let ra = a.run(Some(&dir_a), &mut CollectSink::default(), &never).unwrap();

    let dir_b = RunDir::create(&tmp.path().join("b"), false).unwrap();
    dir_b.write_json(CONFIG, &config()).unwrap();
    let stop = AtomicBool::new(false);
    let mut b = Trainer::new(config().validate().unwrap()).unwrap();
    let err = b.run(Some(&dir_b), stopper(&stop).as_mut(), &stop).unwrap_err();
    assert!(
        matches!(err, Error::Interrupted { epoch, step } if (epoch, step) == (expected.epoch, expected.step)),
        "{err}"
    );
    assert_eq!(dir_b.read_metrics().unwrap().len(), expected.epoch);
    assert!(!dir_b.file(WEIGHTS).exists(), "final weights only at the end");
    drop(b);

    let saved = TrainConfig::from_json_value(dir_b.read_json(CONFIG).unwrap()).unwrap();
    let mut resumed = Trainer::new(saved.validate().unwrap()).unwrap();
    let at = resumed.resume(&dir_b).unwrap();
    assert_eq!((at.epoch, at.step, at.tally.seen), (expected.epoch, expected.step, 16 * expected.step));
    let rb = resumed.run(Some(&dir_b), &mut CollectSink::default(), &never).unwrap();

    assert_eq!((ra.test_acc, ra.test_loss, ra.n), (rb.test_acc, rb.test_loss, rb.n));
    let ma = without_time(dir_a.read_metrics().unwrap());
    assert_eq!(ma, without_time(dir_b.read_metrics().unwrap()));
    assert!(ma[1]["drop_path_prob"].as_f64().unwrap() > 0.0, "drop path was on in the second epoch");
    let wa = load_tensors(&dir_a.file(WEIGHTS), &candle_core::Device::Cpu).unwrap().tensors;
    let wb = load_tensors(&dir_b.file(WEIGHTS), &candle_core::Device::Cpu).unwrap().tensors;
    assert_eq!(wa.len(), wb.len());
    for (k, v) in &wa {
        let d = (v - &wb[k]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{k} differs");
    }

    let e = evaluate_run(&dir_b, None, None, &mut NullSink).unwrap();
    assert_eq!((e.test_acc, e.test_loss, e.n), (rb.test_acc, rb.test_loss, rb.n));
}

#[test]
fn stopped_between_epochs_and_resumed_equals_uninterrupted() {
    stop_resume_matches(|stop| Box::new(StopAfterEpoch { epoch: 0, stop }), Position::epoch_start(1));
}

#[test]
fn stopped_mid_epoch_and_resumed_equals_uninterrupted() {
    // Three steps per epoch (48 images, batch 16): stop after the second of epoch 1, where
    // drop path is on.
    stop_resume_matches(
        |stop| Box::new(StopAfterStep::new(1, 2, stop)),
        Position { step: 2, ..Position::epoch_start(1) },
    );
}

/// A weight turned NaN after the first epoch: the next loss is NaN, the run stops with the
/// divergence (epochs counted from 1 in the message) and the checkpoint of the first epoch
/// stays untouched, as do the metrics; no final weights are written.
#[test]
fn divergence_stops_the_training_and_keeps_the_checkpoint_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(&tmp.path().join("run"), false).unwrap();
    dir.write_json(CONFIG, &config()).unwrap();
    let stop = AtomicBool::new(false);
    let mut t = Trainer::new(config().validate().unwrap()).unwrap();
    let err = t.run(Some(&dir), &mut StopAfterEpoch { epoch: 0, stop: &stop }, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted { epoch: 1, step: 0 }), "{err}");
    let good = std::fs::read(dir.file("checkpoint.safetensors")).unwrap();

    let w = t.model().weights().get("classifier.weight").expect("classifier weight").var;
    w.set(&(w.as_tensor() * f64::NAN).unwrap()).unwrap();
    let never = AtomicBool::new(false);
    let err = t.run(Some(&dir), &mut CollectSink::default(), &never).unwrap_err();
    assert!(matches!(err, Error::Diverged { epoch: 1, step: 0, .. }), "{err}");
    assert!(err.to_string().starts_with("training diverged at epoch 2, step 0: loss is NaN"), "{err}");
    assert_eq!(std::fs::read(dir.file("checkpoint.safetensors")).unwrap(), good, "checkpoint overwritten");
    assert_eq!(dir.read_metrics().unwrap().len(), 1);
    assert!(!dir.file(WEIGHTS).exists());
}
