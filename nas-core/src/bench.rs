//! Pieces shared by the step benchmarks (`nas bench search|train`), which report like
//! shared/bench/darts_ref.py: a fixed random batch, `warmup` untimed steps, then the median of
//! `steps` timed steps (the middle element of the sorted times, as the reference computes it).
//! On CUDA the device is synchronised inside the timed region.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config_error::{brief, ConfigError};
use crate::error::{Error, Result};
use crate::settings::{parse, Flag, Mount};

/// What the timed steps of a benchmark measured: the sorted step times, the peak device memory
/// over the timed steps (CUDA), and the GPU work per step when it was counted.
#[derive(Debug, Clone)]
pub struct Measured {
    pub times: Vec<f64>,
    pub peak_device_mem: Option<u64>,
    /// Kernel launches, memsets and copies per timed step, or why they were not counted.
    pub launches: Option<std::result::Result<Value, String>>,
    /// Bytes of the large host allocations of each timed step (`note_allocation`), sorted;
    /// empty where the process's allocator does not report them.
    pub alloc_bytes: Vec<u64>,
}

/// Allocations of at least this many bytes are counted: the tensors' buffers, not the small
/// bookkeeping that never leaves the caches.
pub const COUNTED_ALLOCATION: usize = 4096;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

/// Counts an allocation of `size` bytes (called by the binary's global allocator). Every
/// buffer a step allocates is written at least once and read at least once, so twice a step's
/// allocated bytes is a floor on the memory traffic of a step whose tensors outgrow the caches.
#[inline]
pub fn note_allocation(size: usize) {
    if size >= COUNTED_ALLOCATION {
        ALLOCATED.fetch_add(size as u64, Ordering::Relaxed);
    }
}

/// Bytes noted by `note_allocation` so far.
pub fn allocated_bytes() -> u64 {
    ALLOCATED.load(Ordering::Relaxed)
}

