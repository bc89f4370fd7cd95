//! Retraining and evaluation of derived networks (DARTS `train.py`): the training configuration with
//! the DARTS recipe defaults, the evaluation network of any genotype (DARTS `NetworkCIFAR` with
//! drop path and an auxiliary head, or the NAS-Bench-201 skeleton), the training loop with
//! checkpoints and resume, test-set evaluation of a finished run, and train-step benchmarks.

pub mod bench;
pub mod config;
pub mod export;
pub mod model;
pub mod train;

pub use config::{bench_train_flags, train_flags, Recipe, TrainConfig, ValidTrainConfig};
pub use export::{DataInfo, Trained};
pub use model::{DropPath, EvalModel};
/// Errors of a retraining run: the type the search reports too.
pub use nas_core::{RunError as Error, RunResult as Result};
pub use train::{evaluate_run, train_step, EvalResult, LossConfig, Trainer};
