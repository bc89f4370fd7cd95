//! Runs killed and resumed through the binary: the helpers the interruption tests share.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nas_core::checkpoint::load_tensors;
use nas_core::metrics::Position;
use nas_core::testing::without_time;
use nas_core::RunDir;

use super::{assert_no_temporary_files, nas, stderr};

/// A small search of several epochs (4 steps each), long enough to be stopped mid-way.
pub const SEARCH: &str =
    "search --preset quick --epochs 5 --subset 128 --batch-size 16 --channels 4 --layers 2 --seed 7 -q";

pub fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nas"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nas")
}

/// `SEARCH` into `out` with `extra`: a flag of `extra` that `SEARCH` has replaces its value.
pub fn search_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = SEARCH.split_whitespace().collect();
    args.extend(["--out", out.to_str().unwrap()]);
    let mut rest = extra.iter();
    while let Some(&flag) = rest.next() {
        match args.iter().position(|&a| a == flag && flag.starts_with("--")) {
            Some(i) => args[i + 1] = rest.next().expect("a value for a flag SEARCH has"),
            None => args.push(flag),
        }
    }
    args
}

/// Everything a finished run leaves that must not depend on interruptions.
pub fn outcome(out: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let dir = RunDir::open(out).unwrap();
    let genotype = dir.read_json("genotype.json").unwrap();
    (genotype, without_time(dir.read_metrics().unwrap()))
}

/// The files of a run directory after a kill: each is either absent or whole.
pub fn assert_readable(out: &Path) {
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
pub fn delays(seed: u32, n: usize, max_ms: u32) -> Vec<Duration> {
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
pub fn checkpoint_position(out: &Path) -> Option<Position> {
    let ck = out.join("checkpoint.safetensors");
    let loaded = load_tensors(&ck, &candle_core::Device::Cpu).ok()?;
    loaded.position(&ck).ok()
}

/// Every tensor of the run's final checkpoint (weights, buffers, α, both optimisers' state),
/// as bits.
pub fn final_tensors(out: &Path) -> BTreeMap<String, Vec<u32>> {
    let ck = load_tensors(&out.join("checkpoint.safetensors"), &candle_core::Device::Cpu).unwrap();
    ck.tensors
        .into_iter()
        .map(|(n, t)| {
            let v = t.flatten_all().unwrap().to_dtype(candle_core::DType::F32).unwrap().to_vec1::<f32>().unwrap();
            (n, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

pub fn killed_and_resumed(extra: &[&str], seed: u32) {
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
pub fn reference(a: &Path, extra: &[&str]) {
    let o = nas(&search_args(a, extra));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Resumes `b` to its end and compares it with the uninterrupted `a`.
pub fn resumed_equals(a: &Path, b: &Path) {
    let o = nas(&["search", "--resume", "--out", b.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(outcome(a), outcome(b));
    assert_eq!(final_tensors(a), final_tensors(b), "final tensors");
}