impl Measured {
    pub fn median(&self) -> f64 {
        self.times.get(self.times.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Times `warmup + steps` calls of `step`, the warm-up ones left out; with `count_launches`
/// the GPU work of the timed steps is counted (CUPTI, CUDA builds). The step may fail with
/// its caller's error type.
pub fn time_steps<E: From<Error> + From<candle_core::Error>>(
    device: &Device,
    (warmup, steps): (usize, usize),
    count_launches: bool,
    mut step: impl FnMut() -> Result<(), E>,
) -> Result<Measured, E> {
    if steps == 0 {
        return Err(Error::from(ConfigError::new(format!("{} must be positive", brief("steps")))).into());
    }
    for _ in 0..warmup {
        step()?;
    }
    device.synchronize()?;
    crate::device::reset_peak_memory(device);
    let counter = count_launches.then(|| launch_counter(device));
    let mut times = Vec::with_capacity(steps);
    let mut alloc_bytes = Vec::with_capacity(steps);
    for _ in 0..steps {
        device.synchronize()?;
        let bytes = allocated_bytes();
        let t = Instant::now();
        step()?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
        alloc_bytes.push(allocated_bytes() - bytes);
    }
    times.sort_by(f64::total_cmp);
    alloc_bytes.sort_unstable();
    if alloc_bytes.last() == Some(&0) {
        alloc_bytes.clear();
    }
    let launches = counter.map(|c| c.map(|c| per_step(&c, steps)));
    Ok(Measured { times, peak_device_mem: crate::device::peak_memory(device), launches, alloc_bytes })
}

#[cfg(feature = "cuda")]
type Counter = crate::launch_count::LaunchCounter;
#[cfg(not(feature = "cuda"))]
type Counter = ();

fn launch_counter(device: &Device) -> std::result::Result<Counter, String> {
    if !device.is_cuda() {
        return Err("launch counts are taken on CUDA devices".into());
    }
    #[cfg(feature = "cuda")]
    return crate::launch_count::LaunchCounter::start();
    #[cfg(not(feature = "cuda"))]
    Err("launch counts need a build with the cuda feature".into())
}

#[cfg(feature = "cuda")]
fn per_step(c: &Counter, steps: usize) -> Value {
    let n = c.counts();
    let s = steps as f64;
    json!({"kernels": n.kernels as f64 / s, "memsets": n.memsets as f64 / s, "copies": n.copies as f64 / s})
}

#[cfg(not(feature = "cuda"))]
fn per_step(_: &Counter, _: usize) -> Value {
    Value::Null
}

/// Random images N(0, 1) (B, 3, size, size) and labels uniform in 0..10, like the reference.
pub fn random_batch(batch: usize, size: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    if batch == 0 {
        return Err(ConfigError::new(format!("{} must be positive", brief("data.batch_size"))).into());
    }
    if size < 8 {
        return Err(ConfigError::new(format!("{} must be at least 8", brief("data.image_size"))).into());
    }
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), device)?;
    let y = Tensor::rand(0f32, 10f32, batch, device)?.floor()?.clamp(0f32, 9f32)?.to_dtype(DType::U32)?;
    Ok((x, y))
}

/// The JSON line a benchmark prints, with darts_ref.py's fields: the configuration, the median
/// and the fastest of the sorted step times, the worker threads and the peak memory (of the
/// device on CUDA, over the timed steps; the process's resident set on the CPU), launches per
/// step when counted, then `extra` (network sizes).
pub fn report(config: &impl Serialize, m: &Measured, extra: &[(&str, Value)]) -> Value {
    let mut r = json!({
        "impl": "nas",
        "threads": worker_threads(),
        "config": config,
        "step_s_median": m.times.get(m.times.len() / 2),
        "step_s_min": m.times.first(),
        "peak_mem_bytes": m.peak_device_mem.or_else(peak_rss_bytes),
    });
    if let Some(b) = m.alloc_bytes.get(m.alloc_bytes.len() / 2) {
        r["alloc_bytes_per_step_median"] = json!(b);
    }
    match &m.launches {
        Some(Ok(v)) => r["launches_per_step"] = v.clone(),
        Some(Err(why)) => r["launches_per_step_unavailable"] = json!(why),
        None => {}
    }
    for (key, value) in extra {
        r[*key] = value.clone();
    }
    r
}

/// `nas bench machine`: the peak f32 multiply-add rate and the triad memory bandwidth on the
/// worker threads (`nas_kernels::limits`), the roofline's two limits.
pub fn bench_machine() -> Value {
    let l = nas_kernels::limits::measure(worker_threads());
    json!({
        "impl": "nas",
        "threads": l.threads,
        "fma_gflops": l.fma_flops / 1e9,
        "fma_gflops_avx512": l.fma_flops_avx512.map(|f| f / 1e9),
        "triad_gbytes_per_s": l.triad_bytes_per_s / 1e9,
    })
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

/// The timing settings of `nas bench search|train`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Timed steps (the median is reported).
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Count the GPU work of the timed steps (CUDA).
    pub count_launches: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Self { steps: 5, warmup: 1, count_launches: false }
    }
}

/// `--steps`, `--warmup` and `--count-launches` (top level of a benchmark's settings).
pub fn timing_flags() -> Vec<Flag> {
    vec![
        Flag::one("steps", "steps", "N", parse::<usize>).help("Timed steps, the median reported (5)"),
        warmup_flag(),
        Flag::switch("count-launches", "count_launches").help(
            "Count the kernel launches, memsets and copies of the timed steps (CUDA; needs CUPTI's libcupti, \
             found on the loader's path or named by NAS_CUPTI_LIB)",
        ),
    ]
}

fn warmup_flag() -> Flag {
    Flag::one("warmup", "warmup", "N", parse::<usize>).help("Untimed steps (loader: batches) first (1)")
}

/// The batches `nas bench loader` assembles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderData {
    pub spec: crate::data::DataSpec,
    pub image_size: usize,
    pub batch_size: usize,
}

/// What `nas bench loader` times: batches of a dataset's training split as the training loop
/// assembles them (streamed folders: read, decoded, transformed and normalised on the worker
/// threads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchLoaderConfig {
    pub data: LoaderData,
    /// Timed batches.
    pub batches: usize,
    /// Untimed batches first.
    pub warmup: usize,
    /// Evaluation transforms (resize and centre crop) instead of the training ones (random
    /// resized crop, flip, colour jitter).
    pub eval: bool,
    /// Decode a folder dataset into memory (the CIFAR-size path) rather than streaming it (as
    /// ImageNet networks do).
    pub in_memory: bool,
}

