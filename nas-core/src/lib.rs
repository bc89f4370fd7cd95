//! Core of the NAS system: devices, differentiable custom ops with fast kernels, layers, optimisers
//! and schedules, datasets and augmentation, checkpoint I/O, the metrics sink trait, and the
//! epoch loop (with its error type) that search and retraining share. Nothing here knows about
//! search spaces.

pub mod bench;
pub mod checkpoint;
pub mod config_error;
pub mod data;
pub mod device;
pub mod dist;
pub mod epoch;
pub mod error;
pub mod hypergrad;
#[cfg(feature = "cuda")]
pub use nas_kernels::launch_count;
pub mod metrics;
pub mod nn;
pub use nas_kernels as ops;
pub mod onnx;
pub mod optim;
pub mod params;
pub mod rng;
pub mod run_dir;
pub mod run_error;
pub mod run_flags;
pub mod settings;
pub mod testing;

pub use config_error::ConfigError;
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use nn::Mode;
pub use params::{Init, ParamBuilder, ParamKind, ParamStore};
pub use run_dir::RunDir;
pub use run_error::{RunError, RunResult};
