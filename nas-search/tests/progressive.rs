//! Progressive searches, small. P-DARTS: two stages (2 then 3 cells, 3 then 2 ops per edge,
//! skip dropout 0 then 0.4); DrNAS: two stages of one 3-cell network (4 then 3 ops per edge,
//! partial channels 4 then 2, Net2Wider). Each stopped in the first stage, between the stages
//! and in the second, and resumed from the run directory: the stages' metrics (but wall time),
//! the final checkpoint's every tensor and the genotype equal the uninterrupted run's (CPU).
//! P-DARTS' final normal cell keeps at most the configured number of skip connections; DrNAS'
//! second stage starts from the first one's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device};
use nas_core::checkpoint::load_tensors;
use nas_core::metrics::{CollectSink, Event, MetricsSink, StopAfterEpoch};
use nas_core::testing::without_time;
use nas_search::config::ProgressiveConfig;
use nas_search::run_dir::{CHECKPOINT, CONFIG, GENOTYPE};
use nas_search::{Error, Progressive, RunDir, SearchConfig};
use search_spaces::darts::DartsOp;
use search_spaces::{Genotype, OpsConfig};

/// `preset` at the tests' size: 2 epochs a stage with α from the second, 64 images in batches
/// of 16, seed 5.
fn small(preset: &str) -> SearchConfig {
    let mut c = SearchConfig::preset(preset).unwrap();
    c.epochs = 2;
    c.arch_start_epoch = 1;
    c.data.subset = Some(64);
    c.data.batch_size = 16;
    c.seed = 5;
    c
}

fn config() -> SearchConfig {
    let mut c = small("p-darts");
    c.model.channels = 4;
    c.model.darts_mut().unwrap().max_skip_connect = Some(1);
    c.model.darts_mut().unwrap().ops =
        Some(OpsConfig::Uniform(vec!["none".into(), "skip_connect".into(), "sep_conv_3x3".into()]));
    c.progressive = Some(ProgressiveConfig {
        layers: vec![2, 3],
        ops_per_edge: vec![3, 2],
        skip_dropout: vec![0.0, 0.4],
        ..Default::default()
    });
    c
}

/// DrNAS' scheme at a small size: C=8, 3 cells, 2 epochs per stage with α from the second,
/// max-pool, skip, sep and dil conv (every rule of Net2Wider) pruned to 3, K 4 then 2.
fn drnas_config() -> SearchConfig {
    let mut c = small("drnas-darts");
    c.model.channels = 8;
    c.model.layers = 3;
    let ops = ["max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"];
    c.model.darts_mut().unwrap().ops = Some(OpsConfig::Uniform(ops.map(String::from).to_vec()));
    c.model.darts_mut().unwrap().partial_channels = 4;
    let p = c.progressive.as_mut().unwrap();
    (p.ops_per_edge, p.partial_channels) = (vec![4, 3], vec![4, 2]);
    c
}

/// Stops the run after its `n`-th step, counted over all stages.
struct StopAfterSteps<'a> {
    n: usize,
    seen: usize,
    stop: &'a AtomicBool,
}

