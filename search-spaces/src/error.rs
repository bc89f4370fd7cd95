//! Errors of the search-space crate: invalid genotypes and shapes, and tensor failures.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] nas_core::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A genotype that does not describe a valid cell.
    #[error("invalid genotype: {0}")]
    Genotype(String),

    /// An input size the network cannot take.
    #[error("{0}")]
    InputSize(String),

    /// A model configuration that cannot be built.
    #[error("invalid model configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A space error inside a run: the search and the retraining loop report `RunError`.
impl From<Error> for nas_core::RunError {
    fn from(e: Error) -> Self {
        nas_core::RunError::Space(Box::new(e))
    }
}
