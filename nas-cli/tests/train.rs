//! `nas train`, `nas eval` and `nas bench train` end to end: a short retrain of DARTS_V2 on an
//! image folder (PNG, BMP, JPEG and GIF files) written here reaches clearly-better-than-chance
//! test accuracy and evaluates from its final weights, from its checkpoint alone and on
//! another folder; an nb201 cell trains in its own skeleton; the ONNX model `nas export`
//! writes scores on the test split what `nas eval` scores. Bad input is in bad_input.rs.

mod common;

use std::path::Path;

use common::{assert_rejected, nas, stderr, stdout, write_cifar10, write_folder};

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

/// Accuracy and mean cross-entropy of an ONNX model run by tract on CIFAR-10 binary records
/// (pixels scaled to [0, 1], as the model takes them).
fn onnx_scores(model: &Path, records: &[u8]) -> (f64, f64) {
    use tract_onnx::prelude::*;
    let runnable = tract_onnx::onnx().model_for_path(model).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let n = records.len() / 3073;
    let labels: Vec<usize> = records.chunks(3073).map(|r| r[0] as usize).collect();
    let pixels: Vec<f32> = records.chunks(3073).flat_map(|r| r[1..].iter().map(|&p| p as f32 / 255.0)).collect();
    let input: Tensor = tract_ndarray::Array4::from_shape_vec((n, 3, 32, 32), pixels).unwrap().into();
    let out = runnable.run(tvec!(input.into())).unwrap();
    let logits = out[0].to_plain_array_view::<f32>().unwrap();
    let (mut hits, mut loss) = (0, 0.0);
    for (row, &y) in logits.outer_iter().zip(&labels) {
        let row: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - row[y];
        hits += usize::from(row.iter().all(|&v| v <= row[y]));
    }
    (hits as f64 / n as f64, loss / n as f64)
}

#[test]
fn the_exported_onnx_model_scores_what_nas_eval_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let c10 = tmp.path().join("c10");
    write_cifar10(&c10, &[("data_batch_1.bin", 40), ("test_batch.bin", 30)]);
    let run = tmp.path().join("run");
    let data = format!("cifar10:{}", c10.display());
    let net = ["--genotype", "DARTS_V2", "--channels", "8", "--layers", "3", "--data", &data];
    let mut args = vec!["train", "--epochs", "1", "--batch-size", "8", "-q", "--out", run.to_str().unwrap()];
    args.extend(net);
    let o = nas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = eval_json(&run);

    let model = tmp.path().join("model.onnx");
    let o = nas(&["export", run.to_str().unwrap(), "--out", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(batch, 3, 32, 32)"), "{}", stdout(&o));
    let (acc, loss) = onnx_scores(&model, &std::fs::read(c10.join("test_batch.bin")).unwrap());
    assert_eq!(acc, r["test_acc"].as_f64().unwrap(), "{r}");
    let want = r["test_loss"].as_f64().unwrap();
    assert!((loss - want).abs() <= 1e-5 * want.abs().max(1.0), "onnx loss {loss}, nas eval {want}");

    // The same network from its weights file, the genotype and the network's flags: the same
    // model, byte for byte.
    let weights = run.join("weights.safetensors");
    let again = tmp.path().join("again.onnx");
    let mut args = vec!["export", "--weights", weights.to_str().unwrap(), "--out", again.to_str().unwrap()];
    args.extend(net);
    let o = nas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&model).unwrap());
    // Weights of another network size: refused, naming the file, nothing written.
    let wrong = tmp.path().join("wrong.onnx");
    let mut args = vec!["export", "--weights", weights.to_str().unwrap(), "--out", wrong.to_str().unwrap()];
    args.extend(["--genotype", "DARTS_V2", "--channels", "16", "--layers", "3", "--data", &data]);
    let o = nas(&args);
    assert_rejected(&o, &["weights.safetensors", "same classes and image size"]);
    assert!(!wrong.exists());
}
