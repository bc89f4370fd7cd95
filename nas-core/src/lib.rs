//! Core of the NAS system: devices, differentiable ops with fast kernels, layers, optimisers
//! and schedules, datasets and augmentation, checkpoint I/O and the metrics sink trait.
//! Nothing here knows about search spaces.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod hypergrad;
#[cfg(feature = "cuda")]
pub mod launch_count;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod params;
pub mod rng;
pub mod run_dir;
pub mod testing;

pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use nn::Mode;
pub use params::{Init, ParamBuilder, ParamKind, ParamStore};
pub use run_dir::RunDir;
