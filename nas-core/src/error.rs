//! Errors of the core crate: tensor failures, I/O naming the file, bad data and bad checkpoints.

use std::path::PathBuf;

use crate::config_error::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A dataset file or directory that exists but cannot be used.
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },

    /// A `--data` spec that does not name a known dataset.
    #[error("unknown data spec `{0}` (expected synthetic, cifar10:DIR, cifar100:DIR or folder:DIR)")]
    DataSpec(String),

    #[error("invalid device `{0}` (expected cpu, cuda or cuda:N)")]
    DeviceSpec(String),

    #[error("{0}")]
    Device(String),

    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    #[error("{0}")]
    Invalid(String),

    /// A setting that cannot work (a subset of no images, a benchmark of no steps). Not a
    /// source: the message is the error.
    #[error("{0}")]
    Config(ConfigError),

    /// A run directory that cannot be used as asked.
    #[error("{path}: {msg}")]
    RunDir { path: PathBuf, msg: String },

    /// A new run asked for a directory that already holds files.
    #[error("{path}: run directory already exists and is not empty")]
    RunDirNotEmpty { path: PathBuf },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn run_dir(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::RunDir { path: path.into(), msg: msg.into() }
    }

    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data { path: path.into(), msg: msg.into() }
    }

    /// The invalid-settings message inside, whose fields a front end may name its own way.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            Error::Config(c) => Some(c),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
