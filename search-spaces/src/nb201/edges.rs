//! How the edges of a NAS-Bench-201 cell are numbered: node `to` (1..=3) takes one edge from
//! every earlier node `from`, and the edges are listed by `to`, then `from` — 1←0, 2←0, 2←1,
//! 3←0, 3←1, 3←2 — the rows of α, the order of the arch string and of a genotype's ops.

/// Nodes of a cell, the input node 0 included.
pub const NODES: usize = 4;
/// Edges of a cell.
pub const EDGES: usize = NODES * (NODES - 1) / 2;

/// The edge from node `from` into node `to` (`from < to`).
pub fn edge_index(to: usize, from: usize) -> usize {
    to * (to - 1) / 2 + from
}

/// (to, from) of edge `e`.
pub fn edge_nodes(e: usize) -> (usize, usize) {
    let to = (1..NODES).find(|&to| e < edge_index(to + 1, 0)).unwrap_or(NODES);
    (to, e - edge_index(to, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_listed_by_target_then_source() {
        let listed: Vec<(usize, usize)> = (0..EDGES).map(edge_nodes).collect();
        assert_eq!(listed, [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]);
        for (e, &(to, from)) in listed.iter().enumerate() {
            assert_eq!(edge_index(to, from), e);
        }
    }
}
