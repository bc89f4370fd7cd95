//! `enas`: ENAS (Pham et al. 2018, micro search). The controller (`controller`, an LSTM policy)
//! samples a child per search-train batch, which alone trains the shared weights. After every
//! epoch the controller takes `controller_steps` REINFORCE updates, each from
//! `controller_aggregate` children rewarded with their accuracy on a search-valid batch; then
//! the best of `select_samples` children it samples on one search-valid batch is the epoch's
//! genotype (`selection`). α never learns.
//!
//! The controller's decisions are the space's (`Supernet::controller_spec`): ENAS' micro cells
//! in the darts space (`ControllerConfig::enas_micro`), one op per edge in nb201 with
//! AutoDL-Projects' controller (`ControllerConfig::autodl_nb201`).

pub mod controller;
pub mod controller_config;
mod controller_state;
mod tf_adam;

use std::path::Path;

use nas_core::checkpoint::LoadedTensors;
use nas_core::dist::StepGrads;
use nas_core::hypergrad::WeightGuard;
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use search_spaces::{ArchSample, Child, ControllerSpec, Genotype, Supernet};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use serde_json::{json, Map, Value};

use self::controller::{Controller, Sample};
use self::controller_config::ControllerConfig;
use super::sampling::{self, child_accuracy, child_sample, CONTROLLER_DRAW, WEIGHT_DRAW};
use super::selection::{self, Selector};
use super::{
    positive, Metadata, MethodContext, MethodSpec, NamedTensors, RecordChart, SearchMethod, StepAt, StepBatches,
    WeightStep,
};
use crate::config::SearchConfig;
use crate::step::{weight_step, Batch};
use crate::{Error, Result};

pub struct Enas;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct EnasConfig {
    /// Controller updates after every epoch (`controller_train_steps`); None: the reference's
    /// (ENAS' micro search 30, AutoDL's NAS-Bench-201 ENAS 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_steps: Option<usize>,
    /// Sampled children (one validation batch each) per controller update
    /// (`controller_num_aggregate`); None: the reference's (10, AutoDL 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_aggregate: Option<usize>,
    /// Children compared at the end of every epoch.
    #[default(selection::SELECT_SAMPLES)]
    pub select_samples: usize,
}

impl MethodSpec for Enas {
    const NAME: &'static str = "enas";
    const ABOUT: &'static str = "ENAS: an LSTM controller samples the child, REINFORCE from its validation accuracy";
    const SAMPLES_OPS: bool = true;
    type Config = EnasConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one("controller-steps", "controller_steps", "N", settings::parse::<usize>)
                .help("enas: controller updates after every epoch (darts 30 as ENAS, nb201 50 as AutoDL)"),
            Flag::one("controller-aggregate", "controller_aggregate", "N", settings::parse::<usize>)
                .help("enas: children per controller update, one validation batch each (darts 10, nb201 20)"),
            selection::select_samples_flag(),
        ]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[
            ("sampling.controller_steps", "controller_steps"),
            ("sampling.controller_aggregate", "controller_aggregate"),
            selection::SELECT_LEGACY,
        ]
    }

    fn charts() -> Vec<RecordChart> {
        let reward = RecordChart {
            title: "controller reward",
            curves: &[("controller_reward", "reward"), ("controller_baseline", "baseline")],
        };
        vec![reward, selection::SELECTION_CHART]
    }

    fn validate(c: &EnasConfig, _: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "controller_steps", c.controller_steps.unwrap_or(1))?;
        positive(Self::NAME, "controller_aggregate", c.controller_aggregate.unwrap_or(1))?;
        selection::validate_select_samples(Self::NAME, c.select_samples)
    }

    fn build(c: &EnasConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        let spec = ctx.net.controller_spec().map_err(|e| Error::config(format!("ENAS chooses from one op list: {e}")))?;
        let mut ccfg = match spec {
            ControllerSpec::PerEdge { .. } => ControllerConfig::autodl_nb201(),
            ControllerSpec::Micro { .. } => ControllerConfig::enas_micro(),
        };
        ccfg.train_steps = c.controller_steps.unwrap_or(ccfg.train_steps);
        ccfg.num_aggregate = c.controller_aggregate.unwrap_or(ccfg.num_aggregate);
        Ok(Box::new(EnasSearch {
            seed: ctx.seed,
            controller: Controller::new(spec, ccfg, ctx.seed, ctx.device)?,
            selector: Selector::new(ctx.seed, c.select_samples),
            epoch_stats: None,
        }))
    }
}

