//! The curves of a run from its metrics.jsonl: loss and accuracy per epoch (train and
//! validation), the dominant eigenvalue of the α-Hessian where the search computed it
//! (`hessian_eig`, R-DARTS' diagnostic), the Gumbel-softmax temperature of GDAS and SNAS
//! (`tau`), ENAS' controller (`controller_reward` with its baseline, `controller_entropy`) and
//! the accuracy of the child ENAS and random sampling select (`select_acc`), and for a search
//! the evolution of softmax(α) on every edge (drawn by `curve_plot`). Which α matrices a record
//! holds, and the names of their edges and ops, the spaces say (`SpaceKind::arch_tables`).
//!
//! A record may name the ops of each row itself (`alpha.<key>_ops`, one list per edge): the
//! edges may then have different ops, and the ops may change from one record to the next (a
//! progressive search drops some between stages); an op missing from a record leaves a gap in
//! its line. Records of a run in stages carry `stage`; `epoch` restarts in each stage, so the
//! x axis then counts records, and a dashed line marks where each stage begins.

use anyhow::{bail, Context};
use plotters::style::RGBColor;
use search_spaces::diagram::ArchTable;
use search_spaces::SpaceKind;
use serde_json::Value;

/// softmax(α) of every edge of one α matrix over the records: `weights[record][edge][op]`,
/// indexed by `op_names`; NaN where that edge has no such op in that record (or has no α).
#[derive(Debug, Clone)]
pub struct AlphaHistory {
    /// The matrix's key in a record's `alpha` (`alphas_normal`).
    pub key: &'static str,
    pub title: String,
    pub edge_names: Vec<String>,
    /// Every op of any edge, in order of first appearance (records, then edges, then columns).
    pub op_names: Vec<String>,
    pub weights: Vec<Vec<Vec<f64>>>,
}

/// A chart of per-epoch scalars of the records: (values, legend, colour) per curve.
#[derive(Debug, Clone)]
pub struct ExtraChart {
    pub title: &'static str,
    pub curves: Vec<(Vec<f64>, &'static str, RGBColor)>,
}

pub(super) const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
pub(super) const VALID_COLOR: RGBColor = RGBColor(214, 39, 40);
const HESSIAN_COLOR: RGBColor = RGBColor(148, 103, 189);

/// The colours of a chart's curves, in order.
const CURVE_COLORS: [RGBColor; 3] = [HESSIAN_COLOR, VALID_COLOR, TRAIN_COLOR];

/// Where a search enters stage `stage`: between the records drawn at `x - 0.5` and `x + 0.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMark {
    pub x: f64,
    pub stage: u64,
}

/// What a run's metrics say, ready to draw.
#[derive(Debug, Clone)]
pub struct RunCurves {
    pub title: String,
    /// The x of each record: `epoch + 1`, or the record's number (from 1) in a run in stages.
    pub epochs: Vec<f64>,
    pub train_loss: Vec<f64>,
    pub valid_loss: Vec<f64>,
    pub train_acc: Vec<f64>,
    pub valid_acc: Vec<f64>,
    /// The charts of the method's own scalars, after loss and accuracy: those the records have.
    pub extra: Vec<ExtraChart>,
    pub alphas: Vec<AlphaHistory>,
    pub stages: Vec<StageMark>,
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// One record's α rows of a table, each entry with its op's name.
type NamedRows<'a> = Vec<Vec<(&'a str, f64)>>;

