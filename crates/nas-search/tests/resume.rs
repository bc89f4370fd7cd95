//! A search interrupted after its first epoch and resumed from the run directory ends exactly
//! where the uninterrupted search ends (same seed, CPU): same metrics (but wall time), same
//! α, same genotype.

use std::sync::atomic::AtomicBool;

use nas_core::metrics::{CollectSink, StopAfterEpoch};
use nas_core::testing::without_time;
use nas_search::run_dir::{CONFIG, GENOTYPE};
use nas_search::{Error, RunDir, Search, SearchConfig};
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

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
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
    let err = b.run(Some(&dir_b), &mut StopAfterEpoch { epoch: 0, stop: &stop }, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert_eq!(dir_b.read_metrics().unwrap().len(), 1);
    drop(b);

    let saved: SearchConfig = dir_b.read_json(CONFIG).unwrap();
    let mut resumed = Search::new(saved.validate().unwrap()).unwrap();
    assert_eq!(resumed.resume(&dir_b).unwrap(), 1);
    let gb = resumed.run(Some(&dir_b), &mut CollectSink::default(), &never).unwrap();

    assert_eq!(ga, gb);
    assert_eq!(without_time(dir_a.read_metrics().unwrap()), without_time(dir_b.read_metrics().unwrap()));
    let ja: Value = dir_a.read_json(GENOTYPE).unwrap();
    let jb: Value = dir_b.read_json(GENOTYPE).unwrap();
    assert_eq!(ja, jb);
}
