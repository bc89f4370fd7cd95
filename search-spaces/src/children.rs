//! The discrete children of a supernet, whatever its space, as the sampling methods draw them:
//! how a space's children are laid out (`ChildShape`), a uniformly drawn child (random
//! sampling with weight sharing, Li & Talwalkar 2019), and the decisions an ENAS controller
//! makes about one (`ControllerSpec`) with the child those decisions stand for. A space
//! describes itself through `Supernet::child_shape` and `Supernet::edge_ops`; the functions
//! here give the `Supernet` methods their default implementations.

use rand::seq::index::sample as distinct;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::darts::edges::node_edges;
use crate::error::{Error, Result};
use crate::supernet::Child;

/// The discrete children of a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildShape {
    /// Each of `steps` intermediate nodes takes two (op, input) pairs, the inputs among the
    /// node's edges (`darts::node_edges`): DARTS' cells, for normal and reduce.
    TwoInputsPerNode { steps: usize },
    /// One op on every edge (NAS-Bench-201).
    OneOpPerEdge,
}

/// What an ENAS controller decides about a child (its checkpoints store this form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ControllerSpec {
    /// ENAS micro search: for each of the two cell types (normal, then reduce), for each of
    /// `nodes` intermediate nodes, two inputs (attention over the 2 + node earlier states) and
    /// two ops (of `ops`).
    Micro { nodes: usize, ops: usize },
    /// One op per edge, in edge order (NAS-Bench-201: 6 edges, 5 ops).
    PerEdge { edges: usize, ops: usize },
}

impl ControllerSpec {
    /// The number of decisions of one child.
    pub fn num_decisions(&self) -> usize {
        match *self {
            ControllerSpec::Micro { nodes, .. } => 2 * 4 * nodes,
            ControllerSpec::PerEdge { edges, .. } => edges,
        }
    }

    /// The number of choices at decision `pos` (None past the end).
    pub fn choices(&self, pos: usize) -> Option<usize> {
        if pos >= self.num_decisions() {
            return None;
        }
        match *self {
            ControllerSpec::Micro { nodes, ops } => {
                let within = pos % (4 * nodes);
                let (node, slot) = (within / 4, within % 4);
                Some(if slot % 2 == 0 { 2 + node } else { ops })
            }
            ControllerSpec::PerEdge { ops, .. } => Some(ops),
        }
    }

    pub fn ops(&self) -> usize {
        match *self {
            ControllerSpec::Micro { ops, .. } | ControllerSpec::PerEdge { ops, .. } => ops,
        }
    }
}

/// A uniformly drawn child: per α tensor and edge the chosen columns. `edge_ops` names the
/// columns of every edge (`Supernet::edge_ops`). The darts space: two distinct inputs per node,
/// each with an op other than `none`; one op per edge otherwise (`none` included, as
/// NAS-Bench-201's random search).
pub fn uniform_child(edge_ops: &[Vec<Vec<&str>>], shape: ChildShape, rng: &mut nas_core::rng::Rng) -> Child {
    edge_ops
        .iter()
        .map(|edges| {
            let mut chosen = vec![Vec::new(); edges.len()];
            match shape {
                ChildShape::OneOpPerEdge => {
                    for (e, ops) in edges.iter().enumerate() {
                        chosen[e].push(rng.random_range(0..ops.len()));
                    }
                }
                ChildShape::TwoInputsPerNode { steps } => {
                    for node in 0..steps {
                        let range = node_edges(node);
                        for j in distinct(rng, range.len(), 2) {
                            let e = range.start + j;
                            let real: Vec<usize> = (0..edges[e].len()).filter(|&k| edges[e][k] != "none").collect();
                            chosen[e].push(real[rng.random_range(0..real.len())]);
                        }
                    }
                }
            }
            chosen
        })
        .collect()
}

/// The ops a controller chooses from, and the α column each choice stands for per α tensor:
/// in the darts space the edges' ops other than `none`, which must be the same list on every
/// edge of both cell types; otherwise every op of an edge.
fn op_columns(edge_ops: &[Vec<Vec<&str>>], shape: ChildShape) -> Result<(usize, Vec<Vec<usize>>)> {
    match shape {
        ChildShape::OneOpPerEdge => {
            let ops = edge_ops.first().and_then(|e| e.first()).map_or(0, Vec::len);
            Ok((ops, vec![(0..ops).collect()]))
        }
        ChildShape::TwoInputsPerNode { .. } => {
            let real =
                |ops: &[&str]| -> Vec<String> { ops.iter().filter(|o| **o != "none").map(|o| o.to_string()).collect() };
            let first = edge_ops.first().and_then(|e| e.first()).map(|o| real(o)).unwrap_or_default();
            let mut columns = Vec::new();
            for edges in edge_ops {
                if edges.iter().any(|ops| real(ops) != first) {
                    return Err(Error::Config("every edge of both cell types needs the same ops".to_string()));
                }
                let ops = &edges[0];
                columns.push(first.iter().map(|o| ops.iter().position(|x| x == o).unwrap_or(0)).collect());
            }
            Ok((first.len(), columns))
        }
    }
}

/// What a controller decides about a child of this layout.
pub fn controller_spec(edge_ops: &[Vec<Vec<&str>>], shape: ChildShape) -> Result<ControllerSpec> {
    let (ops, _) = op_columns(edge_ops, shape)?;
    Ok(match shape {
        ChildShape::OneOpPerEdge => ControllerSpec::PerEdge { edges: edge_ops.first().map_or(0, Vec::len), ops },
        ChildShape::TwoInputsPerNode { steps } => ControllerSpec::Micro { nodes: steps, ops },
    })
}

/// The child a controller's decisions stand for (`ControllerSpec`'s order: per cell type and
/// node, as ENAS' `arc_seq`, input 1, op 1, input 2, op 2; one op per edge otherwise).
pub fn child_from_decisions(edge_ops: &[Vec<Vec<&str>>], shape: ChildShape, decisions: &[usize]) -> Result<Child> {
    let (_, columns) = op_columns(edge_ops, shape)?;
    let bad = || Error::Config(format!("the controller's decisions {decisions:?} do not fit the space"));
    let mut chosen: Child = edge_ops.iter().map(|e| vec![Vec::new(); e.len()]).collect();
    match shape {
        ChildShape::OneOpPerEdge => {
            for (e, &op) in decisions.iter().enumerate() {
                let col = *columns[0].get(op).ok_or_else(bad)?;
                chosen[0].get_mut(e).ok_or_else(bad)?.push(col);
            }
        }
        ChildShape::TwoInputsPerNode { steps } => {
            let mut d = decisions.iter().copied();
            for (t, cell) in chosen.iter_mut().enumerate() {
                for node in 0..steps {
                    let (i1, o1, i2, o2) = (d.next(), d.next(), d.next(), d.next());
                    let (Some(i1), Some(i2), Some(o1), Some(o2)) = (i1, i2, o1, o2) else { return Err(bad()) };
                    for (input, op) in [(i1, o1), (i2, o2)] {
                        if input >= node + 2 {
                            return Err(bad());
                        }
                        let col = *columns.get(t).and_then(|c| c.get(op)).ok_or_else(bad)?;
                        cell[node_edges(node).start + input].push(col);
                    }
                }
            }
        }
    }
    Ok(chosen)
}
