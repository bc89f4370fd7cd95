//! DARTS-PT's projections (see `pt` for the algorithm and the reference): the projected op
//! weights of every α tensor, the op projection of an edge, the topology projection of a node,
//! and the accuracy of a projected supernet.

use candle_core::{DType, Tensor};
use nas_core::nn::{correct_count, softmax_last_dim, Mode};
use search_spaces::{ArchSample, ChildShape, Genotype, Supernet};
use serde::{Deserialize, Serialize};

use crate::step::Batch;
use crate::{Error, Result};

/// Batch statistics, no gradients: how every projection evaluates a supernet.
pub const PROJECTION_MODE: Mode = Mode { train: true, grad_weights: false, grad_arch: false };

/// The chart `nas plot` draws of a selection's records: projections made by each epoch.
pub const DECISIONS_CHART: crate::method::RecordChart =
    crate::method::RecordChart { title: "DARTS-PT projections made", curves: &[("pt_decided", "projections")] };

/// The key of the edge and node draws (the low bits: the α tensor).
pub(super) const EDGE_DRAW: u64 = 5 << 40;

/// What one projection evaluation removes from the projected weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    None,
    /// Column `col` of edge `edge` of α tensor `t`.
    Op {
        t: usize,
        edge: usize,
        col: usize,
    },
    /// Every column of edge `edge` of α tensor `t`.
    Edge {
        t: usize,
        edge: usize,
    },
}

/// An op projection: the kept column of an edge and what removing each candidate left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpDecision {
    pub cell: usize,
    pub edge: usize,
    pub col: usize,
    pub op: String,
    /// Per candidate column, the op and the accuracy without it.
    pub candidates: Vec<(usize, String, f64)>,
}

/// A topology projection: the two inputs a node keeps, and the dropped ones in the order they
/// were dropped with the accuracy without each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDecision {
    pub cell: usize,
    pub node: usize,
    /// Edge indices of the cell.
    pub kept: Vec<usize>,
    pub dropped: Vec<(usize, f64)>,
}

/// Correct predictions and images of one evaluation with the given projected weights.
pub type Evaluate<'a> = dyn FnMut(&[Tensor]) -> Result<(usize, usize)> + 'a;

/// The edges of node `node` of a DARTS cell (node i takes the two inputs and the i earlier
/// nodes, in order, after the edges of the nodes before it).
fn node_edges(node: usize) -> std::ops::Range<usize> {
    let start: usize = (0..node).map(|k| 2 + k).sum();
    start..start + 2 + node
}

/// The decisions so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Per α tensor and edge, the kept column.
    pub ops: Vec<Vec<Option<usize>>>,
    /// Per α tensor and node, the kept edges (darts space; no nodes in nb201).
    pub nodes: Vec<Vec<Option<Vec<usize>>>>,
    /// Nodes of a cell (darts space), None for one op per edge.
    steps: Option<usize>,
    /// Columns of every edge: per α tensor, edge, the op names.
    names: Vec<Vec<Vec<String>>>,
}

impl Projection {
    /// Nothing decided on `net`.
    pub fn new(net: &dyn Supernet) -> Self {
        let names: Vec<Vec<Vec<String>>> = net
            .edge_ops()
            .iter()
            .map(|t| t.iter().map(|e| e.iter().map(|o| o.to_string()).collect()).collect())
            .collect();
        let steps = match net.child_shape() {
            ChildShape::TwoInputsPerNode { steps } => Some(steps),
            ChildShape::OneOpPerEdge => None,
        };
        Self {
            ops: names.iter().map(|t| vec![None; t.len()]).collect(),
            nodes: names.iter().map(|_| vec![None; steps.unwrap_or(0)]).collect(),
            steps,
            names,
        }
    }

    /// The α tensors (cell types).
    pub fn cells(&self) -> usize {
        self.names.len()
    }

    /// Edges of α tensor `t` whose op is not decided.
    pub fn undecided_edges(&self, t: usize) -> Vec<usize> {
        (0..self.ops[t].len()).filter(|&e| self.ops[t][e].is_none()).collect()
    }

    /// Nodes of α tensor `t` with more than two inputs and none chosen yet.
    pub fn undecided_nodes(&self, t: usize) -> Vec<usize> {
        (0..self.nodes[t].len()).filter(|&n| node_edges(n).len() > 2 && self.nodes[t][n].is_none()).collect()
    }

    /// The op projections of a run (edges of every α tensor) and its topology projections.
    pub fn counts(&self) -> (usize, usize) {
        let edges = self.ops.first().map_or(0, Vec::len);
        let nodes = self.steps.map_or(0, |s| (0..s).filter(|&n| node_edges(n).len() > 2).count());
        (edges, nodes)
    }

    /// Whether edge `e` of α tensor `t` was dropped by its node.
    fn dropped(&self, t: usize, e: usize) -> bool {
        self.nodes[t]
            .iter()
            .enumerate()
            .any(|(n, kept)| kept.as_ref().is_some_and(|k| node_edges(n).contains(&e) && !k.contains(&e)))
    }