impl Default for BenchLoaderConfig {
    /// ImageNet-size batches of 128 at 224×224, ten timed after one.
    fn default() -> Self {
        Self {
            data: LoaderData { spec: crate::data::DataSpec::Synthetic, image_size: 224, batch_size: 128 },
            batches: 10,
            warmup: 1,
            eval: false,
            in_memory: false,
        }
    }
}

impl BenchLoaderConfig {
    /// The defaults with the flags' `overlay`.
    pub fn from_overlay(overlay: &Value) -> Result<Self> {
        let mut v = serde_json::to_value(Self::default()).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::settings::merge(&mut v, overlay);
        serde_json::from_value(v).map_err(|e| Error::Config(ConfigError::plain(e.to_string())))
    }
}

/// The flags of `nas bench loader`.
pub fn loader_flags() -> Vec<Mount> {
    let data = crate::run_flags::data_flags().into_iter().filter(|f| f.long == "data").collect::<Vec<_>>();
    let mut data = data;
    data.extend([crate::run_flags::image_size_flag(), crate::run_flags::batch_size_flag()]);
    vec![
        Mount::new("data", data),
        Mount::new(
            "",
            vec![
                Flag::one("batches", "batches", "N", parse::<usize>).help("Timed batches (10)"),
                warmup_flag(),
                Flag::switch("eval", "eval").help(
                    "Evaluation transforms (resize and centre crop) instead of random resized crop, flip and colour \
                     jitter",
                ),
                Flag::switch("in-memory", "in_memory")
                    .help("Decode a folder into memory first instead of streaming it (the CIFAR-size path)"),
            ],
        ),
    ]
}

/// Images per second of the loader over `batches` batches after `warmup`, one JSON object.
pub fn bench_loader(cfg: &BenchLoaderConfig) -> Result<Value> {
    use crate::data::{Augment, BatchIter, BatchPlan, Dataset, LoadOptions};
    let (batch_size, image_size) = (cfg.data.batch_size, cfg.data.image_size);
    if cfg.batches == 0 || batch_size == 0 {
        return Err(ConfigError::new(format!(
            "{} and {} must be positive",
            brief("data.batch_size"),
            brief("batches")
        ))
        .into());
    }
    let listed = Instant::now();
    let need = (cfg.batches + cfg.warmup) * batch_size;
    // Synthetic images are drawn at the image size: only as many as the batches take.
    let subset = matches!(cfg.data.spec, crate::data::DataSpec::Synthetic).then_some(need);
    let opts = LoadOptions { image_size, stream: !cfg.in_memory, subset, ..LoadOptions::default() };
    let data = Dataset::load(&cfg.data.spec, &opts)?;
    let load_s = listed.elapsed().as_secs_f64();
    if data.train.len() < need {
        return Err(Error::Invalid(format!(
            "{} has {} training images, fewer than the {need} of {} batches of {}",
            data.name,
            data.train.len(),
            cfg.batches + cfg.warmup,
            batch_size
        )));
    }
    let augment = if cfg.eval { Augment::NONE } else { Augment::IMAGENET };
    let plan = BatchPlan { batch_size, shuffle: true, drop_last: true, augment, seed: 0, epoch: 0, stream: 0 };
    let mut it = BatchIter::new(data.train.clone(), data.normalize.clone(), plan, crate::epoch::PREFETCH);
    for _ in 0..cfg.warmup {
        it.next().transpose()?;
    }
    let started = Instant::now();
    let mut images = 0;
    for _ in 0..cfg.batches {
        images += it.next().transpose()?.map_or(0, |b| b.len());
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "config": cfg,
        "threads": rayon::current_num_threads(),
        "images": images,
        "seconds": secs,
        "images_per_s": images as f64 / secs.max(1e-9),
        "load_s": load_s,
    }))
}
