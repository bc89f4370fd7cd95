//! The DARTS CNN search space (Liu et al. 2019, "DARTS: Differentiable Architecture Search",
//! §2 and the reference `model_search.py`), with PC-DARTS' partial channels and edge
//! normalisation (Xu et al. 2020).

mod cell;
pub mod derive;
mod mixed_op;
mod network;
mod ops;
mod supernet;

pub use cell::{num_edges, Preprocess, SearchCell};
pub use mixed_op::MixedOp;
pub use nas_core::ops::composed::{channel_shuffle, max_pool_2x2};
pub use network::{DerivedNetwork, DerivedNetworkConfig};
pub use ops::{DartsOp, FactorizedReduce, OpModule, ReluConvBn};
pub use supernet::{DartsSupernet, DartsSupernetConfig};
