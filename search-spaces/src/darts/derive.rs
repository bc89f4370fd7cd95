//! Deriving a discrete cell from continuous weights (DARTS §2.4): for every intermediate node
//! keep the two incoming edges whose strongest non-`none` op weight is largest, and on each the
//! arg-max op excluding `none`. Ties go to the lower input index and the lower op column, and
//! each node's edges are listed strongest first, exactly as the original `_parse`. Each edge
//! ranks its own op list (an op set); an edge without `none` ranks all its ops.
//!
//! Optionally (P-DARTS style) cap the number of skip connections: while there are too many,
//! the skip with the smallest weight is replaced by its edge's best op other than none/skip.

use super::edges::{edge_index, node_edges};
use super::genotype::Edge;
use super::ops::DartsOp;

/// The column of the largest weight among the edge's ops not in `excluded`.
fn argmax_excluding(row: &[f32], ops: &[DartsOp], excluded: &[DartsOp]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (k, (&v, op)) in row.iter().zip(ops).enumerate() {
        if excluded.contains(op) {
            continue;
        }
        if best.is_none_or(|b| v > row[b]) {
            best = Some(k);
        }
    }
    best
}

/// Derives the 2·steps edges of a cell from its op weights: `weights[e]` has one weight per op
/// of `ops[e]`. Every edge list holds an op other than `none` (op sets are checked so).
pub fn derive_cell(weights: &[Vec<f32>], ops: &[Vec<DartsOp>], steps: usize) -> Vec<Edge> {
    let mut gene = Vec::with_capacity(2 * steps);
    for node in 0..steps {
        let edges = node_edges(node);
        let (rows, lists) = (&weights[edges.clone()], &ops[edges]);
        let best = |j: usize| argmax_excluding(&rows[j], &lists[j], &[DartsOp::None]);
        let strength = |j: usize| best(j).map_or(f32::NEG_INFINITY, |k| rows[j][k]);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        // Stable sort: equal strengths keep the lower input first.
        order.sort_by(|&a, &b| strength(b).partial_cmp(&strength(a)).unwrap_or(std::cmp::Ordering::Equal));
        for &j in order.iter().take(2) {
            let op = best(j).map_or(DartsOp::None, |k| lists[j][k]);
            gene.push((op, j));
        }
    }
    gene
}

/// Replaces the weakest skip connections until at most `max_skip` remain; a skip whose edge
/// has no op other than none and skip stays.
pub fn cap_skip_connections(gene: &mut [Edge], weights: &[Vec<f32>], ops: &[Vec<DartsOp>], max_skip: usize) {
    let skip = DartsOp::SkipConnect;
    let edge = |p: usize, gene: &[Edge]| edge_index(p / 2, gene[p].1);
    let mut kept = Vec::new();
    loop {
        let skips: Vec<usize> = (0..gene.len()).filter(|&p| gene[p].0 == skip).collect();
        if skips.len() <= max_skip {
            return;
        }
        let weight = |p: usize| {
            let e = edge(p, gene);
            ops[e].iter().position(|&o| o == skip).map_or(f32::NEG_INFINITY, |k| weights[e][k])
        };
        let Some(&weakest) = skips
            .iter()
            .filter(|p| !kept.contains(*p))
            .min_by(|&&a, &&b| weight(a).partial_cmp(&weight(b)).unwrap_or(std::cmp::Ordering::Equal))
        else {
            return;
        };
        let e = edge(weakest, gene);
        match argmax_excluding(&weights[e], &ops[e], &[DartsOp::None, skip]) {
            Some(k) => gene[weakest].0 = ops[e][k],
            None => kept.push(weakest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::darts::op_sets::{rdarts_space, DartsOpSets};

    /// Hand-made weights for a 2-node cell (5 edges) over `ops`, edge by edge.
    fn cell(ops: &[DartsOp], rows: [&[f32]; 5]) -> (Vec<Vec<f32>>, Vec<Vec<DartsOp>>) {
        (rows.iter().map(|r| r.to_vec()).collect(), vec![ops.to_vec(); 5])
    }

    #[test]
    fn none_never_wins_and_ranks_no_edge() {
        use DartsOp::*;
        // S3-like: none, skip, sep3. Edge 1's none is largest, yet its best real op is weak.
        let (w, ops) = cell(
            &[None, SkipConnect, SepConv3x3],
            [&[0.2, 0.5, 0.3], &[0.9, 0.05, 0.05], &[0.1, 0.1, 0.8], &[0.3, 0.3, 0.4], &[0.6, 0.2, 0.2]],
        );
        let g = derive_cell(&w, &ops, 2);
        assert_eq!(g, [(SkipConnect, 0), (SkipConnect, 1), (SepConv3x3, 0), (SepConv3x3, 1)]);
    }

    #[test]
    fn a_set_without_none_ranks_every_op() {
        use DartsOp::*;
        // S2: skip, sep3 (no none).
        let (w, ops) =
            cell(&[SkipConnect, SepConv3x3], [&[0.55, 0.45], &[0.1, 0.9], &[0.5, 0.5], &[0.3, 0.7], &[0.95, 0.05]]);
        let g = derive_cell(&w, &ops, 2);
        // Node 1: edge 4 (0.95 skip) first, then edge 3 (0.7 sep) over edge 2's tie at 0.5.
        assert_eq!(g, [(SepConv3x3, 1), (SkipConnect, 0), (SkipConnect, 2), (SepConv3x3, 1)]);
    }

    #[test]
    fn per_edge_lists_name_their_own_columns() {
        use DartsOp::*;
        let s1 = rdarts_space("s1").unwrap();
        // Column 1 everywhere: edge 5's is skip_connect, edge 12's dil_conv_5x5.
        let w: Vec<Vec<f32>> = (0..14).map(|e| vec![0.4, 0.6 + 0.01 * e as f32]).collect();
        let g = derive_cell(&w, &s1.normal, 4);
        for (op, j) in &g {
            assert!(j < &5 && *op != None);
        }
        // Node 3 (edges 9..14) keeps its two strongest edges, 13 and 12.
        assert_eq!(&g[6..], [(DilConv5x5, 4), (DilConv5x5, 3)]);
        // Node 2 (edges 5..9): edge 8 is strongest (column 1 of its [skip, dil3]).
        assert_eq!(g[4], (DilConv3x3, 3));
        assert!(DartsOpSets::all(4).normal.iter().all(|r| r.len() == 8));
    }

    #[test]
    fn the_skip_cap_replaces_the_weakest_skips_where_it_can() {
        use DartsOp::*;
        let ops = vec![vec![SkipConnect, SepConv3x3], vec![SkipConnect], vec![None, SkipConnect, MaxPool3x3]];
        let w = vec![vec![0.9, 0.1], vec![1.0], vec![0.1, 0.5, 0.4]];
        // Node 0 edges (0, 1) and node 1's edge from state 0 (index 2).
        let mut gene = vec![(SkipConnect, 0), (SkipConnect, 1), (SkipConnect, 0), (SepConv3x3, 1)];
        cap_skip_connections(&mut gene, &w, &ops, 0);
        // Weakest: edge 2 (0.5) → max_pool; then edge 0 (0.9) → sep; edge 1 has no other op.
        assert_eq!(gene[..3], [(SepConv3x3, 0), (SkipConnect, 1), (MaxPool3x3, 0)]);
    }
}
