//! DARTS-ES (Zela et al. 2020, "Understanding and Robustifying Differentiable Architecture
//! Search", automl/RobustDARTS `utils.EVLocalAvg`): the search stops when the dominant
//! eigenvalue of ∇²_α L_val has grown too fast, and returns the genotype of an earlier epoch.
//!
//! The eigenvalue is computed every `every` epochs (epoch % every == 0, and the last epoch).
//! Its local average is the mean over a sliding window of 5 values, started once 3 values
//! exist (the first averages cover fewer values); the average reported at epoch e stands for
//! epoch e − every·⌊5/2⌋. At each eigenvalue epoch but the last, once that centre epoch minus
//! every·4 is at least 10, the search stops when the current average divided by the one
//! 4 averages earlier exceeds 1.3; the returned genotype is the one of the epoch
//! centre − every·4 (with every = 2: 4·2 epochs before the current average's epoch).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// R-DARTS' defaults: window, threshold factor, first epoch considered, and δ.
const WINDOW: usize = 5;
const FACTOR: f64 = 1.3;
const START_EPOCH: i64 = 10;
const DELTA: usize = 4;

/// Why and where a search stopped early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopDecision {
    pub rule: String,
    /// The epoch whose eigenvalue triggered the stop.
    pub detected_epoch: usize,
    /// The epoch whose genotype the search returns.
    pub stop_epoch: usize,
    pub current_average: f64,
    pub previous_average: f64,
    pub factor: f64,
}

/// One eigenvalue of the history: (epoch, eigenvalue, genotype of that epoch as JSON).
pub type Sample = (usize, f64, Value);

/// The local averages of the eigenvalue and the stop rule.
#[derive(Debug, Clone)]
pub struct DartsEs {
    every: usize,
    epochs: usize,
    samples: Vec<Sample>,
    local_avg: Vec<f64>,
    /// Epoch → the epoch its latest local average stands for (−1: no average yet).
    centre: BTreeMap<usize, i64>,
    window_start: usize,
    decision: Option<(EarlyStopDecision, Value)>,
}

impl DartsEs {
    /// The eigenvalue every `every` epochs of a search of `epochs` epochs.
    pub fn new(every: usize, epochs: usize) -> Self {
        Self {
            every: every.max(1),
            epochs,
            samples: Vec::new(),
            local_avg: Vec::new(),
            centre: BTreeMap::new(),
            window_start: 0,
            decision: None,
        }
    }

    /// Whether epoch `epoch` computes the eigenvalue.
    pub fn computes_at(every: usize, epoch: usize, epochs: usize) -> bool {
        every > 0 && (epoch.is_multiple_of(every) || epoch + 1 == epochs)
    }

    /// Adds the eigenvalue of `epoch` and applies the stop rule (not at the last epoch).
    pub fn push(&mut self, epoch: usize, ev: f64, genotype: Value) {
        self.samples.push((epoch, ev, genotype));
        let last = epoch + 1 == self.epochs;
        let n = self.samples.len();
        let first_avg = WINDOW.div_ceil(2);
        if n >= first_avg && !last {
            let window = if n < WINDOW {
                &self.samples[..]
            } else {
                let w = &self.samples[self.window_start..self.window_start + WINDOW];
                self.window_start += 1;
                w
            };
            self.local_avg.push(window.iter().map(|s| s.1).sum::<f64>() / window.len() as f64);
            self.centre.insert(epoch, epoch as i64 - (self.every * (WINDOW / 2)) as i64);
        } else if n < first_avg {
            self.centre.insert(epoch, -1);
        }
        if !last && self.decision.is_none() {
            self.check(epoch);
        }
    }

    fn check(&mut self, epoch: usize) {
        let Some(&centre) = self.centre.get(&epoch) else { return };
        let stop_epoch = centre - (self.every * DELTA) as i64;
        if stop_epoch < START_EPOCH || self.local_avg.len() <= DELTA {
            return;
        }
        let current = self.local_avg[self.local_avg.len() - 1];
        let previous = self.local_avg[self.local_avg.len() - 1 - DELTA];
        if current / previous > FACTOR {
            let stop_epoch = stop_epoch as usize;
            let Some(genotype) = self.samples.iter().find(|s| s.0 == stop_epoch).map(|s| s.2.clone()) else { return };
            let decision = EarlyStopDecision {
                rule: "darts-es".into(),
                detected_epoch: epoch,
                stop_epoch,
                current_average: current,
                previous_average: previous,
                factor: FACTOR,
            };
            self.decision = Some((decision, genotype));
        }
    }

