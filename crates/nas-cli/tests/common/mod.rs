//! Running the `nas` binary from integration tests and checking its one-line errors.
#![allow(dead_code)] // each test file uses a different part

use std::process::{Command, Output};

pub fn nas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nas"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("run nas")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails unless the command failed with exactly one line on stderr containing `want`.
pub fn assert_clean_error(o: &Output, want: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert_eq!(o.status.code(), Some(1), "exit code: {err}");
    assert!(err.contains(want), "stderr does not mention `{want}`: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
}
