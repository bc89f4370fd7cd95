//! The training configuration: one serialisable value per run (written to config.json first),
//! nesting the model, data and optimiser settings, validated once into `ValidTrainConfig`.
//! The genotype is stored inline, so a run directory describes its network by itself.
//!
//! Defaults follow the DARTS retraining recipe (`train.py`): C=36, L=20, batch 96, 600 epochs,
//! SGD lr 0.025 cosine-annealed to 0, momentum 0.9, weight decay 3e-4, gradient clip 5,
//! cutout 16, drop path 0.2, auxiliary head weight 0.4. NAS-Bench-201 cells train in their
//! own skeleton (C=16, 5 cells per stage), which has neither auxiliary head nor drop path.
//!
//! The ImageNet recipes (mobile setting, `TrainConfig::recipe`) retrain a darts cell in
//! `NetworkImageNet` at 224×224: DARTS' `train_imagenet.py` (C=48, L=14, batch 128, SGD lr 0.1
//! ×0.97 per epoch, momentum 0.9, weight decay 3e-5, label smoothing 0.1, auxiliary weight 0.4,
//! no drop path, clip 5, 250 epochs) and PC-DARTS' (the same with batch 1024, lr 0.5 decayed
//! linearly to 0 after a warm-up of 5 epochs).

use nas_core::config_error::{brief, field, require_finite_non_negative, require_positive, ConfigError};
use nas_core::data::DataSpec;
use nas_core::optim::{lr_flag, schedule_flags, ScheduleKind, WeightOptimConfig};
use nas_core::run_flags::{accumulate_flag, batch_size_flag, data_flags, device_flag, image_size_flag, run_flags};
use nas_core::settings::{merge, parse, Flag, Mount};
use nas_core::DeviceSpec;
use search_spaces::{eval_model_flags, net_flag, size_flags, EvalModelConfig, Genotype, NetKind, SpaceKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainDataConfig {
    pub spec: DataSpec,
    /// Use only the first N training images.
    pub subset: Option<usize>,
    pub batch_size: usize,
    /// Side of the cutout square (0 = off).
    pub cutout: usize,
    /// Side images of a folder dataset are resized to.
    pub image_size: usize,
    /// Micro-batches per optimiser step (`--accumulate`; `batch_size` is the micro-batch).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub accumulate: usize,
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The genotype, as in genotype.json.
    pub genotype: Value,
    pub epochs: usize,
    pub seed: u64,
    pub device: DeviceSpec,
    pub model: EvalModelConfig,
    pub data: TrainDataConfig,
    pub optimizer: WeightOptimConfig,
    /// ε of the label-smoothed cross-entropy of the training loss, auxiliary head included
    /// (0: plain cross-entropy; evaluation always uses plain cross-entropy).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Whose published retraining recipe a run starts from (`nas train --recipe`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recipe {
    /// DARTS' `train.py` (CIFAR) and `train_imagenet.py` (ImageNet).
    #[default]
    Darts,
    /// PC-DARTS' recipes: DARTS' on CIFAR; batch 1024, lr 0.5, linear decay after 5 warm-up
    /// epochs on ImageNet.
    PcDarts,
}

impl std::str::FromStr for Recipe {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "darts" => Ok(Recipe::Darts),
            "pc-darts" => Ok(Recipe::PcDarts),
            _ => Err(format!("unknown recipe `{s}` (expected darts, pc-darts)")),
        }
    }
}

/// A configuration that passed `TrainConfig::validate`, with its parsed genotype.
#[derive(Debug, Clone)]
pub struct ValidTrainConfig {
    pub config: TrainConfig,
    pub genotype: Genotype,
}

impl std::ops::Deref for ValidTrainConfig {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.config
    }
}

impl TrainConfig {
    /// The DARTS recipe for `genotype`, with the network its space retrains (the NAS-Bench-201
    /// sizes for an nb201 cell).
    pub fn for_genotype(genotype: &Genotype) -> TrainConfig {
        TrainConfig {
            genotype: genotype.to_json(),
            epochs: 600,
            seed: 0,
            device: DeviceSpec::Cpu,
            model: genotype.kind().eval_defaults(),
            data: TrainDataConfig {
                spec: DataSpec::Synthetic,
                subset: None,
                batch_size: 96,
                cutout: 16,
                image_size: 32,
                accumulate: 1,
            },
            optimizer: WeightOptimConfig::darts(0.0),
            label_smoothing: 0.0,
        }
    }

