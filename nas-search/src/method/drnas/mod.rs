//! `drnas`: DrNAS (Chen et al., ICLR 2021, "DrNAS: Dirichlet Neural Architecture Search";
//! the reference is xiangning-chen/DrNAS, whose code this follows where it departs from the
//! paper). The mixing weights of every edge are a random variable,
//!
//!   β = ELU(α) + 1 (the concentration, > 0),   w_edge ~ Dir(β_edge),
//!
//! drawn anew at every forward, one draw per α matrix (normal and reduce in the darts space,
//! nb201's one) shared by every cell of that type, as the reference's `process_step_matrix`.
//! α learns through the pathwise (implicit reparameterisation) gradient of the draw, as
//! `torch.distributions.Dirichlet.rsample`: for a draw x, ∂L/∂β_k = g_k·(∂L/∂x_k − Σ_j x_j
//! ∂L/∂x_j) with g_k the scaled Beta-marginal gradient (`dirichlet::dirichlet_grad`). The draw
//! is made on the host in f64 and enters the network as the surrogate
//!
//!   y = g ⊙ (β − β̂),   x̃ = x + y − x·Σ_j y_j   (β̂: β without gradient),
//!
//! whose value is x and whose gradient with respect to β is that vector-Jacobian product.
//!
//! The search is bilevel, first order (the reference's default, `--unrolled` off): an α step
//! (Adam, `arch_optimizer`) on a search-valid batch with a fresh draw, then the weight step on
//! the search-train batch with another. The regulariser of α (`reg`, the reference's
//! `--reg_type`) is `l2`, its default: Adam's weight decay (`arch_optimizer.weight_decay`, the
//! reference's `reg_scale` 1e-3 under l2), or `kl`: reg_scale·Σ_edges KL(Dir(β_edge) ‖ Dir(1))
//! added to the α step's loss, Adam then without weight decay (as the reference), whatever
//! `arch_optimizer.weight_decay` says. Genotypes derive from softmax(α) as DARTS' do (the
//! reference's `genotype`, not the Dirichlet mean). Records carry the concentration's mean and
//! maximum over every edge and op and Σ KL(Dir(β) ‖ Dir(1)).
//!
//! Where this departs from the reference:
//! - Evaluation samples one draw per evaluation of the whole set (keyed by the epoch), not one
//!   per batch: the method interface hands the loop one sample to evaluate with.
//! - Edges with fewer ops than the widest (ragged op sets, R-DARTS' S1–S3) draw from the
//!   Dirichlet of their own ops; the reference masks pruned ops of a full draw and renormalises,
//!   which has the same distribution (the aggregation property).
//! - In the darts space the reference's derivation keeps `none` in its arg-maxes (the exclusion
//!   is commented out); here the darts space's derivation (DARTS': `none` excluded) is used.
//! - The reference draws a random search-valid batch with replacement at every step; here the
//!   search-valid half is walked through as by every method of this crate.
//! - PC-DARTS' partial channels (`model.partial_channels`) work, as the reference's MixedOp
//!   with K > 1; the reference has no edge normalisation, and neither does this method. The
//!   DARTS-space progressive scheme (preset `drnas-darts`: two stages, partial channels 6 then
//!   4, the top 4 ops kept, Net2Wider) is the progressive search's (`crate::progressive`,
//!   `search_spaces::darts::net2wider`); its pruned edges draw from their own ops as above.
//!
//! Every draw comes from the stream `Purpose::Sample` keyed by (epoch, step and role), so a
//! resumed run draws what the uninterrupted one did without generator state in the checkpoint.

pub mod dirichlet;

use std::path::Path;

use candle_core::{DType, Tensor};
use nas_core::checkpoint::LoadedTensors;
use nas_core::config_error::{field, require_finite_non_negative};
use nas_core::dist::{step_grads, StepGrads};
use nas_core::nn::Mode;
use nas_core::rng::Rng;
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use search_spaces::{ArchSample, Supernet};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use smart_default::SmartDefault;

