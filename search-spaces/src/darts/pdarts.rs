//! The rules of P-DARTS' progressive search (Chen et al. 2019, "Progressive Differentiable
//! Architecture Search", chenxin061/pdarts `train_search.py`): after each stage every edge
//! drops its weakest ops by softmax(α) (in the last drop `none` goes first), and the final cell
//! is derived from the last stage's weights with at most a given number of skip connections,
//! removing the weakest skip and deriving again until the cap holds. (The dropout schedule
//! after skip_connect is the search driver's, `nas_search::progressive`.)

use super::edges::node_edges;
use super::genotype::Edge;
use super::ops::DartsOp;

/// The columns of an edge's ops `ops` with weights `p` in the order they are dropped: lower
/// weights first, at equal weights the lower column; with `none_first`, `none` before all.
fn drop_order(ops: &[DartsOp], p: &[f32], none_first: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    let rank = |k: usize| (!(none_first && ops[k] == DartsOp::None), p[k]);
    // Stable: equal weights keep the lower column first.
    order.sort_by(|&a, &b| rank(a).partial_cmp(&rank(b)).unwrap_or(std::cmp::Ordering::Equal));
    order
}

/// The ops each edge keeps after dropping its `drop` weakest: `ops[e]` with their weights
/// `probs[e]` (softmax(α) of the stage), dropped in `drop_order`; with `none_first` (the last
/// drop) `none` goes before any other op. An edge left without an op other than `none` is an
/// error.
pub fn drop_weakest(
    ops: &[Vec<DartsOp>],
    probs: &[Vec<f32>],
    drop: usize,
    none_first: bool,
) -> Result<Vec<Vec<DartsOp>>, String> {
    ops.iter()
        .zip(probs)
        .enumerate()
        .map(|(e, (ops, p))| {
            let order = drop_order(ops, p, none_first);
            let dropped = &order[..drop.min(ops.len())];
            let kept: Vec<DartsOp> =
                ops.iter().enumerate().filter(|(k, _)| !dropped.contains(k)).map(|(_, &o)| o).collect();
            if kept.iter().all(|&o| o == DartsOp::None) {
                return Err(format!(
                    "edge {e} would keep no op other than `none` after dropping {drop} of {}",
                    ops.len()
                ));
            }
            Ok(kept)
        })
        .collect()
}

