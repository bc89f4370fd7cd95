//! Pieces shared by the step benchmarks (`nas bench search|train`), which report like
//! shared/bench/darts_ref.py: a fixed random batch, `warmup` untimed steps, then the median of
//! `steps` timed steps (the middle element of the sorted times, as the reference computes it).
//! On CUDA the device is synchronised inside the timed region.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config_error::{brief, ConfigError};
use crate::error::{Error, Result};

/// Sorted step times of `warmup + steps` calls of `step`, the warm-up ones left out. The
/// step may fail with its caller's error type.
pub fn time_steps<E: From<Error> + From<candle_core::Error>>(
    device: &Device,
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> Result<(), E>,
) -> Result<Vec<f64>, E> {
    if steps == 0 {
        return Err(Error::from(ConfigError::new(format!("{} must be positive", brief("steps")))).into());
    }
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        device.synchronize()?;
        let t = Instant::now();
        step()?;
        device.synchronize()?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Random images N(0, 1) (B, 3, size, size) and labels uniform in 0..10, like the reference.
pub fn random_batch(batch: usize, size: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    if batch == 0 {
        return Err(ConfigError::new(format!("{} must be positive", brief("batch_size"))).into());
    }
    if size < 8 {
        return Err(ConfigError::new(format!("{} must be at least 8", brief("image_size"))).into());
    }
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), device)?;
    let y = Tensor::rand(0f32, 10f32, batch, device)?.floor()?.clamp(0f32, 9f32)?.to_dtype(DType::U32)?;
    Ok((x, y))
}

/// The JSON line a benchmark prints, with darts_ref.py's fields: the configuration, the median
/// and the fastest of the sorted step `times`, the worker threads and the peak memory, then
/// `extra` (network sizes).
pub fn report(config: &impl Serialize, times: &[f64], extra: &[(&str, Value)]) -> Value {
    let mut r = json!({
        "impl": "nas",
        "threads": worker_threads(),
        "config": config,
        "step_s_median": times.get(times.len() / 2),
        "step_s_min": times.first(),
        "peak_mem_bytes": peak_rss_bytes(),
    });
    for (key, value) in extra {
        r[*key] = value.clone();
    }
    r
}

/// The process's peak resident set size (VmHWM, Linux), None where unknown. On CUDA this is
/// host memory only.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Worker threads of the CPU kernels (RAYON_NUM_THREADS, else the available cores).
pub fn worker_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}