use super::sampling::{self, micro_output, ARCH_DRAW, WEIGHT_DRAW};
use super::{
    ArchAdam, Metadata, MethodContext, MethodSpec, NamedTensors, Preset, RecordChart, SearchMethod, StepAt,
    StepBatches, WeightStep,
};
use crate::config::{EarlyStop, SearchConfig};
use crate::step::{weight_step, Batch};
use crate::{Error, Result};

pub struct DrNas;

/// The role of the evaluation's draw in the sample stream (after `sampling`'s roles).
const EVAL_DRAW: u64 = 4 << 40;

/// DrNAS' regulariser of α.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reg {
    /// Adam's weight decay on α (`arch_optimizer.weight_decay`).
    #[default]
    L2,
    /// reg_scale·Σ KL(Dir(β) ‖ Dir(1)) on the α step's loss, no weight decay.
    Kl,
}

nas_core::named_enum!(Reg, "regulariser", [Reg::L2 => "l2", Reg::Kl => "kl"]);

/// The reference's defaults: l2, reg_scale 1e-3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct DrNasConfig {
    /// The regulariser of α.
    pub reg: Reg,
    /// The weight of the KL term (`reg` = kl).
    #[default = 1e-3]
    pub reg_scale: f64,
}

impl MethodSpec for DrNas {
    const NAME: &'static str = "drnas";
    const ABOUT: &'static str =
        "DrNAS: Dirichlet mixing weights with pathwise gradients, first order, --reg, --reg-scale";
    type Config = DrNasConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one("reg", "reg", "R", settings::parse::<Reg>)
                .help("drnas: the regulariser of α, l2 (Adam's weight decay) or kl (KL to the flat Dirichlet)"),
            Flag::one("reg-scale", "reg_scale", "λ", settings::parse::<f64>)
                .help("drnas: the weight of the KL regulariser (1e-3)"),
        ]
    }

    /// The KL regulariser: no other method has one.
    fn requests() -> &'static [&'static str] {
        &["reg"]
    }

    /// The reference's NAS-Bench-201 search (`201-space/train_search.py`): 100 epochs, batch
    /// 64, SGD 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4, clip 5, Adam on α 3e-4
    /// (0.5, 0.999) with weight decay 1e-3 (l2), C=16, 5 cells per stage, no partial channels
    /// (`--k 1`).
    ///
    /// `drnas-darts`, the reference's DARTS-space search (`DARTS-space/train_search.py`): C=36,
    /// 20 cells, batch 64, SGD 0.1 cosine to 0 over all 50 epochs, momentum 0.9, weight decay
    /// 3e-4, clip 5, Adam 6e-4 (0.5, 0.999) with weight decay 1e-3; the seven ops without
    /// `none`; two stages of 25 epochs with α from the 10th epoch of each, partial channels 6
    /// then 4, the 4 strongest ops of every edge kept between them and the network widened
    /// (Net2Wider, `search_spaces::darts::net2wider`).
    fn presets() -> Vec<Preset> {
        vec![
            Preset {
                name: "drnas",
                about: "DrNAS on nb201",
                overlay: json!({"space": "nb201", "method": {"name": Self::NAME}, "epochs": 100}),
            },
            Preset {
                name: "drnas-darts",
                about: "DrNAS' progressive search in the darts space (partial channels 6 then 4, Net2Wider)",
                overlay: json!({
                    "space": "darts",
                    "method": {"name": Self::NAME},
                    "epochs": 25,
                    "arch_start_epoch": 10,
                    "data": {"batch_size": 64},
                    "weight_optimizer": {"lr": 0.1, "lr_min": 0.0},
                    "arch_optimizer": {"lr": 6e-4},
                    "model": {
                        "channels": 36,
                        "layers": 20,
                        "partial_channels": 6,
                        "ops": ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                                "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"],
                    },
                    "progressive": {
                        "layers": [],
                        "ops_per_edge": [7, 4],
                        "skip_dropout": [],
                        "partial_channels": [6, 4],
                        "net2wider": true,
                    },
                }),
            },
        ]
    }

    fn charts() -> Vec<RecordChart> {
        vec![
            RecordChart {
                title: "DrNAS concentration β = ELU(α) + 1",
                curves: &[("concentration_mean", "mean β"), ("concentration_max", "max β")],
            },
            RecordChart { title: "DrNAS Σ KL(Dir(β) ‖ Dir(1))", curves: &[("dirichlet_kl", "Σ KL")] },
        ]
    }

    fn validate(c: &DrNasConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        require_finite_non_negative(&[("method.reg_scale", c.reg_scale)])?;
        if s.model.darts().is_some_and(|d| d.edge_norm) {
            return Err(ConfigError::new(format!(
                "{} and the drnas method: its Dirichlet weights have no edge normalisation (nor has the reference)",
                field("model.edge_norm")
            )));
        }
        if s.early_stop != EarlyStop::None || s.hessian_every > 0 {
            return Err(ConfigError::new(format!(
                "the drnas method has no α-Hessian of its sampled loss: {} and {} are for the gradient methods",
                field("early_stop"),
                field("hessian_every")
            )));
        }
        Ok(())
    }

    fn build(c: &DrNasConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        let mut arch_cfg = ctx.arch_optimizer.clone();
        if c.reg == Reg::Kl && arch_cfg.weight_decay != 0.0 {
            tracing::info!(
                weight_decay = arch_cfg.weight_decay,
                "drnas with the KL regulariser: Adam on α without weight decay, as the reference"
            );
            arch_cfg.weight_decay = 0.0;
        }
        let adam = ArchAdam::new(ctx.net.arch().weights(), &arch_cfg);
        let kl_scale = (c.reg == Reg::Kl).then_some(c.reg_scale);
        Ok(Box::new(DrNasSearch { adam, seed: ctx.seed, epoch: 0, kl_scale, arch_stepped: false, stats: None }))
    }
}

