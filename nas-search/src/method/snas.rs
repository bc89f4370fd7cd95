//! `snas`: SNAS (Xie et al. 2019). The relaxed sample softmax((log_softmax(α) + G)/τ) weights
//! every op (`sampling::snas_sample`); one forward and backward on a search-train batch gives
//! the gradients of the weights (SGD) and of α (Adam) alike: a single-level search. τ falls
//! geometrically from `tau_max` to `tau_min` over the epochs. The optional resource penalty
//! is λ·Σ Z·c / Σ max c over every edge (c: the op's parameters or mult-adds, summed over the
//! cells that share α), i.e. λ times the expected cost of the relaxed child as a fraction of
//! the most expensive one, differentiated through the relaxed sample Z. Genotypes derive from
//! α as DARTS' do; evaluation runs the genotype's child.


use candle_core::Tensor;
use nas_core::config_error::require_finite_non_negative;
use nas_core::dist::{step_grads, StepGrads};
use nas_core::nn::Mode;
use nas_core::ops;
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use search_spaces::{ArchSample, OpCost, Supernet};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::sampling::{self, micro_output, snas_sample, Gumbel, GumbelSearch, GumbelStep, WEIGHT_DRAW};
use super::{
    MethodContext, MethodSpec, RecordChart, SearchMethod, StepAt, StepBatches,
    WeightStep,
};
use crate::config::SearchConfig;
use crate::step::Batch;
use crate::{Error, Result};

pub struct Snas;

/// The cost SNAS' resource penalty counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resource {
    /// Parameters of the sampled ops.
    #[default]
    Params,
    /// Mult-adds of the sampled ops' convolutions at the input size of the search.
    MultAdds,
}

nas_core::named_enum!(Resource, "resource", [Resource::Params => "params", Resource::MultAdds => "mult-adds"]);

/// The SNAS paper's τ 1 → 0.03, no penalty, by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct SnasConfig {
    /// The temperature of the first epoch.
    #[default = 1.0]
    pub tau_max: f64,
    /// The temperature of the last epoch.
    #[default = 0.03]
    pub tau_min: f64,
    /// What the resource penalty counts.
    pub resource: Resource,
    /// The penalty's weight λ (0: off).
    pub resource_weight: f64,
}

/// The temperature of `epoch` of `epochs`: geometric from `max` at the first epoch to `min`
/// at the last.
pub fn temperature((max, min): (f64, f64), epoch: usize, epochs: usize) -> f64 {
    let t = if epochs > 1 { epoch as f64 / (epochs - 1) as f64 } else { 0.0 };
    max * (min / max).powf(t)
}

impl MethodSpec for Snas {
    const NAME: &'static str = "snas";
    const ABOUT: &'static str =
        "SNAS: a relaxed concrete sample of every edge, single level, --tau-max, --tau-min, --resource-weight";
    const SAMPLES_OPS: bool = true;
    type Config = SnasConfig;

    fn flags() -> Vec<Flag> {
        let mut f = sampling::temperature_flags();
        f.push(Flag::one("resource", "resource", "R", settings::parse::<Resource>)
            .help("snas: what the resource penalty counts, params or mult-adds"));
        f.push(Flag::one("resource-weight", "resource_weight", "λ", settings::parse::<f64>)
            .help("snas: SNAS' penalty on the relaxed child's expected cost, its weight λ (0: off)"));
        f
    }

    fn charts() -> Vec<RecordChart> {
        vec![sampling::TEMPERATURE_CHART]
    }

    /// The penalty: no other method has one.
    fn requests() -> &'static [&'static str] {
        &["resource_weight"]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[
            ("sampling.tau_max", "tau_max"),
            ("sampling.tau_min", "tau_min"),
            ("sampling.resource", "resource"),
            ("sampling.resource_weight", "resource_weight"),
        ]
    }

    fn validate(c: &SnasConfig, _: &SearchConfig) -> Result<(), ConfigError> {
        sampling::validate_temperatures(c.tau_max, c.tau_min)?;
        require_finite_non_negative(&[("method.resource_weight", c.resource_weight)])
    }

    fn build(c: &SnasConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        let step = SnasStep { resource: c.resource, weight: c.resource_weight, costs: None };
        // Single level: α learns from the search-train batch, no search-valid batch is read.
        Ok(GumbelSearch::boxed((c.tau_max, c.tau_min), temperature, false, ctx, step))
    }
}

