//! `sdarts`: SDARTS (Chen & Hsieh 2020, "Stabilizing Differentiable Architecture Search via
//! Perturbation-based Regularization"; xiangning-chen/SmoothDARTS `sota/cnn/train_search.py`,
//! `attacker/perturb.py`). The α step is any hypergradient method's (`arch_step`, first order
//! by default, as the reference's `--unrolled` off); the weight step trains the weights with
//! perturbed mixing weights instead of softmax(α), which smooths the validation loss landscape
//! around α and keeps DARTS from collapsing onto parameter-free ops:
//!
//! - `rs` (SDARTS-RS, `Random_alpha`): A = clip(softmax(α) + U(−ε, ε)), a fresh uniform draw per
//!   step and entry;
//! - `adv` (SDARTS-ADV, `Linf_PGD_alpha`): with batch norm on its running statistics, from
//!   A₀ = clip(softmax(α) + U(−ε, ε)), `adv_steps` (7) ascent steps on the training loss of the
//!   step's search-train batch, A ← clip(S + clamp(A + 2ε/7·sign ∇_A L_train − S, −ε, ε)) with S
//!   = softmax(α); if the loss at the end is below the loss at S, A = S (no perturbation);
//!
//! where clip() is the reference's simplex clip of each edge's row: clamp to [0, 1], a row that
//! became all zero puts 1 on its (pre-clamp) arg-max, then divide by the row's sum. ε grows
//! linearly over the run as the reference computes it, ε(e) = ε_min + (ε − ε_min)·e/E (ε_min =
//! 0.03, ε = `epsilon`, 0.3), so the last epoch's is just below ε. The clip comes after the
//! projection, as in the reference, so a clipped row can end farther than ε from softmax(α)
//! (its renormalisation); the point before it is in the ball. α itself is never changed by
//! the perturbation: the weight step reads the perturbed weights, the α step the real α.
//!
//! Departures, all where the reference has no counterpart: columns of α that pad an edge with
//! fewer ops than its cell type's widest (ragged op sets) stay zero; draws come from the run's
//! sample stream keyed by (epoch, step), so a resumed run perturbs as the uninterrupted one.
//! The reference perturbs the DARTS and NAS-Bench-201 supernets and PC-DARTS' (partial channels
//! with edge normalisation, `train_search_pcdarts.py`); so does this, in every space.

use candle_core::{DType, Tensor, Var};
use nas_core::config_error::{field, require_finite_non_negative};
use nas_core::dist::step_grads;
use nas_core::hypergrad::Hypergradient;
use nas_core::nn::{softmax_last_dim, Mode};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use rand::Rng as _;
use search_spaces::{ArchSample, Supernet};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use smart_default::SmartDefault;

use super::alternating::{Alternating, ArchTerm, WeightMixing};
use super::sampling::{draw, micro_output};
use super::{positive, Method, MethodConfig, MethodContext, MethodSpec, Preset, RecordChart, SearchMethod, StepAt};
use crate::config::SearchConfig;
use crate::step::Batch;
use crate::{Error, Result};

pub struct Sdarts;

/// The role of SDARTS' draws in the sample stream (`sampling::draw`).
pub const PERTURB_DRAW: u64 = 4 << 40;

/// How the weight step's mixing weights are perturbed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Perturb {
    /// Random smoothing: uniform noise in the L∞ ball of radius ε.
    #[default]
    Rs,
    /// Adversarial: projected sign-gradient ascent on the training loss.
    Adv,
}

nas_core::named_enum!(Perturb, "perturbation", [Perturb::Rs => "rs", Perturb::Adv => "adv"]);

/// The reference's defaults: RS, ε 0.03 → 0.3, 7 ascent steps, first-order α steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct SdartsConfig {
    pub perturb: Perturb,
    /// ε's end point (the reference's `epsilon_alpha`).
    #[default = 0.3]
    pub epsilon: f64,
    /// ε of the first epoch (the reference's fixed 0.03).
    #[default = 0.03]
    pub epsilon_min: f64,
    /// Ascent steps of `adv`.
    #[default = 7]
    pub adv_steps: usize,
    /// The α step: a method of the hypergradient family with its settings.
    #[default(Box::new(Method::FirstOrder.default_config()))]
    pub arch_step: Box<MethodConfig>,
}

/// ε of `epoch` of `epochs`: linear from `min` (epoch 0) towards `max`, as the reference's
/// `0.03 + (epsilon_alpha − 0.03)·epoch/epochs`.
pub fn epsilon_at(min: f64, max: f64, epoch: usize, epochs: usize) -> f64 {
    min + (max - min) * epoch as f64 / epochs.max(1) as f64
}

