//! The DARTS CNN search space (Liu et al. 2019, "DARTS: Differentiable Architecture Search",
//! §2 and the reference `model_search.py`), with PC-DARTS' partial channels and edge
//! normalisation (Xu et al. 2020): the eight ops, mixed ops, search cells and supernet (with
//! CIFAR's stem or PC-DARTS' ImageNet stems, `stem`), the derivation of a genotype from α, the
//! genotype type with the published genotypes, and the derived network that is retrained
//! (`model.py`'s `NetworkCIFAR` or `NetworkImageNet`, with its mult-adds). Op sets restrict the
//! ops of each edge (`op_sets`: the R-DARTS spaces S1–S4 among them); `pdarts` holds the rules
//! of P-DARTS' progressive search, `net2wider` DrNAS' widening between its stages.

mod cell;
pub mod derive;
pub mod edges;
mod genotype;
mod mixed_op;
pub mod net2wider;
mod network;
mod op_sets;
mod ops;
pub mod pdarts;
mod space;
mod stem;
mod supernet;

pub use crate::model_config::OpsConfig;
pub use cell::{Preprocess, SearchCell};
pub use edges::{node_edges, num_edges};
pub use genotype::{state_name, DartsGenotype, Edge};
pub use mixed_op::MixedOp;
pub use nas_core::ops::composed::{channel_shuffle, max_pool_2x2};
pub use network::{DerivedNetwork, DerivedNetworkConfig};
pub use op_sets::{rdarts_space, DartsOpSets, PRIMITIVES};
pub use ops::{DartsOp, FactorizedReduce, OpModule, RandomStream, ReluConvBn};
pub use space::{Darts, DartsSearchModel};
pub use supernet::{DartsSupernet, DartsSupernetConfig};
