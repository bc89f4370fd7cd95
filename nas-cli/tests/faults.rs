//! The faults a long run meets, through the binary: a second process in the same run
//! directory, a damaged checkpoint, a full disk (a file-size limit) while writing a
//! checkpoint or the metrics log, a run directory that vanishes or turns read-only mid-run,
//! and resumes refused for changed options. Each ends with one clear error and
//! never a panic; what was written before stays usable.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_no_temporary_files, assert_rejected, nas, stderr};
use nas_core::RunDir;

/// A tiny search of `epochs` epochs.
fn tiny(out: &Path, epochs: &str) -> Vec<String> {
    let mut args: Vec<String> = ["search", "--preset", "quick", "--subset", "64", "--batch-size", "16"]
        .into_iter()
        .chain(["--channels", "4", "--layers", "2", "--seed", "5", "-q", "--epochs", epochs, "--out"])
        .map(String::from)
        .collect();
    args.push(out.to_str().unwrap().to_string());
    args
}

fn run(args: &[String]) -> std::process::Output {
    nas(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The tiny search started in the background (its errors kept for `wait_with_output`).
fn start(out: &Path, epochs: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_nas"))
        .args(tiny(out, epochs))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_second_process_in_the_run_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = start(&out, "50");
    wait_for(&out.join("config.json"));
    let o = nas(&["search", "--resume", "--out", out.to_str().unwrap(), "-q"]);
    let holder = format!("process {} is running in this directory", first.id());
    assert_rejected(&o, &[&holder]);
    let mut forced = tiny(&out, "50");
    forced.push("--force".into());
    assert_rejected(&run(&forced), &["is running in this directory"]);
    // A killed run leaves no stale lock: the kernel releases it with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    RunDir::open(&out).unwrap().locked().expect("the lock is free once its holder is gone");
}

#[test]
fn a_damaged_checkpoint_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = run(&tiny(&out, "1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let ck = out.join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&ck).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&ck, &bytes).unwrap();
    let o = nas(&["search", "--resume", "--out", out.to_str().unwrap(), "-q"]);
    assert_rejected(&o, &["checkpoint.safetensors", "does not match its checksum"]);
    assert_eq!(std::fs::read(&ck).unwrap(), bytes, "the refused resume changed the checkpoint");
}

/// The largest file the shell lets `nas` write, in 512-byte blocks (`ulimit -f`): above
/// config.json and a few metrics records, below a checkpoint (~650 kB here).
const FSIZE_BLOCKS: &str = "200";

/// `nas args` under `ulimit -f`, with SIGXFSZ ignored so that a write past the limit fails
/// with EFBIG ("File too large") as on a full disk, instead of killing the process.
fn with_file_limit(args: &[&str]) -> std::process::Output {
    with_file_limit_of(FSIZE_BLOCKS, args)
}

fn with_file_limit_of(blocks: &str, args: &[&str]) -> std::process::Output {
    let script = format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\"");
    Command::new("sh").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_nas")).args(args).output().unwrap()
}

#[test]
fn a_full_disk_while_checkpointing_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    // A run of 3 epochs, stopped by Ctrl-C after its first checkpoint.
    let child = start(&out, "3");
    wait_for(&out.join("checkpoint.safetensors"));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(130), "{}", String::from_utf8_lossy(&stopped.stderr));
    let ck = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();

    // Resumed with too little room for the next checkpoint.
    let full = with_file_limit(&["search", "--resume", "--out", o, "-q"]);
    assert_rejected(&full, &["checkpoint.safetensors", "File too large"]);
    assert_eq!(std::fs::read(&ck).unwrap(), before, "the previous checkpoint changed");
    assert_no_temporary_files(&out);

    // With room again, the run resumes and finishes.
    let o2 = nas(&["search", "--resume", "--out", o, "-q"]);
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert_eq!(RunDir::open(&out).unwrap().read_metrics().unwrap().len(), 3);
}

