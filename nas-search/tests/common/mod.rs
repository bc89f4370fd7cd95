//! What the method tests share: seeded batches and a small f64 darts supernet.
#![allow(dead_code)] // each test file uses a different part

use candle_core::{DType, Device, Tensor};
use nas_search::step::Batch;
use rand::{Rng, SeedableRng};
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};

/// `n` images of 3×8×8 uniform in (−1, 1), f64, with labels in 0..10, from `seed`.
pub fn random_batch(seed: u64, n: usize) -> Batch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f64> = (0..n * 3 * 8 * 8).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..10)).collect();
    Batch { x: Tensor::from_vec(x, (n, 3, 8, 8), &Device::Cpu).unwrap(), y: Tensor::new(y, &Device::Cpu).unwrap() }
}

/// A darts supernet of 3 cells of 2 nodes at C=4 in f64, α uniform in (−spread, spread).
pub fn tiny_darts(spread: f64) -> DartsSupernet {
    let cfg = DartsSupernetConfig { channels: 4, layers: 3, steps: 2, multiplier: 2, ..Default::default() };
    let net = DartsSupernet::new(cfg, 7, DType::F64, &Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for a in net.arch().weights() {
        let v: Vec<f64> = (0..a.elem_count()).map(|_| rng.random_range(-spread..spread)).collect();
        a.set(&Tensor::from_vec(v, a.dims(), &Device::Cpu).unwrap()).unwrap();
    }
    net
}

/// Runs the search of `config` uninterrupted, and stopped after step 1 of epoch 1 then
/// resumed (in a run directory each); asserts that both end with the same genotype and
/// records (wall time aside), and returns the uninterrupted run's records.
pub fn resumes_mid_epoch_exactly(config: &nas_search::config::SearchConfig) -> Vec<serde_json::Value> {
    use nas_core::metrics::{CollectSink, Position, StopAfterStep};
    use nas_core::testing::without_time;
    use nas_search::run_dir::CONFIG;
    use nas_search::{Error, RunDir, Search};
    use std::sync::atomic::AtomicBool;

    let tmp = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let run = |name: &str| {
        let dir = RunDir::create(&tmp.path().join(name), false).unwrap();
        dir.write_json(CONFIG, config).unwrap();
        dir
    };
    let a = run("a");
    let ga =
        Search::new(config.clone().validate().unwrap()).unwrap().run(Some(&a), &mut CollectSink::default(), &never);
    let ga = ga.unwrap();
    let records = a.read_metrics().unwrap();

    let b = run("b");
    let stop = AtomicBool::new(false);
    let err = Search::new(config.clone().validate().unwrap())
        .unwrap()
        .run(Some(&b), &mut StopAfterStep::new(1, 1, &stop), &stop)
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted { epoch: 1, step: 1 }), "{err}");
    let saved: nas_search::config::SearchConfig = b.read_json(CONFIG).unwrap();
    let mut resumed = Search::new(saved.validate().unwrap()).unwrap();
    assert_eq!(resumed.resume(&b).unwrap().epoch, Position::epoch_start(1).epoch);
    let gb = resumed.run(Some(&b), &mut CollectSink::default(), &never).unwrap();
    assert_eq!(ga, gb);
    assert_eq!(without_time(records.clone()), without_time(b.read_metrics().unwrap()));
    records
}
