//! Errors of the retraining crate: invalid configurations (checked before anything runs) apart
//! from failures while running.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot work; names the field.
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error(transparent)]
    Core(#[from] nas_core::Error),

    #[error(transparent)]
    Space(#[from] search_spaces::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A run directory or checkpoint that cannot be used as asked.
    #[error("{path}: {msg}")]
    RunDir { path: PathBuf, msg: String },

    /// The loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}, step {step}: loss is {loss}")]
    Diverged { epoch: usize, step: usize, loss: f64 },

    /// The evaluation after an epoch gave a NaN or infinite loss.
    #[error("training diverged in epoch {epoch}: the evaluation loss after it is {loss}")]
    DivergedValid { epoch: usize, loss: f64 },

    /// The run was stopped before step `step` of epoch `epoch`; the checkpoint holds that
    /// position.
    #[error("interrupted at epoch {epoch}, step {step}")]
    Interrupted { epoch: usize, step: usize },
}

impl Error {
    pub fn run_dir(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::RunDir { path: path.into(), msg: msg.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
