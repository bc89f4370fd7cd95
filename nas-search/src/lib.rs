//! The architecture search: configuration and presets, the architect (hypergradient step),
//! the weight step, the search loop with its run directory and resume, and step benchmarks.

pub mod architect;
pub mod bench;
pub mod config;
pub mod controller;
pub mod early_stop;
pub mod progressive;
pub mod sampling;
pub mod search;
pub mod step;

pub use config::{Method, SearchConfig, ValidSearchConfig};
pub use nas_core::run_dir::{self, RunDir};
/// Errors of a search run: the type retraining reports too.
pub use nas_core::{RunError as Error, RunResult as Result};
pub use progressive::Progressive;
pub use search::Search;
