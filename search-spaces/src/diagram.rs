//! The shapes the pictures of a space are drawn from, whatever the space: its cells as graphs
//! (DARTS' `visualize.py` draws the same: inputs, intermediate nodes and output, one labelled
//! edge per op) and the layout of its α in a search's metrics (one table per α matrix, rows
//! the edges, columns the ops). `nas show` and `nas plot` draw them.

/// What a node of a cell graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Input,
    Inner,
    Output,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub label: String,
    pub kind: NodeKind,
}

/// An edge of a cell graph between node indices; `op` is None for a concatenation into the
/// output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub op: Option<String>,
}

/// One cell of a genotype. Edges only point forward in node order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellGraph {
    /// A short identifier ("normal", "reduce", "cell").
    pub name: String,
    pub title: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// One α matrix of a search's metrics record, `alpha.<key>`: rows are edges, columns ops.
#[derive(Debug, Clone)]
pub struct ArchTable {
    pub key: &'static str,
    pub title: &'static str,
    pub ops: Vec<&'static str>,
    /// "c_{k-2} → 0": the name of the edge of a row.
    pub edge_label: fn(usize) -> String,
}