/// The concentration's summary at the end of an epoch.
#[derive(Debug, Clone, Copy)]
struct Concentration {
    mean: f64,
    max: f64,
    kl: f64,
}

/// A running DrNAS search.
struct DrNasSearch {
    adam: ArchAdam,
    seed: u64,
    epoch: usize,
    /// The KL term's weight (`reg` = kl).
    kl_scale: Option<f64>,
    arch_stepped: bool,
    stats: Option<Concentration>,
}

impl SearchMethod for DrNasSearch {
    fn begin_epoch(&mut self, epoch: usize) {
        self.epoch = epoch;
    }

    /// The α step on the search-valid batch (its own draw), then the weight step (another).
    fn step(&mut self, net: &dyn Supernet, w: WeightStep, at: StepAt, b: StepBatches) -> Result<StepGrads> {
        self.arch_stepped = false;
        if let Some(valid) = &b.valid {
            let logits = net.op_logits(Mode::TRAIN_ARCH)?;
            let sample = dirichlet_sample(&logits, &mut sampling::draw(self.seed, at.epoch, ARCH_DRAW + at.step as u64))?;
            let penalty = self.kl_scale.map(|s| kl_term(&logits, s)).transpose()?;
            let arch = net.arch().weights();
            let grads = step_grads(valid, &[&arch], |m| {
                micro_output(net, m, Mode::TRAIN_ARCH, Some(&sample), penalty.as_ref())
            })?;
            self.adam.step(&grads.grads[0])?;
            self.arch_stepped = true;
        }
        let logits = net.op_logits(Mode::TRAIN_WEIGHTS)?;
        let sample = dirichlet_sample(&logits, &mut sampling::draw(self.seed, at.epoch, WEIGHT_DRAW + at.step as u64))?;
        weight_step(net, w.opt, &b.train, w.clip, Some(&sample))
    }

