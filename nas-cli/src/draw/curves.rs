//! The curves of a run from its metrics.jsonl: loss and accuracy per epoch (train and
//! validation), and for a search the evolution of softmax(α) on every edge, one small panel
//! per edge with one line per op (the colours of the cell pictures). Which α matrices a record
//! holds, and the names of their edges and ops, the spaces say (`SpaceKind::arch_tables`).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use search_spaces::diagram::ArchTable;
use search_spaces::SpaceKind;
use serde_json::Value;

use super::{op_color, DrawResult, Picture, SANS};

/// softmax(α) of every edge of one α matrix over the epochs: `weights[epoch][edge][op]`.
#[derive(Debug, Clone)]
pub struct AlphaHistory {
    pub title: String,
    pub edge_names: Vec<String>,
    pub op_names: Vec<&'static str>,
    pub weights: Vec<Vec<Vec<f64>>>,
}

/// What a run's metrics say, ready to draw.
#[derive(Debug, Clone)]
pub struct RunCurves {
    pub title: String,
    pub epochs: Vec<f64>,
    pub train_loss: Vec<f64>,
    pub valid_loss: Vec<f64>,
    pub train_acc: Vec<f64>,
    pub valid_acc: Vec<f64>,
    pub alphas: Vec<AlphaHistory>,
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn matrix(v: &Value) -> Option<Vec<Vec<f64>>> {
    v.as_array()?.iter().map(|r| r.as_array()?.iter().map(Value::as_f64).collect()).collect()
}

impl RunCurves {
    /// Reads the metrics records of a run (search or training). Records without a field
    /// leave its curve out.
    pub fn from_records(title: &str, records: &[Value]) -> anyhow::Result<Self> {
        if records.is_empty() {
            anyhow::bail!("no epoch has been recorded yet (metrics.jsonl is empty)");
        }
        let col = |k: &str| records.iter().map(|r| r.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)).collect();
        let epochs = records
            .iter()
            .enumerate()
            .map(|(i, r)| r.get("epoch").and_then(Value::as_f64).unwrap_or(i as f64) + 1.0)
            .collect();
        let mut alphas = Vec::new();
        for ArchTable { key, title, ops, edge_label } in SpaceKind::ALL.iter().flat_map(|k| k.arch_tables()) {
            let hist: Option<Vec<Vec<Vec<f64>>>> = records
                .iter()
                .map(|r| matrix(r.get("alpha")?.get(key)?).map(|m| m.iter().map(|row| softmax(row)).collect()))
                .collect();
            let Some(weights) = hist else { continue };
            let edges = weights[0].len();
            if weights.iter().any(|w| w.len() != edges || w.iter().any(|row| row.len() != ops.len())) {
                anyhow::bail!(
                    "metrics.jsonl: `alpha.{key}` changes shape between epochs or has the wrong number of ops"
                );
            }
            let edge_names = (0..edges).map(edge_label).collect();
            alphas.push(AlphaHistory { title: title.into(), edge_names, op_names: ops, weights });
        }
        Ok(Self {
            title: title.to_string(),
            epochs,
            train_loss: col("train_loss"),
            valid_loss: col("valid_loss"),
            train_acc: col("train_acc"),
            valid_acc: col("valid_acc"),
            alphas,
        })
    }
}

const WIDTH: u32 = 1400;
const TOP_H: u32 = 420;
const PANEL_COLS: usize = 7;
const PANEL_H: u32 = 190;
const GROUP_TITLE_H: u32 = 36;
const LEGEND_H: u32 = 40;

impl AlphaHistory {
    fn rows(&self) -> usize {
        self.edge_names.len().div_ceil(PANEL_COLS)
    }

    fn height(&self) -> u32 {
        GROUP_TITLE_H + self.rows() as u32 * PANEL_H
    }
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return None;
    }
    let pad = if hi - lo < 1e-12 { 0.5 } else { 0.05 * (hi - lo) };
    Some((lo - pad, hi + pad))
}

fn x_range(epochs: &[f64]) -> std::ops::Range<f64> {
    let first = epochs.first().copied().unwrap_or(1.0);
    let last = epochs.last().copied().unwrap_or(1.0);
    if last > first {
        first..last
    } else {
        first - 0.5..last + 0.5
    }
}

/// Epoch tick labels: whole numbers only.
fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

/// As many ticks as whole epochs, at most `max`.
fn epoch_ticks(epochs: &[f64], max: usize) -> usize {
    let r = x_range(epochs);
    ((r.end - r.start).round() as usize + 1).clamp(2, max)
}

