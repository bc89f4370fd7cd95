//! `nas train`, `nas eval` and `nas bench train` end to end: a short retrain of DARTS_V2 on an
//! image folder written here reaches clearly-better-than-chance test accuracy; an nb201 cell
//! trains in its own skeleton; bad input (corrupt image, empty class, CIFAR label out of range,
//! an op from another space, …) is one clear error line.

mod common;

use std::path::Path;

use common::{assert_clean_error, nas, stderr, stdout};

/// 4 classes told apart by structure only (random colours): horizontal stripes, vertical
/// stripes, a disc, a checkerboard; `side`×`side` images written as PNG and BMP.
fn write_folder(root: &Path, side: u32, train_per_class: usize, test_per_class: usize) {
    let mut state = 0x2545_f491u32;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
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
                        0 => (y / period) % 2 == 0,
                        1 => (x / period) % 2 == 0,
                        2 => (x as i32 - cx as i32).pow(2) + (y as i32 - cy as i32).pow(2) <= (r * r) as i32,
                        _ => ((x / period) + (y / period)) % 2 == 0,
                    };
                    image::Rgb(if on { a } else { b })
                });
                let ext = if i % 2 == 0 { "png" } else { "bmp" };
                img.save(dir.join(format!("{i}.{ext}"))).unwrap();
            }
        }
    }
}

fn eval_json(run: &Path) -> serde_json::Value {
    let o = nas(&["eval", "--run", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn darts_v2_retrained_on_an_image_folder_beats_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    write_folder(&data, 32, 64, 16);
    let out = tmp.path().join("run");
    let spec = format!("folder:{}", data.display());
    let flags = "train --genotype DARTS_V2 --channels 8 --layers 3 --epochs 6 --batch-size 16 --cutout 8 \
                 --lr 0.05 --seed 1 -q";
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--data", &spec, "--out", out.to_str().unwrap()]);
    let o = nas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("test_acc: "), "{}", stdout(&o));
    for f in ["config.json", "metrics.jsonl", "genotype.json", "checkpoint.safetensors", "weights.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    let r = eval_json(&out);
    assert_eq!(r["n"], 64);
    let acc = r["test_acc"].as_f64().unwrap();
    eprintln!("folder retrain test accuracy {acc}");
    assert!(acc >= 0.45, "test accuracy {acc} (chance is 0.25); metrics:\n{metrics}");
    assert!(r["test_loss"].as_f64().unwrap().is_finite());

    // The same run directory is not overwritten by accident; resuming a finished run is a
    // no-op that reports the same result.
    assert_clean_error(&nas(&args), "already exists");
    let o = nas(&["train", "--resume", "--out", out.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(eval_json(&out), r);
}

#[test]
fn nb201_cells_train_in_their_own_skeleton_and_bench_train_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nb");
    let arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|";
    let flags = "train --channels 4 --layers 1 --epochs 1 --subset 64 --batch-size 16 -q";
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--genotype", arch, "--out", out.to_str().unwrap()]);
    let o = nas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["genotype"]["arch"], arch);
    assert_eq!(config["model"]["auxiliary_weight"], 0.0);
    let r = eval_json(&out);
    assert_eq!(r["n"], 2000);

    let o = nas(&["bench", "train", "--channels", "4", "--layers", "3", "--batch-size", "4", "--steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["step_s_median"].as_f64().unwrap() > 0.0);
    assert!(v["params_without_aux"].as_u64().unwrap() > 0);
}

#[test]
fn bad_training_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let train = |data: &str, out: &str| {
        nas(&["train", "--genotype", "DARTS_V2", "--data", data, "--image-size", "16", "--out", out])
    };

    write_folder(Path::new(&p("corrupt")), 24, 2, 1);
    std::fs::write(Path::new(&p("corrupt")).join("train/disc/zz.png"), b"\x89PNG but not really").unwrap();
    let o = train(&format!("folder:{}", p("corrupt")), &p("r1"));
    assert_clean_error(&o, "zz.png");
    assert_clean_error(&o, "not a readable image");
    assert!(!Path::new(&p("r1")).exists(), "a failed start creates no run directory");

    write_folder(Path::new(&p("empty")), 24, 2, 1);
    std::fs::create_dir_all(Path::new(&p("empty")).join("train/triangle")).unwrap();
    assert_clean_error(&train(&format!("folder:{}", p("empty")), &p("r2")), "class folder `triangle` has no images");

    let c100 = tmp.path().join("c100");
    std::fs::create_dir_all(&c100).unwrap();
    let mut rec = vec![3u8, 100];
    rec.extend(std::iter::repeat_n(7u8, 3072));
    std::fs::write(c100.join("train.bin"), &rec).unwrap();
    let o = train(&format!("cifar100:{}", c100.display()), &p("r3"));
    assert_clean_error(&o, "train.bin");
    assert_clean_error(&o, "label 100 out of range");

    std::fs::write(
        p("mixed.json"),
        r#"{"space":"darts","normal":[["nor_conv_3x3",0],["skip_connect",1],["sep_conv_3x3",0],["sep_conv_3x3",1],
            ["sep_conv_3x3",0],["sep_conv_3x3",1],["sep_conv_3x3",0],["sep_conv_3x3",1]],
            "reduce":[["max_pool_3x3",0],["max_pool_3x3",1],["max_pool_3x3",0],["max_pool_3x3",1],
            ["max_pool_3x3",0],["max_pool_3x3",1],["max_pool_3x3",0],["max_pool_3x3",1]]}"#,
    )
    .unwrap();
    assert_clean_error(
        &nas(&["train", "--genotype", &p("mixed.json"), "--out", &p("r4")]),
        "unknown op `nor_conv_3x3` for the darts space",
    );

    let nb = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|";
    assert_clean_error(
        &nas(&["train", "--genotype", nb, "--auxiliary-weight", "0.4", "--out", &p("r5")]),
        "no auxiliary head",
    );
    assert_clean_error(&nas(&["train", "--out", &p("r6")]), "--genotype is required");
    assert_clean_error(
        &nas(&["train", "--genotype", "DARTS_V2", "--drop-path", "1.5", "--out", &p("r7")]),
        "drop path probability",
    );
    write_folder(Path::new(&p("ok")), 24, 2, 1);
    let ok = format!("folder:{}", p("ok"));
    assert_clean_error(
        &nas(&["train", "--genotype", "DARTS_V2", "--data", &ok, "--image-size", "24", "--out", &p("r8")]),
        "auxiliary head needs 32x32 images",
    );
    assert_clean_error(&nas(&["eval", "--run", &p("nothing")]), "not a run directory");
    std::fs::create_dir_all(p("searchrun")).unwrap();
    std::fs::write(Path::new(&p("searchrun")).join("config.json"), r#"{"method":"first-order"}"#).unwrap();
    assert_clean_error(&nas(&["eval", "--run", &p("searchrun")]), "search run");
}
