//! Runs that stop early, through the binary: killed with SIGKILL after checkpoints and
//! resumed, stopped with Ctrl-C (SIGINT) and resumed, and a diverging run. A resumed run must
//! end exactly as the uninterrupted one (same genotype, same metrics but wall time), and no
//! kill may leave a file that cannot be read back.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_no_temporary_files, assert_rejected, nas, stderr, write_cifar10};
use nas_core::checkpoint::load_tensors;
use nas_core::metrics::Position;
use nas_core::testing::without_time;
use nas_core::RunDir;

/// A small search of several epochs (4 steps each), long enough to be stopped mid-way.
const SEARCH: &str =
    "search --preset quick --epochs 5 --subset 128 --batch-size 16 --channels 4 --layers 2 --seed 7 -q";

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nas"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nas")
}

fn search_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = SEARCH.split_whitespace().collect();
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    args
}

/// Everything a finished run leaves that must not depend on interruptions.
fn outcome(out: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let dir = RunDir::open(out).unwrap();
    let genotype = dir.read_json("genotype.json").unwrap();
    (genotype, without_time(dir.read_metrics().unwrap()))
}

/// The files of a run directory after a kill: each is either absent or whole.
fn assert_readable(out: &Path) {
    let ck = out.join("checkpoint.safetensors");
    if ck.exists() {
        load_tensors(&ck, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("torn checkpoint: {e}"));
    }
    for name in ["config.json", "genotype.json"] {
        let p = out.join(name);
        if p.exists() {
            let text = std::fs::read_to_string(&p).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("torn {name}: {e}"));
        }
    }
}

/// Deterministic pseudo-random delays (xorshift), so that a failure can be replayed.
fn delays(seed: u32, n: usize, max_ms: u32) -> Vec<Duration> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            Duration::from_millis(u64::from(20 + s % max_ms))
        })
        .collect()
}

/// The position the run's checkpoint holds, if it has one.
fn checkpoint_position(out: &Path) -> Option<Position> {
    let ck = out.join("checkpoint.safetensors");
    let loaded = load_tensors(&ck, &candle_core::Device::Cpu).ok()?;
    loaded.position(&ck).ok()
}

