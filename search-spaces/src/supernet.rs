//! What the search loop needs from any supernet, whatever its space. Each space implements it
//! next to its supernet and builds it through the registry (`SpaceKind::build_supernet`).

use std::collections::HashMap;

use candle_core::Tensor;
use nas_core::nn::Mode;
use nas_core::params::ParamStore;
use nas_core::rng::Rng;
use serde_json::Value;

use crate::children::{self, ChildShape, ControllerSpec};
use crate::error::Error;
use crate::genotype::Genotype;
use crate::model_config::OpsConfig;

pub trait Supernet {
    /// Logits (B, classes).
    fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor>;
    /// Network weights and buffers.
    fn weights(&self) -> &ParamStore;
    /// Architecture parameters (α, β).
    fn arch(&self) -> &ParamStore;
    /// The discrete architecture the current α derives.
    fn genotype(&self) -> crate::Result<Genotype>;
    /// Architecture parameters as JSON for the metrics log.
    fn arch_json(&self) -> crate::Result<Value>;
    /// Position of the network's own random stream (draws of its noise ops so far), which a
    /// checkpoint keeps; 0 for a network that draws nothing.
    fn stream_position(&self) -> u64 {
        0
    }
    fn set_stream_position(&self, _draws: u64) {}
    /// The dropout probability after skip_connect in training (P-DARTS); networks without
    /// it ignore it.
    fn set_skip_dropout(&self, _p: f64) {}

    /// The α tensors the sampling methods draw from, as the forward sees them (`mode`), one
    /// row per edge: normal and reduce in the darts space, the one of nb201. Columns an edge
    /// does not have (ragged op sets) are −∞.
    fn op_logits(&self, mode: Mode) -> candle_core::Result<Vec<Tensor>>;
    /// The op names of every column of every edge, per α tensor.
    fn edge_ops(&self) -> Vec<Vec<Vec<&'static str>>>;
    /// Logits (B, classes) with the ops of `sample` in place of softmax(α).
    fn forward_sampled(&self, x: &Tensor, mode: Mode, sample: &ArchSample) -> candle_core::Result<Tensor>;
    /// The discrete architecture of a one-op-per-chosen-input sample (ENAS, random
    /// sampling): per α tensor and edge, the chosen columns.
    fn genotype_of(&self, chosen: &[Vec<Vec<usize>>]) -> crate::Result<Genotype>;
    /// Per α tensor, edge and column, what that op costs summed over the cells sharing the
    /// tensor: its parameters, and the mult-adds of its convolutions (weight elements × output
    /// pixels) for inputs of `height`×`width` (SNAS' resource penalty).
    fn op_costs(&self, height: usize, width: usize) -> Vec<Vec<Vec<OpCost>>>;
    /// The mult-adds of the convolutions and the classifier in one image's forward with every
    /// op running (the relaxed supernet) for `height`×`width` inputs; None where not counted.
    fn mult_adds(&self, _height: usize, _width: usize) -> Option<f64> {
        None
    }
    /// How a discrete child of the space is laid out (ENAS, random sampling).
    fn child_shape(&self) -> ChildShape;
    /// The inverse of `genotype_of`: the chosen columns of a genotype of this supernet's space
    /// and op sets.
    fn child_of(&self, genotype: &Genotype) -> crate::Result<Child>;

    /// A uniformly drawn child (random sampling with weight sharing).
    fn random_child(&self, rng: &mut nas_core::rng::Rng) -> Child {
        children::uniform_child(&self.edge_ops(), self.child_shape(), rng)
    }

    /// What an ENAS controller decides about a child of this supernet; an error when its
    /// children are not one list of choices (darts edges with different op sets).
    fn controller_spec(&self) -> crate::Result<ControllerSpec> {
        children::controller_spec(&self.edge_ops(), self.child_shape())
    }

    /// The child a controller's decisions (`controller_spec`'s order) stand for.
    fn child_from_decisions(&self, decisions: &[usize]) -> crate::Result<Child> {
        children::child_from_decisions(&self.edge_ops(), self.child_shape(), decisions)
    }

    /// P-DARTS' step between stages: the op sets every edge keeps after dropping its `drop`
    /// weakest ops by the current α, as the next stage's `model.ops`. Spaces without op sets
    /// per edge have no stages.
    fn prune_ops(&self, _drop: usize) -> crate::Result<OpsConfig> {
        Err(Error::Config("this space has no op sets to prune between stages".to_string()))
    }

    /// DrNAS' step between the stages of one network (Net2Wider): this supernet's weights and
    /// buffers, each weight with its momentum, from those of the previous stage's supernet `old`
    /// (`state`: by parameter name, the value and the momentum, if any), over the ops this one
    /// kept, grown to its partial channels with the new channels copying random old ones drawn
    /// from `rng`. Spaces without op sets per edge have no such stages.
    fn widen_from(&self, _old: &dyn Supernet, _state: &NamedState, _rng: &mut Rng) -> crate::Result<NamedState> {
        Err(Error::Config("this space has no stages that widen one network".to_string()))
    }

