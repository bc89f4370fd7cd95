//! The architecture search: configuration and presets, the search methods behind one
//! interface (`method`: the hypergradient family, the sampling methods), the weight step, the
//! search loop with its run directory and resume, P-DARTS' progressive stages over any method,
//! DARTS-ES early stopping, and step benchmarks.

pub mod bench;
pub mod config;
pub mod early_stop;
pub mod method;
pub mod progressive;
pub mod search;
pub mod select;
pub mod step;

pub use config::{SearchConfig, ValidSearchConfig};
pub use method::{Method, MethodConfig};
pub use nas_core::run_dir::{self, RunDir};
/// Errors of a search run: the type retraining reports too.
pub use nas_core::{RunError as Error, RunResult as Result};
pub use progressive::Progressive;
pub use search::Search;

/// The charts `nas plot` draws of a search's record scalars: the α-Hessian's eigenvalue, then
/// each method's (`MethodSpec::charts`), then a selection's (DARTS-PT's decisions).
pub fn record_charts() -> Vec<method::RecordChart> {
    let hessian =
        method::RecordChart { title: "dominant eigenvalue of ∇²_α L_val", curves: &[("hessian_eig", "λ_max")] };
    let mut charts = vec![hessian];
    charts.extend(method::method_charts());
    charts.push(select::pt::DECISIONS_CHART);
    charts
}