/// The methods whose α step SDARTS can take: a rule that follows the weight steps (forward
/// mode) would follow them with the unperturbed mixing weights, so not that.
fn arch_steps() -> Vec<&'static str> {
    Method::ALL
        .iter()
        .filter(|m| {
            **m != Method::Sdarts && m.default_config().hypergradient().is_some_and(|r| !r.follows_steps())
        })
        .map(|m| m.name())
        .collect()
}

impl MethodSpec for Sdarts {
    const NAME: &'static str = "sdarts";
    const ABOUT: &'static str =
        "SDARTS: weight steps with perturbed mixing weights, --perturb rs|adv, --epsilon, --arch-step";
    type Config = SdartsConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one("perturb", "perturb", "P", settings::parse::<Perturb>)
                .help("sdarts: the weight step's perturbation of softmax(α), rs (random) or adv (adversarial)"),
            Flag::one("epsilon", "epsilon", "ε", settings::parse::<f64>)
                .help("sdarts: the perturbation radius ε reached at the end of the run (0.3; from 0.03)"),
            Flag::one("adv-steps", "adv_steps", "N", settings::parse::<usize>)
                .help("sdarts: ascent steps of the adversarial perturbation (7)"),
            Flag::one("arch-step", "arch_step.name", "M", settings::parse::<Method>).help(
                "sdarts: the α step's hypergradient method (first-order; its settings in config.json's \
                 method.arch_step)",
            ),
        ]
    }

    /// The reference's searches (`sota/cnn/train_search.py`, `nasbench201/train_search.py`):
    /// DARTS' first-order settings, 50 epochs in the DARTS space, 100 on NAS-Bench-201.
    fn presets() -> Vec<Preset> {
        let preset = |name, about, perturb: &str, nb201: bool| {
            let method = json!({"name": Self::NAME, "perturb": perturb});
            let overlay = if nb201 {
                json!({"space": "nb201", "method": method, "epochs": 100})
            } else {
                json!({"method": method})
            };
            Preset { name, about, overlay }
        };
        vec![
            preset("sdarts-rs", "SDARTS-RS in the DARTS space", "rs", false),
            preset("sdarts-adv", "SDARTS-ADV in the DARTS space", "adv", false),
            preset("sdarts-rs-nb201", "SDARTS-RS on nb201", "rs", true),
            preset("sdarts-adv-nb201", "SDARTS-ADV on nb201", "adv", true),
        ]
    }

    fn charts() -> Vec<RecordChart> {
        vec![RecordChart { title: "SDARTS perturbation radius ε", curves: &[("epsilon", "ε")] }]
    }

    fn validate(c: &SdartsConfig, search: &SearchConfig) -> Result<(), ConfigError> {
        require_finite_non_negative(&[("method.epsilon", c.epsilon), ("method.epsilon_min", c.epsilon_min)])?;
        positive(Self::NAME, "adv_steps", c.adv_steps)?;
        let inner = c.arch_step.method();
        if !arch_steps().contains(&inner.name()) {
            return Err(ConfigError::new(format!(
                "{} must be a method of the hypergradient family ({}), not {inner}",
                field("method.arch_step.name"),
                arch_steps().join(", ")
            )));
        }
        c.arch_step.validate(search)
    }

    fn build(c: &SdartsConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        let rule = c.arch_step.hypergradient().ok_or_else(|| {
            Error::Internal(format!("the {} α step of sdarts has no hypergradient", c.arch_step.method()))
        })?;
        let mixing = Perturbation::new(c, ctx.seed);
        Ok(Alternating::new(ctx, rule).with_term(c.arch_step.arch_term()).with_mixing(Box::new(mixing)).boxed())
    }

    fn hypergradient(c: &SdartsConfig) -> Option<Box<dyn Hypergradient>> {
        c.arch_step.hypergradient()
    }

    fn arch_term(c: &SdartsConfig) -> Option<Box<dyn ArchTerm>> {
        c.arch_step.arch_term()
    }
}

/// The weight step's perturbed mixing weights.
pub struct Perturbation {
    perturb: Perturb,
    range: (f64, f64),
    epsilon: f64,
    adv_steps: usize,
    seed: u64,
}

impl Perturbation {
    /// The perturbation of `cfg` drawing from the sample stream of `seed`, at its first
    /// epoch's ε.
    pub fn new(cfg: &SdartsConfig, seed: u64) -> Self {
        let range = (cfg.epsilon_min, cfg.epsilon);
        Self { perturb: cfg.perturb, range, epsilon: range.0, adv_steps: cfg.adv_steps, seed }
    }