/// SNAS' step, with its resource penalty.
struct SnasStep {
    resource: Resource,
    weight: f64,
    /// The normalised per-column costs, per α tensor, once the input size is known.
    costs: Option<Vec<Tensor>>,
}

impl SnasStep {
    /// The resource penalty of the relaxed sample (None when its weight is 0).
    fn penalty(&mut self, net: &dyn Supernet, train: &Batch, sample: &ArchSample) -> Result<Option<Tensor>> {
        if self.weight == 0.0 {
            return Ok(None);
        }
        let Some(weights) = &sample.weights else { return Ok(None) };
        if self.costs.is_none() {
            let (_, _, h, w) = train.x.dims4()?;
            self.costs = Some(cost_tensors(&net.op_costs(h, w), self.resource, &weights[0])?);
        }
        let costs = self.costs.as_deref().unwrap_or_default();
        Ok(Some(resource_penalty(weights, costs, self.weight)?))
    }
}

impl GumbelStep for SnasStep {
    /// One forward and backward for the weights and α; the loss includes the penalty.
    fn step(&mut self, g: &mut Gumbel, net: &dyn Supernet, w: WeightStep, at: StepAt, b: StepBatches) -> Result<StepGrads> {
        let mut rng = sampling::draw(g.seed, at.epoch, WEIGHT_DRAW + at.step as u64);
        let sample = snas_sample(&net.op_logits(Mode::TRAIN_ALL)?, g.tau, &mut rng)?;
        let penalty = match b.train.first() {
            Some(first) => self.penalty(net, first, &sample)?,
            None => None,
        };
        let (weights, arch) = (w.opt.params().to_vec(), net.arch().weights());
        let grads = step_grads(&b.train, &[&weights, &arch], |m| {
            micro_output(net, m, Mode::TRAIN_ALL, Some(&sample), penalty.as_ref())
        })?;
        w.opt.step_clipped(&grads.grads[0], w.clip)?;
        g.adam.step(&grads.grads[1])?;
        Ok(grads)
    }
}

/// SNAS' resource penalty λ·Σ_t Σ Z_t ⊙ c_t of relaxed weights Z (one per α tensor) and
/// normalised costs c (`cost_tensors`).
pub fn resource_penalty(weights: &[Tensor], costs: &[Tensor], lambda: f64) -> Result<Tensor> {
    if weights.len() != costs.len() {
        return Err(Error::Internal(format!("{} weight tensors for {} cost tensors", weights.len(), costs.len())));
    }
    let mut total: Option<Tensor> = None;
    for (z, c) in weights.iter().zip(costs) {
        total = Some(ops::accumulate(total, (z * c)?.sum_all()?, None)?);
    }
    match total {
        Some(t) => Ok((t * lambda)?),
        None => Err(Error::Internal("a resource penalty of no α tensors".to_string())),
    }
}

/// The per-column costs as (E, width) tensors like `like`, divided by the cost of the most
/// expensive child (the sum of every edge's largest cost).
pub fn cost_tensors(costs: &[Vec<Vec<OpCost>>], resource: Resource, like: &Tensor) -> Result<Vec<Tensor>> {
    let value = |c: &OpCost| match resource {
        Resource::Params => c.params,
        Resource::MultAdds => c.mult_adds,
    };
    let most: f64 = costs.iter().flatten().map(|row| row.iter().map(value).fold(0.0, f64::max)).sum();
    if most <= 0.0 {
        return Err(Error::config(format!("SNAS' {resource} penalty: no op of the supernet has a cost")));
    }
    costs
        .iter()
        .map(|rows| {
            let width = rows.iter().map(Vec::len).max().unwrap_or(0);
            let flat: Vec<f32> = rows
                .iter()
                .flat_map(|r| (0..width).map(move |k| r.get(k).map_or(0.0, |c| (value(c) / most) as f32)))
                .collect();
            Ok(Tensor::from_vec(flat, (rows.len(), width), like.device())?.to_dtype(like.dtype())?)
        })
        .collect()
}
