//! Search spaces for differentiable architecture search, one folder each (`darts/`, `nb201/`):
//! op sets, mixed ops, cells, supernets, derived networks, genotypes and derivation rules. The
//! rest of the workspace reaches them through `registry` (`SpaceKind`, `Genotype`) and the
//! space-neutral `Supernet`, `EvalNetwork`, model settings and picture shapes.

pub mod children;
pub mod darts;
pub mod diagram;
pub mod error;
pub mod eval_network;
pub mod genotype;
pub mod model_config;
pub mod nb201;
mod op_set;
pub mod registry;
pub mod supernet;

pub use children::{uniform_child, ChildShape, ControllerSpec};
pub use error::{Error, Result};
pub use eval_network::EvalNetwork;
pub use model_config::{
    eval_model_flags, net_flag, size_flags, EvalModelConfig, NetKind, OpsConfig, SearchModelConfig, TaskShape,
};
pub use registry::{Genotype, SearchSpace, SpaceKind, SpaceModel};
pub use supernet::{column_map, ArchSample, Child, EdgePick, NamedState, OpCost, Supernet};
