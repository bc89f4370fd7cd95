//! One NAS-Bench-201 cell: node 0 is the cell's input, node i the sum over every earlier node
//! j of edge (i, j)'s ops — in the search network all five, weighted by softmax(α) of the edge
//! (one α (6, 5) for all cells, BN without affine), in the derived network its one op (affine
//! BN). ReLU of a node is computed once for all the convolutions that read it. The cell outputs
//! node 3. Parameters live under `edges.{to}<-{from}` (AutoDL's names).

use candle_core::{Result, Tensor};
use nas_core::nn::Mode;
use nas_core::onnx::Graph;
use nas_core::ops;
use nas_core::params::ParamBuilder;

use super::edges::{edge_index, edge_nodes, EDGES, NODES};
use super::genotype::Nb201Genotype;
use super::ops::{EdgeOp, Nb201Op};
use crate::supernet::ArchSample;

/// One cell: per edge the (α column, op) pairs it computes.
#[derive(Debug, Clone)]
pub(super) struct Cell {
    edges: Vec<Vec<(usize, EdgeOp)>>,
}

impl Cell {
    /// The search cell (all ops on every edge) when `genotype` is None, else the derived one.
    pub(super) fn new(pb: &ParamBuilder, c: usize, genotype: Option<&Nb201Genotype>) -> nas_core::Result<Self> {
        let mut edges = Vec::with_capacity(EDGES);
        for e in 0..EDGES {
            let (to, from) = edge_nodes(e);
            let epb = pb.pp("edges").pp(format!("{to}<-{from}"));
            let mut ops = Vec::new();
            match genotype {
                None => {
                    for (col, &op) in Nb201Op::ALL.iter().enumerate() {
                        if let Some(m) = EdgeOp::new(op, &epb.pp(col), c, false)? {
                            ops.push((col, m));
                        }
                    }
                }
                Some(g) => {
                    if let Some(m) = EdgeOp::new(g.edges[e], &epb, c, true)? {
                        ops.push((g.edges[e].index(), m));
                    }
                }
            }
            edges.push(ops);
        }
        Ok(Self { edges })
    }

    /// `weights` (6, 5) = softmax(α) in the search network, None in the derived one.
    pub(super) fn forward(&self, x: &Tensor, weights: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        self.forward_with(x, weights, None, mode)
    }

    /// The derived cell (one op per edge) in evaluation mode as ONNX nodes on `x`; an error
    /// for a search cell, whose edges mix every op.
    pub(super) fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        let mut nodes = vec![x.to_string()];
        for to in 1..NODES {
            let mut acc: Option<String> = None;
            for (from, input) in nodes.iter().enumerate() {
                let e = edge_index(to, from);
                let op = match &self.edges[e][..] {
                    [] => continue,
                    [(_, op)] => op,
                    _ => {
                        return Err(nas_core::Error::Invalid(
                            "a search cell (every op on an edge) has no ONNX form".into(),
                        ))
                    }
                };
                let y = g.scoped("edges", |g| g.scoped(format!("{to}<-{from}"), |g| op.onnx(g, input)))?;
                acc = Some(match acc {
                    Some(a) => g.add(&a, &y),
                    None => y,
                });
            }
            let node = match acc {
                Some(a) => a,
                None => g.zeros_like(x),
            };
            nodes.push(node);
        }
        Ok(nodes.pop().unwrap_or_else(|| x.to_string()))
    }

    /// The cell with the ops of `sample` on every edge.
    pub(super) fn forward_sampled(&self, x: &Tensor, sample: &ArchSample, mode: Mode) -> Result<Tensor> {
        self.forward_with(x, sample.weights.as_ref().map(|w| &w[0]), Some(sample), mode)
    }

    fn forward_with(
        &self,
        x: &Tensor,
        weights: Option<&Tensor>,
        sample: Option<&ArchSample>,
        mode: Mode,
    ) -> Result<Tensor> {
        let mut nodes = vec![x.clone()];
        let mut relus: Vec<Option<Tensor>> = vec![None];
        for to in 1..NODES {
            let mut acc: Option<Tensor> = None;
            // The unchosen ops' weights of a GDAS sample (AutoDL's `forward_gdas` adds them).
            let mut constants: Option<Tensor> = None;
            for from in 0..to {
                let e = edge_index(to, from);
                let pick = sample.map(|s| s.edge(0, e)).transpose()?.flatten();
                let runs = |col: usize| pick.is_none_or(|p| p.cols.contains(&col));
                let ops_e = &self.edges[e];
                if relus[from].is_none() && ops_e.iter().any(|(c, m)| matches!(m, EdgeOp::Conv(_)) && runs(*c)) {
                    relus[from] = Some(ops::relu(&nodes[from])?);
                }
                let w = weights.map(|w| w.get(e)).transpose()?;
                let cols: Vec<usize> = match pick {
                    Some(p) => p.cols.to_vec(),
                    None => ops_e.iter().map(|(c, _)| *c).collect(),
                };
                for col in cols {
                    // `none` (no module) adds nothing.
                    let Some((_, op)) = ops_e.iter().find(|(c, _)| *c == col) else { continue };
                    let y = op.forward(&nodes[from], relus[from].as_ref(), mode)?;
                    let wk = w.as_ref().map(|w| w.narrow(0, col, 1)).transpose()?;
                    acc = Some(ops::accumulate(acc, y, wk.as_ref())?);
                }
                if let (Some(p), Some(w)) = (pick, &w) {
                    if let Some(c) = p.unchosen_sum(w, Nb201Op::ALL.len())? {
                        constants = Some(ops::accumulate(constants, c, None)?);
                    }
                }
            }
            let node = match acc {
                Some(a) => a,
                None => x.zeros_like()?,
            };
            nodes.push(match constants {
                Some(k) => node.broadcast_add(&k)?,
                None => node,
            });
            relus.push(None);
        }
        Ok(nodes.pop().unwrap_or_else(|| x.clone()))
    }
}
