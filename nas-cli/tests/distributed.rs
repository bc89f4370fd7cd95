//! Data parallelism over MPI (the `distributed` feature, Open MPI's `mpirun`): two ranks of
//! micro-batch B equal one process accumulating two micro-batches of B, weights and α to
//! 1e-5 relative, for first- and second-order search and for retraining; a two-rank run
//! stopped by a signal on one rank stops on both, and its resume equals the uninterrupted
//! two-rank run, as does a two-rank retraining resumed after one rank was killed; a checkpoint
//! of two ranks refuses to resume in one process.
#![cfg(feature = "distributed")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{nas, stderr};
use nas_core::checkpoint::load_tensors;
use nas_core::testing::without_time;
use nas_core::RunDir;

/// `nas args` on `ranks` MPI processes of one thread each.
fn mpirun(ranks: usize, args: &[&str]) -> Output {
    mpirun_command(ranks, args).output().expect("mpirun (Open MPI) runs")
}

fn mpirun_command(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string(), "-x", "RAYON_NUM_THREADS=1"])
        .arg(env!("CARGO_BIN_EXE_nas"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1");
    c
}

/// Runs `nas args` on `ranks` processes and, once `file` exists, sends `signal` to one rank
/// process (a child of mpirun, not mpirun itself); returns how the job ended.
fn signal_a_rank(ranks: usize, args: &[&str], file: &Path, signal: &str) -> Output {
    let child = mpirun_command(ranks, args).spawn().unwrap();
    let started = Instant::now();
    while !file.exists() {
        assert!(started.elapsed() < Duration::from_secs(300), "no {} written", file.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let ranks = String::from_utf8(Command::new("pgrep").args(["-P", &child.id().to_string()]).output().unwrap().stdout)
        .unwrap();
    let rank = ranks.split_whitespace().last().expect("a rank process").to_string();
    assert!(Command::new("kill").args([signal, &rank]).status().unwrap().success());
    child.wait_with_output().unwrap()
}

const SEARCH: &str = "search --preset quick --epochs 2 --subset 128 --batch-size 8 --channels 4 --layers 2 --seed 5 -q";

fn args<'a>(base: &'a str, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a: Vec<&str> = base.split_whitespace().collect();
    a.extend(["--out", out.to_str().unwrap()]);
    a.extend(extra);
    a
}

/// The weights and architecture parameters of a run's last checkpoint (batch-norm running
/// statistics aside: each rank keeps its own, as PyTorch's DDP does).
fn learned(dir: &Path) -> BTreeMap<String, Vec<f64>> {
    let ck = load_tensors(&dir.join("checkpoint.safetensors"), &candle_core::Device::Cpu).unwrap();
    ck.tensors
        .into_iter()
        .filter(|(k, _)| (k.starts_with("weights.") || k.starts_with("arch.")) && !k.contains("running_"))
        .map(|(k, t)| {
            (k, t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap())
        })
        .collect()
}

/// The largest difference of any tensor relative to its largest entry.
fn max_rel_diff(a: &BTreeMap<String, Vec<f64>>, b: &BTreeMap<String, Vec<f64>>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, x)| {
            let y = &b[k];
            let scale = x.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
            x.iter().zip(y).fold(0f64, |m, (p, q)| m.max((p - q).abs())) / scale
        })
        .fold(0.0, f64::max)
}

fn assert_two_ranks_equal_accumulation(base: &str, extra: &[&str], what: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, plain) = (tmp.path().join("one"), tmp.path().join("two"), tmp.path().join("plain"));
    let mut acc = extra.to_vec();
    acc.extend(["--accumulate", "2"]);
    let o = nas(&args(base, &one, &acc));
    assert!(o.status.success(), "{what}, one process: {}", stderr(&o));
    let o = mpirun(2, &args(base, &two, extra));
    assert!(o.status.success(), "{what}, two ranks: {}", stderr(&o));
    let e = max_rel_diff(&learned(&one), &learned(&two));
    eprintln!("{what}: two ranks vs --accumulate 2: max relative difference {e:e}");
    assert!(e < 1e-5, "{what}: two ranks differ from --accumulate 2 by {e:e}");
    // The check can fail: one micro-batch per step is another run.
    let o = nas(&args(base, &plain, extra));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(max_rel_diff(&learned(&one), &learned(&plain)) > 1e-3, "{what}: accumulation changed nothing");
    // Rank 0 alone wrote: one metrics log with a record per epoch, as the one process's.
    let records = |d: &Path| RunDir::open(d).unwrap().read_metrics().unwrap().len();
    assert_eq!(records(&two), records(&one), "{what}");
}

