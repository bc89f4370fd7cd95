//! `gdas`: GDAS (Dong & Yang 2019; AutoDL-Projects `search_model_gdas.py`). Per edge a hard
//! Gumbel-softmax sample (`sampling::gdas_sample`): only the arg-max op runs, weighted by the
//! straight-through estimate, and the edge's other columns add theirs (zero in value) so every
//! logit gets a gradient. Each step trains the weights on a search-train batch, then α (Adam)
//! on a search-valid batch, each with a fresh sample (AutoDL's order). τ falls linearly from
//! `tau_max` to `tau_min` over the epochs (AutoDL: τ_max − (τ_max − τ_min)·e/(E − 1)).
//! Genotypes derive from α as DARTS' do; evaluation runs the genotype's child.


use nas_core::dist::{step_grads, StepGrads};
use nas_core::nn::Mode;
use nas_core::settings::Flag;
use nas_core::ConfigError;
use search_spaces::Supernet;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use serde_json::json;

use super::sampling::{self, gdas_sample, micro_output, Gumbel, GumbelSearch, GumbelStep, ARCH_DRAW, WEIGHT_DRAW};
use super::{
    MethodContext, MethodSpec, Preset, RecordChart, SearchMethod, StepAt, StepBatches,
    WeightStep,
};
use crate::config::SearchConfig;
use crate::step::weight_step;
use crate::Result;

pub struct Gdas;

/// AutoDL's `--tau_max 10 --tau_min 0.1` by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct GdasConfig {
    /// The temperature of the first epoch.
    #[default = 10.0]
    pub tau_max: f64,
    /// The temperature of the last epoch.
    #[default = 0.1]
    pub tau_min: f64,
}

/// The temperature of `epoch` of `epochs`: linear from `max` at the first epoch to `min` at
/// the last.
pub fn temperature((max, min): (f64, f64), epoch: usize, epochs: usize) -> f64 {
    let t = if epochs > 1 { epoch as f64 / (epochs - 1) as f64 } else { 0.0 };
    max - (max - min) * t
}

impl MethodSpec for Gdas {
    const NAME: &'static str = "gdas";
    const ABOUT: &'static str = "GDAS: one op per edge by a hard Gumbel-softmax sample, --tau-max, --tau-min";
    const SAMPLES_OPS: bool = true;
    type Config = GdasConfig;

    fn flags() -> Vec<Flag> {
        sampling::temperature_flags()
    }

    fn legacy_fields() -> &'static [(&'static str, &'static str)] {
        &sampling::TEMPERATURE_LEGACY
    }

    /// AutoDL-Projects' GDAS on NAS-Bench-201 (scripts-search/NAS-Bench-201-algos/GDAS.sh,
    /// configs/nas-benchmark/algos/GDAS.config): 250 epochs, batch 64, SGD 0.025 → 0.001 with
    /// Nesterov momentum 0.9 and weight decay 5e-4, Adam 3e-4 (0.5, 0.999) with weight decay
    /// 1e-3, τ 10 → 0.1, clip 5.
    fn presets() -> Vec<Preset> {
        vec![Preset {
            name: "gdas",
            about: "AutoDL's GDAS on nb201",
            overlay: json!({
                "space": "nb201",
                "method": {"name": Self::NAME, "tau_max": 10.0, "tau_min": 0.1},
                "epochs": 250,
                "weight_optimizer": {"weight_decay": 5e-4, "nesterov": true},
            }),
        }]
    }

    fn charts() -> Vec<RecordChart> {
        vec![sampling::TEMPERATURE_CHART]
    }

    fn validate(c: &GdasConfig, _: &SearchConfig) -> Result<(), ConfigError> {
        sampling::validate_temperatures(c.tau_max, c.tau_min)
    }

    fn build(c: &GdasConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        let step = GdasStep { arch_stepped: false };
        Ok(GumbelSearch::boxed((c.tau_max, c.tau_min), temperature, true, ctx, step))
    }
}

/// GDAS' step: a weight step with one sample, then an α step with another.
struct GdasStep {
    arch_stepped: bool,
}

impl GumbelStep for GdasStep {
    fn step(&mut self, g: &mut Gumbel, net: &dyn Supernet, w: WeightStep, at: StepAt, b: StepBatches) -> Result<StepGrads> {
        let mut rng = sampling::draw(g.seed, at.epoch, WEIGHT_DRAW + at.step as u64);
        let sample = gdas_sample(&net.op_logits(Mode::TRAIN_WEIGHTS)?, g.tau, &mut rng)?;
        let out = weight_step(net, w.opt, &b.train, w.clip, Some(&sample))?;
        self.arch_stepped = false;
        if let Some(valid) = &b.valid {
            let mut rng = sampling::draw(g.seed, at.epoch, ARCH_DRAW + at.step as u64);
            let sample = gdas_sample(&net.op_logits(Mode::TRAIN_ARCH)?, g.tau, &mut rng)?;
            let arch = net.arch().weights();
            let grads = step_grads(valid, &[&arch], |b| micro_output(net, b, Mode::TRAIN_ARCH, Some(&sample), None))?;
            g.adam.step(&grads.grads[0])?;
            self.arch_stepped = true;
        }
        Ok(out)
    }

    /// One forward and backward on the search-valid batch.
    fn last_arch_grad_evals(&self) -> usize {
        usize::from(self.arch_stepped)
    }
}