/// Room for config.json but not for the first metrics record (~5.7 kB): the run stops with
/// an error naming the log; the record it tore is dropped on resume, which finishes the run.
#[test]
fn a_full_disk_while_appending_the_metrics_log_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = tiny(&out, "2");
    let full = with_file_limit_of("8", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_rejected(&full, &["metrics.jsonl", "File too large"]);
    let torn = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(!torn.is_empty() && !torn.ends_with('\n'), "expected a torn record: {torn:?}");
    let o = nas(&["search", "--resume", "--out", out.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(RunDir::open(&out).unwrap().read_metrics().unwrap().len(), 2);
}

#[test]
fn a_run_directory_that_vanishes_mid_run_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let child = start(&out, "50");
    wait_for(&out.join("config.json"));
    std::fs::remove_dir_all(&out).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_rejected(&o, &[out.to_str().unwrap()]);
}

/// Every file of a run directory by name, with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// A resume with options that would change the run is refused and changes nothing, the lock
/// file included; `--force` replaces a finished run.
#[test]
fn refused_resumes_leave_the_run_as_it_was_and_force_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let first = run(&tiny(&out, "1"));
    assert!(first.status.success(), "{}", stderr(&first));
    let before = snapshot(&out);
    for change in [["--epochs", "2"], ["--lr", "0.1"], ["--method", "second-order"]] {
        let mut args = vec!["search", "--resume", "--out", o, "-q"];
        args.extend(change);
        assert_rejected(&nas(&args), &["differ from the run's saved configuration"]);
        assert_eq!(snapshot(&out), before, "{change:?} changed the run directory");
    }
    let mut forced = tiny(&out, "1");
    let seed = forced.iter().position(|a| a == "--seed").unwrap() + 1;
    forced[seed] = "6".into();
    forced.push("--force".into());
    let again = run(&forced);
    assert!(again.status.success(), "{}", stderr(&again));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["seed"], 6);
    assert_eq!(RunDir::open(&out).unwrap().read_metrics().unwrap().len(), 1);
    assert_ne!(std::fs::read(out.join("checkpoint.safetensors")).unwrap(), before["checkpoint.safetensors"]);
}

/// Makes a directory read-only for this process, root included (`chattr +i`, or the mode
/// bits for other users), until dropped. None where neither works here.
struct ReadOnly<'a>(&'a Path);

impl<'a> ReadOnly<'a> {
    fn make(dir: &'a Path) -> Option<Self> {
        let guard = ReadOnly(dir);
        let _ = Command::new("chattr").arg("+i").arg(dir).stderr(Stdio::null()).status();
        if std::fs::write(dir.join(".probe"), b"").is_err() {
            return Some(guard);
        }
        let _ = std::fs::remove_file(dir.join(".probe"));
        let _ = Command::new("chmod").arg("555").arg(dir).status();
        if std::fs::write(dir.join(".probe"), b"").is_err() {
            return Some(guard);
        }
        None
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).stderr(Stdio::null()).status();
        let _ = Command::new("chmod").arg("755").arg(self.0).status();
        let _ = std::fs::remove_file(self.0.join(".probe"));
    }
}

/// The run directory turns read-only mid-run: the next write fails with an error naming its
/// file, and no panic.
#[test]
fn a_run_directory_that_turns_read_only_mid_run_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut child = start(&out, "50");
    wait_for(&out.join("config.json"));
    let Some(read_only) = ReadOnly::make(&out) else {
        eprintln!("cannot make a directory read-only on this machine (no chattr, root): case not run");
        child.kill().unwrap();
        child.wait().unwrap();
        return;
    };
    let o = child.wait_with_output().unwrap();
    drop(read_only);
    assert_rejected(&o, &[out.to_str().unwrap()]);
    let err = stderr(&o);
    eprintln!("{err}");
    assert!(err.contains("not permitted") || err.contains("denied") || err.contains("Read-only"), "{err}");
}