    /// The decision to stop and the genotype to return, once taken.
    pub fn decision(&self) -> Option<&(EarlyStopDecision, Value)> {
        self.decision.as_ref()
    }

    /// The eigenvalues so far (for checkpoints).
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The tracker after `samples`, as if they had been pushed one by one.
    pub fn replay(every: usize, epochs: usize, samples: Vec<Sample>) -> Self {
        let mut t = Self::new(every, epochs);
        for (epoch, ev, g) in samples {
            t.push(epoch, ev, g);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Eigenvalues every `every` epochs from `f(epoch)`, until a stop or the end.
    fn run(every: usize, epochs: usize, f: impl Fn(usize) -> f64) -> DartsEs {
        let mut t = DartsEs::new(every, epochs);
        for epoch in 0..epochs {
            if DartsEs::computes_at(every, epoch, epochs) {
                t.push(epoch, f(epoch), json!({ "epoch": epoch }));
                if t.decision().is_some() {
                    break;
                }
            }
        }
        t
    }

    #[test]
    fn a_flat_eigenvalue_never_stops() {
        assert!(run(2, 50, |_| 0.1).decision().is_none());
    }

    #[test]
    fn slow_growth_below_the_factor_never_stops() {
        // Linear growth from 1 to 1.2 over 50 epochs: no average grows 1.3× in 8 epochs.
        assert!(run(2, 50, |e| 1.0 + 0.004 * e as f64).decision().is_none());
    }

    #[test]
    fn a_jump_stops_and_returns_the_genotype_from_twelve_epochs_before() {
        // Eigenvalue 1 until epoch 29, then 10. Averages: window 5 over epochs e−8 … e, centred
        // at e−4. At epoch 30 the current average is (1+1+1+1+10)/5 = 2.8, the one 4 averages
        // earlier is 1: ratio 2.8 > 1.3. Centre 26, stop epoch 26 − 8 = 18.
        let t = run(2, 50, |e| if e >= 30 { 10.0 } else { 1.0 });
        let (d, g) = t.decision().expect("stops");
        assert_eq!((d.detected_epoch, d.stop_epoch), (30, 18));
        assert!((d.current_average - 2.8).abs() < 1e-12 && (d.previous_average - 1.0).abs() < 1e-12);
        assert_eq!(g, &json!({ "epoch": 18 }));
    }

    #[test]
    fn no_stop_is_considered_before_epoch_twenty_two() {
        // With every = 2 the first epoch considered is 10 + 8 + 4 = 22: a jump at epoch 4 has
        // left the window by then (the averages at 22 and 14 are both 1).
        let t = run(2, 50, |e| if e == 4 { 100.0 } else { 1.0 });
        assert!(t.decision().is_none());
        // A jump that is still inside the window at epoch 22 stops there.
        let t = run(2, 50, |e| if e == 22 { 100.0 } else { 1.0 });
        assert_eq!(t.decision().map(|d| (d.0.detected_epoch, d.0.stop_epoch)), Some((22, 10)));
    }

    #[test]
    fn the_last_epoch_never_stops() {
        // The jump comes at the last epoch (49): R-DARTS does not consider stopping there.
        assert!(run(2, 50, |e| if e == 49 { 100.0 } else { 1.0 }).decision().is_none());
    }

    #[test]
    fn every_epoch_spacing_follows_the_centre_offset() {
        // every = 1: averages centred at e − 2, compared with the one 4 back; stop epoch e − 6.
        let t = run(1, 50, |e| if e >= 20 { 5.0 } else { 1.0 });
        let (d, _) = t.decision().expect("stops");
        assert_eq!((d.detected_epoch, d.stop_epoch), (20, 14));
        // (1+1+1+1+5)/5 = 1.8 against 1.
        assert!((d.current_average - 1.8).abs() < 1e-12);
    }

    #[test]
    fn replay_reproduces_the_tracker() {
        let t = run(2, 50, |e| if e >= 30 { 10.0 } else { 1.0 + e as f64 * 0.01 });
        let r = DartsEs::replay(2, 50, t.samples().to_vec());
        assert_eq!(r.decision(), t.decision());
        assert_eq!(r.local_avg, t.local_avg);
    }
}