/// One chart with a train and a validation curve.
fn pair_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    epochs: &[f64],
    (train, valid): (&[f64], &[f64]),
    valid_name: &str,
    legend_at: SeriesLabelPosition,
) -> DrawResult<DB> {
    let Some((lo, hi)) = finite_range(train.iter().chain(valid).copied()) else { return Ok(()) };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (SANS, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range(epochs), lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epoch_ticks(epochs, 12))
        .x_label_formatter(&epoch_label)
        .label_style((SANS, 14))
        .axis_desc_style((SANS, 15))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()?;
    for (values, name, color) in [(train, "train", RGBColor(31, 119, 180)), (valid, valid_name, RGBColor(214, 39, 40))]
    {
        let pts: Vec<(f64, f64)> =
            epochs.iter().copied().zip(values.iter().copied()).filter(|(_, v)| v.is_finite()).collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .label_font((SANS, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend_at)
        .draw()?;
    Ok(())
}

fn alpha_group<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, a: &AlphaHistory, epochs: &[f64]) -> DrawResult<DB> {
    let (title, panels) = area.split_vertically(GROUP_TITLE_H);
    title.draw(&Text::new(
        format!("softmax(α), {}", a.title),
        (12, 8),
        TextStyle::from((SANS, 20).into_font()).pos(Pos::new(HPos::Left, VPos::Top)),
    ))?;
    let cells = panels.split_evenly((a.rows(), PANEL_COLS));
    for (e, cell) in cells.iter().enumerate().take(a.edge_names.len()) {
        // Each edge on its own scale: early in a search the weights differ by little.
        let (lo, hi) = finite_range(a.weights.iter().flat_map(|w| w[e].iter().copied())).unwrap_or((0.0, 1.0));
        let mut chart = ChartBuilder::on(cell)
            .caption(&a.edge_names[e], (SANS, 15))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(46)
            .build_cartesian_2d(x_range(epochs), lo.max(0.0)..hi)?;
        chart
            .configure_mesh()
            .label_style((SANS, 11))
            .x_labels(epoch_ticks(epochs, 4))
            .x_label_formatter(&epoch_label)
            .y_labels(4)
            .y_label_formatter(&|y| format!("{y:.3}"))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;
        for (k, op) in a.op_names.iter().enumerate() {
            let pts: Vec<(f64, f64)> = epochs.iter().copied().zip(a.weights.iter().map(|w| w[e][k])).collect();
            chart.draw_series(LineSeries::new(pts, op_color(op).stroke_width(2)))?;
        }
    }
    Ok(())
}

/// One row naming the op colours.
fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, ops: &[&str]) -> DrawResult<DB> {
    let font = TextStyle::from((SANS, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut x = 16;
    let y = LEGEND_H as i32 / 2;
    for op in ops {
        area.draw(&PathElement::new(vec![(x, y), (x + 26, y)], op_color(op).stroke_width(3)))?;
        area.draw(&Text::new(op.to_string(), (x + 32, y), font.clone()))?;
        let (tw, _) = area.estimate_text_size(op, &font)?;
        x += 32 + tw as i32 + 26;
    }
    Ok(())
}

impl Picture for RunCurves {
    fn size(&self) -> (u32, u32) {
        let alphas: u32 = self.alphas.iter().map(AlphaHistory::height).sum();
        let legend = if self.alphas.is_empty() { 0 } else { LEGEND_H };
        (WIDTH, TOP_H + alphas + legend)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let (top, mut rest) = area.split_vertically(TOP_H);
        let (title, charts) = top.split_vertically(36);
        title.draw(&Text::new(
            self.title.clone(),
            (WIDTH as i32 / 2, 8),
            TextStyle::from((SANS, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        let halves = charts.split_evenly((1, 2));
        let valid = if self.alphas.is_empty() { "test" } else { "valid" };
        let loss = (&self.train_loss[..], &self.valid_loss[..]);
        pair_chart(&halves[0], "loss", &self.epochs, loss, valid, SeriesLabelPosition::UpperRight)?;
        let acc = (&self.train_acc[..], &self.valid_acc[..]);
        pair_chart(&halves[1], "accuracy", &self.epochs, acc, valid, SeriesLabelPosition::LowerRight)?;
        for a in &self.alphas {
            let (group, below) = rest.split_vertically(a.height());
            alpha_group(&group, a, &self.epochs)?;
            rest = below;
        }
        if let Some(a) = self.alphas.first() {
            legend(&rest, &a.op_names)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
    }

    #[test]
    fn training_records_have_no_alpha_panels() {
        let records =
            vec![json!({"epoch": 0, "train_loss": 2.0, "valid_loss": 2.1, "train_acc": 0.1, "valid_acc": 0.12})];
        let c = RunCurves::from_records("train", &records).unwrap();
        assert!(c.alphas.is_empty());
        assert_eq!(c.size(), (WIDTH, TOP_H));
    }
}