    /// The published recipe `recipe` for `genotype` in the `net` skeleton: `for_genotype` for
    /// CIFAR networks, the mobile setting for ImageNet (see the module).
    pub fn recipe(genotype: &Genotype, net: NetKind, recipe: Recipe) -> TrainConfig {
        let mut c = Self::for_genotype(genotype);
        if net == NetKind::Cifar || genotype.kind() != SpaceKind::Darts {
            // Only darts cells have an ImageNet skeleton; validation names the field.
            c.model.net = net;
            return c;
        }
        c.epochs = 250;
        c.model = EvalModelConfig { channels: 48, layers: 14, auxiliary_weight: 0.4, drop_path: 0.0, net };
        c.data.batch_size = 128;
        c.data.cutout = 0;
        c.data.image_size = 224;
        c.optimizer = WeightOptimConfig {
            lr: 0.1,
            lr_min: 0.0,
            momentum: 0.9,
            weight_decay: 3e-5,
            grad_clip: 5.0,
            nesterov: false,
            schedule: ScheduleKind::Step { gamma: 0.97 },
            warmup_epochs: 0,
        };
        c.label_smoothing = 0.1;
        if recipe == Recipe::PcDarts {
            c.data.batch_size = 1024;
            c.optimizer.lr = 0.5;
            c.optimizer.schedule = ScheduleKind::Linear;
            c.optimizer.warmup_epochs = 5;
        }
        c
    }

    /// These settings with `overlay` (the command line's flags as JSON) laid over them.
    pub fn with_overlay(&self, overlay: &Value) -> Result<TrainConfig> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::Internal(e.to_string()))?;
        merge(&mut v, overlay);
        Self::from_json_value(v)
    }

    /// Reads a run's config.json, telling a search run apart from a training run.
    pub fn from_json_value(v: Value) -> Result<TrainConfig> {
        if v.get("genotype").is_none() {
            let what = if v.get("method").is_some() { "a search run" } else { "not a training configuration" };
            return Err(Error::config(format!("config.json describes {what}, not a training run")));
        }
        serde_json::from_value(v).map_err(|e| Error::config(format!("config.json: {e}")))
    }

    /// Checks every value once; the parsed genotype comes with the result. Messages name the
    /// settings by their config.json field.
    pub fn validate(self) -> Result<ValidTrainConfig> {
        let genotype = Genotype::from_json_value(&self.genotype)?;
        let bad = |m: String| Err(Error::Config(ConfigError::new(m)));
        require_positive(&[
            ("epochs", self.epochs),
            ("model.channels", self.model.channels),
            ("model.layers", self.model.layers),
            ("data.batch_size", self.data.batch_size),
            ("data.accumulate", self.data.accumulate),
            ("data.image_size", self.data.image_size),
        ])?;
        let m = &self.model;
        if !(0.0..1.0).contains(&m.drop_path) {
            return bad(format!("{} probability must be in [0, 1), got {}", field("model.drop_path"), m.drop_path));
        }
        require_finite_non_negative(&[("model.auxiliary_weight", m.auxiliary_weight)])?;
        genotype.kind().validate_eval(m)?;
        let o = &self.optimizer;
        for (name, v) in
            [("optimizer.lr", o.lr), ("optimizer.momentum", o.momentum), ("optimizer.weight_decay", o.weight_decay)]
        {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("{} must be a non-negative number, got {v}", field(name)));
            }
        }
        if o.lr == 0.0 || !(0.0..=o.lr).contains(&o.lr_min) {
            return bad(format!(
                "need 0 < {} and 0 <= {} <= {}, got lr {} and lr_min {}",
                brief("optimizer.lr"),
                field("optimizer.lr_min"),
                brief("optimizer.lr"),
                o.lr,
                o.lr_min
            ));
        }
        if let Some(e) = o.schedule_error("optimizer") {
            return Err(Error::Config(e));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("{} must be in [0, 1), got {}", field("label_smoothing"), self.label_smoothing));
        }
        if !(o.grad_clip >= 0.0 && o.grad_clip.is_finite()) {
            return bad(format!("{} must be a non-negative number, got {}", field("optimizer.grad_clip"), o.grad_clip));
        }
        if self.data.subset == Some(0) {
            return bad(format!("{} must be positive, got 0", field("data.subset")));
        }
        Ok(ValidTrainConfig { config: self, genotype })
    }
}

