//! ImageNet end to end on a small folder of JPEGs of assorted sizes written here (the layout
//! of ImageNet's train/ and val/ folders): `nas train --net imagenet` with the DARTS and the
//! PC-DARTS recipe, streamed with the ImageNet transforms at 224×224, evaluated with top-1 and
//! top-5; and a PC-DARTS ImageNet-style search (ImageNet stems, K=2, per-class fractions).

mod common;

use std::path::Path;

use common::{assert_rejected, nas, stderr, stdout, write_jpeg_folder};

fn records(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs `nas FLAGS --data SPEC --out OUT` and checks that it succeeded.
fn run(flags: &str, spec: &str, out: &Path) -> std::process::Output {
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--data", spec, "--out", out.to_str().unwrap()]);
    let o = nas(&args);
    assert!(o.status.success(), "nas {flags}: {}", stderr(&o));
    o
}

fn config(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap()
}

#[test]
fn imagenet_retraining_streams_jpegs_and_reports_top5() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("imagenet");
    write_jpeg_folder(&data, 7, 4, 2, 160);
    let spec = format!("folder:{}", data.display());
    let out = tmp.path().join("run");
    let flags = "train --genotype PC_DARTS_IMAGENET --net imagenet --channels 8 --layers 3 --batch-size 7";
    let o = run(&format!("{flags} --epochs 2"), &spec, &out);
    let (text, log) = (stdout(&o), stderr(&o));
    assert!(text.contains("test_acc: ") && text.contains("test_top5: "), "{text}");
    assert!(log.contains("imagenet network") && log.contains("mult-adds per 224x224 image"), "{log}");
    let c = config(&out);
    assert_eq!(c["model"]["net"], "imagenet");
    assert_eq!(c["data"]["image_size"], 224);
    assert_eq!(c["label_smoothing"], 0.1);
    assert_eq!(c["optimizer"]["schedule"], serde_json::json!({"kind": "step", "gamma": 0.97}));
    assert_eq!(c["optimizer"]["weight_decay"], 3e-5);
    let r = records(&out);
    assert_eq!(r.len(), 2);
    let lrs: Vec<f64> = r.iter().map(|x| x["lr"].as_f64().unwrap()).collect();
    assert!((lrs[0] - 0.1).abs() < 1e-15 && (lrs[1] - 0.097).abs() < 1e-15, "{lrs:?}");
    for x in &r {
        let (top1, top5) = (x["valid_acc"].as_f64().unwrap(), x["valid_top5"].as_f64().unwrap());
        assert!(top5 >= top1 && top5 <= 1.0, "{x}");
        assert!(x["train_top5"].as_f64().unwrap() >= x["train_acc"].as_f64().unwrap(), "{x}");
        assert!(x["train_loss"].as_f64().unwrap().is_finite());
    }
    // `nas eval`: the resize and centre crop of the 14 test images, top-5 included, as the
    // last epoch's record.
    let e = nas(&["eval", "--run", out.to_str().unwrap()]);
    assert!(e.status.success(), "{}", stderr(&e));
    let v: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert_eq!(v["n"], 14);
    let last = &r[1];
    assert!((v["test_acc"].as_f64().unwrap() - last["valid_acc"].as_f64().unwrap()).abs() < 1e-12, "{v} {last}");
    assert!((v["test_top5"].as_f64().unwrap() - last["valid_top5"].as_f64().unwrap()).abs() < 1e-12, "{v} {last}");

    // PC-DARTS' recipe: batch 1024 (cut to 7 here), lr 0.5, linear decay with a 5-epoch
    // warm-up: epoch 0 runs at 0.5·(1/1)·(1/5) in a run of one epoch.
    let pc = tmp.path().join("pc");
    run(&format!("{flags} --recipe pc-darts --epochs 1 --auxiliary-weight 0 -q"), &spec, &pc);
    let c = config(&pc);
    assert_eq!((c["optimizer"]["lr"].as_f64(), c["optimizer"]["warmup_epochs"].as_u64()), (Some(0.5), Some(5)));
    assert_eq!(c["optimizer"]["schedule"], serde_json::json!({"kind": "linear"}));
    assert!((records(&pc)[0]["lr"].as_f64().unwrap() - 0.1).abs() < 1e-15);
}

#[test]
fn pc_darts_imagenet_search_runs_on_class_fractions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("imagenet");
    write_jpeg_folder(&data, 3, 8, 0, 64);
    let spec = format!("folder:{}", data.display());
    let out = tmp.path().join("search");
    let flags = "search --preset pc-darts-imagenet --image-size 64 --subset-fraction 0.5,0.25 --channels 8 \
                 --layers 3 --epochs 2 --arch-start-epoch 1 --batch-size 2 -q";
    run(flags, &spec, &out);
    let c = config(&out);
    assert_eq!(c["model"]["net"], "imagenet");
    assert_eq!(c["model"]["partial_channels"], 2);
    assert_eq!(c["data"]["subset_fraction"], serde_json::json!([0.5, 0.25]));
    let r = records(&out);
    assert_eq!(r.len(), 2);
    // 3 classes × 8 images: 4 per class train the weights (6 steps of 2), 2 per class the α.
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("genotype.json")).unwrap()).unwrap();
    assert_eq!(g, r[1]["genotype"]);
    assert!(r[1]["alpha"]["betas_normal"].is_array(), "{}", r[1]);
    assert_ne!(r[0]["alpha"]["alphas_normal"], r[1]["alpha"]["alphas_normal"], "α trained in epoch 1");
}

/// Streamed images are decoded when their batch is assembled: a broken file stops the run there
/// with an error naming it, not a panic, and the run can be resumed once it is fixed.
#[test]
fn an_unreadable_streamed_image_stops_the_run_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("imagenet");
    write_jpeg_folder(&data, 3, 4, 1, 64);
    let broken = data.join("train/n00000001/n00000001_zz.JPEG");
    std::fs::write(&broken, b"truncated before the first marker").unwrap();
    let out = tmp.path().join("run");
    let mut args: Vec<&str> = "train --genotype DARTS_V2 --net imagenet --image-size 64 --auxiliary-weight 0 \
                               --channels 4 --layers 3 --epochs 1 --batch-size 4 -q"
        .split_whitespace()
        .collect();
    let spec = format!("folder:{}", data.display());
    args.extend(["--data", &spec, "--out", out.to_str().unwrap()]);
    let o = nas(&args);
    assert_rejected(&o, &["n00000001_zz.JPEG", "not a readable image"]);
    std::fs::remove_file(&broken).unwrap();
    let o = nas(&["train", "--resume", "--out", out.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("test_top5: "), "{}", stdout(&o));
}