/// The rows of `alpha.<key>` in record `n` (counted from 1), each logit paired with its op: the
/// names come from `alpha.<key>_ops` where the record has it, else from the table. `None` where
/// the record has no such matrix.
fn named_rows<'a>(record: &'a Value, table: &ArchTable, n: usize) -> anyhow::Result<Option<NamedRows<'a>>> {
    let key = table.key;
    let Some(alpha) = record.get("alpha") else { return Ok(None) };
    let Some(m) = alpha.get(key) else { return Ok(None) };
    let field = format!("metrics.jsonl, record {n}: `alpha.{key}`");
    let rows: Vec<Vec<f64>> = m
        .as_array()
        .with_context(|| format!("{field} is not an array of rows"))?
        .iter()
        .map(|row| {
            // serde_json writes a non-finite logit as null.
            row.as_array()?.iter().map(|v| if v.is_null() { Some(f64::NAN) } else { v.as_f64() }).collect()
        })
        .collect::<Option<_>>()
        .with_context(|| format!("{field} is not an array of rows of numbers"))?;
    if rows.is_empty() {
        bail!("{field} has no rows (one per edge)");
    }
    let ops_key = format!("{key}_ops");
    let Some(ops) = alpha.get(&ops_key) else {
        if let Some(row) = rows.iter().find(|row| row.len() != table.ops.len()) {
            bail!(
                "{field} has a row of {} entries, but {} ops ({}) without `alpha.{ops_key}`",
                row.len(),
                table.ops.len(),
                table.ops.join(", ")
            );
        }
        return Ok(Some(rows.iter().map(|row| table.ops.iter().copied().zip(row.iter().copied()).collect()).collect()));
    };
    let ops_field = format!("metrics.jsonl, record {n}: `alpha.{ops_key}`");
    let ops = ops.as_array().with_context(|| format!("{ops_field} is not an array of op lists"))?;
    if ops.len() != rows.len() {
        bail!("{ops_field} names the ops of {} edges, but `alpha.{key}` has {} rows", ops.len(), rows.len());
    }
    let mut named = Vec::with_capacity(rows.len());
    for (e, (names, row)) in ops.iter().zip(&rows).enumerate() {
        let names: Vec<&str> = names
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect())
            .with_context(|| format!("{ops_field}[{e}] is not an array of op names (strings)"))?;
        if names.len() != row.len() {
            bail!("{ops_field}[{e}] names {} ops, but row {e} of `alpha.{key}` has {} entries", names.len(), row.len());
        }
        if let Some((i, dup)) = names.iter().enumerate().find(|(i, op)| names[..*i].contains(op)) {
            bail!("{ops_field}[{e}] names `{dup}` twice (entry {i})");
        }
        named.push(names.into_iter().zip(row.iter().copied()).collect());
    }
    Ok(Some(named))
}

/// softmax(α) of `table` over the records; `None` where no record has it.
fn alpha_history(records: &[Value], table: &ArchTable) -> anyhow::Result<Option<AlphaHistory>> {
    let mut per_record = Vec::with_capacity(records.len());
    let mut edges: Option<(usize, usize)> = None;
    for (i, r) in records.iter().enumerate() {
        let rows = named_rows(r, table, i + 1)?;
        if let Some(rows) = &rows {
            match edges {
                None => edges = Some((rows.len(), i + 1)),
                Some((n, first)) if n != rows.len() => bail!(
                    "metrics.jsonl: `alpha.{}` has {n} edges in record {first} but {} in record {}",
                    table.key,
                    rows.len(),
                    i + 1
                ),
                Some(_) => {}
            }
        }
        per_record.push(rows);
    }
    let Some((edges, _)) = edges else { return Ok(None) };
    let mut op_names: Vec<&str> = Vec::new();
    for (op, _) in per_record.iter().flatten().flatten().flatten() {
        if !op_names.contains(op) {
            op_names.push(op);
        }
    }
    let weights = per_record
        .iter()
        .map(|rows| {
            let mut w = vec![vec![f64::NAN; op_names.len()]; edges];
            for (we, row) in w.iter_mut().zip(rows.iter().flatten()) {
                let logits: Vec<f64> = row.iter().map(|&(_, v)| v).collect();
                for ((op, _), p) in row.iter().zip(softmax(&logits)) {
                    if let Some(k) = op_names.iter().position(|o| o == op) {
                        we[k] = p;
                    }
                }
            }
            w
        })
        .collect();
    Ok(Some(AlphaHistory {
        key: table.key,
        title: table.title.into(),
        edge_names: (0..edges).map(table.edge_label).collect(),
        op_names: op_names.into_iter().map(String::from).collect(),
        weights,
    }))
}

/// softmax(α) of every α matrix of every space that some record has.
pub fn alpha_histories(records: &[Value]) -> anyhow::Result<Vec<AlphaHistory>> {
    let mut alphas = Vec::new();
    for table in SpaceKind::ALL.iter().flat_map(|k| k.arch_tables()) {
        alphas.extend(alpha_history(records, &table)?);
    }
    Ok(alphas)
}

/// The stage of each record (`None` without `stage`).
fn stages_of(records: &[Value]) -> anyhow::Result<Vec<Option<u64>>> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| match r.get("stage") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .with_context(|| format!("metrics.jsonl, record {}: `stage` is {v}, not a whole number", i + 1)),
        })
        .collect()
}

/// A mark before each record whose stage differs from the last stage recorded before it.
fn stage_marks(stages: &[Option<u64>], xs: &[f64]) -> Vec<StageMark> {
    let mut marks = Vec::new();
    let mut last = None;
    for (i, s) in stages.iter().enumerate() {
        let Some(s) = *s else { continue };
        if last.is_some_and(|l| l != s) {
            marks.push(StageMark { x: (xs[i - 1] + xs[i]) / 2.0, stage: s });
        }
        last = Some(s);
    }
    marks
}

