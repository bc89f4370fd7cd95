//! Drawing a run's curves (`curves::RunCurves`): the loss and accuracy charts, the extra
//! charts of the record's diagnostics, one group of small panels per α matrix (one panel per
//! edge, one line per op in the cell pictures' colours) and the ops' legend, with a dashed
//! line where each stage of a progressive search begins.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::curves::{AlphaHistory, RunCurves, StageMark, TRAIN_COLOR, VALID_COLOR};
use super::{op_color, DrawResult, Picture, SANS};

impl RunCurves {
    /// Every op of any α matrix, in order of first appearance: the legend.
    pub(super) fn op_names(&self) -> Vec<&str> {
        let mut ops: Vec<&str> = Vec::new();
        for op in self.alphas.iter().flat_map(|a| &a.op_names) {
            if !ops.contains(&op.as_str()) {
                ops.push(op);
            }
        }
        ops
    }
}

pub(super) const WIDTH: u32 = 1400;
pub(super) const TOP_H: u32 = 420;
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

/// The points of a curve in stretches of finite values: a missing value is a gap.
pub(super) fn finite_runs(xs: &[f64], ys: impl Iterator<Item = f64>) -> Vec<Vec<(f64, f64)>> {
    let (mut runs, mut run) = (Vec::new(), Vec::new());
    for (x, y) in xs.iter().copied().zip(ys) {
        if y.is_finite() {
            run.push((x, y));
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

const STAGE_COLOR: RGBColor = RGBColor(90, 90, 90);

/// A dashed vertical line where each stage begins, labelled "stage N" at the top where the
/// label fits before the next mark (or the chart's right edge).
fn draw_stage_marks<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    marks: &[StageMark],
    (lo, hi): (f64, f64),
    font_size: u32,
) -> DrawResult<DB> {
    let font = TextStyle::from((SANS, font_size).into_font()).color(&STAGE_COLOR).pos(Pos::new(HPos::Left, VPos::Top));
    let right = chart.plotting_area().get_pixel_range().0.end;
    for (i, m) in marks.iter().enumerate() {
        let line = [(m.x, lo), (m.x, hi)];
        chart.draw_series(DashedLineSeries::new(line, 5, 4, STAGE_COLOR.stroke_width(1)))?;
        let label = format!("stage {}", m.stage);
        let (w, _) = chart.plotting_area().estimate_text_size(&label, &font)?;
        let x = chart.backend_coord(&(m.x, hi)).0;
        let end = marks.get(i + 1).map_or(right, |n| chart.backend_coord(&(n.x, hi)).0);
        if x + 3 + w as i32 + 3 <= end {
            let text = EmptyElement::at((m.x, hi)) + Text::new(label, (3, 2), font.clone());
            chart.draw_series(std::iter::once(text))?;
        }
    }
    Ok(())
}

/// One chart of curves (values, name, colour); a curve through its finite values.
fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    epochs: &[f64],
    series: &[(&[f64], &str, RGBColor)],
    legend_at: SeriesLabelPosition,
    stages: &[StageMark],
) -> DrawResult<DB> {
    let Some((lo, hi)) = finite_range(series.iter().flat_map(|s| s.0.iter().copied())) else { return Ok(()) };
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
    draw_stage_marks(&mut chart, stages, (lo, hi), 13)?;
    for &(values, name, color) in series {
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

fn alpha_group<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    a: &AlphaHistory,
    epochs: &[f64],
    stages: &[StageMark],
) -> DrawResult<DB> {
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
        let (lo, hi) = (lo.max(0.0), hi);
        let mut chart = ChartBuilder::on(cell)
            .caption(&a.edge_names[e], (SANS, 15))
            .margin(6)
            .x_label_area_size(22)
            .y_label_area_size(46)
            .build_cartesian_2d(x_range(epochs), lo..hi)?;
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
        draw_stage_marks(&mut chart, stages, (lo, hi), 11)?;
        for (k, op) in a.op_names.iter().enumerate() {
            let color = op_color(op);
            for run in finite_runs(epochs, a.weights.iter().map(|w| w[e][k])) {
                if let [p] = run[..] {
                    // An op present in one record alone: a dot, since a line needs two.
                    chart.draw_series(std::iter::once(Circle::new(p, 2, color.filled())))?;
                } else {
                    chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
                }
            }
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
        let parts = charts.split_evenly((1, 2 + self.extra.len()));
        let valid = if self.alphas.is_empty() { "test" } else { "valid" };
        let (e, st) = (&self.epochs[..], &self.stages[..]);
        let loss = [(&self.train_loss[..], "train", TRAIN_COLOR), (&self.valid_loss[..], valid, VALID_COLOR)];
        chart(&parts[0], "loss", e, &loss, SeriesLabelPosition::UpperRight, st)?;
        let acc = [(&self.train_acc[..], "train", TRAIN_COLOR), (&self.valid_acc[..], valid, VALID_COLOR)];
        chart(&parts[1], "accuracy", e, &acc, SeriesLabelPosition::LowerRight, st)?;
        for (x, area) in self.extra.iter().zip(&parts[2..]) {
            let curves: Vec<(&[f64], &str, RGBColor)> = x.curves.iter().map(|(v, l, c)| (&v[..], *l, *c)).collect();
            chart(area, x.title, e, &curves, SeriesLabelPosition::UpperLeft, st)?;
        }
        for a in &self.alphas {
            let (group, below) = rest.split_vertically(a.height());
            alpha_group(&group, a, &self.epochs, &self.stages)?;
            rest = below;
        }
        if !self.alphas.is_empty() {
            legend(&rest, &self.op_names())?;
        }
        Ok(())
    }
}