    /// The uniform start around `center` at `at`, before the clip: every real entry moved by
    /// U(−ε, ε) (RS' whole perturbation, ADV's random start).
    pub fn random_start(&self, center: &Mixing, at: StepAt) -> Mixing {
        let eps = self.epsilon as f32;
        let mut rng = draw(self.seed, at.epoch, PERTURB_DRAW + at.step as u64);
        let mut a = center.clone();
        for v in a.values_mut() {
            *v += rng.random_range(-1.0f32..=1.0) * eps;
        }
        a
    }
}

impl WeightMixing for Perturbation {
    fn begin_epoch(&mut self, epoch: usize, epochs: usize) {
        self.epsilon = epsilon_at(self.range.0, self.range.1, epoch, epochs);
    }

    fn mixing(&mut self, net: &dyn Supernet, at: StepAt, train: &[Batch]) -> Result<ArchSample> {
        let logits = net.op_logits(Mode::EVAL)?;
        let center = Mixing::softmax(&logits)?;
        let mut a = self.random_start(&center, at);
        a.clip();
        if self.perturb == Perturb::Adv {
            a = adversarial(net, &logits, train, &center, a, self.epsilon as f32, self.adv_steps)?;
        }
        Ok(ArchSample { weights: Some(a.tensors(&logits)?), chosen: None, add_unchosen: false })
    }

    fn record_fields(&self, fields: &mut Map<String, Value>) {
        fields.insert("epsilon".into(), json!(self.epsilon));
    }
}

/// SDARTS-ADV's ascent from `start` (already perturbed and clipped) around `center`; `logits`
/// (the op logits) give the weights' device and dtype.
fn adversarial(
    net: &dyn Supernet,
    logits: &[Tensor],
    train: &[Batch],
    center: &Mixing,
    start: Mixing,
    eps: f32,
    steps: usize,
) -> Result<Mixing> {
    // Batch norm on its running statistics, as the reference's `model.eval()`.
    let eval_grad = Mode { train: false, grad_weights: false, grad_arch: true };
    let loss_at = |m: &Mixing| -> Result<f32> {
        let sample = ArchSample { weights: Some(m.tensors(logits)?), chosen: None, add_unchosen: false };
        let out = step_grads(train, &[], |b| micro_output(net, b, Mode::EVAL, Some(&sample), None))?;
        Ok(out.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?)
    };
    let before = loss_at(center)?;
    let lr = 2.0 * eps / steps as f32;
    let mut a = start;
    for _ in 0..steps {
        let vars = a.tensors(logits)?.iter().map(Var::from_tensor).collect::<candle_core::Result<Vec<_>>>()?;
        let sample = ArchSample {
            weights: Some(vars.iter().map(|v| v.as_tensor().clone()).collect()),
            chosen: None,
            add_unchosen: false,
        };
        let out = step_grads(train, &[&vars], |b| micro_output(net, b, eval_grad, Some(&sample), None))?;
        let grads = out.grads.into_iter().next().unwrap_or_default();
        let grads = Mixing::from_grads(&grads, &a)?;
        // Linf_SGD on −L: A ← A + lr·sign(∇_A L), then back into the ball and onto the simplex.
        for ((v, g), c) in a.values_mut().zip(grads.values()).zip(center.values()) {
            let step = *v + lr * sign(*g);
            *v = c + (step - c).clamp(-eps, eps);
        }
        a.clip();
    }
    let after = loss_at(&a)?;
    Ok(if before > after { center.clone() } else { a })
}

/// torch.sign: 0 at 0, NaN at NaN.
fn sign(g: f32) -> f32 {
    if g > 0.0 {
        1.0
    } else if g < 0.0 {
        -1.0
    } else {
        g
    }
}

/// Mixing weights on the host: per α tensor, a row per edge; `valid` marks an edge's real
/// columns (a ragged op set pads the others).
#[derive(Debug, Clone, PartialEq)]
pub struct Mixing {
    pub rows: Vec<Vec<Vec<f32>>>,
    pub valid: Vec<Vec<Vec<bool>>>,
}

impl Mixing {
    /// softmax of the (masked: −∞ pads) op logits.
    pub fn softmax(logits: &[Tensor]) -> candle_core::Result<Mixing> {
        let mut rows = Vec::with_capacity(logits.len());
        let mut valid = Vec::with_capacity(logits.len());
        for l in logits {
            let l = l.to_dtype(DType::F32)?;
            valid.push(l.to_vec2::<f32>()?.iter().map(|r| r.iter().map(|x| x.is_finite()).collect()).collect());
            rows.push(softmax_last_dim(&l)?.to_vec2::<f32>()?);
        }
        Ok(Mixing { rows, valid })
    }

