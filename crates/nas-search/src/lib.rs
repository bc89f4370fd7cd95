//! The architecture search: configuration and presets, the architect (hypergradient step),
//! the search loop with its run directory and resume, and step benchmarks.

pub mod architect;
pub mod bench;
pub mod config;
pub mod error;
pub mod run_dir;
pub mod search;

pub use config::{Method, SearchConfig, Space, ValidSearchConfig};
pub use error::{Error, Result};
pub use run_dir::RunDir;
pub use search::Search;