impl RunCurves {
    /// Reads the metrics records of a run (search or training). Records without a field
    /// leave its curve out (or leave a gap in it).
    pub fn from_records(title: &str, records: &[Value]) -> anyhow::Result<Self> {
        if records.is_empty() {
            bail!("no epoch has been recorded yet (metrics.jsonl is empty)");
        }
        let col = |k: &str| records.iter().map(|r| r.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)).collect();
        let stages = stages_of(records)?;
        let epochs: Vec<f64> = if stages.iter().any(Option::is_some) {
            (1..=records.len()).map(|i| i as f64).collect()
        } else {
            records
                .iter()
                .enumerate()
                .map(|(i, r)| r.get("epoch").and_then(Value::as_f64).unwrap_or(i as f64) + 1.0)
                .collect()
        };
        let alphas = alpha_histories(records)?;
        Ok(Self {
            title: title.to_string(),
            stages: stage_marks(&stages, &epochs),
            epochs,
            train_loss: col("train_loss"),
            valid_loss: col("valid_loss"),
            train_acc: col("train_acc"),
            valid_acc: col("valid_acc"),
            // The scalars the search and its methods record (`nas_search::record_charts`).
            extra: nas_search::record_charts()
                .into_iter()
                .filter_map(|chart| {
                    let curves: Vec<_> = chart
                        .curves
                        .iter()
                        .zip(CURVE_COLORS.iter().cycle())
                        .map(|((f, label), color)| (col(f), *label, *color))
                        .filter(|(v, _, _)| v.iter().any(|x: &f64| x.is_finite()))
                        .collect();
                    (!curves.is_empty()).then_some(ExtraChart { title: chart.title, curves })
                })
                .collect(),
            alphas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::curve_plot::{finite_runs, TOP_H, WIDTH};
    use super::super::{ImageFormat, Picture};
    use super::*;
    use serde_json::json;

    #[test]
    fn search_records_give_softmax_histories() {
        let alpha = |x: f64| {
            json!({"alphas_normal": vec![vec![x, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]; 14],
                                    "alphas_reduce": vec![vec![0.0; 8]; 14]})
        };
        let records = vec![
            json!({"epoch": 0, "train_loss": 2.0, "valid_loss": 2.1, "train_acc": 0.1, "valid_acc": 0.12, "alpha": alpha(0.0)}),
            json!({"epoch": 1, "train_loss": 1.5, "valid_loss": 1.7, "train_acc": 0.3, "valid_acc": 0.28, "alpha": alpha(8f64.ln())}),
        ];
        let c = RunCurves::from_records("run", &records).unwrap();
        assert_eq!(c.epochs, vec![1.0, 2.0]);
        assert_eq!(c.alphas.len(), 2);
        let n = &c.alphas[0];
        assert_eq!(n.edge_names.len(), 14);
        assert_eq!((n.edge_names[0].as_str(), n.edge_names[13].as_str()), ("c_{k-2} → 0", "2 → 3"));
        assert!((n.weights[0][0][0] - 0.125).abs() < 1e-12);
        // exp(ln 8) / (8 + 7) for `none` in epoch 1.
        assert!((n.weights[1][5][0] - 8.0 / 15.0).abs() < 1e-12);
        assert!(RunCurves::from_records("x", &[]).is_err());
        let darts_ops = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"];
        assert_eq!(n.op_names[..4], darts_ops.map(String::from));
        assert_eq!(c.op_names().len(), 8);
        assert!(c.stages.is_empty());
        assert!(n.weights.iter().flatten().flatten().all(|w| w.is_finite()));

        // Without `_ops` a row must have one entry per op of the space, as before.
        let mut bad = records[1].clone();
        bad["alpha"]["alphas_reduce"][3] = json!([0.0, 1.0]);
        let err = format!("{:#}", RunCurves::from_records("x", &[records[0].clone(), bad]).unwrap_err());
        assert!(
            err.contains("record 2") && err.contains("`alpha.alphas_reduce`") && err.contains("2 entries"),
            "{err}"
        );
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn edges_may_have_their_own_ops() {
        let ln = f64::ln;
        let record = json!({"epoch": 0, "train_loss": 1.0, "alpha": {
            "alphas_normal": [[0.0, ln(3.0)], [0.0, 0.0, 0.0], [ln(2.0)]],
            "alphas_normal_ops": [["sep_conv_3x3", "skip_connect"], ["none", "noise", "sep_conv_3x3"], ["noise"]],
        }});
        let c = RunCurves::from_records("run", &[record]).unwrap();
        assert_eq!(c.epochs, vec![1.0]);
        assert_eq!(c.alphas.len(), 1, "no `alphas_reduce`, no panel for it");
        let a = &c.alphas[0];
        assert_eq!(a.title, "normal cell");
        assert_eq!(a.edge_names, ["c_{k-2} → 0", "c_{k-1} → 0", "c_{k-2} → 1"]);
        assert_eq!(a.op_names, ["sep_conv_3x3", "skip_connect", "none", "noise"]);
        assert_eq!(c.op_names(), ["sep_conv_3x3", "skip_connect", "none", "noise"]);
        let w = &a.weights[0];
        assert!(close(w[0][0], 0.25) && close(w[0][1], 0.75) && w[0][2].is_nan() && w[0][3].is_nan());
        assert!(w[1][1].is_nan() && [w[1][0], w[1][2], w[1][3]].iter().all(|&p| close(p, 1.0 / 3.0)));
        assert!(close(w[2][3], 1.0) && w[2][..3].iter().all(|p| p.is_nan()));
        for format in [ImageFormat::Svg, ImageFormat::Png] {
            super::super::render(&c, format).unwrap();
        }
    }

    #[test]
    fn stages_count_records_and_mark_where_ops_were_dropped() {
        // Three ops on each of 2 edges in stage 0, two in stage 1, one in stage 2; `epoch`
        // restarts in each stage.
        let ops = ["sep_conv_3x3", "max_pool_3x3", "skip_connect"];
        let record = |stage: u64, epoch: u64, kept: usize| {
            let names = vec![ops[..kept].to_vec(); 2];
            json!({"stage": stage, "epoch": epoch, "train_loss": 1.0 / (1.0 + epoch as f64), "alpha": {
                "arch_parameters": vec![vec![0.0; kept]; 2], "arch_parameters_ops": names}})
        };
        let records = [record(0, 0, 3), record(0, 1, 3), record(1, 0, 2), record(1, 1, 2), record(2, 0, 1)];
        let c = RunCurves::from_records("progressive", &records).unwrap();
        assert_eq!(c.epochs, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(c.stages, [StageMark { x: 2.5, stage: 1 }, StageMark { x: 4.5, stage: 2 }]);
        let a = &c.alphas[0];
        assert_eq!((a.title.as_str(), a.edge_names.len()), ("cell", 2));
        assert_eq!(a.op_names, ops);
        let skip: Vec<f64> = a.weights.iter().map(|w| w[1][2]).collect();
        assert!(skip[..2].iter().all(|&p| close(p, 1.0 / 3.0)) && skip[2..].iter().all(|p| p.is_nan()));
        let pool: Vec<f64> = a.weights.iter().map(|w| w[0][1]).collect();
        assert!(close(pool[1], 1.0 / 3.0) && close(pool[3], 0.5) && pool[4].is_nan());
        assert!(a.weights[4].iter().all(|w| close(w[0], 1.0)));
        assert_eq!(finite_runs(&c.epochs, pool.iter().copied()).len(), 1);

        let svg = String::from_utf8(super::super::render(&c, ImageFormat::Svg).unwrap()).unwrap();
        assert!(svg.contains("stage 1") && svg.contains("stage 2") && !svg.contains("stage 0"), "{svg}");
        super::super::render(&c, ImageFormat::Png).unwrap();

        // A stage mark sits before the first record of the new stage, whatever lies between.
        let marks = stage_marks(&[None, Some(0), None, Some(0), Some(3), None, Some(1)], &[1., 2., 3., 4., 5., 6., 7.]);
        assert_eq!(marks, [StageMark { x: 4.5, stage: 3 }, StageMark { x: 6.5, stage: 1 }]);
    }

    #[test]
    fn malformed_alpha_ops_are_errors_naming_the_field() {
        let record = |alpha: Value| json!({"epoch": 0, "alpha": alpha});
        let err = |records: &[Value]| format!("{:#}", RunCurves::from_records("x", records).unwrap_err());
        let cases = [
            (
                json!({"alphas_normal": [[0.0, 1.0], [0.0]], "alphas_normal_ops": [["none", "noise"], ["none", "noise"]]}),
                &["`alpha.alphas_normal_ops`[1]", "names 2 ops", "1 entries"][..],
            ),
            (
                json!({"alphas_normal": [[0.0]], "alphas_normal_ops": [[3]]}),
                &["`alpha.alphas_normal_ops`[0]", "strings"],
            ),
            (json!({"alphas_normal": [[0.0]], "alphas_normal_ops": [["none"], ["noise"]]}), &["2 edges", "1 rows"]),
            (json!({"alphas_normal": [[0.0]], "alphas_normal_ops": "none"}), &["`alpha.alphas_normal_ops`", "array"]),
            (json!({"alphas_normal": [[0.0, 0.0]], "alphas_normal_ops": [["none", "none"]]}), &["`none` twice"]),
            (json!({"alphas_reduce": [["x"]], "alphas_reduce_ops": [["none"]]}), &["`alpha.alphas_reduce`", "numbers"]),
            (json!({"alphas_reduce": []}), &["`alpha.alphas_reduce`", "no rows"]),
        ];
        for (alpha, needles) in cases {
            let e = err(&[record(alpha.clone())]);
            assert!(needles.iter().all(|n| e.contains(n)) && e.contains("record 1"), "{alpha}: {e}");
        }
        // The number of edges of a matrix may not change between records.
        let a = record(json!({"arch_parameters": [[0.0]], "arch_parameters_ops": [["none"]]}));
        let b = record(json!({"arch_parameters": [[0.0], [0.0]], "arch_parameters_ops": [["none"], ["none"]]}));
        let e = err(&[a.clone(), a, b]);
        assert!(e.contains("`alpha.arch_parameters` has 1 edges in record 1 but 2 in record 3"), "{e}");
        let e = err(&[json!({"epoch": 0, "stage": "one"})]);
        assert!(e.contains("`stage`") && e.contains("record 1"), "{e}");
    }

    #[test]
    fn training_records_have_no_alpha_panels() {
        let records =
            vec![json!({"epoch": 0, "train_loss": 2.0, "valid_loss": 2.1, "train_acc": 0.1, "valid_acc": 0.12})];
        let c = RunCurves::from_records("train", &records).unwrap();
        assert!(c.alphas.is_empty());
        assert_eq!(c.size(), (WIDTH, TOP_H));
    }

    #[test]
    fn hessian_eigenvalues_get_their_own_chart() {
        let record = |e: u64, eig: Option<f64>| {
            let mut r = json!({"epoch": e, "train_loss": 2.0, "valid_loss": 2.1, "train_acc": 0.1, "valid_acc": 0.12});
            if let Some(v) = eig {
                r["hessian_eig"] = json!(v);
            }
            r
        };
        let records = [record(0, Some(0.5)), record(1, None), record(2, Some(0.9))];
        let c = RunCurves::from_records("search", &records).unwrap();
        let eig = &c.extra[0].curves[0].0;
        assert_eq!(c.extra[0].title, "dominant eigenvalue of ∇²_α L_val");
        assert_eq!(eig[0], 0.5);
        assert!(eig[1].is_nan());
        assert_eq!(eig[2], 0.9);
        // The third chart draws: the picture of a run with eigenvalues differs from one without.
        let without = RunCurves::from_records("search", &[record(0, None), record(1, None), record(2, None)]).unwrap();
        let a = super::super::render(&c, ImageFormat::Svg).unwrap();
        let b = super::super::render(&without, ImageFormat::Svg).unwrap();
        let text = String::from_utf8(a).unwrap();
        assert!(text.contains("dominant eigenvalue"), "no eigenvalue chart");
        assert!(!String::from_utf8(b).unwrap().contains("dominant eigenvalue"));
    }

    #[test]
    fn sampling_methods_chart_their_temperature_and_controller() {
        let records: Vec<Value> = (0..3)
            .map(|e| {
                json!({"epoch": e, "train_loss": 2.0, "valid_loss": 2.1, "train_acc": 0.1, "valid_acc": 0.12,
                       "tau": 10.0 - e as f64, "controller_reward": 0.2, "controller_baseline": 0.1,
                       "controller_entropy": 30.0, "select_acc": 0.3})
            })
            .collect();
        let c = RunCurves::from_records("search", &records).unwrap();
        let titles: Vec<&str> = c.extra.iter().map(|x| x.title).collect();
        assert_eq!(
            titles,
            ["Gumbel-softmax temperature τ", "controller reward", "controller entropy · selected child"]
        );
        assert_eq!(c.extra[0].curves[0].0, [10.0, 9.0, 8.0]);
        assert_eq!(c.extra[1].curves.len(), 2);
        let text = String::from_utf8(super::super::render(&c, ImageFormat::Svg).unwrap()).unwrap();
        for t in ["temperature", "controller reward", "baseline", "selected acc"] {
            assert!(text.contains(t), "no `{t}` in the picture");
        }
    }
}
