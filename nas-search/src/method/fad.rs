//! `fad`: forward-mode hypergradients (Franceschi et al., ICML 2017; lucfra/FAR-HO
//! `ForwardHG`, `nas_core::hypergrad::forward_mode`). The tangent of the weights and of the
//! momentum buffers with respect to α is carried along the real weight steps (two gradient
//! evaluations per α entry and step, finite-difference products one α column at a time), and
//! the α step takes ∂L_val/∂α + Zᵀ∂L_val/∂w at the current weights: no virtual steps, exact
//! for the trajectory actually taken, at a memory of dim(w)·dim(α) numbers per tangent.
//!
//! The tangents start at zero at the first α step (the first one is first order) and again every
//! `--fad-reset` N weight steps (0: never); they follow the weight steps of the epochs in which
//! α learns. Their size is estimated when the search starts and a search whose tangents exceed
//! `--fad-max-mem` (a quarter of the machine's memory by default; the tangents live on the
//! search's device) is refused naming the sizes and the value that would fit. nb201 (30 α
//! entries) is its natural space; the darts space has 224.

use bytesize::ByteSize;
use nas_core::hypergrad::{ForwardMode, Hypergradient};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::alternating::{plain_momentum, Alternating};
use super::{MethodContext, MethodSpec, SearchMethod};
use crate::config::SearchConfig;
use crate::{Error, Result};

pub struct Fad;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(deny_unknown_fields, default)]
pub struct FadConfig {
    /// Weight steps after which the tangents start again from zero (0: never).
    #[default = 10]
    pub fad_reset: usize,
    /// The most the tangents may take (None: a quarter of the machine's memory).
    pub fad_max_mem: Option<ByteSize>,
}

impl MethodSpec for Fad {
    const NAME: &'static str = "fad";
    const ABOUT: &'static str =
        "forward mode: the tangent dw/dα carried along the weight steps (memory dim(w)·dim(α)), --fad-reset, --fad-max-mem";
    type Config = FadConfig;

    fn flags() -> Vec<Flag> {
        vec![
            Flag::one("fad-reset", "fad_reset", "N", settings::parse::<usize>)
                .help("fad: weight steps after which the tangents start again from zero (default 10; 0: never)"),
            Flag::one("fad-max-mem", "fad_max_mem", "SIZE", settings::parse::<ByteSize>).help(
                "fad: the most memory the tangents may take, as 512MiB or 2GiB (default: a quarter of the machine's)",
            ),
        ]
    }

    fn validate(c: &FadConfig, s: &SearchConfig) -> Result<(), ConfigError> {
        if c.fad_max_mem.is_some_and(|m| m.as_u64() == 0) {
            return Err(ConfigError::new(format!(
                "{} must be positive",
                nas_core::config_error::field("method.fad_max_mem")
            )));
        }
        plain_momentum(Self::NAME, s)
    }

    fn build(c: &FadConfig, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
        let weights = ctx.net.weights().weights();
        let arch = ctx.net.arch().weights();
        let n_w: usize = weights.iter().map(|v| v.elem_count()).sum();
        let n_a: usize = arch.iter().map(|v| v.elem_count()).sum();
        let dtype = weights.first().map_or(candle_core::DType::F32, |v| v.dtype());
        let momentum = ctx.weight_momentum != 0.0;
        let need = ForwardMode::tangent_bytes(n_w, n_a, dtype, momentum);
        // Sizes as 1.5 GiB (saturating at what u64 holds).
        let show = |bytes: u128| ByteSize(u64::try_from(bytes).unwrap_or(u64::MAX)).display().iec().to_string();
        let (limit, whence) = match c.fad_max_mem {
            Some(m) => (m.as_u64() as u128, String::new()),
            None => {
                let total = total_memory() as u128;
                (total / 4, format!(" (a quarter of this machine's {})", show(total)))
            }
        };
        if need > limit {
            return Err(Error::config(format!(
                "the fad method's tangents need {} ({} × {n_w} weights × {n_a} α entries × {} bytes), more than \
                 --fad-max-mem {}{whence}: pass --fad-max-mem {}MiB or search a smaller network (--channels, --layers)",
                show(need),
                1 + momentum as u8,
                dtype.size_in_bytes(),
                show(limit),
                // Rounded up to a whole MiB, so the suggestion itself fits.
                need.div_ceil(1 << 20),
            )));
        }
        tracing::info!(tangent_bytes = %show(need), weights = n_w, arch = n_a, "forward-mode tangents");
        Ok(Alternating::new(ctx, Box::new(ForwardMode::new(c.fad_reset))).boxed())
    }

    fn hypergradient(c: &FadConfig) -> Option<Box<dyn Hypergradient>> {
        Some(Box::new(ForwardMode::new(c.fad_reset)))
    }
}

/// The machine's memory in bytes.
fn total_memory() -> u64 {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.total_memory()
}
