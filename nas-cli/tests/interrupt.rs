//! Runs that stop early, through the binary: killed with SIGKILL at arbitrary moments and
//! resumed, stopped with Ctrl-C (SIGINT) and resumed, and a diverging run. A resumed run must
//! end exactly as the uninterrupted one (same genotype, same metrics but wall time), and no
//! kill may leave a file that cannot be read back.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_rejected, nas, stderr};
use nas_core::checkpoint::load_tensors;
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
            Duration::from_millis(u64::from(50 + s % max_ms))
        })
        .collect()
}

#[test]
fn killed_at_arbitrary_moments_and_resumed_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let o = nas(&search_args(&a, &[]));
    assert!(o.status.success(), "{}", stderr(&o));

    let b = tmp.path().join("b");
    let mut kills = 0;
    for delay in delays(0x9e37_79b9, 6, 2500) {
        // Before config.json exists there is nothing to resume: start afresh.
        let resume = b.join("config.json").exists();
        let args = if resume {
            vec!["search", "--resume", "--out", b.to_str().unwrap(), "-q"]
        } else {
            search_args(&b, &["--force"])
        };
        let mut child = spawn(&args);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        assert_readable(&b);
        if status.success() {
            break;
        }
    }
    assert!(kills >= 2, "the run finished before it could be killed twice ({kills})");
    if !b.join("genotype.json").exists() {
        let o = nas(&["search", "--resume", "--out", b.to_str().unwrap(), "-q"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let leftovers: Vec<_> = std::fs::read_dir(&b)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    assert_eq!(outcome(&a), outcome(&b), "{kills} kills");
}

#[test]
fn ctrl_c_checkpoints_and_resume_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let o = nas(&search_args(&a, &[]));
    assert!(o.status.success(), "{}", stderr(&o));

    let b = tmp.path().join("b");
    let child = spawn(&search_args(&b, &[]));
    // Wait for the first epoch's record, then interrupt in the middle of the run.
    let started = Instant::now();
    while !b.join("metrics.jsonl").exists() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at epoch") && err.contains("--resume --out"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let ck = load_tensors(&b.join("checkpoint.safetensors"), &candle_core::Device::Cpu).unwrap();
    let at = ck.position(&b.join("checkpoint.safetensors")).unwrap();
    eprintln!("interrupted at epoch {} step {}", at.epoch, at.step);
    assert!(!b.join("genotype.json").exists(), "the run stopped before its end");

    let o = nas(&["search", "--resume", "--out", b.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outcome(&a), outcome(&b));
}

#[test]
fn a_diverging_run_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = nas(&search_args(&out, &["--lr", "1e30"]));
    assert_rejected(&o, &["training diverged at epoch 0", "loss is NaN", "no checkpoint"]);
    let o = nas(&["train", "--genotype", "DARTS_V2", "--channels", "4", "--layers", "3", "--subset", "32"]
        .into_iter()
        .chain(["--batch-size", "16", "--lr", "1e30", "-q", "--out", tmp.path().join("t").to_str().unwrap()])
        .collect::<Vec<_>>());
    assert_rejected(&o, &["training diverged at epoch 0"]);
}
