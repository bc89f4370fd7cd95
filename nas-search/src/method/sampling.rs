//! What the sampling methods share: instead of running every op of an edge weighted by
//! softmax(α), each forward samples what runs.
//!
//! - The Gumbel-softmax samples of GDAS and SNAS: p = softmax((log_softmax(α) + G)/τ) with
//!   standard Gumbel noise G, redrawn (as AutoDL does) while p is not finite; GDAS' hard
//!   sample runs the arg-max op weighted by the straight-through h = one_hot − p̂ + p (p̂ = p
//!   without gradient), and every other op of the edge adds its h (zero in value) so that its
//!   logit gets a gradient (AutoDL's `forward_gdas`).
//! - Their temperature settings (`tau_max`, `tau_min`) and flags.
//! - A child's accuracy with batch statistics (ENAS' reward, the choice of a child) and the
//!   evaluation of the current genotype's child.
//!
//! Every draw of a sampling method comes from the stream `Purpose::Sample` keyed by (epoch,
//! step and role), so a resumed run draws what the uninterrupted one did without saving
//! generator state.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use nas_core::checkpoint::LoadedTensors;
use nas_core::config_error::field;
use nas_core::dist::MicroOutput;
use nas_core::dist::StepGrads;
use nas_core::nn::{correct_count, cross_entropy, softmax_last_dim, Mode};
use nas_core::rng::{self, Purpose, Rng};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use rand::Rng as _;
use search_spaces::{ArchSample, Child, Supernet};
use serde_json::{json, Map, Value};

use super::{ArchAdam, Metadata, MethodContext, NamedTensors, SearchMethod, StepAt, StepBatches, WeightStep};
use crate::step::Batch;
use crate::{Error, Result};

/// The role of a draw: the high bits of the stream's second key (the low bits count).
pub const WEIGHT_DRAW: u64 = 0;
pub const ARCH_DRAW: u64 = 1 << 40;
pub const CONTROLLER_DRAW: u64 = 2 << 40;
pub const SELECT_DRAW: u64 = 3 << 40;

/// Redraws of a Gumbel sample before a non-finite α is reported.
const MAX_REDRAWS: usize = 100;

/// The sample stream of a run's `seed` for `key` (a role plus a count) in `epoch`.
pub fn draw(seed: u64, epoch: usize, key: u64) -> Rng {
    rng::stream(seed, Purpose::Sample, epoch as u64, key)
}

/// `--tau-max` and `--tau-min` (GDAS and SNAS, under `method`).
pub fn temperature_flags() -> Vec<Flag> {
    vec![
        Flag::one("tau-max", "tau_max", "τ", settings::parse::<f64>)
            .help("gdas, snas: the Gumbel-softmax temperature of the first epoch (gdas 10, snas 1)"),
        Flag::one("tau-min", "tau_min", "τ", settings::parse::<f64>)
            .help("gdas, snas: the temperature of the last epoch (gdas 0.1, snas 0.03)"),
    ]
}

/// The chart of the temperature GDAS and SNAS record (`tau`).
pub const TEMPERATURE_CHART: super::RecordChart =
    super::RecordChart { title: "Gumbel-softmax temperature τ", curves: &[("tau", "τ")] };

/// The config.json fields the temperatures had before the method section.
pub const TEMPERATURE_LEGACY: [(&str, &str); 2] = [("sampling.tau_max", "tau_max"), ("sampling.tau_min", "tau_min")];

/// Checks a temperature schedule from `max` at the first epoch to `min` at the last.
pub fn validate_temperatures(max: f64, min: f64) -> std::result::Result<(), ConfigError> {
    if !(max.is_finite() && min.is_finite() && min > 0.0 && max >= min) {
        return Err(ConfigError::new(format!(
            "{} and {} must be finite with 0 < tau_min ≤ tau_max, got {max} and {min}",
            field("method.tau_max"),
            field("method.tau_min")
        )));
    }
    Ok(())
}

/// What GDAS and SNAS share while they run: the epoch's temperature, the run's seed (the sample
/// stream) and Adam on α.
pub struct Gumbel {
    pub taus: (f64, f64),
    pub tau: f64,
    pub epochs: usize,
    pub seed: u64,
    pub adam: ArchAdam,
}

/// The temperature of `epoch` of `epochs`, from `taus` (first epoch, last epoch).
pub type Temperature = fn((f64, f64), usize, usize) -> f64;

/// A Gumbel-softmax method's own step.
pub trait GumbelStep {
    /// One search step at `g.tau`, drawing from `g.seed`'s stream, α stepped by `g.adam`.
    fn step(
        &mut self,
        g: &mut Gumbel,
        net: &dyn Supernet,
        w: WeightStep,
        at: StepAt,
        b: StepBatches,
    ) -> Result<StepGrads>;
    /// Gradient evaluations of the last architecture step.
    fn last_arch_grad_evals(&self) -> usize {
        0
    }
}

/// A running Gumbel-softmax method: the shared state and the method's step. Genotypes derive
/// from α; evaluation runs the genotype's child; records carry `tau`.
pub struct GumbelSearch<S> {
    g: Gumbel,
    temperature: Temperature,
    reads_valid: bool,
    step: S,
}

