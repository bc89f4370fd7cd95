//! The DARTS search cell: two inputs c_{k−2}, c_{k−1} (preprocessed to C channels), N
//! intermediate nodes each summing a mixed op on every earlier state (2 + 3 + … edges, 14 for
//! N = 4, numbered as `edges` says: the row order of α), and the output concat of the N nodes
//! (N·C channels). Reduction cells use stride 2 on the edges from the two inputs.

use std::sync::Arc;

use candle_core::{Result, Tensor};
use nas_core::nn::Mode;
use nas_core::onnx::Graph;
use nas_core::ops;
use nas_core::params::ParamBuilder;

use super::edges::{node_edges, num_edges};
use super::mixed_op::MixedOp;
use super::ops::{DartsOp, FactorizedReduce, RandomStream, ReluConvBn};
use crate::supernet::ArchSample;

#[derive(Debug, Clone)]
pub enum Preprocess {
    ReluConvBn(ReluConvBn),
    FactorizedReduce(FactorizedReduce),
}

impl Preprocess {
    /// FactorizedReduce when the previous cell reduced (c_{k−2} is twice as large), else
    /// ReLU-conv1×1-BN.
    pub fn new(pb: &ParamBuilder, ci: usize, co: usize, reduce: bool, affine: bool) -> nas_core::Result<Self> {
        Ok(if reduce {
            Preprocess::FactorizedReduce(FactorizedReduce::new(pb, ci, co, affine)?)
        } else {
            Preprocess::ReluConvBn(ReluConvBn::new(pb, ci, co, affine)?)
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            Preprocess::ReluConvBn(m) => m.forward(x, mode),
            Preprocess::FactorizedReduce(m) => m.forward(x, mode, None),
        }
    }

    /// `forward` in evaluation mode as ONNX nodes.
    pub fn onnx(&self, g: &mut Graph, x: &str) -> nas_core::Result<String> {
        match self {
            Preprocess::ReluConvBn(m) => m.onnx(g, x),
            Preprocess::FactorizedReduce(m) => m.onnx(g, x),
        }
    }

    /// Output size and mult-adds for one h×w input.
    pub fn mult_adds(&self, hw: (usize, usize)) -> Option<((usize, usize), u128)> {
        match self {
            Preprocess::ReluConvBn(m) => m.mult_adds(hw),
            Preprocess::FactorizedReduce(m) => m.mult_adds(hw),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SearchCell {
    pub reduction: bool,
    preprocess0: Preprocess,
    preprocess1: ReluConvBn,
    ops: Vec<MixedOp>,
    steps: usize,
    multiplier: usize,
}

impl SearchCell {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pb: &ParamBuilder,
        steps: usize,
        multiplier: usize,
        c_prev_prev: usize,
        c_prev: usize,
        c: usize,
        reduction: bool,
        reduction_prev: bool,
        partial_channels: usize,
        candidates: &[Vec<DartsOp>],
        random: &Arc<RandomStream>,
    ) -> nas_core::Result<Self> {
        let preprocess0 = Preprocess::new(&pb.pp("preprocess0"), c_prev_prev, c, reduction_prev, false)?;
        let preprocess1 = ReluConvBn::new(&pb.pp("preprocess1"), c_prev, c, false)?;
        let mut ops = Vec::with_capacity(num_edges(steps));
        for node in 0..steps {
            for (j, e) in node_edges(node).enumerate() {
                let stride = if reduction && j < 2 { 2 } else { 1 };
                ops.push(MixedOp::new(&pb.pp("_ops").pp(e), c, stride, partial_channels, &candidates[e], random)?);
            }
        }
        Ok(Self { reduction, preprocess0, preprocess1, ops, steps, multiplier })
    }

    /// `weights` (E, ops): softmax(α) of this cell type; `edge_weights` (E,) optional edge
    /// normalisation weights.
    pub fn forward(
        &self,
        s0: &Tensor,
        s1: &Tensor,
        weights: &Tensor,
        edge_weights: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        self.forward_with(s0, s1, Some(weights), edge_weights, None, mode)
    }

    /// The cell with the ops of α tensor `t` of `sample` on every edge (the sample's weights,
    /// when it has any, in place of softmax(α)); `edge_weights` only for a sample of weights
    /// alone (every op runs).
    pub fn forward_sampled(
        &self,
        s0: &Tensor,
        s1: &Tensor,
        sample: &ArchSample,
        t: usize,
        edge_weights: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let weights = sample.weights.as_ref().map(|w| &w[t]);
        self.forward_with(s0, s1, weights, edge_weights, Some((sample, t)), mode)
    }

    fn forward_with(
        &self,
        s0: &Tensor,
        s1: &Tensor,
        weights: Option<&Tensor>,
        edge_weights: Option<&Tensor>,
        sample: Option<(&ArchSample, usize)>,
        mode: Mode,
    ) -> Result<Tensor> {
        let mut states = vec![self.preprocess0.forward(s0, mode)?, self.preprocess1.forward(s1, mode)?];
        for n in 0..self.steps {
            let mut node: Option<Tensor> = None;
            // The unchosen ops' weights of a GDAS sample, added to the node as the reference does.
            let mut constants: Option<Tensor> = None;
            for (state, e) in states.iter().zip(node_edges(n)) {
                let w = weights.map(|w| w.get(e)).transpose()?;
                let pick = match sample {
                    Some((s, t)) => s.edge(t, e)?,
                    None => None,
                };
                match (pick, w) {
                    (Some(pick), w) => {
                        let (acc, c) = self.ops[e].forward_picked(node, state, w.as_ref(), pick, mode)?;
                        node = acc;
                        if let Some(c) = c {
                            constants = Some(ops::accumulate(constants, c, None)?);
                        }
                    }
                    (None, Some(w)) => {
                        let beta = edge_weights.map(|b| b.narrow(0, e, 1)).transpose()?;
                        node = Some(self.ops[e].forward_into(node, state, &w, beta.as_ref(), mode)?);
                    }
                    (None, None) => candle_core::bail!("a relaxed cell forward needs op weights"),
                }
            }
            let node = match node {
                Some(n) => n,
                // Every chosen op of the node was `none`.
                None => {
                    let (b, c, h, w) = states[1].dims4()?;
                    let (h, w) = if self.reduction { (h.div_ceil(2), w.div_ceil(2)) } else { (h, w) };
                    Tensor::zeros((b, c, h, w), states[1].dtype(), states[1].device())?
                }
            };
            states.push(match constants {
                Some(k) => node.broadcast_add(&k)?,
                None => node,
            });
        }
        Tensor::cat(&states[states.len() - self.multiplier..], 1)
    }
}
