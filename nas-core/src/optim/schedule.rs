//! Learning-rate schedules, stepped once per epoch like DARTS' use of `CosineAnnealingLR`: the
//! rate of epoch e (from 0) is set before its first step.
//! - cosine: lr(e) = min + (max − min)·(1 + cos(π e / T))/2 (DARTS, the searches);
//! - step: lr(e) = max·γ^e (DARTS' ImageNet `StepLR(optimizer, 1, gamma=0.97)`);
//! - linear: PC-DARTS' ImageNet `adjust_lr`, max·(T − 5 − e)/(T − 5) while more than five
//!   epochs are left, then max·(T − e)/(5·(T − 5)) (a gentler slope over the last five);
//!   max·(T − e)/T for runs of five epochs or fewer.
//!
//! A warm-up of W epochs multiplies the rate of epoch e < W by (e + 1)/W (PC-DARTS' ImageNet
//! recipes, for batches over 256).

use serde::{Deserialize, Serialize};

/// lr(e) = min + (max − min)·(1 + cos(π e / T))/2 for epoch e in 0..T.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineAnnealing {
    pub max_lr: f64,
    pub min_lr: f64,
    pub epochs: usize,
}

impl CosineAnnealing {
    pub fn lr(&self, epoch: usize) -> f64 {
        let t = epoch as f64 / self.epochs.max(1) as f64;
        self.min_lr + (self.max_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
    }
}

/// The shape of a run's learning-rate schedule (`optimizer.schedule`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ScheduleKind {
    #[default]
    Cosine,
    /// ×γ every epoch.
    Step { gamma: f64 },
    /// PC-DARTS' linear decay to 0.
    Linear,
}

impl ScheduleKind {
    pub fn is_cosine(&self) -> bool {
        *self == ScheduleKind::Cosine
    }
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;

    /// `cosine`, `linear` or `step:GAMMA`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            None if s == "cosine" => Ok(ScheduleKind::Cosine),
            None if s == "linear" => Ok(ScheduleKind::Linear),
            Some(("step", g)) => g
                .parse()
                .map(|gamma| ScheduleKind::Step { gamma })
                .map_err(|_| format!("`{g}` is not a number (step:GAMMA)")),
            _ => Err(format!("unknown schedule `{s}` (expected cosine, linear or step:GAMMA)")),
        }
    }
}

/// The learning rate of every epoch of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub max_lr: f64,
    /// The floor of the cosine schedule.
    pub min_lr: f64,
    pub epochs: usize,
    pub warmup_epochs: usize,
}

impl LrSchedule {
    pub fn lr(&self, epoch: usize) -> f64 {
        let (max, total, e) = (self.max_lr, self.epochs, epoch);
        let lr = match self.kind {
            ScheduleKind::Cosine => CosineAnnealing { max_lr: max, min_lr: self.min_lr, epochs: total }.lr(e),
            ScheduleKind::Step { gamma } => max * gamma.powi(e as i32),
            ScheduleKind::Linear if total <= 5 => max * total.saturating_sub(e) as f64 / total.max(1) as f64,
            ScheduleKind::Linear if total - e.min(total) > 5 => max * (total - 5 - e) as f64 / (total - 5) as f64,
            ScheduleKind::Linear => max * total.saturating_sub(e) as f64 / (5 * (total - 5)) as f64,
        };
        if e < self.warmup_epochs {
            lr * (e + 1) as f64 / self.warmup_epochs as f64
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_points() {
        let s = CosineAnnealing { max_lr: 0.025, min_lr: 0.001, epochs: 50 };
        assert!((s.lr(0) - 0.025).abs() < 1e-15);
        assert!((s.lr(25) - 0.013).abs() < 1e-15);
        assert!((s.lr(50) - 0.001).abs() < 1e-15);
        assert!(s.lr(10) > s.lr(11));
    }

    fn schedule(kind: ScheduleKind, max_lr: f64, warmup_epochs: usize) -> LrSchedule {
        LrSchedule { kind, max_lr, min_lr: 0.0, epochs: 250, warmup_epochs }
    }

    /// DARTS' ImageNet schedule: 0.1·0.97^e.
    #[test]
    fn step_decay_multiplies_every_epoch() {
        let s = schedule(ScheduleKind::Step { gamma: 0.97 }, 0.1, 0);
        for (e, want) in [(0, 0.1), (1, 0.097), (2, 0.09409), (100, 0.1 * 0.97f64.powi(100))] {
            assert!((s.lr(e) - want).abs() < 1e-15, "epoch {e}: {}", s.lr(e));
        }
    }

    /// PC-DARTS' `adjust_lr` at 250 epochs and lr 0.5, with the warm-up of `train_imagenet.py`
    /// (batch 1024): epochs 0–4 at (e + 1)/5 of the linear rate.
    #[test]
    fn linear_decay_with_warm_up_is_pc_darts_adjust_lr() {
        let s = schedule(ScheduleKind::Linear, 0.5, 5);
        let want = |e: usize| {
            let lr = if 250 - e > 5 { 0.5 * (245 - e) as f64 / 245.0 } else { 0.5 * (250 - e) as f64 / (245.0 * 5.0) };
            if e < 5 {
                lr * (e + 1) as f64 / 5.0
            } else {
                lr
            }
        };
        for e in [0, 1, 4, 5, 100, 244, 245, 246, 249] {
            assert!((s.lr(e) - want(e)).abs() < 1e-15, "epoch {e}: {} vs {}", s.lr(e), want(e));
        }
        assert!((s.lr(0) - 0.5 * 245.0 / 245.0 / 5.0).abs() < 1e-15);
        // The slope changes at 245 (0.5·1/245 ≈ 2.0e-3 before, 0.5·5/1225 ≈ 2.0e-3 after:
        // continuous) and reaches 0 at the end.
        assert!((s.lr(244) - 0.5 / 245.0).abs() < 1e-15 && (s.lr(245) - 0.5 * 5.0 / 1225.0).abs() < 1e-15);
        assert!(s.lr(250).abs() < 1e-15);
        let short = LrSchedule { epochs: 4, ..schedule(ScheduleKind::Linear, 0.4, 0) };
        assert_eq!([0, 1, 2, 3].map(|e| short.lr(e)), [0.4, 0.30000000000000004, 0.2, 0.1]);
    }
}
