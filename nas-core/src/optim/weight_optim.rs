//! The weight optimiser of a run, as search and retraining configure it (DARTS `train_search.py`
//! and `train.py`): SGD with momentum and coupled weight decay, the learning rate
//! cosine-annealed from `lr` to `lr_min` over the epochs (or another `schedule`, with an optional
//! warm-up), global-norm gradient clipping, and optionally Nesterov momentum.

use serde::{Deserialize, Serialize};

use super::{LrSchedule, ScheduleKind, Sgd, SgdConfig};
use crate::settings::{parse, Flag};

/// `--lr`: the initial learning rate.
pub fn lr_flag() -> Flag {
    Flag::one("lr", "lr", "LR", parse::<f64>).help(
        "Initial weight learning rate, annealed by the schedule (search: 0.025 cosine to the preset's minimum; \
         retraining: 0.025, imagenet 0.1, pc-darts 0.5)",
    )
}

/// `--lr-schedule` and `--warmup-epochs`.
pub fn schedule_flags() -> Vec<Flag> {
    vec![
        Flag::one("lr-schedule", "schedule", "S", parse::<ScheduleKind>).help(
            "Learning-rate schedule: cosine (to 0), step:GAMMA (×GAMMA every epoch) or linear (PC-DARTS) \
             [default: cosine; imagenet step:0.97, pc-darts linear]",
        ),
        Flag::one("warmup-epochs", "warmup_epochs", "N", parse::<usize>)
            .help("Epochs of linear learning-rate warm-up [default: 0; pc-darts imagenet 5]"),
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightOptimConfig {
    pub lr: f64,
    pub lr_min: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Global-norm gradient clip (0 = off).
    pub grad_clip: f64,
    /// Nesterov momentum (AutoDL's NAS-Bench-201 searches use it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nesterov: bool,
    /// The schedule's shape; cosine annealing unless given.
    #[serde(default, skip_serializing_if = "ScheduleKind::is_cosine")]
    pub schedule: ScheduleKind,
    /// Epochs of linear warm-up at the start (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_epochs: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl WeightOptimConfig {
    /// DARTS' SGD (`train_search.py`, `train.py`): lr 0.025 cosine-annealed to `lr_min`,
    /// momentum 0.9, weight decay 3e-4, gradient clip 5.
    pub fn darts(lr_min: f64) -> Self {
        Self {
            lr: 0.025,
            lr_min,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            nesterov: false,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0,
        }
    }

    /// The optimiser's own settings, at the initial learning rate.
    pub fn sgd(&self) -> SgdConfig {
        SgdConfig { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay }
    }

    /// The optimiser over `params`.
    pub fn optimizer(&self, params: Vec<candle_core::Var>) -> Sgd {
        Sgd::new(params, self.sgd()).with_nesterov(self.nesterov)
    }

    /// What is wrong with the schedule's own settings (a step factor outside (0, 1]), naming
    /// the field under `section` ("optimizer", "weight_optimizer").
    pub fn schedule_error(&self, section: &str) -> Option<crate::ConfigError> {
        match self.schedule {
            ScheduleKind::Step { gamma } if !(gamma > 0.0 && gamma <= 1.0) => Some(crate::ConfigError::new(format!(
                "{} must be in (0, 1], got {gamma}",
                crate::config_error::field(&format!("{section}.schedule.gamma"))
            ))),
            _ => None,
        }
    }

    /// The learning rate of every epoch of a run of `epochs`.
    pub fn schedule(&self, epochs: usize) -> LrSchedule {
        LrSchedule {
            kind: self.schedule,
            max_lr: self.lr,
            min_lr: self.lr_min,
            epochs,
            warmup_epochs: self.warmup_epochs,
        }
    }
}
