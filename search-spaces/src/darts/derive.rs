//! Deriving a discrete cell from continuous weights (DARTS §2.4): for every intermediate node
//! keep the two incoming edges whose strongest non-`none` op weight is largest, and on each the
//! arg-max op excluding `none`. Ties go to the lower input index and the lower op column, and
//! each node's edges are listed strongest first, exactly as the original `_parse`.
//!
//! Optionally (P-DARTS style) cap the number of skip connections: while there are too many,
//! the skip with the smallest weight is replaced by its edge's best op other than none/skip.

use super::edges::{edge_index, node_edges};
use super::genotype::Edge;
use super::ops::DartsOp;

const NONE: usize = 0;

fn argmax_excluding(row: &[f32], excluded: &[usize]) -> usize {
    let mut best: Option<usize> = None;
    for (k, &v) in row.iter().enumerate() {
        if excluded.contains(&k) {
            continue;
        }
        if best.is_none_or(|b| v > row[b]) {
            best = Some(k);
        }
    }
    best.unwrap_or(NONE)
}

/// Derives the 2·steps edges of a cell from its (E, 8) op weights.
pub fn derive_cell(weights: &[Vec<f32>], steps: usize) -> Vec<Edge> {
    let mut gene = Vec::with_capacity(2 * steps);
    for node in 0..steps {
        let rows = &weights[node_edges(node)];
        let strength = |j: usize| {
            rows[j].iter().enumerate().filter(|&(k, _)| k != NONE).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max)
        };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        // Stable sort: equal strengths keep the lower input first.
        order.sort_by(|&a, &b| strength(b).partial_cmp(&strength(a)).unwrap_or(std::cmp::Ordering::Equal));
        for &j in order.iter().take(2) {
            gene.push((DartsOp::ALL[argmax_excluding(&rows[j], &[NONE])], j));
        }
    }
    gene
}

/// Replaces the weakest skip connections until at most `max_skip` remain.
pub fn cap_skip_connections(gene: &mut [Edge], weights: &[Vec<f32>], max_skip: usize) {
    let skip = DartsOp::SkipConnect.index();
    loop {
        let skips: Vec<usize> = (0..gene.len()).filter(|&p| gene[p].0 == DartsOp::SkipConnect).collect();
        if skips.len() <= max_skip {
            return;
        }
        let weight = |p: usize| weights[edge_index(p / 2, gene[p].1)][skip];
        let Some(&weakest) =
            skips.iter().min_by(|&&a, &&b| weight(a).partial_cmp(&weight(b)).unwrap_or(std::cmp::Ordering::Equal))
        else {
            return;
        };
        let row = &weights[edge_index(weakest / 2, gene[weakest].1)];
        gene[weakest].0 = DartsOp::ALL[argmax_excluding(row, &[NONE, skip])];
    }
}
