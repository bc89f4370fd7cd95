//! `random`: random sampling with weight sharing (Li & Talwalkar 2019): a uniformly drawn child
//! per search-train batch (`Supernet::random_child`: in the darts space two distinct inputs
//! per node with an op other than `none` each, in nb201 one op of five per edge) trains the
//! shared weights alone; every epoch ends with the best of `select_samples` uniformly drawn
//! children on a search-valid batch (`selection`), which is the epoch's genotype. α never
//! learns.

use std::path::Path;

use nas_core::checkpoint::LoadedTensors;
use nas_core::dist::StepGrads;
use nas_core::settings::Flag;
use nas_core::ConfigError;
use search_spaces::{ArchSample, Genotype, Supernet};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use serde_json::{Map, Value};

use super::sampling::{self, child_sample, WEIGHT_DRAW};
use super::selection::{self, Selector};
use super::{
    Metadata, MethodContext, MethodSpec, NamedTensors, RecordChart, SearchMethod, StepAt, StepBatches, WeightStep,
};
use crate::config::SearchConfig;
use crate::step::{weight_step, Batch};
use crate::Result;

pub struct Random;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct RandomConfig {
    /// Children compared at the end of every epoch.
    #[default(selection::SELECT_SAMPLES)]
    pub select_samples: usize,
}

impl MethodSpec for Random {
    const NAME: &'static str = "random";
    const ABOUT: &'static str = "random sampling with weight sharing, the best of --select-samples children";
    const SAMPLES_OPS: bool = true;
    type Config = RandomConfig;

    fn flags() -> Vec<Flag> {
        vec![selection::select_samples_flag()]
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &[selection::SELECT_LEGACY]
    }

    fn charts() -> Vec<RecordChart> {
        vec![selection::SELECTION_CHART]
    }

    fn validate(c: &RandomConfig, _: &SearchConfig) -> Result<(), ConfigError> {
        selection::validate_select_samples(Self::NAME, c.select_samples)
    }

    fn build(c: &RandomConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        Ok(Box::new(RandomSearch { seed: ctx.seed, selector: Selector::new(ctx.seed, c.select_samples) }))
    }
}

struct RandomSearch {
    seed: u64,
    selector: Selector,
}

impl SearchMethod for RandomSearch {
    fn reads_valid(&self) -> bool {
        false
    }

    fn step(&mut self, net: &dyn Supernet, w: WeightStep, at: StepAt, b: StepBatches) -> Result<StepGrads> {
        let mut rng = sampling::draw(self.seed, at.epoch, WEIGHT_DRAW + at.step as u64);
        let sample = child_sample(net.random_child(&mut rng));
        weight_step(net, w.opt, &b.train, w.clip, Some(&sample))
    }

    fn end_epoch(&mut self, net: &dyn Supernet, epoch: usize, valid: &mut dyn FnMut() -> Result<Batch>) -> Result<()> {
        let batch = valid()?;
        self.selector.select(net, epoch, &batch, &mut |rng| Ok(net.random_child(rng)))
    }

    fn genotype(&self, net: &dyn Supernet) -> Result<Genotype> {
        self.selector.genotype(net, &|rng| Ok(net.random_child(rng)))
    }

    fn eval_sample(&self, net: &dyn Supernet) -> Result<Option<ArchSample>> {
        sampling::genotype_child(net, &self.genotype(net)?)
    }

    fn record_fields(&self, fields: &mut Map<String, Value>) {
        self.selector.record_fields(fields);
    }

    fn learns_alpha(&self) -> bool {
        false
    }

    fn state(&self) -> Result<(NamedTensors, Metadata)> {
        Ok((Vec::new(), self.selector.state()))
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        self.selector.restore(ck, path)
    }
}
