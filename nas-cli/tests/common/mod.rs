//! Running the `nas` binary from integration tests and checking its one-line errors.
#![allow(dead_code)] // each test file uses a different part

pub mod kills;
pub mod tfevents;

use std::path::Path;
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

/// CIFAR-10 binary files of `n` records each (labels cycling 0..10, pseudo-random pixels).
pub fn write_cifar10(dir: &Path, files: &[(&str, usize)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 12345u32;
    for (name, n) in files {
        let mut bytes = Vec::with_capacity(n * 3073);
        for i in 0..*n {
            bytes.push((i % 10) as u8);
            for _ in 0..3072 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                bytes.push((state >> 24) as u8);
            }
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A xorshift32 stream: test images that need no seeded library generator.
fn xorshift(mut state: u32) -> impl FnMut() -> u32 {
    move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    }
}

/// 4 classes told apart by structure only (random colours): horizontal stripes, vertical
/// stripes, a disc, a checkerboard; `side`×`side` images written as PNG and BMP.
pub fn write_folder(root: &Path, side: u32, train_per_class: usize, test_per_class: usize) {
    let mut rand = xorshift(0x2545_f491);
    for (split, n) in [("train", train_per_class), ("test", test_per_class)] {
        for (class, name) in ["hstripes", "vstripes", "disc", "checker"].iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let a = [rand() as u8, rand() as u8, rand() as u8];
                let b = [rand() as u8, rand() as u8, rand() as u8];
                let period = side / 8 + rand() % (side / 8);
                let (cx, cy, r) =
                    (side / 4 + rand() % (side / 2), side / 4 + rand() % (side / 2), side / 6 + rand() % (side / 8));
                let img = image::RgbImage::from_fn(side, side, |x, y| {
                    let on = match class {
                        0 => (y / period).is_multiple_of(2),
                        1 => (x / period).is_multiple_of(2),
                        2 => (x as i32 - cx as i32).pow(2) + (y as i32 - cy as i32).pow(2) <= (r * r) as i32,
                        _ => ((x / period) + (y / period)).is_multiple_of(2),
                    };
                    image::Rgb(if on { a } else { b })
                });
                // Every format the loader reads, in turn.
                let ext = ["png", "bmp", "jpg", "gif"][i % 4];
                img.save(dir.join(format!("{i}.{ext}"))).unwrap();
            }
        }
    }
}

/// `classes` classes of JPEG photographs in miniature, each of its own size (`min_side` to
/// 1.5×`min_side`, landscape and portrait): a blob of the class's colour on a noisy ramp, the
/// layout of an ImageNet folder.
pub fn write_jpeg_folder(root: &Path, classes: usize, train_per_class: usize, test_per_class: usize, min_side: u32) {
    let mut rand = xorshift(0x9e37_79b9);
    for (split, n) in [("train", train_per_class), ("test", test_per_class)] {
        for class in 0..classes {
            let dir = root.join(split).join(format!("n{class:08}"));
            std::fs::create_dir_all(&dir).unwrap();
            let hue =
                [(255u32, 40u32, 40u32), (40, 255, 40), (40, 40, 255), (255, 255, 40), (255, 40, 255), (40, 255, 255)]
                    [class % 6];
            for i in 0..n {
                let (w, h) = (min_side + rand() % (min_side / 2), min_side + rand() % (min_side / 2));
                let (cx, cy, r) = (w / 4 + rand() % (w / 2), h / 4 + rand() % (h / 2), w.min(h) / 5 + rand() % 8);
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let inside = (x as i32 - cx as i32).pow(2) + (y as i32 - cy as i32).pow(2) <= (r * r) as i32;
                    let base = (x * 255 / w, y * 255 / h, 128);
                    let (a, b, c) = if inside { hue } else { base };
                    let noise = rand() % 24;
                    image::Rgb([(a + noise).min(255) as u8, (b + noise).min(255) as u8, (c + noise).min(255) as u8])
                });
                img.save(dir.join(format!("n{class:08}_{i}.JPEG"))).unwrap();
            }
        }
    }
}

/// Fails unless the command was rejected cleanly: a non-zero exit, an `error: ` message that
/// mentions every `want`, no panic and no backtrace. Our own errors are one line (exit 1);
/// command-line syntax errors are clap's (exit 2), which may add a usage tip.
pub fn assert_rejected(o: &Output, wants: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    assert!(matches!(o.status.code(), Some(1 | 2)), "exit code {:?}: {err}", o.status.code());
    assert!(err.starts_with("error: "), "{err}");
    for want in wants {
        assert!(err.contains(want), "stderr does not mention `{want}`: {err}");
    }
    if o.status.code() == Some(1) {
        assert_eq!(err.trim_end().lines().count(), 1, "expected one line: {err}");
    }
    assert!(!err.contains("panicked") && !err.contains("backtrace") && !err.contains("RUST_BACKTRACE"), "{err}");
}

/// Fails if a run directory holds a temporary file of an atomic write.
pub fn assert_no_temporary_files(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}
