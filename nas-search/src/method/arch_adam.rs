//! Adam over the architecture parameters (DARTS §2.3: lr 3e-4, betas (0.5, 0.999), L2 1e-3 by
//! default), shared by every method that learns α by gradient, with its checkpoint entries:
//! the moments as `adam.*` tensors and the step count as the `adam_steps` metadata.

use std::path::Path;

use candle_core::{Tensor, Var};
use nas_core::checkpoint::LoadedTensors;
use nas_core::optim::{Adam, AdamConfig};

use super::{Metadata, NamedTensors};
use crate::config::ArchOptimConfig;
use crate::{Error, Result};

/// The checkpoint prefix of the moments and the metadata key of the step count.
const PREFIX: &str = "adam";
const STEPS: &str = "adam_steps";

pub struct ArchAdam(Adam);

impl ArchAdam {
    pub fn new(arch: Vec<Var>, cfg: &ArchOptimConfig) -> Self {
        Self(Adam::new(
            arch,
            AdamConfig { lr: cfg.lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: cfg.weight_decay },
        ))
    }

    /// One update from one gradient per parameter (None: no gradient).
    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        Ok(self.0.step(grads)?)
    }

    pub fn optimizer(&self) -> &Adam {
        &self.0
    }

    /// The moments and the step count.
    pub fn state(&self) -> (NamedTensors, Metadata) {
        (self.0.state(PREFIX), vec![(STEPS.to_string(), self.0.steps_taken().to_string())])
    }

    /// Restores `state` from the checkpoint at `path`.
    pub fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> Result<()> {
        let steps: u64 = ck.meta_parse(path, STEPS)?;
        self.0
            .load_state(PREFIX, steps, |n| ck.tensors.get(n).cloned())
            .map_err(|e| Error::checkpoint(path, e.to_string()))
    }
}