    /// The projected weights of every α tensor as the forward in `mode` sees them (with α's
    /// gradient when `mode.grad_arch`), less `removal`.
    pub fn weights(&self, net: &dyn Supernet, mode: Mode, removal: Removal) -> Result<Vec<Tensor>> {
        let logits = net.op_logits(mode)?;
        let mut out = Vec::with_capacity(logits.len());
        for (t, l) in logits.iter().enumerate() {
            let (rows, width) = l.dims2()?;
            let mut keep = vec![0f32; rows * width];
            let mut fixed = vec![0f32; rows * width];
            for e in 0..rows {
                let row = e * width;
                if self.dropped(t, e) || removal == (Removal::Edge { t, edge: e }) {
                    continue;
                }
                match self.ops[t].get(e).copied().flatten() {
                    Some(col) => fixed[row + col] = 1.0,
                    None => keep[row..row + width].fill(1.0),
                }
                if let Removal::Op { t: rt, edge, col } = removal {
                    if rt == t && edge == e {
                        keep[row + col] = 0.0;
                        fixed[row + col] = 0.0;
                    }
                }
            }
            let to = |v: Vec<f32>| Tensor::from_vec(v, (rows, width), l.device())?.to_dtype(l.dtype());
            let p = softmax_last_dim(l)?;
            out.push(((p * to(keep)?)? + to(fixed)?)?);
        }
        Ok(out)
    }

    /// The columns of edge `e` of α tensor `t` an op projection tries: all, less `none` in the
    /// darts space.
    fn candidates(&self, t: usize, e: usize) -> Vec<usize> {
        let names = &self.names[t][e];
        (0..names.len()).filter(|&c| self.steps.is_none() || names[c] != "none").collect()
    }

    /// Decides the op of edge `e` of α tensor `t`: the candidate whose removal leaves the
    /// lowest accuracy (the first of equal ones).
    pub fn project_op(&mut self, net: &dyn Supernet, t: usize, e: usize, eval: &mut Evaluate) -> Result<OpDecision> {
        if self.ops[t][e].is_some() {
            return Err(Error::Internal(format!("edge {e} of cell {t} is decided already")));
        }
        let mut best: Option<(usize, usize)> = None;
        let mut candidates = Vec::new();
        for col in self.candidates(t, e) {
            let (correct, n) = eval(&self.weights(net, PROJECTION_MODE, Removal::Op { t, edge: e, col })?)?;
            candidates.push((col, self.names[t][e][col].clone(), correct as f64 / n.max(1) as f64));
            if best.is_none_or(|(_, c)| correct < c) {
                best = Some((col, correct));
            }
        }
        let (col, _) = best.ok_or_else(|| Error::Internal(format!("edge {e} of cell {t} has no candidate op")))?;
        self.ops[t][e] = Some(col);
        Ok(OpDecision { cell: t, edge: e, col, op: self.names[t][e][col].clone(), candidates })
    }

    /// Chooses the two inputs of node `node` of α tensor `t`: drops the edge whose removal
    /// leaves the highest accuracy (the last of equal ones) until two are left.
    pub fn project_node(
        &mut self,
        net: &dyn Supernet,
        t: usize,
        node: usize,
        eval: &mut Evaluate,
    ) -> Result<NodeDecision> {
        let mut edges: Vec<usize> = node_edges(node).collect();
        let mut dropped = Vec::new();
        while edges.len() > 2 {
            let mut worst: Option<(usize, usize, usize)> = None;
            for &edge in &edges {
                let (correct, n) = eval(&self.weights(net, PROJECTION_MODE, Removal::Edge { t, edge })?)?;
                if worst.is_none_or(|(_, c, _)| correct >= c) {
                    worst = Some((edge, correct, n));
                }
            }
            let Some((edge, correct, n)) = worst else { break };
            edges.retain(|&e| e != edge);
            dropped.push((edge, correct as f64 / n.max(1) as f64));
        }
        self.nodes[t][node] = Some(edges.clone());
        Ok(NodeDecision { cell: t, node, kept: edges, dropped })
    }

    /// The genotype of the projected weights, derived as the reference's `genotype()`: per
    /// edge the strongest op (not `none` in the darts space), per node the two edges with the
    /// strongest such op.
    pub fn genotype(&self, net: &dyn Supernet) -> Result<Genotype> {
        let weights = self.weights(net, Mode::EVAL, Removal::None)?;
        let mut chosen = Vec::with_capacity(weights.len());
        for (t, w) in weights.iter().enumerate() {
            let w = w.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let best = |e: usize| -> Option<(usize, f32)> {
                self.candidates(t, e).into_iter().fold(None, |b, c| match b {
                    Some((_, v)) if w[e][c] <= v => b,
                    _ => Some((c, w[e][c])),
                })
            };
            let mut rows = vec![Vec::new(); w.len()];
            match self.steps {
                None => {
                    for (e, row) in rows.iter_mut().enumerate() {
                        row.extend(best(e).map(|(c, _)| c));
                    }
                }
                Some(steps) => {
                    for node in 0..steps {
                        let mut edges: Vec<usize> = node_edges(node).collect();
                        let score = |e: &usize| best(*e).map_or(f32::NEG_INFINITY, |(_, v)| v);
                        // Stable, strongest first: the first of equal edges wins, as Python's sorted.
                        edges.sort_by(|a, b| score(b).total_cmp(&score(a)));
                        for e in edges.into_iter().take(2) {
                            rows[e].extend(best(e).map(|(c, _)| c));
                        }
                    }
                }
            }
            chosen.push(rows);
        }
        Ok(net.genotype_of(&chosen)?)
    }
}

/// Correct predictions over `batches` of the supernet with projected `weights`, with batch
/// statistics and no gradients.
pub fn batch_accuracy(net: &dyn Supernet, weights: &[Tensor], batches: &[Batch]) -> Result<(usize, usize)> {
    let sample = ArchSample { weights: Some(weights.to_vec()), chosen: None, add_unchosen: false };
    let (mut correct, mut n) = (0, 0);
    for b in batches {
        let logits = net.forward_sampled(&b.x, PROJECTION_MODE, &sample)?;
        correct += correct_count(&logits, &b.y)?.to_scalar::<f32>()? as usize;
        n += b.y.dim(0)?;
    }
    Ok((correct, n))
}
