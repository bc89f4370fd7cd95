//! How the edges of a DARTS cell are numbered: intermediate node i takes one edge from every
//! earlier state — the two cell inputs c_{k−2}, c_{k−1} and nodes 0..i — listed by node, then
//! by input state. Node i's edges are rows first(i)..first(i) + i + 2 of α, with
//! first(i) = Σ_{k<i} (2 + k); a cell of N nodes has first(N) edges (14 for N = 4).

use std::ops::Range;

/// The first edge into node `node`.
fn first_edge(node: usize) -> usize {
    (0..node).map(|i| 2 + i).sum()
}

/// Number of edges of a cell with `steps` intermediate nodes.
pub fn num_edges(steps: usize) -> usize {
    first_edge(steps)
}

/// The edges into node `node`, in the order of its input states 0, 1, … (rows of α).
pub fn node_edges(node: usize) -> Range<usize> {
    first_edge(node)..first_edge(node + 1)
}

/// The edge from state `j` into node `node`.
pub fn edge_index(node: usize, j: usize) -> usize {
    first_edge(node) + j
}

/// (node, input state) of edge `e`.
pub fn edge_ends(e: usize) -> (usize, usize) {
    let node = (0..).find(|&n| e < first_edge(n + 1)).unwrap_or(0);
    (node, e - first_edge(node))
}

/// The name of state `j` of a cell in pictures: c_{k-2}, c_{k-1}, or the node's number.
pub fn state_label(j: usize) -> String {
    match j {
        0 => "c_{k-2}".to_string(),
        1 => "c_{k-1}".to_string(),
        j => (j - 2).to_string(),
    }
}

/// "c_{k-2} → 0": the name of edge `e` in pictures.
pub fn edge_label(e: usize) -> String {
    let (node, j) = edge_ends(e);
    format!("{} → {node}", state_label(j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_listed_by_node_then_input() {
        assert_eq!(num_edges(4), 14);
        assert_eq!([node_edges(0), node_edges(1), node_edges(3)], [0..2, 2..5, 9..14]);
        for e in 0..num_edges(4) {
            let (node, j) = edge_ends(e);
            assert!(j < node + 2);
            assert_eq!(edge_index(node, j), e);
        }
        assert_eq!(edge_label(4), "0 → 1");
        assert_eq!(edge_label(5), "c_{k-2} → 2");
    }
}
