//! The NAS-Bench-201 search space (Dong & Yang 2020, "NAS-Bench-201: Extending the Scope of
//! Reproducible Neural Architecture Search", §2; AutoDL's `search_model_darts.py` for the
//! search network, `TinyNetwork` for the skeleton).
//!
//! Ops (the column order of α): none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3.
//! A cell has 4 nodes; node 0 is the cell input and node i sums one edge from every earlier
//! node (6 edges, `edges`). The cell outputs node 3. One network type serves as the search
//! network (every edge a softmax(α)-weighted mixture of the five ops, one α (6, 5) shared by
//! all cells) and as the derived network (one op per edge) that is retrained; a genotype is the
//! op of every edge, with the benchmark's string form `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.

mod cell;
pub mod edges;
mod genotype;
mod network;
mod ops;
mod space;

pub use edges::{edge_index, edge_nodes, EDGES, NODES};
pub use genotype::Nb201Genotype;
pub use network::{Nb201Config, Nb201Network};
pub use ops::Nb201Op;
pub use space::{Nb201, Nb201SearchModel};