/// Every tensor of the run's final checkpoint (weights, buffers, α, both optimisers' state),
/// as bits.
fn final_tensors(out: &Path) -> BTreeMap<String, Vec<u32>> {
    let ck = load_tensors(&out.join("checkpoint.safetensors"), &candle_core::Device::Cpu).unwrap();
    ck.tensors
        .into_iter()
        .map(|(n, t)| {
            let v = t.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap();
            (n, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

/// Killed with SIGKILL three times, each time a little after the running process wrote a
/// new checkpoint (the test watches the run directory), so every kill lands with a
/// checkpoint to resume from and every resume must continue from it: the checkpoints'
/// positions only advance. The run then ends exactly as the uninterrupted one: genotype,
/// metrics but wall time, and every final tensor bit for bit.
#[test]
fn killed_after_checkpoints_and_resumed_equals_uninterrupted() {
    killed_and_resumed(&[], 0x9e37_79b9);
}

/// The same with ENAS, whose controller (parameters, Adam moments, baseline) and selected
/// child are in the checkpoint, and whose draws are keyed by epoch and step.
#[test]
fn an_enas_search_killed_after_checkpoints_resumes_to_the_same_genotype() {
    let enas = ["--method", "enas", "--controller-steps", "2", "--controller-aggregate", "2", "--select-samples", "4"];
    killed_and_resumed(&enas, 0x85eb_ca6b);
}

/// The methods against DARTS' collapse, in both spaces, on the embedded data and on CIFAR-10
/// binary files: each killed after checkpoints resumes to the uninterrupted run's genotype,
/// records and final tensors.
#[test]
fn collapse_methods_killed_after_checkpoints_resume_to_the_same_genotype() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_cifar10(&data, &[("data_batch_1.bin", 100), ("data_batch_2.bin", 60)]);
    let cifar = format!("cifar10:{}", data.display());
    let cases: [&[&str]; 6] = [
        &["--method", "beta-darts", "--space", "nb201", "--data", &cifar],
        &["--method", "beta-darts"],
        &["--method", "sdarts", "--perturb", "adv", "--adv-steps", "2", "--data", &cifar],
        &["--method", "sdarts", "--space", "nb201"],
        &["--method", "drnas", "--partial-channels", "2", "--data", &cifar],
        &["--method", "drnas", "--reg", "kl", "--space", "nb201"],
    ];
    for (i, extra) in cases.into_iter().enumerate() {
        eprintln!("{extra:?}");
        killed_and_resumed(extra, 0x27d4_eb2f ^ i as u32);
    }
}

fn killed_and_resumed(extra: &[&str], seed: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    reference(&a, extra);
    let mut positions: Vec<Position> = Vec::new();
    for (round, delay) in delays(seed, 3, 300).into_iter().enumerate() {
        let args = if round == 0 {
            search_args(&b, extra)
        } else {
            vec!["search", "--resume", "--out", b.to_str().unwrap(), "-q"]
        };
        let before = checkpoint_position(&b);
        let mut child = spawn(&args);
        // Wait for this process's first checkpoint.
        let started = Instant::now();
        let written = loop {
            match checkpoint_position(&b) {
                Some(p) if Some(p) != before => break p,
                _ => {}
            }
            assert!(child.try_wait().unwrap().is_none(), "round {round}: the run ended before a new checkpoint");
            assert!(started.elapsed() < Duration::from_secs(300), "round {round}: no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        };
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_readable(&b);
        let kept = checkpoint_position(&b).expect("a checkpoint after the kill");
        assert!(kept.epoch >= written.epoch, "round {round}: the checkpoint went back");
        positions.push(kept);
    }
    eprintln!("kills landed after checkpoints at epochs {:?}", positions.iter().map(|p| p.epoch).collect::<Vec<_>>());
    // Each resumed process continued from the checkpoint: every kill left a later one.
    assert!(positions.windows(2).all(|w| w[1].epoch > w[0].epoch), "{positions:?}");
    assert!(positions[0].epoch >= 1);
    resumed_equals(&a, &b);
    assert_no_temporary_files(&b);
}

/// The uninterrupted run in `a`.
fn reference(a: &Path, extra: &[&str]) {
    let o = nas(&search_args(a, extra));
    assert!(o.status.success(), "{}", stderr(&o));
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// Starts the search in `b`, sends `sig` once its first epoch is recorded (and `settle`
/// later), and checks that it checkpointed and stopped as Ctrl-C does.
fn stopped_by(b: &Path, sig: &str, settle: Duration) {
    let child = spawn(&search_args(b, &[]));
    let started = Instant::now();
    while !b.join("metrics.jsonl").exists() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{sig}: {err}");
    assert!(err.contains("interrupted at epoch") && err.contains("--resume --out"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let at = checkpoint_position(b).expect("a checkpoint of the stop");
    eprintln!("{sig}: interrupted at epoch {} step {}", at.epoch, at.step);
    assert!(at.epoch >= 1);
    assert!(!b.join("genotype.json").exists(), "the run stopped before its end");
}

/// Resumes `b` to its end and compares it with the uninterrupted `a`.
fn resumed_equals(a: &Path, b: &Path) {
    let o = nas(&["search", "--resume", "--out", b.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outcome(a), outcome(b));
    assert_eq!(final_tensors(a), final_tensors(b), "final tensors");
}

#[test]
fn ctrl_c_checkpoints_and_resume_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    reference(&a, &[]);
    // Interrupted in the middle of the run.
    stopped_by(&b, "-INT", Duration::from_millis(300));
    resumed_equals(&a, &b);
}

/// SIGTERM (what a batch scheduler sends) checkpoints and stops as Ctrl-C does; a second
/// Ctrl-C right after the first stops at once, leaving every file whole; the run then
/// resumes to the uninterrupted result.
#[test]
fn sigterm_and_a_second_ctrl_c_stop_the_run_resumably() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    reference(&a, &[]);
    stopped_by(&b, "-TERM", Duration::ZERO);

    let child = spawn(&["search", "--resume", "--out", b.to_str().unwrap(), "-q"]);
    std::thread::sleep(Duration::from_millis(400));
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(2));
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted again: stopping now"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_readable(&b);
    resumed_equals(&a, &b);
}

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = nas(&search_args(&out, &["--lr", "1e30"]));
    assert_rejected(&o, &["training diverged at epoch 1, step ", "loss is NaN", "no checkpoint"]);
    let o = nas(&["train", "--genotype", "DARTS_V2", "--channels", "4", "--layers", "3", "--subset", "32"]
        .into_iter()
        .chain(["--batch-size", "16", "--lr", "1e30", "-q", "--out", tmp.path().join("t").to_str().unwrap()])
        .collect::<Vec<_>>());
    assert_rejected(&o, &["training diverged at epoch 1, step "]);
}
