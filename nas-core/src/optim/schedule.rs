//! Learning-rate schedules, stepped once per epoch like DARTS' use of `CosineAnnealingLR`.

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
}