impl MetricsSink for StopAfterSteps<'_> {
    fn event(&mut self, event: Event<'_>) {
        if let Event::Step { .. } = event {
            self.seen += 1;
            if self.seen == self.n {
                self.stop.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn run(dir: &RunDir, fresh: bool, sink: &mut dyn MetricsSink, stop: &AtomicBool) -> nas_search::Result<Genotype> {
    let cfg: SearchConfig = dir.read_json(CONFIG).unwrap();
    Progressive::new(cfg.validate().unwrap()).unwrap().run(dir, fresh, sink, stop)
}

fn tensors(dir: &RunDir, stage: usize) -> HashMap<String, Vec<f32>> {
    let path = Progressive::stage_dir(dir, stage).join(CHECKPOINT);
    let ck = load_tensors(&path, &Device::Cpu).unwrap();
    ck.tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// The uninterrupted run of `config` in `a`; in `b` the run stopped by `stopper` in `stage`,
/// then resumed.
fn stop_resume_matches(
    config: fn() -> SearchConfig,
    stopper: impl FnOnce(&AtomicBool) -> Box<dyn MetricsSink + '_>,
    stage: usize,
) {
    let tmp = tempfile::tempdir().unwrap();
    let never = AtomicBool::new(false);
    let a = RunDir::create(&tmp.path().join("a"), false).unwrap();
    a.write_json(CONFIG, &config()).unwrap();
    let ga = run(&a, true, &mut CollectSink::default(), &never).unwrap();

    let b = RunDir::create(&tmp.path().join("b"), false).unwrap();
    b.write_json(CONFIG, &config()).unwrap();
    let stop = AtomicBool::new(false);
    let err = run(&b, true, stopper(&stop).as_mut(), &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted { .. }), "{err}");
    assert!(Progressive::stage_dir(&b, stage).join(CHECKPOINT).is_file(), "stopped in stage {stage}");
    assert!(!Progressive::stage_dir(&b, stage + 1).exists(), "stopped before stage {}", stage + 1);
    assert!(!b.file(GENOTYPE).exists());
    let gb = run(&b, false, &mut CollectSink::default(), &never).unwrap();

    assert_eq!(ga, gb);
    for s in 0..2 {
        let metrics =
            |d: &RunDir| without_time(RunDir::open(&Progressive::stage_dir(d, s)).unwrap().read_metrics().unwrap());
        assert_eq!(metrics(&a), metrics(&b), "stage {s} metrics");
    }
    assert_eq!(tensors(&a, 1), tensors(&b, 1), "final checkpoint");
}

#[test]
fn stopped_in_the_first_stage_resumes_exactly() {
    // Two steps per epoch: stop after the first step of stage 0.
    stop_resume_matches(config, |stop| Box::new(StopAfterSteps { n: 1, seen: 0, stop }), 0);
}

#[test]
fn stopped_between_the_stages_resumes_exactly() {
    // After stage 0's last record: stage 1 starts, sees the stop and checkpoints at its start.
    stop_resume_matches(config, |stop| Box::new(StopAfterEpoch { epoch: 1, stop }), 1);
}

#[test]
fn stopped_in_the_second_stage_resumes_exactly() {
    stop_resume_matches(config, |stop| Box::new(StopAfterSteps { n: 6, seen: 0, stop }), 1);
}

#[test]
fn drnas_stopped_in_either_stage_or_between_resumes_exactly() {
    stop_resume_matches(drnas_config, |stop| Box::new(StopAfterSteps { n: 3, seen: 0, stop }), 0);
    stop_resume_matches(drnas_config, |stop| Box::new(StopAfterEpoch { epoch: 1, stop }), 1);
    stop_resume_matches(drnas_config, |stop| Box::new(StopAfterSteps { n: 7, seen: 0, stop }), 1);
}

/// DrNAS' second stage is epochs 2–3 of one 4-epoch run (one cosine schedule, α from its
/// second epoch) and starts where the first ended: its checkpoint at its start holds the first
/// stage's stems, α on the ops kept with the Adam moments that go with them, and the kept ops'
/// old channels, widened.
#[test]
fn drnas_second_stage_continues_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(&tmp.path().join("run"), false).unwrap();
    dir.write_json(CONFIG, &drnas_config()).unwrap();
    let stop = AtomicBool::new(false);
    let err = run(&dir, true, &mut StopAfterEpoch { epoch: 1, stop: &stop }, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted { .. }), "{err}");
    let s1: SearchConfig = RunDir::open(&Progressive::stage_dir(&dir, 1)).unwrap().read_json(CONFIG).unwrap();
    assert_eq!((s1.first_epoch, s1.end_epoch, s1.epochs, s1.arch_start_epoch), (2, Some(4), 4, 3));
    assert_eq!(s1.model.darts().unwrap().partial_channels, 2);
    let (old, new) = (tensors(&dir, 0), tensors(&dir, 1));
    assert_eq!(old["weights.stem.0.weight"], new["weights.stem.0.weight"]);
    assert_eq!(old["weights.classifier.weight"], new["weights.classifier.weight"]);
    let Some(OpsConfig::PerEdge { normal, .. }) = &s1.model.darts().unwrap().ops else { panic!("per-edge ops") };
    let all = ["max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"];
    // α and Adam's moments of α (adam.{m,v}.0: the normal cell's) on the kept columns.
    for name in ["arch.alphas_normal", "adam.m.0", "adam.v.0"] {
        let (o, n) = (&old[name], &new[name]);
        for (e, kept) in normal.iter().enumerate() {
            for (c, op) in kept.iter().enumerate() {
                let oc = all.iter().position(|a| a == op).unwrap();
                assert_eq!(n[e * 3 + c], o[e * 4 + oc], "{name} edge {e} {op}");
            }
        }
    }
    // A kept convolution of the first cell's first edge (3 of the 4 ops are kept, so sep or
    // dil conv is): its depthwise filters (2 → 4 channels) begin with the old ones.
    let (c, op) = normal[0].iter().enumerate().find(|(_, o)| o.contains("conv_3x3")).expect("a kept conv");
    let oc = all.iter().position(|a| a == op).unwrap();
    let dw = |t: &HashMap<String, Vec<f32>>, col: usize| {
        t[&format!("weights.cells.0._ops.0._ops.{col}.op.1.weight")].clone()
    };
    let (o, n) = (dw(&old, oc), dw(&new, c));
    assert_eq!((o.len(), n.len()), (2 * 9, 4 * 9));
    assert_eq!(&n[..18], &o[..]);
    // The records: one run's epochs, one cosine schedule over all four.
    let ran = run(&dir, false, &mut CollectSink::default(), &AtomicBool::new(false)).unwrap();
    let records = RunDir::open(&Progressive::stage_dir(&dir, 1)).unwrap().read_metrics().unwrap();
    let epochs: Vec<u64> = records.iter().map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [2, 3]);
    let lr = records[0]["lr"].as_f64().unwrap();
    assert!((lr - 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * 2.0 / 4.0).cos())).abs() < 1e-9, "{lr}");
    assert_eq!(Genotype::from_json_value(&dir.read_json(GENOTYPE).unwrap()).unwrap(), ran);
}

