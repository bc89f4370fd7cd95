//! `nas train`, `nas eval` and `nas bench train` end to end: a short retrain of DARTS_V2 on an
//! image folder (PNG, BMP, JPEG and GIF files) written here reaches clearly-better-than-chance
//! test accuracy and evaluates from its final weights, from its checkpoint alone and on
//! another folder; an nb201 cell trains in its own skeleton. Bad input is in bad_input.rs.

mod common;

use std::path::Path;

use common::{assert_rejected, nas, stderr, stdout, write_folder};

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

    // The folder held PNG, BMP, JPEG and GIF images, all of them read.
    let exts: std::collections::BTreeSet<String> = std::fs::read_dir(data.join("train/disc"))
        .unwrap()
        .map(|e| e.unwrap().path().extension().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(exts.into_iter().collect::<Vec<_>>(), ["bmp", "gif", "jpg", "png"]);

    // From the last checkpoint alone (no weights.safetensors): the same network, the same
    // result.
    let ck_only = tmp.path().join("checkpoint-only");
    std::fs::create_dir(&ck_only).unwrap();
    for f in ["config.json", "metrics.jsonl", "genotype.json", "checkpoint.safetensors"] {
        std::fs::copy(out.join(f), ck_only.join(f)).unwrap();
    }
    assert_eq!(eval_json(&ck_only), r);
    // On another dataset's test split (--data): 4 classes × 3 images.
    let other = tmp.path().join("other");
    write_folder(&other, 32, 1, 3);
    let o = nas(&["eval", "--run", out.to_str().unwrap(), "--data", &format!("folder:{}", other.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let on_other: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(on_other["n"], 12);
    assert_ne!(on_other["test_loss"], r["test_loss"]);

    // The same run directory is not overwritten by accident; resuming a finished run is a
    // no-op that reports the same result.
    assert_rejected(&nas(&args), &["already exists"]);
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
