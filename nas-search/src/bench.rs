//! Search-step timing on random data, comparable with shared/bench/darts_ref.py: the same
//! network, optimisers and step, a fixed random batch pair, timed by `nas_core::bench`. Any
//! method, by the same `method` section as a search. `peak_mem_bytes` is the process's peak
//! resident set size after the timed steps; `grad_evals_per_arch_step` counts the forward and
//! backward passes of one architecture step (first order 1, second order 4, unrolled 3K + 1,
//! Neumann 2J + 3, conjugate gradient 2J + 3 with a warm start's residual; GDAS' α step 1;
//! SNAS, ENAS and random sampling 0: their step is the weight step, SNAS' giving α's gradient
//! too).

use candle_core::DType;
use nas_core::bench::{random_batch, report, time_steps, timing_flags, Timing};
use nas_core::nn::{cross_entropy, Mode};
use nas_core::settings::{get_path, set_path, Flag, Mount};
use search_spaces::TaskShape;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::SearchConfig;
use crate::method::{MethodContext, StepAt, StepBatches, WeightStep};
use crate::step::Batch;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct BenchSearchConfig {
    /// The search whose step is timed (its supernet, method, batch size, image size and device).
    pub search: SearchConfig,
    /// Time the weight step alone (no architecture step).
    pub weights_only: bool,
    #[serde(flatten)]
    pub timing: Timing,
}

impl BenchSearchConfig {
    /// `darts-1st` (C=16, L=8, batch 64, 32×32: darts_ref.py's defaults) with the flags'
    /// `overlay` (the search's fields, and the benchmark's own at its top level). Partial
    /// channels come with edge normalisation, as in darts_ref.py.
    pub fn from_overlay(overlay: &Value) -> Result<Self> {
        let mut overlay = overlay.clone();
        let (timing, weights_only) = take_bench_fields(&mut overlay)?;
        if get_path(&overlay, "model.partial_channels").and_then(Value::as_u64).is_some_and(|k| k > 1) {
            set_path(&mut overlay, "model.edge_norm", Value::Bool(true));
        }
        let search = SearchConfig::preset("darts-1st")?.with_overlay(&overlay)?;
        Ok(Self { search, weights_only, timing })
    }
}

/// Takes the benchmark's own fields out of the top level of `overlay`.
fn take_bench_fields(overlay: &mut Value) -> Result<(Timing, bool)> {
    let mut timing = serde_json::to_value(Timing::default()).map_err(|e| Error::Internal(e.to_string()))?;
    let mut weights_only = false;
    if let Value::Object(top) = overlay {
        for key in ["steps", "warmup", "count_launches"] {
            if let Some(v) = top.remove(key) {
                timing[key] = v;
            }
        }
        weights_only = top.remove("weights_only").and_then(|v| v.as_bool()).unwrap_or(false);
    }
    let timing = serde_json::from_value(timing).map_err(|e| Error::config(e.to_string()))?;
    Ok((timing, weights_only))
}

/// The flags of `nas bench search`: the search's supernet, method, batch and device, and the
/// benchmark's own.
pub fn bench_search_flags() -> Vec<Mount> {
    let mut flags = crate::config::step_flags();
    let mut own = timing_flags();
    own.push(Flag::switch("weights-only", "weights_only").help("Time the weight step only (no architecture step)"));
    flags.push(Mount::new("", own));
    flags
}

/// Times search steps; returns the JSON line `nas bench search` prints.
pub fn bench_search(b: &BenchSearchConfig) -> Result<Value> {
    let cfg = b.search.clone().validate()?;
    let device = cfg.device.open()?;
    let net =
        cfg.space().build_supernet(&cfg.model, TaskShape { num_classes: 10, in_channels: 3 }, cfg.seed, &device)?;
    let w = &cfg.weight_optimizer;
    let mut w_opt = w.optimizer(net.weights().weights());
    let ctx = MethodContext::new(net.as_ref(), &cfg, &device);
    let mut method = cfg.method.build(&ctx)?;
    let (batch_size, image_size) = (cfg.data.batch_size, cfg.data.image_size);
    let batch = || -> Result<Batch> {
        let (x, y) = random_batch(batch_size, image_size, &device)?;
        Ok(Batch { x, y })
    };
    // The training batches of an architecture step (T-RAD reads K), then the validation batch.
    let train = batch()?;
    let more = (0..method.extra_train_batches()).map(|_| batch()).collect::<Result<Vec<_>>>()?;
    let valid = batch()?;
    let arch = !b.weights_only && method.reads_valid();
    method.begin_epoch(0);
    let mut step = 0;
    let t = b.timing;
    let m = time_steps(&device, (t.warmup, t.steps), t.count_launches, || -> Result<()> {
        let batches = StepBatches {
            train: vec![train.clone()],
            valid: arch.then(|| vec![valid.clone()]),
            more_train: if arch { more.iter().map(|b| vec![b.clone()]).collect() } else { Vec::new() },
        };
        let w = WeightStep { opt: &mut w_opt, clip: w.grad_clip };
        let out = method.step(net.as_ref(), w, StepAt { epoch: 0, step }, batches)?;
        step += 1;
        out.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    })?;
    // An evaluation-mode forward of one batch (what each epoch's validation pass costs).
    let eval = time_steps(&device, (t.warmup, t.steps), false, || -> Result<()> {
        let logits = net.forward(&valid.x, Mode::EVAL)?;
        cross_entropy(&logits, &valid.y)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    })?;
    // Forward and backward passes of one architecture step (0 when it is not timed).
    let arch_evals = if b.weights_only { 0 } else { method.last_arch_grad_evals() };
    let extra = [
        ("params_weights", json!(net.weights().num_weight_elements())),
        ("mult_adds_per_image", json!(net.mult_adds(image_size, image_size))),
        ("eval_step_s_median", json!(eval.median())),
        ("grad_evals_per_arch_step", json!(arch_evals)),
    ];
    Ok(report(b, &m, &extra))
}