impl<S: GumbelStep + 'static> GumbelSearch<S> {
    /// The method at its first epoch's temperature; `reads_valid`: whether its step reads a
    /// search-valid batch.
    pub fn boxed(
        taus: (f64, f64),
        temperature: Temperature,
        reads_valid: bool,
        ctx: &MethodContext,
        step: S,
    ) -> Box<dyn SearchMethod> {
        let adam = ArchAdam::new(ctx.net.arch().weights(), ctx.arch_optimizer);
        let g = Gumbel { taus, tau: temperature(taus, 0, ctx.epochs), epochs: ctx.epochs, seed: ctx.seed, adam };
        Box::new(Self { g, temperature, reads_valid, step })
    }
}

impl<S: GumbelStep> SearchMethod for GumbelSearch<S> {
    fn reads_valid(&self) -> bool {
        self.reads_valid
    }

    fn begin_epoch(&mut self, epoch: usize) {
        self.g.tau = (self.temperature)(self.g.taus, epoch, self.g.epochs);
    }

    fn step(&mut self, net: &dyn Supernet, w: WeightStep, at: StepAt, b: StepBatches) -> Result<StepGrads> {
        self.step.step(&mut self.g, net, w, at, b)
    }

    fn eval_sample(&self, net: &dyn Supernet) -> Result<Option<ArchSample>> {
        genotype_child(net, &net.genotype()?)
    }

    fn record_fields(&self, fields: &mut Map<String, Value>) {
        fields.insert("tau".into(), json!(self.g.tau));
    }

    fn state(&self) -> Result<(NamedTensors, Metadata)> {
        Ok(self.g.adam.state())
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        self.g.adam.restore(ck, path)
    }

    fn last_arch_grad_evals(&self) -> usize {
        self.step.last_arch_grad_evals()
    }
}

/// Standard Gumbel noise −ln(−ln U), U uniform on (0, 1).
fn gumbel(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| loop {
            let u: f64 = rng.random();
            let g = -(-u.ln()).ln();
            if g.is_finite() {
                break g as f32;
            }
        })
        .collect()
}

/// log_softmax over the last dimension (−∞ entries, padding columns, stay −∞).
fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// softmax((log_softmax(α) + G)/τ) for Gumbel noise G (a tensor like α), and the
/// probabilities on the host; None when they are not finite.
fn relaxed_with(logits: &Tensor, noise: &Tensor, tau: f64) -> Result<Option<(Tensor, Vec<Vec<f32>>)>> {
    let p = softmax_last_dim(&((log_softmax(logits)? + noise)? / tau)?)?;
    let host = p.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(host.iter().flatten().all(|v| v.is_finite()).then_some((p, host)))
}

/// The relaxed sample with Gumbel noise from `rng`, redrawn while the probabilities are not
/// finite.
fn relaxed(logits: &Tensor, tau: f64, rng: &mut Rng) -> Result<(Tensor, Vec<Vec<f32>>)> {
    let (e, w) = logits.dims2()?;
    for _ in 0..MAX_REDRAWS {
        let g = Tensor::from_vec(gumbel(rng, e * w), (e, w), logits.device())?.to_dtype(logits.dtype())?;
        if let Some(r) = relaxed_with(logits, &g, tau)? {
            return Ok(r);
        }
    }
    Err(Error::NotFinite(format!(
        "the Gumbel-softmax sample stayed non-finite over {MAX_REDRAWS} draws: α is not finite"
    )))
}

/// The hard straight-through weights one_hot − p̂ + p of relaxed probabilities `p`, and the
/// arg-max column of every row (the first of equal ones, as torch's `max`).
fn hard(p: &Tensor, host: &[Vec<f32>]) -> Result<(Tensor, Vec<Vec<usize>>)> {
    let (e, w) = p.dims2()?;
    let index: Vec<usize> = host
        .iter()
        .map(|row| row.iter().enumerate().fold(0, |best, (k, &v)| if v > row[best] { k } else { best }))
        .collect();
    let mut one_hot = vec![0f32; e * w];
    for (r, &k) in index.iter().enumerate() {
        one_hot[r * w + k] = 1.0;
    }
    let one_hot = Tensor::from_vec(one_hot, (e, w), p.device())?.to_dtype(p.dtype())?;
    Ok((((one_hot - p.detach())? + p)?, index.into_iter().map(|k| vec![k]).collect()))
}

