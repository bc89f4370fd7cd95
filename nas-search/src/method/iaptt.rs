//! `iaptt-gm`: IAPTT-GM (Liu et al., NeurIPS 2021; vis-opt-group/IAPTT-GM,
//! `experiment/Numerical.py`): K virtual steps from an initialisation auxiliary z, the
//! hypergradient through the pessimistic truncation (the first k̄ steps, k̄ where L_val is
//! largest), and z updated by its own gradient (`nas_core::hypergrad::iaptt`). In a search z is
//! the starting point of each α step's virtual trajectory: the weights at the first step, then
//! carried by its own SGD (`--iaptt-z-lr`, in checkpoints); the real weight step is plain SGD
//! on L_train. The reference's numerical example takes K = 40 and η_z = 0.1; a search defaults
//! to K = 2 (the least that truncates anything) and η_z = 0.025 (DARTS' weight lr).

use nas_core::config_error::require_finite_non_negative;
use nas_core::hypergrad::{Hypergradient, Iaptt};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::{positive, MethodSpec};
use crate::config::SearchConfig;
use crate::Result;

pub struct IapttGm;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct IapttConfig {
    /// Virtual steps K from z.
    #[default = 2]
    pub unroll_steps: usize,
    /// z's step size η_z.
    #[default = 0.025]
    pub iaptt_z_lr: f64,
}

impl MethodSpec for IapttGm {
    const NAME: &'static str = "iaptt-gm";
    const ABOUT: &'static str =
        "IAPTT-GM: K steps from an initialisation auxiliary, reverse mode through the pessimistic truncation, --unroll-steps, --iaptt-z-lr";
    type Config = IapttConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one("unroll-steps", "unroll_steps", "K", settings::parse::<usize>)
                .help("unrolled, bda, iaptt-gm: virtual SGD steps K the hypergradient reverses through (unrolled: 1 is second order)"),
            Flag::one("iaptt-z-lr", "iaptt_z_lr", "η", settings::parse::<f64>)
                .help("iaptt-gm: step size of the initialisation auxiliary z (default 0.025)"),
        ]
    }

    fn validate(c: &IapttConfig, _s: &SearchConfig) -> Result<(), ConfigError> {
        positive(Self::NAME, "unroll_steps", c.unroll_steps)?;
        require_finite_non_negative(&[("method.iaptt_z_lr", c.iaptt_z_lr)])
    }

    fn hypergradient(c: &IapttConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(Iaptt::new(c.unroll_steps, c.iaptt_z_lr)))
    }
}