/// What the controller did in an epoch (means over its updates).
#[derive(Debug, Clone, Copy, Default)]
struct ControllerEpoch {
    reward: f64,
    entropy: f64,
    baseline: f64,
}

/// The checkpoint prefix of the controller's state.
const CONTROLLER_PREFIX: &str = "controller";

struct EnasSearch {
    seed: u64,
    controller: Controller,
    selector: Selector,
    epoch_stats: Option<ControllerEpoch>,
}

impl EnasSearch {
    /// A child of the controller with its sample.
    fn child(&self, net: &dyn Supernet, rng: &mut nas_core::rng::Rng) -> Result<(Child, Sample)> {
        let s = self.controller.sample(rng)?;
        Ok((net.child_from_decisions(&s.decisions.0)?, s))
    }
}

impl SearchMethod for EnasSearch {
    fn reads_valid(&self) -> bool {
        false
    }

    fn begin_epoch(&mut self, _epoch: usize) {
        self.epoch_stats = None;
    }

    fn step(&mut self, net: &dyn Supernet, w: WeightStep, at: StepAt, b: StepBatches) -> Result<StepGrads> {
        let mut rng = sampling::draw(self.seed, at.epoch, WEIGHT_DRAW + at.step as u64);
        let (chosen, _) = self.child(net, &mut rng)?;
        weight_step(net, w.opt, &b.train, w.clip, Some(&child_sample(chosen)))
    }

    /// The controller's updates, then the choice of the epoch's child; the batch-norm
    /// statistics the children's forwards move are restored afterwards.
    fn end_epoch(&mut self, net: &dyn Supernet, epoch: usize, valid: &mut dyn FnMut() -> Result<Batch>) -> Result<()> {
        let buffers = net.weights().buffers();
        let _statistics = WeightGuard::restoring(&buffers)?;
        let (steps, aggregate) = (self.controller.config().train_steps, self.controller.config().num_aggregate);
        let mut sums = ControllerEpoch::default();
        for k in 0..steps {
            let mut samples = Vec::with_capacity(aggregate);
            for a in 0..aggregate {
                let mut rng = sampling::draw(self.seed, epoch, CONTROLLER_DRAW + (k * aggregate + a) as u64);
                let (chosen, s) = self.child(net, &mut rng)?;
                let batch = valid()?;
                samples.push((s, child_accuracy(net, &chosen, &batch)?));
            }
            let stats = self.controller.update(&samples)?;
            sums.reward += stats.mean_reward / steps as f64;
            sums.entropy += stats.mean_entropy / steps as f64;
            sums.baseline = stats.baseline;
        }
        self.epoch_stats = Some(sums);
        let batch = valid()?;
        let controller = &self.controller;
        self.selector.select(net, epoch, &batch, &mut |rng| {
            Ok(net.child_from_decisions(&controller.sample(rng)?.decisions.0)?)
        })
    }

    /// The selected child; before the first selection a uniformly drawn one.
    fn genotype(&self, net: &dyn Supernet) -> Result<Genotype> {
        self.selector.genotype(net, &|rng| Ok(net.random_child(rng)))
    }

    fn eval_sample(&self, net: &dyn Supernet) -> Result<Option<ArchSample>> {
        sampling::genotype_child(net, &self.genotype(net)?)
    }

    fn record_fields(&self, fields: &mut Map<String, Value>) {
        if let Some(c) = &self.epoch_stats {
            fields.insert("controller_reward".into(), json!(c.reward));
            fields.insert("controller_entropy".into(), json!(c.entropy));
            fields.insert("controller_baseline".into(), json!(c.baseline));
        }
        self.selector.record_fields(fields);
    }

    fn learns_alpha(&self) -> bool {
        false
    }

    fn state(&self) -> Result<(NamedTensors, Metadata)> {
        let (tensors, mut meta) = self.controller.state(CONTROLLER_PREFIX)?;
        meta.extend(self.selector.state());
        Ok((tensors, meta))
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        let tensors = |n: &str| ck.tensors.get(n).cloned();
        let meta = |n: &str| ck.meta(n).map(str::to_string);
        self.controller
            .load_state(CONTROLLER_PREFIX, &tensors, &meta)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        self.selector.restore(ck, path)
    }
}
