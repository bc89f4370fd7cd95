//! The architecture search: configuration and presets, the architect (hypergradient step),
//! the weight step, the search loop with its run directory and resume, and step benchmarks.

pub mod architect;
pub mod bench;
pub mod config;
pub mod error;
pub mod search;
pub mod step;

pub use config::{Method, SearchConfig, Space, ValidSearchConfig};
pub use error::{Error, Result};
pub use nas_core::run_dir::{self, RunDir};
pub use search::Search;