/// The final cell of a progressive search from the last stage's op lists `ops` and weights
/// `probs`: every edge keeps the op the last drop leaves it, its strongest other than `none`
/// (at equal weights the higher column: the last in `drop_order`), every node its two
/// strongest edges (at equal strength the later input), listed by input. With `max_skip`,
/// while the cell has more skip connections, the weakest chosen skip's weight is set to zero
/// and the cell derived again (a skip that is its edge's only op other than `none` stays if
/// its node keeps that edge).
pub fn derive_final(ops: &[Vec<DartsOp>], probs: &[Vec<f32>], steps: usize, max_skip: Option<usize>) -> Vec<Edge> {
    let mut probs: Vec<Vec<f32>> = probs
        .iter()
        .zip(ops)
        .map(|(p, o)| p.iter().zip(o).map(|(&w, &op)| if op == DartsOp::None { 0.0 } else { w }).collect())
        .collect();
    loop {
        let best = |e: usize| drop_order(&ops[e], &probs[e], true).last().copied();
        let strength = |e: usize| probs[e].iter().copied().fold(0.0, f32::max);
        let mut gene: Vec<(Edge, usize)> = Vec::with_capacity(2 * steps);
        for node in 0..steps {
            let edges = node_edges(node);
            let mut order: Vec<usize> = edges.clone().collect();
            // Stable ascending sort, the last two kept: equal strengths keep the later input.
            order.sort_by(|&a, &b| strength(a).partial_cmp(&strength(b)).unwrap_or(std::cmp::Ordering::Equal));
            let mut kept: Vec<usize> = order.iter().rev().take(2).copied().collect();
            kept.sort_unstable();
            for e in kept {
                let k = best(e).unwrap_or(0);
                gene.push(((ops[e].get(k).copied().unwrap_or(DartsOp::None), e - edges.start), e));
            }
        }
        let skip_at = |&((op, _), e): &(Edge, usize)| (op == DartsOp::SkipConnect).then(|| (e, best(e).unwrap_or(0)));
        let skips: Vec<(usize, usize)> = gene.iter().filter_map(skip_at).collect();
        // A skip already at zero is its edge's only op left: it stays.
        let weakest = skips
            .iter()
            .filter(|&&(e, k)| probs[e][k] > 0.0)
            // The first of the weakest, in edge order (np.argmin).
            .min_by(|a, b| probs[a.0][a.1].partial_cmp(&probs[b.0][b.1]).unwrap_or(std::cmp::Ordering::Equal));
        match (max_skip, weakest) {
            (Some(m), Some(&(e, k))) if skips.len() > m => probs[e][k] = 0.0,
            _ => return gene.into_iter().map(|(edge, _)| edge).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DartsOp::*;

    #[test]
    fn each_edge_drops_its_weakest_ops() {
        let ops =
            vec![vec![None, MaxPool3x3, SkipConnect, SepConv3x3], vec![None, SkipConnect, SepConv3x3, DilConv3x3]];
        let probs = vec![vec![0.4, 0.2, 0.1, 0.3], vec![0.1, 0.3, 0.3, 0.3]];
        // A strong none stays; at equal weights the lower column goes first.
        let kept = drop_weakest(&ops, &probs, 2, false).unwrap();
        assert_eq!(kept, vec![vec![None, SepConv3x3], vec![SepConv3x3, DilConv3x3]]);
    }

    #[test]
    fn the_last_drop_takes_none_first() {
        let ops = vec![vec![None, SkipConnect, SepConv3x3], vec![SkipConnect, SepConv3x3, DilConv5x5]];
        let probs = vec![vec![0.05, 0.6, 0.35], vec![0.2, 0.5, 0.3]];
        let kept = drop_weakest(&ops, &probs, 2, true).unwrap();
        assert_eq!(kept, vec![vec![SkipConnect], vec![SepConv3x3]]);
        let e = drop_weakest(&[vec![None, SkipConnect]], &[vec![0.9, 0.1]], 1, false).unwrap_err();
        assert!(e.contains("edge 0") && e.contains("`none`"), "{e}");
    }

    /// Two nodes (edges 0..5), each edge over none, skip_connect, sep_conv_3x3.
    fn two_nodes() -> (Vec<Vec<DartsOp>>, Vec<Vec<f32>>) {
        let ops = vec![vec![None, SkipConnect, SepConv3x3]; 5];
        let probs = vec![
            vec![0.5, 0.3, 0.2],
            vec![0.1, 0.2, 0.7],
            vec![0.2, 0.5, 0.3],
            vec![0.0, 0.4, 0.4],
            vec![0.3, 0.6, 0.1],
        ];
        (ops, probs)
    }

    #[test]
    fn the_final_cell_and_its_skip_cap() {
        let (ops, probs) = two_nodes();
        let d = |cap| derive_final(&ops, &probs, 2, cap);
        // Edge 3's skip/sep tie goes to sep; node 1 keeps edges 2 (0.5) and 4 (0.6).
        assert_eq!(d(Option::None), [(SkipConnect, 0), (SepConv3x3, 1), (SkipConnect, 0), (SkipConnect, 2)]);
        // Cap 2: the weakest skip (edge 0, 0.3) is zeroed, edge 0 falls back to sep.
        assert_eq!(d(Some(2)), [(SepConv3x3, 0), (SepConv3x3, 1), (SkipConnect, 0), (SkipConnect, 2)]);
        // Cap 1: then edge 2's skip; edge 2 (sep 0.3) loses its place to edge 3 (0.4).
        assert_eq!(d(Some(1)), [(SepConv3x3, 0), (SepConv3x3, 1), (SepConv3x3, 1), (SkipConnect, 2)]);
        // Cap 0: then edge 4's skip (sep 0.1): node 1 keeps edges 2 and 3.
        assert_eq!(d(Some(0)), [(SepConv3x3, 0), (SepConv3x3, 1), (SepConv3x3, 0), (SepConv3x3, 1)]);
    }

    #[test]
    fn a_skip_without_alternative_stays() {
        // Node 0's two edges offer only none and skip: the cap cannot remove them.
        let (mut ops, probs) = two_nodes();
        ops[0] = vec![None, SkipConnect];
        ops[1] = vec![None, SkipConnect];
        let probs: Vec<Vec<f32>> =
            probs.iter().enumerate().map(|(e, p)| if e < 2 { p[..2].to_vec() } else { p.clone() }).collect();
        let g = derive_final(&ops, &probs, 2, Some(0));
        assert_eq!(g, [(SkipConnect, 0), (SkipConnect, 1), (SepConv3x3, 0), (SepConv3x3, 1)]);
    }

    #[test]
    fn equal_edges_keep_the_later_input() {
        let (ops, mut probs) = two_nodes();
        probs[2] = vec![0.0, 0.4, 0.1];
        // Node 1: edges 2 and 3 tie at 0.4 behind edge 4; the later (3) stays.
        assert_eq!(&derive_final(&ops, &probs, 2, Option::None)[2..], [(SepConv3x3, 1), (SkipConnect, 2)]);
    }
}