#[test]
fn stages_drop_ops_and_the_final_cell_keeps_the_skip_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(&tmp.path().join("run"), false).unwrap();
    dir.write_json(CONFIG, &config()).unwrap();
    let g = run(&dir, true, &mut CollectSink::default(), &AtomicBool::new(false)).unwrap();
    let Genotype::Darts(g) = g else { panic!("a darts genotype") };
    assert!(g.normal.iter().filter(|(o, _)| *o == DartsOp::SkipConnect).count() <= 1, "{g:?}");
    for (op, _) in g.normal.iter().chain(&g.reduce) {
        assert!([DartsOp::SkipConnect, DartsOp::SepConv3x3].contains(op), "{op}");
    }
    // Stage 1 searched 3 cells over 2 of the 3 ops on every edge, with the skip-dropout schedule.
    let s1: SearchConfig = RunDir::open(&Progressive::stage_dir(&dir, 1)).unwrap().read_json(CONFIG).unwrap();
    assert_eq!((s1.model.layers, s1.stage, s1.skip_dropout), (3, Some(1), 0.4));
    let Some(OpsConfig::PerEdge { normal, reduce }) = &s1.model.darts().unwrap().ops else { panic!("per-edge ops") };
    assert!(normal.iter().chain(reduce).all(|r| r.len() == 2));
    let records = RunDir::open(&Progressive::stage_dir(&dir, 1)).unwrap().read_metrics().unwrap();
    let rates: Vec<f64> = records.iter().map(|r| r["skip_dropout"].as_f64().unwrap()).collect();
    assert_eq!(rates, [0.4 * 1.0 / 2.0, 0.4]);
    assert!(records.iter().all(|r| r["stage"] == 1));
}