    /// P-DARTS' final cell after the last stage, with at most `max_skip` skip connections in
    /// the normal cell.
    fn final_genotype(&self, _max_skip: Option<usize>) -> crate::Result<Genotype> {
        Err(Error::Config("this space has no progressive derivation".to_string()))
    }
}

/// Parameters by name, each with its optimiser's momentum (None for buffers, or before the first
/// step).
pub type NamedState = HashMap<String, (Tensor, Option<Tensor>)>;

/// Per α tensor, edge and column of a supernet whose op lists are `new`, the column of the same
/// op in `old` (`Supernet::edge_ops` of both): how α and everything per op carry over when a
/// stage keeps some of the ops. An op `old` does not have on that edge is an error.
pub fn column_map(old: &[Vec<Vec<&str>>], new: &[Vec<Vec<&str>>]) -> crate::Result<Child> {
    if old.len() != new.len() || old.iter().zip(new).any(|(o, n)| o.len() != n.len()) {
        return Err(Error::Config("the two supernets' α tensors have different edges".to_string()));
    }
    old.iter()
        .zip(new)
        .enumerate()
        .map(|(t, (old_edges, new_edges))| {
            old_edges
                .iter()
                .zip(new_edges)
                .enumerate()
                .map(|(e, (o, n))| {
                    n.iter()
                        .map(|op| {
                            o.iter().position(|x| x == op).ok_or_else(|| {
                                Error::Config(format!("{op} on edge {e} of α tensor {t} was not an op there before"))
                            })
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Parameters and mult-adds of one op of a supernet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpCost {
    pub params: f64,
    pub mult_adds: f64,
}

impl OpCost {
    /// Adds parameter `dims` of an op whose output has `pixels` pixels (a 4-d weight is a
    /// convolution's).
    pub fn add(&mut self, dims: &[usize], pixels: usize) {
        let n: usize = dims.iter().product();
        self.params += n as f64;
        if dims.len() == 4 {
            self.mult_adds += (n * pixels) as f64;
        }
    }
}

/// A discrete child of a supernet: per α tensor and edge, the α columns that run.
pub type Child = Vec<Vec<Vec<usize>>>;

/// The ops one forward of a sampling method runs (GDAS, SNAS, ENAS, random sampling), for every
/// α tensor of the supernet (`Supernet::op_logits`: normal and reduce in the darts space, the
/// one of nb201).
#[derive(Debug, Clone)]
pub struct ArchSample {
    /// Per α tensor, the (E, width) weights that scale each op's output; None: every chosen
    /// op counts once (ENAS, random sampling). Required when every op runs.
    pub weights: Option<Vec<Tensor>>,
    /// Per α tensor and edge, the α columns that run (a repeated column runs twice, an empty
    /// list leaves the edge out); None: every op runs (SNAS' relaxed sample).
    pub chosen: Option<Child>,
    /// With `chosen`: every other column of an edge adds its weight (zero in value) to the
    /// edge's output, so that its logit gets a gradient, as AutoDL's GDAS cell does.
    pub add_unchosen: bool,
}

impl ArchSample {
    /// The chosen columns of edge `e` of α tensor `t`, with `add_unchosen`; None when every op
    /// runs.
    pub fn edge(&self, t: usize, e: usize) -> candle_core::Result<Option<EdgePick<'_>>> {
        let Some(chosen) = &self.chosen else { return Ok(None) };
        let cols = chosen
            .get(t)
            .and_then(|c| c.get(e))
            .ok_or_else(|| candle_core::Error::Msg(format!("the sample names no ops for edge {e} of α tensor {t}")))?;
        Ok(Some(EdgePick { cols, add_unchosen: self.add_unchosen }))
    }
}

/// The ops of one edge in a sampled forward.
#[derive(Debug, Clone, Copy)]
pub struct EdgePick<'a> {
    pub cols: &'a [usize],
    pub add_unchosen: bool,
}

impl EdgePick<'_> {
    /// With `add_unchosen`, the sum of the edge's weights `w` (one per column, `width` of
    /// them) over the columns it did not choose, a (1,) tensor; None otherwise.
    pub fn unchosen_sum(&self, w: &Tensor, width: usize) -> candle_core::Result<Option<Tensor>> {
        if !self.add_unchosen {
            return Ok(None);
        }
        let mut sum = None;
        for col in (0..width).filter(|c| !self.cols.contains(c)) {
            sum = Some(nas_core::ops::accumulate(sum, w.narrow(0, col, 1)?, None)?);
        }
        Ok(sum)
    }
}