    fn end_epoch(&mut self, net: &dyn Supernet, _epoch: usize, _valid: &mut dyn FnMut() -> Result<Batch>) -> Result<()> {
        let (mut sum, mut n, mut max, mut kl) = (0.0, 0usize, 0f64, 0.0);
        for l in net.op_logits(Mode::EVAL)? {
            for row in concentrations(&l)? {
                let beta: Vec<f64> = row.into_iter().flatten().collect();
                sum += beta.iter().sum::<f64>();
                n += beta.len();
                max = beta.iter().copied().fold(max, f64::max);
                kl += dirichlet::kl_to_flat(&beta);
            }
        }
        self.stats = Some(Concentration { mean: sum / n.max(1) as f64, max, kl });
        Ok(())
    }

    /// A draw of the current Dirichlet, one for the whole evaluation.
    fn eval_sample(&self, net: &dyn Supernet) -> Result<Option<ArchSample>> {
        let mut rng = sampling::draw(self.seed, self.epoch, EVAL_DRAW);
        Ok(Some(dirichlet_sample(&net.op_logits(Mode::EVAL)?, &mut rng)?))
    }

    fn record_fields(&self, fields: &mut Map<String, Value>) {
        if let Some(c) = self.stats {
            fields.insert("concentration_mean".into(), json!(c.mean));
            fields.insert("concentration_max".into(), json!(c.max));
            fields.insert("dirichlet_kl".into(), json!(c.kl));
        }
    }

    fn state(&self) -> Result<(NamedTensors, Metadata)> {
        Ok(self.adam.state())
    }

    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        self.adam.restore(ck, path)
    }

    fn last_arch_grad_evals(&self) -> usize {
        usize::from(self.arch_stepped)
    }
}

/// β = ELU(α) + 1 of every edge of an (E, width) α matrix on the host, None in the columns an
/// edge does not have (−∞ logits); a NaN or +∞ in α is an error.
pub fn concentrations(alpha: &Tensor) -> Result<Vec<Vec<Option<f64>>>> {
    let host = alpha.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    host.iter()
        .map(|row| {
            row.iter()
                .map(|&a| match a {
                    a if a == f64::NEG_INFINITY => Ok(None),
                    a if !a.is_finite() => {
                        Err(Error::NotFinite(format!("a Dirichlet concentration of α = {a}: α is not finite")))
                    }
                    // ELU(α) + 1, kept positive where exp(α) underflows.
                    a if a > 0.0 => Ok(Some(a + 1.0)),
                    a => Ok(Some(a.exp().max(f64::MIN_POSITIVE))),
                })
                .collect()
        })
        .collect()
}

/// β = ELU(α) + 1 as a tensor differentiable in α, with 1 (and no gradient) in the columns an
/// edge does not have.
fn concentration_tensor(alpha: &Tensor, beta: &[Vec<Option<f64>>]) -> Result<Tensor> {
    let alpha = if beta.iter().flatten().any(Option::is_none) {
        let keep: Vec<u8> = beta.iter().flatten().map(|b| u8::from(b.is_some())).collect();
        let keep = Tensor::from_vec(keep, alpha.shape(), alpha.device())?;
        keep.where_cond(alpha, &alpha.zeros_like()?)?
    } else {
        alpha.clone()
    };
    Ok((alpha.elu(1.0)? + 1.0)?)
}

/// A host matrix as a tensor like `like`, 0 in the columns an edge does not have.
fn host_tensor(rows: &[Vec<f64>], like: &Tensor) -> Result<Tensor> {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, like.shape(), like.device())?.to_dtype(like.dtype())?)
}

