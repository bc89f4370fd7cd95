//! Runs that stop early, through the binary: killed with SIGKILL after checkpoints and
//! resumed, stopped with Ctrl-C (SIGINT) and resumed, and a diverging run. A resumed run must
//! end exactly as the uninterrupted one (same genotype, same metrics but wall time), and no
//! kill may leave a file that cannot be read back.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::kills::*;
use common::{assert_rejected, nas};

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
    // Ten epochs: ENAS' epochs at this size are short, and three kills must each land before
    // the last checkpoint for every resumed process to write a later one.
    let enas = [
        "--method",
        "enas",
        "--epochs",
        "10",
        "--controller-steps",
        "2",
        "--controller-aggregate",
        "2",
        "--select-samples",
        "4",
    ];
    killed_and_resumed(&enas, 0x85eb_ca6b);
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