/// The samples of every α tensor, from Gumbel noise drawn from `rng` or given.
enum Noise<'a> {
    Drawn(&'a mut Rng),
    Given(&'a [Tensor]),
}

/// Relaxed (SNAS) or hard (GDAS) samples of every α tensor; None when given noise makes a
/// sample non-finite (drawn noise is redrawn instead).
fn sample(logits: &[Tensor], tau: f64, noise: Noise, hard_sample: bool) -> Result<Option<ArchSample>> {
    let mut weights = Vec::with_capacity(logits.len());
    let mut chosen = Vec::with_capacity(logits.len());
    let mut noise = noise;
    for (t, l) in logits.iter().enumerate() {
        let (p, host) = match &mut noise {
            Noise::Drawn(rng) => relaxed(l, tau, rng)?,
            Noise::Given(g) => {
                let Some(g) = g.get(t) else { return Err(Error::Internal(format!("no noise for α tensor {t}"))) };
                match relaxed_with(l, g, tau)? {
                    Some(r) => r,
                    None => return Ok(None),
                }
            }
        };
        if hard_sample {
            let (w, c) = hard(&p, &host)?;
            weights.push(w);
            chosen.push(c);
        } else {
            weights.push(p);
        }
    }
    let chosen = hard_sample.then_some(chosen);
    Ok(Some(ArchSample { weights: Some(weights), chosen, add_unchosen: hard_sample }))
}

/// GDAS' hard sample of every α tensor: the arg-max of the relaxed sample on every edge, with
/// the straight-through weights.
pub fn gdas_sample(logits: &[Tensor], tau: f64, rng: &mut Rng) -> Result<ArchSample> {
    sample(logits, tau, Noise::Drawn(rng), true)?.ok_or_else(|| Error::Internal("a drawn sample was dropped".into()))
}

/// GDAS' hard sample for given Gumbel noise (one tensor like each α tensor); None when the
/// probabilities are not finite (the method would redraw).
pub fn gdas_sample_with(logits: &[Tensor], noise: &[Tensor], tau: f64) -> Result<Option<ArchSample>> {
    sample(logits, tau, Noise::Given(noise), true)
}

/// SNAS' relaxed sample of every α tensor: every op runs, weighted by it.
pub fn snas_sample(logits: &[Tensor], tau: f64, rng: &mut Rng) -> Result<ArchSample> {
    sample(logits, tau, Noise::Drawn(rng), false)?.ok_or_else(|| Error::Internal("a drawn sample was dropped".into()))
}

/// SNAS' relaxed sample for given Gumbel noise; None when it is not finite.
pub fn snas_sample_with(logits: &[Tensor], noise: &[Tensor], tau: f64) -> Result<Option<ArchSample>> {
    sample(logits, tau, Noise::Given(noise), false)
}

/// A micro-batch's forward with the ops of `sample` (the relaxed supernet without one); the
/// loss plus `penalty` when given.
pub fn micro_output(
    net: &dyn Supernet,
    b: &Batch,
    mode: Mode,
    sample: Option<&ArchSample>,
    penalty: Option<&Tensor>,
) -> candle_core::Result<MicroOutput> {
    let logits = match sample {
        Some(s) => net.forward_sampled(&b.x, mode, s)?,
        None => net.forward(&b.x, mode)?,
    };
    let loss = cross_entropy(&logits, &b.y)?;
    let loss = match penalty {
        Some(p) => (loss + p)?,
        None => loss,
    };
    Ok(MicroOutput { loss, correct: correct_count(&logits, &b.y)?, n: b.y.dim(0)? })
}

/// A child that runs its chosen columns once each.
pub fn child_sample(chosen: Child) -> ArchSample {
    ArchSample { weights: None, chosen: Some(chosen), add_unchosen: false }
}

/// The accuracy of a child on a batch, with batch statistics and no gradients.
pub fn child_accuracy(net: &dyn Supernet, chosen: &[Vec<Vec<usize>>], batch: &Batch) -> Result<f64> {
    let mode = Mode { train: true, grad_weights: false, grad_arch: false };
    let logits = net.forward_sampled(&batch.x, mode, &child_sample(chosen.to_vec()))?;
    let correct = correct_count(&logits, &batch.y)?.to_scalar::<f32>()? as f64;
    Ok(correct / batch.y.dim(0)? as f64)
}

/// The evaluation forward of a sampling method: the child of `genotype`.
pub fn genotype_child(net: &dyn Supernet, genotype: &search_spaces::Genotype) -> Result<Option<ArchSample>> {
    Ok(Some(child_sample(net.child_of(genotype)?)))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// A NaN in α makes every redraw non-finite: the run stops with its own error, not a
    /// configuration message.
    #[test]
    fn a_non_finite_alpha_is_reported_as_such() {
        let alpha = Tensor::new(&[[0.1f32, f32::NAN, 0.3]], &Device::Cpu).unwrap();
        let mut rng = draw(1, 0, 0);
        for hard in [true, false] {
            let e = if hard {
                gdas_sample(std::slice::from_ref(&alpha), 1.0, &mut rng)
            } else {
                snas_sample(std::slice::from_ref(&alpha), 1.0, &mut rng)
            };
            let e = e.unwrap_err();
            assert!(matches!(e, Error::NotFinite(_)), "{e}");
            assert!(e.to_string().contains("α is not finite"), "{e}");
        }
        let fine = Tensor::new(&[[0.1f32, 0.2, 0.3]], &Device::Cpu).unwrap();
        let s = gdas_sample(&[fine], 1.0, &mut rng).unwrap();
        assert_eq!(s.chosen.map(|c| c[0].len()), Some(1));
    }
}