/// The flags of `nas train` besides the genotype and the recipe, each declared with the
/// section that owns its field.
pub fn train_flags() -> Vec<Mount> {
    let mut top = run_flags();
    top.push(
        Flag::one("label-smoothing", "label_smoothing", "E", parse::<f64>)
            .help("Label smoothing ε of the training loss [default: 0; imagenet 0.1]"),
    );
    let mut model = size_flags();
    model.extend(eval_model_flags());
    model.push(net_flag());
    let mut data = data_flags();
    data.extend([image_size_flag(), batch_size_flag(), accumulate_flag()]);
    data.push(
        Flag::one("cutout", "cutout", "N", parse::<usize>)
            .help("Side of the cutout square; 0 turns cutout off [default: 16]"),
    );
    let mut optimizer = vec![lr_flag()];
    optimizer.extend(schedule_flags());
    vec![Mount::new("", top), Mount::new("model", model), Mount::new("data", data), Mount::new("optimizer", optimizer)]
}

/// The flags of `nas bench train`: the network, the batch and the device, and the timing.
pub fn bench_train_flags() -> Vec<Mount> {
    let mut model = size_flags();
    model.extend(eval_model_flags());
    let mut top = vec![device_flag()];
    top.extend(nas_core::bench::timing_flags());
    vec![
        Mount::new("", top),
        Mount::new("model", model),
        Mount::new("data", vec![batch_size_flag(), image_size_flag()]),
    ]
}

impl ValidTrainConfig {
    /// Checks that images of `height`×`width` fit the network (a darts network's reductions and
    /// auxiliary head want 32×32 images).
    pub fn check_input_size(&self, height: usize, width: usize) -> Result<()> {
        Ok(self.genotype.kind().check_input_size(&self.model, height, width)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn darts() -> TrainConfig {
        TrainConfig::for_genotype(&Genotype::load("DARTS_V2").unwrap())
    }

    #[test]
    fn recipe_defaults_validate_and_round_trip() {
        let c = darts();
        assert_eq!((c.model.channels, c.model.layers, c.data.batch_size, c.epochs), (36, 20, 96, 600));
        let text = serde_json::to_string(&c).unwrap();
        let back = TrainConfig::from_json_value(serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(c.validate().is_ok());
        let nb = TrainConfig::for_genotype(
            &Genotype::load("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
                .unwrap(),
        );
        assert!(nb.validate().is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        type Edit = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|c| c.model.channels = 0), "model.channels must be positive"),
            (Box::new(|c| c.model.channels = 7), "must be even"),
            (Box::new(|c| c.model.drop_path = 1.0), "model.drop_path probability"),
            (Box::new(|c| c.model.auxiliary_weight = -1.0), "model.auxiliary_weight"),
            (Box::new(|c| c.data.batch_size = 0), "data.batch_size must be positive"),
            (Box::new(|c| c.optimizer.lr = 0.0), "0 < optimizer.lr"),
            (Box::new(|c| c.optimizer.lr = f64::NAN), "optimizer.lr must be"),
            (Box::new(|c| c.genotype = serde_json::json!({"space": "darts", "normal": []})), "genotype"),
        ];
        for (edit, want) in cases {
            let mut c = darts();
            edit(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut nb = TrainConfig::for_genotype(
            &Genotype::load(
                "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
            )
            .unwrap(),
        );
        nb.model.auxiliary_weight = 0.4;
        assert!(nb.validate().unwrap_err().to_string().contains("no auxiliary head"));
    }

    #[test]
    fn search_config_is_not_a_training_config() {
        let e = TrainConfig::from_json_value(serde_json::json!({"method": "first-order"})).unwrap_err();
        assert!(e.to_string().contains("search run"), "{e}");
    }
}
