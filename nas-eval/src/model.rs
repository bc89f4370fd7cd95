//! The network a genotype is retrained as, built by its space (`Genotype::build_eval_network`):
//! DARTS `NetworkCIFAR` (with drop path and the auxiliary head) for a darts cell, the
//! NAS-Bench-201 skeleton for an nb201 cell.
//!
//! Drop path (FractalNet, as DARTS uses it): in training, the output of every non-identity op
//! is multiplied per sample by m/keep with m ~ Bernoulli(keep), keep = 1 − p. All masks of one
//! step are drawn at once on the host from the (seed, epoch, step) stream and uploaded as one
//! tensor (ops, B), so a step costs one small upload and is reproducible on resume.

use candle_core::{Device, Result as CResult, Tensor};
use nas_core::nn::Mode;
use nas_core::params::ParamStore;
use nas_core::rng::{self, Purpose};
use rand::Rng as _;
use search_spaces::{EvalModelConfig, EvalNetwork, Genotype, TaskShape};

use crate::Result;

pub struct EvalModel {
    net: Box<dyn EvalNetwork>,
}

impl EvalModel {
    /// A freshly initialised network for `genotype` (weights drawn from `seed`).
    pub fn new(
        genotype: &Genotype,
        cfg: &EvalModelConfig,
        task: TaskShape,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self { net: genotype.build_eval_network(cfg, task, seed, device)? })
    }

    /// Weights and buffers, under the PyTorch reference's state_dict names.
    pub fn weights(&self) -> &ParamStore {
        self.net.weights()
    }

    /// Number of weights without the auxiliary head (how DARTS reports model size).
    pub fn num_params_without_aux(&self) -> usize {
        self.net.num_params_without_aux()
    }

    /// Multiply-accumulates of one forward on one `height`×`width` image, auxiliary head
    /// excluded; None for a network that does not count them.
    pub fn mult_adds(&self, height: usize, width: usize) -> Option<Result<u128>> {
        self.net.mult_adds(height, width).map(|r| r.map_err(Into::into))
    }

    /// The network in evaluation mode as ONNX nodes on the (normalised) images `x`: the
    /// logits' name.
    pub fn onnx(&self, g: &mut nas_core::onnx::Graph, x: &str) -> Result<String> {
        Ok(self.net.onnx(g, x)?)
    }

    /// Position of the network's random stream (its noise ops' draws), kept by checkpoints.
    pub fn stream_position(&self) -> u64 {
        self.net.stream_position()
    }

    pub fn set_stream_position(&self, draws: u64) {
        self.net.set_stream_position(draws);
    }

    /// Logits and, in training mode with an auxiliary head, the auxiliary logits; drop path
    /// applies in training only.
    pub fn forward(&self, x: &Tensor, mode: Mode, drop: Option<&DropPath>) -> CResult<(Tensor, Option<Tensor>)> {
        self.net.forward(x, mode, drop.filter(|_| mode.train).map(|d| &d.masks))
    }

    /// The drop-path masks of one training step; None when drop path is off or the network
    /// has no droppable op.
    pub fn drop_path(
        &self,
        p: f64,
        batch: usize,
        key: (u64, usize, usize),
        device: &Device,
    ) -> Result<Option<DropPath>> {
        let ops = self.net.num_drop_path_ops();
        if p <= 0.0 || ops == 0 {
            return Ok(None);
        }
        Ok(Some(DropPath::draw(ops, batch, p, key, device)?))
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

    /// The factors (ops, B), one row per droppable op in forward order: 0 where the op's
    /// output is dropped for that sample, 1/keep where it is kept.
    pub fn masks(&self) -> &Tensor {
        &self.masks
    }
}
