//! Errors of a run, search or retraining alike: an invalid configuration (checked before
//! anything runs) apart from failures while running — a run directory that cannot be used, a
//! loss that diverged, an interruption — and the errors of the layers a run drives. The search
//! and the retraining crate both report this type, so the epoch loop they share (`epoch`) and
//! the command line see one set of variants.

use std::path::PathBuf;

use crate::config_error::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration value that cannot work; names the field. Not a source: the message is
    /// the error.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),

    #[error(transparent)]
    Core(#[from] crate::Error),

    /// An error of the search-space crate (genotypes, networks), which sits above this one and
    /// converts its errors into this variant.
    #[error(transparent)]
    Space(Box<dyn std::error::Error + Send + Sync>),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A run directory or checkpoint that cannot be used as asked.
    #[error("{path}: {msg}")]
    RunDir { path: PathBuf, msg: String },

    /// The loss became NaN or infinite. (`epoch` counts from 0 as metrics.jsonl does;
    /// messages count epochs from 1, as the progress display does.)
    #[error("training diverged at epoch {}, step {step}: loss is {loss}", .epoch + 1)]
    Diverged { epoch: usize, step: usize, loss: f64 },

    /// The evaluation after an epoch gave a NaN or infinite loss.
    #[error("training diverged in epoch {}: the evaluation loss after it is {loss}", .epoch + 1)]
    DivergedValid { epoch: usize, loss: f64 },

    /// The run was stopped before step `step` of epoch `epoch`; the checkpoint holds that
    /// position.
    #[error("interrupted at epoch {}, step {step}", .epoch + 1)]
    Interrupted { epoch: usize, step: usize },

    /// A value the run computes that is not finite where it must be (a Gumbel-softmax sample
    /// of a non-finite α), named with what was tried.
    #[error("{0}")]
    NotFinite(String),

    /// A checkpoint that reads, but whose contents do not fit this run (a missing or
    /// malformed entry, state of another shape).
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    /// Data too small for what the run needs of it at run time (a split without a full
    /// batch).
    #[error("{0}")]
    Data(String),

    /// A broken invariant of the program itself, not of its input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    pub fn run_dir(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        RunError::RunDir { path: path.into(), msg: msg.into() }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        RunError::Checkpoint { path: path.into(), msg: msg.into() }
    }

    /// An invalid configuration whose message mentions no setting by its field.
    pub fn config(msg: impl Into<String>) -> Self {
        RunError::Config(ConfigError::plain(msg))
    }

    /// The invalid-settings message inside, whose fields a front end may name its own way.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            RunError::Config(c) => Some(c),
            RunError::Core(e) => e.config_error(),
            _ => None,
        }
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        RunError::Config(e)
    }
}

pub type RunResult<T, E = RunError> = std::result::Result<T, E>;
