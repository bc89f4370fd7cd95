//! The network a genotype is retrained as: DARTS `NetworkCIFAR` (`DerivedNetwork`, with drop
//! path and the auxiliary head) for a darts cell, the NAS-Bench-201 skeleton for an nb201 cell.
//!
//! Drop path (FractalNet, as DARTS uses it): in training, the output of every non-identity op
//! is multiplied per sample by m/keep with m ~ Bernoulli(keep), keep = 1 − p. All masks of one
//! step are drawn at once on the host from the (seed, epoch, step) stream and uploaded as one
//! tensor (ops, B), so a step costs one small upload and is reproducible on resume.

use candle_core::{DType, Device, Result as CResult, Tensor};
use nas_core::nn::Mode;
use nas_core::params::ParamStore;
use nas_core::rng::{self, Purpose};
use rand::Rng as _;
use search_spaces::darts::{DerivedNetwork, DerivedNetworkConfig};
use search_spaces::{Genotype, Nb201Config, Nb201Network};

use crate::Result;

pub enum EvalModel {
    Darts(DerivedNetwork),
    Nb201(Nb201Network),
}

/// The network's size and task.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    pub channels: usize,
    pub layers: usize,
    pub num_classes: usize,
    pub in_channels: usize,
    pub auxiliary: bool,
}

impl EvalModel {
    /// A freshly initialised network for `genotype` (weights drawn from `seed`).
    pub fn new(genotype: &Genotype, shape: ModelShape, seed: u64, device: &Device) -> Result<Self> {
        Ok(match genotype {
            Genotype::Darts(g) => {
                let cfg = DerivedNetworkConfig {
                    channels: shape.channels,
                    layers: shape.layers,
                    num_classes: shape.num_classes,
                    auxiliary: shape.auxiliary,
                    in_channels: shape.in_channels,
                };
                EvalModel::Darts(DerivedNetwork::new(g, cfg, seed, DType::F32, device)?)
            }
            Genotype::Nb201(g) => {
                let cfg = Nb201Config {
                    channels: shape.channels,
                    cells_per_stage: shape.layers,
                    num_classes: shape.num_classes,
                    in_channels: shape.in_channels,
                };
                EvalModel::Nb201(Nb201Network::derived(cfg, g, seed, DType::F32, device)?)
            }
        })
    }

    /// Weights and buffers, under the PyTorch reference's state_dict names.
    pub fn weights(&self) -> &ParamStore {
        match self {
            EvalModel::Darts(n) => n.weights(),
            EvalModel::Nb201(n) => n.weights(),
        }
    }

    /// Number of weights without the auxiliary head (how DARTS reports model size).
    pub fn num_params_without_aux(&self) -> usize {
        match self {
            EvalModel::Darts(n) => n.num_params_without_aux(),
            EvalModel::Nb201(n) => n.weights().num_weight_elements(),
        }
    }

    /// Logits and, in training mode with an auxiliary head, the auxiliary logits.
    pub fn forward(&self, x: &Tensor, mode: Mode, drop: Option<&DropPath>) -> CResult<(Tensor, Option<Tensor>)> {
        match self {
            EvalModel::Darts(n) => match drop {
                Some(d) if mode.train => n.forward_with(x, mode, Some(&d.masks)),
                _ => n.forward(x, mode),
            },
            EvalModel::Nb201(n) => Ok((n.forward(x, mode)?, None)),
        }
    }

    /// The drop-path masks of one training step; None when drop path is off.
    pub fn drop_path(
        &self,
        p: f64,
        batch: usize,
        key: (u64, usize, usize),
        device: &Device,
    ) -> Result<Option<DropPath>> {
        let EvalModel::Darts(n) = self else { return Ok(None) };
        if p <= 0.0 {
            return Ok(None);
        }
        Ok(Some(DropPath::draw(n.num_drop_path_ops(), batch, p, key, device)?))
    }
}

/// Per-sample drop-path masks for every droppable op of one forward pass, (ops, B).
pub struct DropPath {
    masks: Tensor,
}

impl DropPath {
    /// Masks for `ops` op outputs of a batch of `batch`, from the stream of (seed, epoch, step).
    pub fn draw(
        ops: usize,
        batch: usize,
        p: f64,
        (seed, epoch, step): (u64, usize, usize),
        device: &Device,
    ) -> Result<Self> {
        let keep = 1.0 - p;
        let mut rng = rng::stream(seed, Purpose::DropPath, epoch as u64, step as u64);
        let scale = (1.0 / keep) as f32;
        let values: Vec<f32> = (0..ops * batch).map(|_| if rng.random_bool(keep) { scale } else { 0.0 }).collect();
        let masks = Tensor::from_vec(values, (ops, batch), &Device::Cpu)?.to_device(device)?;
        Ok(Self { masks })
    }
}