    /// Every real entry.
    pub fn values(&self) -> impl Iterator<Item = &f32> {
        self.rows
            .iter()
            .flatten()
            .zip(self.valid.iter().flatten())
            .flat_map(|(r, v)| r.iter().zip(v).filter(|(_, ok)| **ok).map(|(x, _)| x))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut f32> {
        self.rows
            .iter_mut()
            .flatten()
            .zip(self.valid.iter().flatten())
            .flat_map(|(r, v)| r.iter_mut().zip(v).filter(|(_, ok)| **ok).map(|(x, _)| x))
    }

    /// The reference's `clip()` on every edge's real columns: clamp to [0, 1]; a row left all
    /// zero gets 1 at its arg-max before the clamp (the first, as torch's); divide by the sum.
    /// Pad columns stay 0.
    pub fn clip(&mut self) {
        for (rows, valid) in self.rows.iter_mut().zip(&self.valid) {
            for (row, ok) in rows.iter_mut().zip(valid) {
                let mut arg: Option<usize> = None;
                for (i, x) in row.iter().enumerate() {
                    if ok[i] && arg.is_none_or(|a| *x > row[a]) {
                        arg = Some(i);
                    }
                }
                for (x, ok) in row.iter_mut().zip(ok) {
                    *x = if *ok { x.clamp(0.0, 1.0) } else { 0.0 };
                }
                let sum: f32 = row.iter().sum();
                if sum == 0.0 {
                    if let Some(a) = arg {
                        row[a] = 1.0;
                    }
                }
                let sum: f32 = row.iter().sum();
                for x in row.iter_mut() {
                    *x /= sum;
                }
            }
        }
    }

    /// The gradients `grads` (one per α tensor, None: zero) laid out as `like`.
    fn from_grads(grads: &[Option<Tensor>], like: &Mixing) -> candle_core::Result<Mixing> {
        let mut rows = Vec::with_capacity(like.rows.len());
        for (i, r) in like.rows.iter().enumerate() {
            rows.push(match grads.get(i).and_then(|g| g.as_ref()) {
                Some(g) => g.to_dtype(DType::F32)?.to_vec2::<f32>()?,
                None => r.iter().map(|row| vec![0.0; row.len()]).collect(),
            });
        }
        Ok(Mixing { rows, valid: like.valid.clone() })
    }

    /// The weights as tensors on the device and in the dtype of `like` (the op logits).
    fn tensors(&self, like: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
        let first = like.first().ok_or_else(|| candle_core::Error::Msg("a supernet without α".into()))?;
        self.rows
            .iter()
            .map(|r| {
                let (e, w) = (r.len(), r.first().map_or(0, |x| x.len()));
                Tensor::from_vec(r.concat(), (e, w), first.device())?.to_dtype(first.dtype())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixing(rows: Vec<Vec<f32>>, valid: Vec<Vec<bool>>) -> Mixing {
        Mixing { rows: vec![rows], valid: vec![valid] }
    }

    #[test]
    fn clip_is_the_references() {
        let mut m = mixing(
            vec![vec![0.5, -0.2, 0.9], vec![-0.3, -0.1, -0.2], vec![1.4, 0.2, 0.4], vec![0.2, 0.3, 0.7]],
            vec![vec![true; 3], vec![true; 3], vec![true; 3], vec![true, true, false]],
        );
        m.clip();
        let r = &m.rows[0];
        assert_eq!(r[0], vec![0.5 / 1.4, 0.0, 0.9 / 1.4]);
        // All clamped to zero: the arg-max before the clamp (−0.1) takes all.
        assert_eq!(r[1], vec![0.0, 1.0, 0.0]);
        assert_eq!(r[2], vec![1.0 / 1.6, 0.2 / 1.6, 0.4 / 1.6]);
        // A pad column stays zero and does not count.
        assert_eq!(r[3], vec![0.4, 0.6, 0.0]);
    }

    #[test]
    fn epsilon_grows_as_the_reference() {
        assert_eq!(epsilon_at(0.03, 0.3, 0, 50), 0.03);
        assert!((epsilon_at(0.03, 0.3, 25, 50) - 0.165).abs() < 1e-12);
        assert!((epsilon_at(0.03, 0.3, 49, 50) - (0.03 + 0.27 * 0.98)).abs() < 1e-12);
    }

    #[test]
    fn sign_is_torchs() {
        assert_eq!((sign(2.0), sign(-0.5), sign(0.0)), (1.0, -1.0, 0.0));
        assert!(sign(f32::NAN).is_nan());
    }
}
