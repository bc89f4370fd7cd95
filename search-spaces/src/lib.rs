//! Search spaces for differentiable architecture search: op sets, mixed ops, cells and
//! supernets, the `Genotype` with its JSON form, and the derivation rules.

pub mod darts;
pub mod error;
pub mod genotype;
pub mod nb201;
pub mod supernet;

pub use error::{Error, Result};
pub use genotype::{DartsGenotype, Genotype};
pub use nb201::{Nb201Config, Nb201Genotype, Nb201Network, Nb201Op};
pub use supernet::Supernet;
