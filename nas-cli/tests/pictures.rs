//! Pictures through the binary: `nas show --format dot|svg|png` draws the cells of a genotype,
//! `nas plot RUN` the curves of a search or training run. The PNGs are decoded and checked for
//! their size and for the colours the pictures use (node fills, op colours, curve colours).
//! `--tensorboard DIR` writes the same curves and cells as TensorBoard events while a run runs.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::tfevents::{self, Kind, What};
use common::{assert_rejected, nas, stderr, stdout};
use serde_json::Value;

fn png(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

fn has_colour(img: &image::RgbImage, rgb: [u8; 3]) -> bool {
    img.pixels().any(|p| p.0 == rgb)
}

/// The fills of c_{k-2}/c_{k-1}, of the intermediate nodes and of c_{k}, and the op colours of
/// sep_conv_3x3 (blue) and max_pool_3x3 (brown).
const INPUT: [u8; 3] = [180, 238, 180];
const INNER: [u8; 3] = [173, 216, 230];
const OUTPUT: [u8; 3] = [238, 232, 170];
const SEP3: [u8; 3] = [31, 119, 180];
const MAXPOOL: [u8; 3] = [140, 86, 75];

#[test]
fn show_draws_both_cells_as_png_svg_and_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("v2.png");
    let o = nas(&["show", "DARTS_V2", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = png(&file);
    assert_eq!(img.dimensions(), (1000, 760), "two cells, one above the other");
    for c in [INPUT, INNER, OUTPUT, SEP3, MAXPOOL] {
        assert!(has_colour(&img, c), "no pixel of colour {c:?}");
    }
    // The reduction cell (lower half) has no sep_conv_3x3 edge; the normal cell no max pool.
    let (top, bottom) =
        (image::imageops::crop_imm(&img, 0, 0, 1000, 380), image::imageops::crop_imm(&img, 0, 380, 1000, 380));
    assert!(has_colour(&top.to_image(), SEP3) && !has_colour(&top.to_image(), MAXPOOL));
    assert!(has_colour(&bottom.to_image(), MAXPOOL) && !has_colour(&bottom.to_image(), SEP3));

    let o = nas(&["show", "PC_DARTS", "--format", "svg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = stdout(&o);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    for text in ["normal cell", "reduction cell", "c_{k-2}", "c_{k}", "sep_conv_5x5", "dil_conv_3x3", "avg_pool_3x3"] {
        assert!(svg.contains(text), "svg lacks {text}");
    }

    let o = nas(&["show", "DARTS_V2", "--format", "dot"]);
    let dot = stdout(&o);
    assert!(dot.starts_with("digraph genotype {") && dot.contains("rankdir=LR"), "{dot}");
    assert_eq!(dot.matches("label=\"sep_conv_3x3\"").count(), 5, "{dot}");
    assert_eq!(dot.matches("[color=gray]").count(), 8, "4 concatenated nodes per cell: {dot}");

    let nb = tmp.path().join("nb.svg");
    let arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|";
    let o = nas(&["show", arch, "--out", nb.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&nb).unwrap();
    assert!(svg.contains("NAS-Bench-201 cell") && svg.contains("nor_conv_1x1") && !svg.contains(">none<"), "{svg}");
}

#[test]
fn plot_draws_search_and_training_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("search");
    let flags = "search --preset quick --epochs 3 --subset 64 --batch-size 16 --channels 4 --layers 2 -q";
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--out", run.to_str().unwrap()]);
    assert!(nas(&args).status.success());

    let o = nas(&["plot", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("plot.png"), "{}", stdout(&o));
    let img = png(&run.join("plot.png"));
    // Loss/accuracy row, then 2 rows of 7 α panels per cell type, then the op legend.
    assert_eq!(img.dimensions(), (1400, 420 + 2 * (36 + 2 * 190) + 40));
    for c in [[31, 119, 180], [214, 39, 40], SEP3, MAXPOOL, [127, 127, 127]] {
        assert!(has_colour(&img, c), "no pixel of colour {c:?}");
    }
    let svg = tmp.path().join("curves.svg");
    let o = nas(&["plot", run.to_str().unwrap(), "--out", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("softmax(α), normal cell") && text.contains("c_{k-2} → 0") && text.contains("2 → 3"));

    // A training run: loss and accuracy only.
    let train = tmp.path().join("train");
    let arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|";
    let flags = "train --channels 4 --layers 1 --epochs 2 --subset 32 --batch-size 16 -q";
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--genotype", arch, "--out", train.to_str().unwrap()]);
    assert!(nas(&args).status.success());
    let o = nas(&["plot", train.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(png(&train.join("plot.png")).dimensions(), (1400, 420));

    assert_rejected(&nas(&["plot", tmp.path().to_str().unwrap()]), &["not a run directory"]);
    assert_rejected(
        &nas(&["plot", run.to_str().unwrap(), "--out", tmp.path().join("p.jpg").to_str().unwrap()]),
        &["p.jpg", "picture format"],
    );
}

/// Every numeric field of a metrics record but `epoch`, nested keys joined by `/`.
fn numeric_fields(v: &Value, tag: &str, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) if tag != "epoch" => out.push((tag.to_string(), n.as_f64().unwrap())),
        Value::Object(fields) => {
            for (k, v) in fields {
                numeric_fields(v, &if tag.is_empty() { k.clone() } else { format!("{tag}/{k}") }, out);
            }
        }
        _ => {}
    }
}

/// The DARTS ops in the order of a row of `alpha.alphas_normal`.
const DARTS_OPS: [&str; 8] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
];

/// Checks the one event file in `tb` against the metrics.jsonl of `run`: per epoch, its
/// numeric fields (and nothing else but α), and for a search softmax(α) of all 14 edges of
/// both cells and a PNG of the cells.
fn check_events(run: &Path, tb: &Path, search: bool) {
    let files = tfevents::read_dir(tb);
    assert_eq!(files.len(), 1, "{files:?}");
    let (path, events) = &files[0];
    assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())), "{}", path.display());
    let records: Vec<Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    let steps: Vec<i64> = events[1..].iter().map(|e| e.step).collect();
    assert_eq!(steps, [0, 1], "one summary per epoch, at its epoch");
    let values = tfevents::values(events);
    for r in &records {
        let epoch = r["epoch"].as_i64().unwrap();
        let at: Vec<&tfevents::Value> = values.iter().filter(|(s, _)| *s == epoch).map(|(_, v)| v).collect();
        let scalars: HashMap<&str, f32> = at
            .iter()
            .filter_map(|v| match v.kind {
                Kind::Simple(x) => Some((v.tag.as_str(), x)),
                _ => None,
            })
            .collect();
        let mut fields = Vec::new();
        numeric_fields(r, "", &mut fields);
        assert!(fields.iter().any(|(t, _)| t == "train_loss") && fields.iter().any(|(t, _)| t == "lr"));
        for (tag, v) in &fields {
            assert_eq!(scalars.get(tag.as_str()), Some(&(*v as f32)), "epoch {epoch}: {tag}");
        }
        let alpha: Vec<(&str, f32)> =
            scalars.iter().filter(|(t, _)| t.starts_with("alpha/")).map(|(t, v)| (*t, *v)).collect();
        assert_eq!(scalars.len(), fields.len() + alpha.len(), "epoch {epoch}: {scalars:?}");
        let images: Vec<&&tfevents::Value> = at.iter().filter(|v| matches!(v.kind, Kind::Image { .. })).collect();
        if !search {
            assert!(alpha.is_empty() && images.is_empty(), "epoch {epoch}");
            continue;
        }
        assert_eq!(alpha.len(), 2 * 14 * 8);
        for (cell, key) in [("normal", "alphas_normal"), ("reduce", "alphas_reduce")] {
            for e in 0..14 {
                let logits: Vec<f64> =
                    r["alpha"][key][e].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                let z: f64 = logits.iter().map(|l| l.exp()).sum();
                let mut sum = 0.0;
                for (op, l) in DARTS_OPS.iter().zip(&logits) {
                    let w = scalars[format!("alpha/{cell}/edge_{e}/{op}").as_str()];
                    assert!((f64::from(w) - l.exp() / z).abs() < 1e-6, "epoch {epoch} {cell} edge {e} {op}");
                    sum += f64::from(w);
                }
                assert!((sum - 1.0).abs() < 1e-5, "epoch {epoch} {cell} edge {e}: {sum}");
            }
        }
        assert_eq!(images.len(), 1, "epoch {epoch}");
        let Kind::Image { height, width, colorspace, encoded } = &images[0].kind else { unreachable!() };
        assert_eq!((images[0].tag.as_str(), *colorspace), ("genotype", 3));
        assert!(encoded.starts_with(b"\x89PNG\r\n\x1a\n"), "epoch {epoch}: not a PNG");
        let img = image::load_from_memory(encoded).unwrap();
        assert_eq!((img.width() as i32, img.height() as i32), (*width, *height));
        assert_eq!(img.height(), 2 * 380, "both cells");
    }
}

#[test]
fn tensorboard_events_follow_the_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, tb) = (tmp.path().join("search"), tmp.path().join("tb/search"));
    let flags = "search --preset quick --epochs 2 --subset 64 --batch-size 16 --channels 4 --layers 2 -q";
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--out", run.to_str().unwrap(), "--tensorboard", tb.to_str().unwrap()]);
    let o = nas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    check_events(&run, &tb, true);

    let (train, tb) = (tmp.path().join("train"), tmp.path().join("tb/train"));
    let arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|";
    let flags = "train --channels 4 --layers 1 --epochs 2 --subset 32 --batch-size 16 -q";
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--genotype", arch, "--out", train.to_str().unwrap(), "--tensorboard", tb.to_str().unwrap()]);
    let o = nas(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    check_events(&train, &tb, false);

    // A DIR that cannot be made is refused before the run directory is.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let never = tmp.path().join("never");
    let bad = file.join("tb");
    let mut args: Vec<&str> = flags.split_whitespace().collect();
    args.extend(["--genotype", arch, "--out", never.to_str().unwrap(), "--tensorboard", bad.to_str().unwrap()]);
    assert_rejected(&nas(&args), &["--tensorboard", "cannot create the directory"]);
    assert!(!never.exists());
}

