//! Step timing on random data, comparable with shared/bench/darts_ref.py: the same network,
//! optimisers and step, a fixed random batch pair, `warmup` untimed steps, then the median of
//! `steps` timed steps (`step_s_median`, the middle element of the sorted times as the
//! reference computes it). On CUDA the device is synchronised inside the timed region.
//! `peak_mem_bytes` is the process's peak resident set size after the timed steps.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nas_core::optim::{Sgd, SgdConfig};
use nas_core::DeviceSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::architect::{weight_step, Architect, Batch};
use crate::config::{ArchOptimConfig, DataConfig, Method, ModelConfig, SearchConfig, Space};
use crate::error::{Error, Result};
use crate::search::build_supernet;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchSearchConfig {
    pub space: Space,
    pub channels: usize,
    pub layers: usize,
    pub batch_size: usize,
    pub image_size: usize,
    pub method: Method,
    pub neumann_steps: usize,
    pub partial_channels: usize,
    pub edge_norm: bool,
    /// Time the weight step alone (no architecture step).
    pub weights_only: bool,
    pub device: DeviceSpec,
    pub steps: usize,
    pub warmup: usize,
}

fn random_batch(b: usize, size: usize, device: &Device) -> Result<Batch> {
    let x = Tensor::randn(0f32, 1f32, (b, 3, size, size), device)?;
    let y = Tensor::rand(0f32, 10f32, b, device)?.floor()?.clamp(0f32, 9f32)?.to_dtype(DType::U32)?;
    Ok(Batch { x, y })
}

/// Times search steps; returns the JSON line `nas bench search` prints.
pub fn bench_search(b: &BenchSearchConfig) -> Result<Value> {
    if b.steps == 0 {
        return Err(Error::Config("--steps must be positive".into()));
    }
    if b.image_size < 8 {
        return Err(Error::Config("--image-size must be at least 8".into()));
    }
    let mut cfg = SearchConfig::preset("darts-1st")?;
    cfg.set_space(b.space);
    cfg.method = b.method;
    cfg.neumann_steps = b.neumann_steps;
    cfg.device = b.device;
    cfg.model = ModelConfig {
        channels: b.channels,
        layers: b.layers,
        steps: 4,
        partial_channels: b.partial_channels,
        edge_norm: b.edge_norm,
        max_skip_connect: None,
    };
    cfg.data = DataConfig { batch_size: b.batch_size, ..cfg.data };
    let cfg = cfg.validate()?;
    let device = cfg.device.open()?;
    let net = build_supernet(&cfg, 10, 3, &device)?;
    let w = &cfg.weight_optimizer;
    let mut w_opt =
        Sgd::new(net.weights().weights(), SgdConfig { lr: w.lr, momentum: w.momentum, weight_decay: w.weight_decay });
    let a: &ArchOptimConfig = &cfg.arch_optimizer;
    let mut architect = Architect::new(net.weights().weights(), net.arch().weights(), a, cfg.method, cfg.neumann_steps);
    let train = random_batch(b.batch_size, b.image_size, &device)?;
    let valid = random_batch(b.batch_size, b.image_size, &device)?;
    let mut times = Vec::with_capacity(b.steps);
    for i in 0..b.warmup + b.steps {
        device.synchronize()?;
        let t = Instant::now();
        if !b.weights_only {
            architect.step(net.as_ref(), &train, &valid, &w_opt)?;
        }
        let (loss, _) = weight_step(net.as_ref(), &mut w_opt, &train, w.grad_clip)?;
        loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        device.synchronize()?;
        if i >= b.warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(json!({
        "impl": "nas",
        "threads": rayon_threads(),
        "config": b,
        "step_s_median": times[times.len() / 2],
        "step_s_min": times[0],
        "params_weights": net.weights().num_weight_elements(),
        "peak_mem_bytes": peak_rss_bytes(),
    }))
}

/// The process's peak resident set size (VmHWM, Linux), null where unknown. On CUDA this is
/// host memory only.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}
