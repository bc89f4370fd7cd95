//! `nas bilevel`'s picture: for every method, log₁₀‖x − x*‖ and the upper-level value F over
//! the outer iterations, one chart each (F from the first iteration on, the start left out of
//! its range).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{DrawResult, Picture, SANS};

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Each method's trace: (name, ‖x − x*‖ per iteration, F per iteration).
pub struct BilevelTraces {
    pub title: String,
    pub series: Vec<(String, Vec<f64>, Vec<f64>)>,
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    (lo <= hi).then(|| {
        let pad = if hi - lo < 1e-12 { 0.5 } else { 0.05 * (hi - lo) };
        (lo - pad, hi + pad)
    })
}

impl BilevelTraces {
    fn chart<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: &str,
        values: impl Fn(&(String, Vec<f64>, Vec<f64>)) -> Vec<f64>,
        skip_start: bool,
    ) -> DrawResult<DB> {
        let curves: Vec<(&str, Vec<f64>)> = self.series.iter().map(|s| (s.0.as_str(), values(s))).collect();
        // The range of the values drawn (with `skip_start`, from iteration 1 on: the start can
        // dwarf everything after it).
        let first = usize::from(skip_start);
        let Some((lo, hi)) = range(curves.iter().flat_map(|c| c.1.iter().skip(first).copied())) else {
            return Ok(());
        };
        let iters = curves.iter().map(|c| c.1.len()).max().unwrap_or(1).max(2) - 1;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (SANS, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..iters as f64, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("outer iteration")
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .label_style((SANS, 14))
            .axis_desc_style((SANS, 15))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()?;
        for (k, (name, ys)) in curves.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let pts: Vec<(f64, f64)> =
                ys.iter().enumerate().skip(first).filter(|(_, v)| v.is_finite()).map(|(i, &v)| (i as f64, v)).collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .label_font((SANS, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    }
}

impl Picture for BilevelTraces {
    fn size(&self) -> (u32, u32) {
        (900, 760)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let area = area.titled(&self.title, (SANS, 22))?;
        let (top, bottom) = area.split_vertically(360);
        self.chart(&top, "log10 ‖x − x*‖", |s| s.1.iter().map(|d| d.max(1e-300).log10()).collect(), false)?;
        self.chart(&bottom, "upper-level value F (from iteration 1)", |s| s.2.clone(), true)
    }
}