/// `nas bilevel`: one JSON line per hypergradient method with its final distance to the
/// solution, and the picture of every method's trace; on the non-singleton problem first order
/// stays at its start and the others stop short of x* = e, as the singleton assumption makes
/// them (the fixed points themselves: nas-core/tests/bilevel_toys.rs).
#[test]
fn bilevel_runs_every_hypergradient_method_on_a_toy_problem_and_draws_them() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("toy.png");
    let o =
        nas(&["bilevel", "--problem", "non-singleton", "--dim", "4", "--iters", "60", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let methods: Vec<&str> = lines.iter().map(|l| l["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        ["first-order", "second-order", "unrolled", "bda", "iaptt-gm", "fad", "implicit", "implicit-cg"]
    );
    // ‖x − x*‖ = ‖e‖ = 2 at the start (n = 4); first order never moves x.
    assert_eq!(lines[0]["distance"], 2.0);
    for l in &lines[1..] {
        let d = l["distance"].as_f64().unwrap();
        assert!(d > 1.0 && d < 2.0, "{l}");
    }
    assert_eq!(png(&file).dimensions(), (900, 760));
    assert!(has_colour(&png(&file), SEP3), "the first method's curve colour");

    assert_rejected(&nas(&["bilevel", "--problem", "rosenbrock"]), &["--problem", "rosenbrock", "non-convex"]);
    assert_rejected(&nas(&["bilevel", "--methods", "gdas"]), &["--methods", "`gdas`", "implicit-cg"]);

    // BDA's aggregated steps move y₂, which no singleton method does: with enough of them it
    // gets closer to x* = e than the exact singleton gradient's e/2 (distance 1 here).
    let o = nas(&["bilevel", "--dim", "4", "--methods", "unrolled,bda", "--unroll-steps", "30"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (unrolled, bda) = (lines[0]["distance"].as_f64().unwrap(), lines[1]["distance"].as_f64().unwrap());
    assert!((unrolled - 1.0).abs() < 0.05 && bda < 0.5, "unrolled {unrolled}, bda {bda}");
}