#[test]
fn two_ranks_equal_one_process_accumulating_two_micro_batches() {
    assert_two_ranks_equal_accumulation(SEARCH, &[], "first-order search");
    assert_two_ranks_equal_accumulation(SEARCH, &["--method", "second-order"], "second-order search");
    let train = "train --genotype DARTS_V2 --epochs 1 --subset 64 --batch-size 8 --channels 4 --layers 3 \
                 --auxiliary-weight 0.4 --drop-path 0.2 --seed 3 -q";
    assert_two_ranks_equal_accumulation(train, &[], "retraining");
}

/// SIGTERM to one rank (as a scheduler's or a user's Ctrl-C reaches it): both ranks stop before
/// the same step, rank 0 writes the checkpoint, and `mpirun … --resume` ends where the
/// uninterrupted two-rank run ends.
#[test]
fn a_two_rank_run_stopped_on_one_rank_resumes_to_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let base = "search --preset quick --epochs 3 --subset 256 --batch-size 8 --channels 4 --layers 2 --seed 9 -q";
    let o = mpirun(2, &args(base, &a, &[]));
    assert!(o.status.success(), "{}", stderr(&o));

    // Once the first epoch is recorded, stop one of the rank processes (not mpirun).
    let o = signal_a_rank(2, &args(base, &b, &[]), &b.join("metrics.jsonl"), "-TERM");
    assert!(!o.status.success(), "the stopped run must not report success");
    let ck = load_tensors(&b.join("checkpoint.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(ck.meta("world_size"), Some("2"));

    // One process cannot continue a two-rank run.
    let o = nas(&["search", "--resume", "--out", b.to_str().unwrap(), "-q"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("mpirun -np 2"), "{}", stderr(&o));

    let o = mpirun(2, &["search", "--resume", "--out", b.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (da, db) = (RunDir::open(&a).unwrap(), RunDir::open(&b).unwrap());
    let genotype = |d: &RunDir| -> serde_json::Value { d.read_json("genotype.json").unwrap() };
    assert_eq!(genotype(&da), genotype(&db));
    assert_eq!(without_time(da.read_metrics().unwrap()), without_time(db.read_metrics().unwrap()));
    assert_eq!(max_rel_diff(&learned(&a), &learned(&b)), 0.0);
}

/// A two-rank retraining with one rank killed (SIGKILL: mpirun then ends the job) resumes from
/// rank 0's last checkpoint to the end of the uninterrupted two-rank run.
#[test]
fn a_two_rank_retraining_killed_on_one_rank_resumes_to_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let base = "train --genotype DARTS_V2 --epochs 3 --subset 96 --batch-size 8 --channels 4 --layers 3 \
                --auxiliary-weight 0.4 --drop-path 0.2 --seed 4 -q";
    let o = mpirun(2, &args(base, &a, &[]));
    assert!(o.status.success(), "{}", stderr(&o));

    let o = signal_a_rank(2, &args(base, &b, &[]), &b.join("checkpoint.safetensors"), "-KILL");
    assert!(!o.status.success(), "a job with a killed rank must not report success");

    let o = mpirun(2, &["train", "--resume", "--out", b.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (da, db) = (RunDir::open(&a).unwrap(), RunDir::open(&b).unwrap());
    assert_eq!(without_time(da.read_metrics().unwrap()), without_time(db.read_metrics().unwrap()));
    assert_eq!(max_rel_diff(&learned(&a), &learned(&b)), 0.0);
}
