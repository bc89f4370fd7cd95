//! Train-step timing of the evaluation network on random data, comparable with
//! `shared/bench/darts_ref.py --net eval`: the same network (auxiliary head on), drop path at
//! the given probability, the auxiliary loss weighted 0.4, clipping at 5 and SGD with momentum,
//! timed by `nas_core::bench`.

use candle_core::DType;
use nas_core::bench::{random_batch, report, time_steps, Timing};
use search_spaces::{Genotype, TaskShape};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::TrainConfig;
use crate::model::EvalModel;
use crate::train::{train_step, LossConfig};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct BenchTrainConfig {
    /// The retraining whose step is timed (its network, batch size, image size and device).
    pub train: TrainConfig,
    #[serde(flatten)]
    pub timing: Timing,
}

impl BenchTrainConfig {
    /// The DARTS recipe of `genotype` at darts_ref.py's defaults (C=16, L=8, batch 64, 32×32;
    /// its drop path 0.2 and auxiliary weight 0.4 where the space's network has them) with the
    /// flags' `overlay` (the retraining's fields, and the timing at its top level).
    pub fn from_overlay(genotype: &str, overlay: &Value) -> Result<Self> {
        let mut overlay = overlay.clone();
        let mut timing = serde_json::to_value(Timing::default()).map_err(|e| Error::Internal(e.to_string()))?;
        if let Value::Object(top) = &mut overlay {
            for key in ["steps", "warmup", "count_launches"] {
                if let Some(v) = top.remove(key) {
                    timing[key] = v;
                }
            }
        }
        let timing = serde_json::from_value(timing).map_err(|e| Error::config(e.to_string()))?;
        let mut cfg = TrainConfig::for_genotype(&Genotype::load(genotype)?);
        cfg.model.channels = 16;
        cfg.model.layers = 8;
        cfg.data.batch_size = 64;
        cfg.data.image_size = 32;
        Ok(Self { train: cfg.with_overlay(&overlay)?, timing })
    }
}

/// Times train steps; returns the JSON line `nas bench train` prints.
pub fn bench_train(b: &BenchTrainConfig) -> Result<Value> {
    let cfg = b.train.clone();
    let cfg = cfg.validate()?;
    let (batch_size, image_size) = (cfg.data.batch_size, cfg.data.image_size);
    cfg.check_input_size(image_size, image_size)?;
    let device = cfg.device.open()?;
    let model = EvalModel::new(&cfg.genotype, &cfg.model, TaskShape { num_classes: 10, in_channels: 3 }, 0, &device)?;
    let o = &cfg.optimizer;
    let mut opt = o.optimizer(model.weights().weights());
    let (x, y) = random_batch(batch_size, image_size, &device)?;
    let mut step = 0;
    let t = b.timing;
    let m = time_steps(&device, (t.warmup, t.steps), t.count_launches, || -> Result<()> {
        let drop = model.drop_path(cfg.model.drop_path, batch_size, (0, 0, step), &device)?;
        step += 1;
        let loss_cfg = LossConfig { aux_weight: cfg.model.auxiliary_weight, label_smoothing: cfg.label_smoothing };
        let (loss, _) = train_step(&model, &mut opt, &x, &y, loss_cfg, o.grad_clip, drop.as_ref())?;
        loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    })?;
    let extra = [
        ("params_without_aux", json!(model.num_params_without_aux())),
        ("mult_adds_per_image", json!(model.mult_adds(image_size, image_size).transpose()?)),
    ];
    Ok(report(b, &m, &extra))
}
