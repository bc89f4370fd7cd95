//! Search-step timing on random data, comparable with shared/bench/darts_ref.py: the same
//! network, optimisers and step, a fixed random batch pair, timed by `nas_core::bench`.
//! `peak_mem_bytes` is the process's peak resident set size after the timed steps;
//! `grad_evals_per_arch_step` counts the forward and backward passes of one architecture step
//! (first order 1, second order 4, unrolled 3K + 1, Neumann 2J + 3, conjugate gradient
//! 2J + 3 with a warm start's residual; GDAS' α step 1; SNAS, ENAS and random sampling 0: their
//! step is the weight step, SNAS' giving α's gradient too).

use candle_core::DType;
use nas_core::bench::{random_batch, report, time_steps};
use nas_core::nn::{cross_entropy, Mode};
use nas_core::DeviceSpec;
use search_spaces::{NetKind, SearchModelConfig, SpaceKind, TaskShape};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::architect::Architect;
use crate::config::{ArchOptimConfig, DataConfig, Method, SearchConfig};
use crate::sampling::Sampler;
use crate::step::{weight_step, Batch};
use crate::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSearchConfig {
    pub space: SpaceKind,
    pub channels: usize,
    pub layers: usize,
    pub batch_size: usize,
    pub image_size: usize,
    pub method: Method,
    pub neumann_steps: usize,
    pub unroll_steps: usize,
    pub cg_steps: usize,
    pub cg_damping: f64,
    pub partial_channels: usize,
    pub edge_norm: bool,
    /// Time the weight step alone (no architecture step).
    pub weights_only: bool,
    pub device: DeviceSpec,
    pub steps: usize,
    pub warmup: usize,
    /// Count the GPU work of the timed steps (CUDA).
    pub count_launches: bool,
}

/// Times search steps; returns the JSON line `nas bench search` prints.
pub fn bench_search(b: &BenchSearchConfig) -> Result<Value> {
    let mut cfg = SearchConfig::preset("darts-1st")?;
    cfg.set_space(b.space);
    cfg.method = b.method;
    cfg.neumann_steps = b.neumann_steps;
    cfg.unroll_steps = b.unroll_steps;
    cfg.cg_steps = b.cg_steps;
    cfg.cg_damping = b.cg_damping;
    cfg.device = b.device;
    cfg.model = SearchModelConfig {
        channels: b.channels,
        layers: b.layers,
        steps: 4,
        partial_channels: b.partial_channels,
        edge_norm: b.edge_norm,
        max_skip_connect: None,
        ops: None,
        net: NetKind::Cifar,
    };
    cfg.data = DataConfig { batch_size: b.batch_size, ..cfg.data };
    let cfg = cfg.validate()?;
    let device = cfg.device.open()?;
    let net = cfg.space.build_supernet(&cfg.model, TaskShape { num_classes: 10, in_channels: 3 }, cfg.seed, &device)?;
    let w = &cfg.weight_optimizer;
    let mut w_opt = w.optimizer(net.weights().weights());
    let a: &ArchOptimConfig = &cfg.arch_optimizer;
    let mut architect = Architect::new(net.weights().weights(), net.arch().weights(), a, cfg.hypergrad());
    // The training batches of an architecture step (T-RAD reads K), then the validation batch.
    let train = (0..architect.train_batches())
        .map(|_| random_batch(b.batch_size, b.image_size, &device).map(|(x, y)| Batch { x, y }))
        .collect::<nas_core::Result<Vec<_>>>()?;
    let (x, y) = random_batch(b.batch_size, b.image_size, &device)?;
    let valid = Batch { x, y };
    let mut sampler = if cfg.method.is_sampling() {
        let s = Sampler::new(net.as_ref(), cfg.method, &cfg.sampling, a, cfg.seed, cfg.epochs, &device)?;
        Some(s)
    } else {
        None
    };
    let mut step = 0;
    let m = time_steps(&device, (b.warmup, b.steps), b.count_launches, || -> Result<()> {
        if let Some(s) = &mut sampler {
            let v = (!b.weights_only && s.uses_valid_batches()).then_some(std::slice::from_ref(&valid));
            let out = s.step(net.as_ref(), &mut w_opt, w.grad_clip, 0, step, &train[..1], v)?;
            step += 1;
            out.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            return Ok(());
        }
        if !b.weights_only {
            architect.step(net.as_ref(), &train, &valid, &w_opt)?;
        }
        let loss = weight_step(net.as_ref(), &mut w_opt, &train[..1], w.grad_clip)?.loss;
        loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    })?;
    // An evaluation-mode forward of one batch (what each epoch's validation pass costs).
    let eval = time_steps(&device, (b.warmup, b.steps), false, || -> Result<()> {
        let logits = net.forward(&valid.x, Mode::EVAL)?;
        cross_entropy(&logits, &valid.y)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    })?;
    // Forward and backward passes of one architecture step (0 when it is not timed).
    let arch_evals = match cfg.method {
        _ if b.weights_only => 0,
        Method::Gdas => 1,
        m if m.is_sampling() => 0,
        _ => architect.last_grad_evals(),
    };
    let extra = [
        ("params_weights", json!(net.weights().num_weight_elements())),
        ("eval_step_s_median", json!(eval.median())),
        ("grad_evals_per_arch_step", json!(arch_evals)),
    ];
    Ok(report(b, &m, &extra))
}
