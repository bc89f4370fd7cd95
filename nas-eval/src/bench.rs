//! Train-step timing of the evaluation network on random data, comparable with
//! `shared/bench/darts_ref.py --net eval`: the same network (auxiliary head on), drop path at
//! the given probability, the auxiliary loss weighted 0.4, clipping at 5 and SGD with momentum,
//! timed by `nas_core::bench`.

use candle_core::DType;
use nas_core::bench::{random_batch, report, time_steps};
use nas_core::DeviceSpec;
use search_spaces::{Genotype, TaskShape};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::TrainConfig;
use crate::model::EvalModel;
use crate::train::{train_step, LossConfig};
use crate::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchTrainConfig {
    /// Built-in name, nb201 arch string or genotype.json path.
    pub genotype: String,
    pub channels: usize,
    pub layers: usize,
    pub batch_size: usize,
    pub image_size: usize,
    pub drop_path: f64,
    pub auxiliary_weight: f64,
    pub device: DeviceSpec,
    pub steps: usize,
    pub warmup: usize,
    /// Count the GPU work of the timed steps (CUDA).
    pub count_launches: bool,
}

/// Times train steps; returns the JSON line `nas bench train` prints.
pub fn bench_train(b: &BenchTrainConfig) -> Result<Value> {
    let genotype = Genotype::load(&b.genotype)?;
    let mut cfg = TrainConfig::for_genotype(&genotype);
    cfg.model.channels = b.channels;
    cfg.model.layers = b.layers;
    // The reference's drop path and auxiliary weight, where the space's network has them.
    if genotype.kind().has_drop_path() {
        cfg.model.drop_path = b.drop_path;
    }
    if genotype.kind().has_auxiliary_head() {
        cfg.model.auxiliary_weight = b.auxiliary_weight;
    }
    cfg.data.batch_size = b.batch_size;
    cfg.data.image_size = b.image_size;
    cfg.device = b.device;
    let cfg = cfg.validate()?;
    cfg.check_input_size(b.image_size, b.image_size)?;
    let device = cfg.device.open()?;
    let model = EvalModel::new(&cfg.genotype, &cfg.model, TaskShape { num_classes: 10, in_channels: 3 }, 0, &device)?;
    let o = &cfg.optimizer;
    let mut opt = o.optimizer(model.weights().weights());
    let (x, y) = random_batch(b.batch_size, b.image_size, &device)?;
    let mut step = 0;
    let m = time_steps(&device, (b.warmup, b.steps), b.count_launches, || -> Result<()> {
        let drop = model.drop_path(cfg.model.drop_path, b.batch_size, (0, 0, step), &device)?;
        step += 1;
        let loss_cfg = LossConfig { aux_weight: cfg.model.auxiliary_weight, label_smoothing: cfg.label_smoothing };
        let (loss, _) = train_step(&model, &mut opt, &x, &y, loss_cfg, o.grad_clip, drop.as_ref())?;
        loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok(report(b, &m, &[("params_without_aux", json!(model.num_params_without_aux()))]))
}
