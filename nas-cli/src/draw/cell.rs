//! A genotype's cells, as its space describes them (`Genotype::cell_graphs`), drawn: as
//! Graphviz DOT text (what DARTS' `visualize.py` writes) and as a picture. The picture lays
//! nodes out left to right by depth (longest path from the inputs); edges that skip a column
//! bend around the nodes between.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use search_spaces::diagram::{CellGraph, NodeKind};

use super::{op_color, DrawResult, Picture, SANS};

fn fill_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Input => "darkseagreen2",
        NodeKind::Inner => "lightblue",
        NodeKind::Output => "palegoldenrod",
    }
}

fn fill_rgb(kind: NodeKind) -> RGBColor {
    match kind {
        NodeKind::Input => RGBColor(180, 238, 180),
        NodeKind::Inner => RGBColor(173, 216, 230),
        NodeKind::Output => RGBColor(238, 232, 170),
    }
}

/// Graphviz DOT text of all cells, one cluster each, laid out left to right.
pub fn dot(graphs: &[CellGraph]) -> String {
    let mut s = String::from("digraph genotype {\n  rankdir=LR;\n  node [shape=box, style=\"filled,rounded\", fontname=\"DejaVu Sans\"];\n  edge [fontname=\"DejaVu Sans\", fontsize=11];\n");
    for g in graphs {
        s.push_str(&format!("  subgraph cluster_{} {{\n    label=\"{}\";\n", g.name, g.title));
        for (i, n) in g.nodes.iter().enumerate() {
            s.push_str(&format!("    {}_{i} [label=\"{}\", fillcolor={}];\n", g.name, n.label, fill_name(n.kind)));
        }
        for e in &g.edges {
            let attrs = match &e.op {
                Some(op) => {
                    let c = op_color(op);
                    format!(" [label=\"{op}\", color=\"#{:02x}{:02x}{:02x}\"]", c.0, c.1, c.2)
                }
                None => " [color=gray]".to_string(),
            };
            s.push_str(&format!("    {}_{} -> {}_{}{attrs};\n", g.name, e.from, g.name, e.to));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

/// Depth of every node: inputs 0, every other node one more than its deepest predecessor.
fn depths(g: &CellGraph) -> Vec<usize> {
    let mut d = vec![0usize; g.nodes.len()];
    // Edges only point forward in node order, so one pass in that order settles every depth.
    for (i, n) in g.nodes.iter().enumerate() {
        if n.kind == NodeKind::Input {
            continue;
        }
        d[i] = g.edges.iter().filter(|e| e.to == i).map(|e| d[e.from] + 1).max().unwrap_or(1);
    }
    d
}

const CELL_W: u32 = 1000;
const CELL_H: u32 = 380;
const BOX_W: i32 = 84;
const BOX_H: i32 = 36;
const TITLE_H: i32 = 34;

/// All cells of a genotype, one band each, top to bottom.
pub struct CellPicture {
    pub graphs: Vec<CellGraph>,
}

/// Horizontal room per column, so that a label fits between two boxes.
const MIN_COL_W: u32 = 230;

impl Picture for CellPicture {
    fn size(&self) -> (u32, u32) {
        let deepest = self.graphs.iter().flat_map(depths).max().unwrap_or(1) as u32;
        let w = CELL_W.max(2 * (20 + BOX_W as u32 / 2) + deepest * MIN_COL_W);
        (w, CELL_H * self.graphs.len().max(1) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let bands = area.split_evenly((self.graphs.len().max(1), 1));
        for (g, band) in self.graphs.iter().zip(&bands) {
            draw_cell(g, band)?;
        }
        Ok(())
    }
}

type Pt = (f64, f64);

fn bezier(p0: Pt, p1: Pt, p2: Pt, t: f64) -> Pt {
    let u = 1.0 - t;
    (u * u * p0.0 + 2.0 * u * t * p1.0 + t * t * p2.0, u * u * p0.1 + 2.0 * u * t * p1.1 + t * t * p2.1)
}

fn overlaps(a: (Pt, Pt), b: (Pt, Pt)) -> bool {
    a.0 .0 < b.1 .0 && b.0 .0 < a.1 .0 && a.0 .1 < b.1 .1 && b.0 .1 < a.1 .1
}

fn draw_cell<DB: DrawingBackend>(g: &CellGraph, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    area.draw(&Text::new(
        g.title.clone(),
        (w / 2, 8),
        TextStyle::from((SANS, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    let depth = depths(g);
    let max_depth = depth.iter().copied().max().unwrap_or(0).max(1);
    let margin = 20 + BOX_W / 2;
    let col_w = f64::from(w - 2 * margin) / max_depth as f64;
    // Node centres: columns by depth, nodes of a column spread evenly around the middle and
    // ordered by the mean height of their predecessors (fewer crossing edges).
    let mut centre = vec![(0.0, 0.0); g.nodes.len()];
    for d in 0..=max_depth {
        let mut col: Vec<usize> = (0..g.nodes.len()).filter(|&i| depth[i] == d).collect();
        let pred_y = |i: usize| {
            let ys: Vec<f64> = g.edges.iter().filter(|e| e.to == i).map(|e| centre[e.from].1).collect();
            if ys.is_empty() {
                0.0
            } else {
                ys.iter().sum::<f64>() / ys.len() as f64
            }
        };
        col.sort_by(|&a, &b| pred_y(a).total_cmp(&pred_y(b)).then(a.cmp(&b)));
        let n = col.len() as f64;
        for (k, &i) in col.iter().enumerate() {
            let y = f64::from(TITLE_H) + f64::from(h - TITLE_H) * (k as f64 + 0.5) / n;
            centre[i] = (f64::from(margin) + col_w * d as f64, y);
        }
    }

    // Edges: a quadratic curve from the right side of the source to the left side of the
    // target, bent (alternately up and down) when it skips columns.
    let label_font = TextStyle::from((SANS, 14).into_font());
    let mut label_boxes: Vec<(Pt, Pt)> = Vec::new();
    let mut labels = Vec::new();
    let mut bend_sign = 1.0;
    for e in &g.edges {
        let (a, b) = (centre[e.from], centre[e.to]);
        let p0 = (a.0 + f64::from(BOX_W / 2), a.1);
        let p2 = (b.0 - f64::from(BOX_W / 2), b.1);
        let span = depth[e.to].saturating_sub(depth[e.from]);
        let straight_clear = span <= 1
            || !(0..g.nodes.len()).any(|i| {
                depth[i] > depth[e.from] && depth[i] < depth[e.to] && {
                    let t = (centre[i].0 - p0.0) / (p2.0 - p0.0);
                    ((p0.1 + t * (p2.1 - p0.1)) - centre[i].1).abs() < f64::from(BOX_H)
                }
            });
        let mid = ((p0.0 + p2.0) / 2.0, (p0.1 + p2.1) / 2.0);
        let p1 = if straight_clear {
            mid
        } else {
            bend_sign = -bend_sign;
            (mid.0, mid.1 + bend_sign * (45.0 + 30.0 * span as f64))
        };
        let color = match &e.op {
            Some(op) => op_color(op).to_rgba(),
            None => RGBColor(150, 150, 150).to_rgba(),
        };
        let pts: Vec<(i32, i32)> = (0..=24)
            .map(|k| {
                let (x, y) = bezier(p0, p1, p2, f64::from(k) / 24.0);
                (x.round() as i32, y.round() as i32)
            })
            .collect();
        area.draw(&PathElement::new(pts, color.stroke_width(2)))?;
        // Arrowhead along the curve's last direction.
        let tail = bezier(p0, p1, p2, 0.9);
        let (dx, dy) = (p2.0 - tail.0, p2.1 - tail.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / len, dy / len);
        let base = (p2.0 - 11.0 * ux, p2.1 - 11.0 * uy);
        let head = vec![
            (p2.0.round() as i32, p2.1.round() as i32),
            ((base.0 - 5.0 * uy).round() as i32, (base.1 + 5.0 * ux).round() as i32),
            ((base.0 + 5.0 * uy).round() as i32, (base.1 - 5.0 * ux).round() as i32),
        ];
        area.draw(&Polygon::new(head, color.filled()))?;
        if let Some(op) = &e.op {
            // The label at the curve's middle, moved along it while it would cover another.
            let (tw, th) = area.estimate_text_size(op, &label_font)?;
            let (tw, th) = (f64::from(tw) + 6.0, f64::from(th) + 4.0);
            let mut spot = bezier(p0, p1, p2, 0.5);
            for t in [0.5, 0.35, 0.65, 0.25, 0.75] {
                spot = bezier(p0, p1, p2, t);
                let bx = ((spot.0 - tw / 2.0, spot.1 - th / 2.0), (spot.0 + tw / 2.0, spot.1 + th / 2.0));
                if !label_boxes.iter().any(|&o| overlaps(o, bx)) {
                    break;
                }
            }
            label_boxes.push(((spot.0 - tw / 2.0, spot.1 - th / 2.0), (spot.0 + tw / 2.0, spot.1 + th / 2.0)));
            labels.push((op.clone(), spot, (tw, th), color));
        }
    }
    for (op, (x, y), (tw, th), color) in labels {
        let r = [
            ((x - tw / 2.0).round() as i32, (y - th / 2.0).round() as i32),
            ((x + tw / 2.0).round() as i32, (y + th / 2.0).round() as i32),
        ];
        area.draw(&Rectangle::new(r, WHITE.mix(0.85).filled()))?;
        area.draw(&Text::new(
            op,
            (x.round() as i32, y.round() as i32),
            label_font.color(&color).pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
    }

    // Nodes on top of the edges.
    let node_font = TextStyle::from((SANS, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    for (n, &(x, y)) in g.nodes.iter().zip(&centre) {
        let (x, y) = (x.round() as i32, y.round() as i32);
        let r = [(x - BOX_W / 2, y - BOX_H / 2), (x + BOX_W / 2, y + BOX_H / 2)];
        area.draw(&Rectangle::new(r, fill_rgb(n.kind).filled()))?;
        area.draw(&Rectangle::new(r, BLACK.stroke_width(1)))?;
        area.draw(&Text::new(n.label.clone(), (x, y), node_font.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use search_spaces::Genotype;

    #[test]
    fn darts_v2_graph_dot_and_depths() {
        let g = Genotype::load("DARTS_V2").unwrap().cell_graphs();
        assert_eq!(g.len(), 2);
        let normal = &g[0];
        assert_eq!(normal.nodes.len(), 7);
        // 8 op edges and 4 concatenation edges.
        assert_eq!(normal.edges.iter().filter(|e| e.op.is_some()).count(), 8);
        assert_eq!(normal.edges.iter().filter(|e| e.op.is_none()).count(), 4);
        // Node 3 takes node 0 (dil_conv_3x3 <- 2): depth 2; c_{k} is one deeper than node 3.
        assert_eq!(depths(normal), vec![0, 0, 1, 1, 1, 2, 3]);
        let text = dot(&g);
        assert!(text.starts_with("digraph genotype {"), "{text}");
        assert!(text.contains("normal_0 -> normal_2 [label=\"sep_conv_3x3\""), "{text}");
        assert!(text.contains("normal_2 -> normal_5 [label=\"dil_conv_3x3\""), "{text}");
        assert!(text.contains("reduce_4 -> reduce_6 [color=gray]"), "{text}");
        assert!(text.contains("subgraph cluster_reduce"), "{text}");
    }

    #[test]
    fn nb201_graph_leaves_out_none_edges() {
        let arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|";
        let g = Genotype::load(arch).unwrap().cell_graphs();
        assert_eq!(g.len(), 1);
        let ops: Vec<(usize, usize, &str)> =
            g[0].edges.iter().map(|e| (e.from, e.to, e.op.as_deref().unwrap())).collect();
        assert_eq!(
            ops,
            vec![(0, 1, "nor_conv_3x3"), (1, 2, "skip_connect"), (0, 3, "avg_pool_3x3"), (2, 3, "nor_conv_1x1")]
        );
        assert_eq!(depths(&g[0]), vec![0, 1, 2, 3]);
    }
}