/// The mixing weights of an (E, width) α matrix for given draws `x` (one row per edge, x ~
/// Dir(ELU(α) + 1) over the edge's columns, 0 elsewhere): a tensor whose value is x and whose
/// gradient with respect to α is the pathwise gradient of the draw (PyTorch's `rsample`)
/// through β = ELU(α) + 1.
pub fn pathwise_weights(alpha: &Tensor, x: &[Vec<f64>]) -> Result<Tensor> {
    let beta = concentrations(alpha)?;
    if x.len() != beta.len() || x.iter().zip(&beta).any(|(a, b)| a.len() != b.len()) {
        return Err(Error::Internal(format!("draws of {} edges for an α of {}", x.len(), beta.len())));
    }
    let g: Vec<Vec<f64>> = x
        .iter()
        .zip(&beta)
        .map(|(x, b)| {
            let cols: Vec<usize> = (0..b.len()).filter(|&k| b[k].is_some()).collect();
            let xs: Vec<f64> = cols.iter().map(|&k| x[k]).collect();
            let bs: Vec<f64> = b.iter().flatten().copied().collect();
            let mut row = vec![0.0; b.len()];
            for (&k, g) in cols.iter().zip(dirichlet::dirichlet_grad(&xs, &bs)) {
                row[k] = g;
            }
            row
        })
        .collect();
    let b = concentration_tensor(alpha, &beta)?;
    let y = (host_tensor(&g, alpha)? * (&b - b.detach())?)?;
    let x = host_tensor(x, alpha)?;
    let sum = y.sum_keepdim(1)?;
    Ok(((&x + y)? - x.broadcast_mul(&sum)?)?)
}

/// One draw of Dir(ELU(α) + 1) for every edge of an α matrix from `rng`, over the edge's own
/// columns (0 in the others).
pub fn draw_dirichlet(alpha: &Tensor, rng: &mut Rng) -> Result<Vec<Vec<f64>>> {
    Ok(concentrations(alpha)?
        .iter()
        .map(|b| {
            let bs: Vec<f64> = b.iter().flatten().copied().collect();
            let mut xs = dirichlet::sample_dirichlet(rng, &bs).into_iter();
            b.iter().map(|v| if v.is_some() { xs.next().unwrap_or(0.0) } else { 0.0 }).collect()
        })
        .collect())
}

/// DrNAS' sample of every α matrix (`Supernet::op_logits`): every op runs, weighted by a draw
/// of its edge's Dirichlet with the pathwise gradient (`pathwise_weights`).
pub fn dirichlet_sample(logits: &[Tensor], rng: &mut Rng) -> Result<ArchSample> {
    let weights =
        logits.iter().map(|l| pathwise_weights(l, &draw_dirichlet(l, rng)?)).collect::<Result<Vec<_>>>()?;
    Ok(ArchSample { weights: Some(weights), chosen: None, add_unchosen: false })
}

/// scale·Σ_matrices Σ_edges KL(Dir(ELU(α_edge) + 1) ‖ Dir(1)), a scalar differentiable in α
/// (its value and gradient in β computed on the host in f64).
pub fn kl_term(logits: &[Tensor], scale: f64) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    let mut value = 0.0;
    for l in logits {
        let beta = concentrations(l)?;
        let mut grad = Vec::with_capacity(beta.len());
        for row in &beta {
            let bs: Vec<f64> = row.iter().flatten().copied().collect();
            value += dirichlet::kl_to_flat(&bs);
            let mut g = dirichlet::kl_to_flat_grad(&bs).into_iter();
            grad.push(row.iter().map(|v| if v.is_some() { g.next().unwrap_or(0.0) } else { 0.0 }).collect::<Vec<_>>());
        }
        let b = concentration_tensor(l, &beta)?;
        let linear = (host_tensor(&grad, l)? * (&b - b.detach())?)?.sum_all()?;
        total = Some(match total {
            Some(t) => (t + linear)?,
            None => linear,
        });
    }
    let Some(linear) = total else { return Err(Error::Internal("the KL term of a supernet without α".into())) };
    Ok(((linear + value)? * scale)?)
}
