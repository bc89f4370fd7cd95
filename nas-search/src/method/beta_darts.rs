//! `beta-darts`: β-DARTS (Ye et al. 2022, "β-DARTS: Beta-Decay Regularization for
//! Differentiable Architecture Search"; Sunshine-Ye/Beta-DARTS `optimizers/darts/architect.py`).
//! DARTS' first-order alternating search (`alternating`) with the β-decay term added to the
//! loss of the α step only (an `ArchTerm`):
//!
//!   L_α = L_val(w, α) + λ(e) · mean_edges logsumexp(α_edge),
//!
//! whose gradient adds λ(e)·softmax(α_edge)/E to every edge's row (E edges), pulling the
//! logits of an edge together so that no op's weight runs away. λ grows linearly with the
//! epoch: the reference computes `0 + 50*epoch/100` for its 100-epoch NAS-Bench-201 search;
//! here λ(e) = `beta_decay`·e/E over a run of E epochs (the same numbers at E = 100, the same
//! shape for any other length). The reference applies the term to nb201's one α matrix; its
//! darts-space path passes a list of matrices and does not run (its issue #1): here the term
//! is applied to each α matrix (normal and reduce) with the same λ and summed. Edge weights
//! (PC-DARTS' β) are not decayed. Genotypes derive from α as DARTS' do.

use candle_core::{Tensor, D};
use nas_core::config_error::require_finite_non_negative;
use nas_core::hypergrad::{FirstOrder, Hypergradient};
use nas_core::nn::Mode;
use nas_core::ops;
use nas_core::settings::{parse, Flag};
use nas_core::ConfigError;
use search_spaces::Supernet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use smart_default::SmartDefault;

use super::alternating::ArchTerm;
use super::{MethodSpec, Preset, RecordChart};
use crate::config::SearchConfig;
use crate::Result;

pub struct BetaDarts;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct BetaDartsConfig {
    /// λ's growth: λ(e) = beta_decay·e/E (the reference's 50).
    #[default = 50.0]
    pub beta_decay: f64,
}

/// The weight of the β-decay term in `epoch` of `epochs`.
pub fn beta_weight(beta_decay: f64, epoch: usize, epochs: usize) -> f64 {
    beta_decay * epoch as f64 / epochs.max(1) as f64
}

/// λ · Σ_matrices mean_edges logsumexp(α_edge) of the op logits (one (E, ops) matrix per cell
/// type; −∞ columns, an edge's missing ops, count for nothing).
pub fn beta_decay_term(logits: &[Tensor], lambda: f64) -> candle_core::Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for l in logits {
        let max = l.max_keepdim(D::Minus1)?.detach();
        let lse = (l.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + max)?;
        total = Some(ops::accumulate(total, lse.mean_all()?, None)?);
    }
    match total {
        Some(t) => t * lambda,
        None => candle_core::bail!("the β-decay term of a supernet without α"),
    }
}

impl MethodSpec for BetaDarts {
    const NAME: &'static str = "beta-darts";
    const ABOUT: &'static str = "β-DARTS: first order with the β-decay term on α, --beta-decay";
    type Config = BetaDartsConfig;

    fn flags() -> Vec<Flag> {
        vec![Flag::one("beta-decay", "beta_decay", "λ", parse::<f64>)
            .help("beta-darts: the β-decay weight's growth, λ(e) = λ·e/E over E epochs (50)")]
    }

    fn validate(c: &BetaDartsConfig, _: &SearchConfig) -> Result<(), ConfigError> {
        require_finite_non_negative(&[("method.beta_decay", c.beta_decay)])
    }

    /// The reference's NAS-Bench-201 search (`nasbench201/train_search.py`): 100 epochs, batch
    /// 64, SGD 0.025 cosine to 0.001, momentum 0.9, weight decay 3e-4, clip 5, Adam on α 3e-4
    /// (0.5, 0.999) with weight decay 1e-3, C=16, 5 cells per stage.
    fn presets() -> Vec<Preset> {
        vec![Preset {
            name: "beta-darts",
            about: "β-DARTS on nb201",
            overlay: json!({"space": "nb201", "method": {"name": Self::NAME}, "epochs": 100}),
        }]
    }

    fn charts() -> Vec<RecordChart> {
        vec![RecordChart { title: "β-decay weight λ", curves: &[("beta_weight", "λ")] }]
    }

    fn hypergradient(_: &BetaDartsConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(FirstOrder))
    }

    fn arch_term(c: &BetaDartsConfig) -> Option<Box<dyn ArchTerm>> {
        Some(Box::new(BetaDecay { beta_decay: c.beta_decay, lambda: 0.0 }))
    }
}

/// The β-decay term of the α step, with this epoch's λ.
struct BetaDecay {
    beta_decay: f64,
    lambda: f64,
}

impl ArchTerm for BetaDecay {
    fn begin_epoch(&mut self, epoch: usize, epochs: usize) {
        self.lambda = beta_weight(self.beta_decay, epoch, epochs);
    }

    fn value(&self, net: &dyn Supernet) -> candle_core::Result<Tensor> {
        beta_decay_term(&net.op_logits(Mode::TRAIN_ARCH)?, self.lambda)
    }

    fn record_fields(&self, fields: &mut Map<String, Value>) {
        fields.insert("beta_weight".into(), json!(self.lambda));
    }
}
