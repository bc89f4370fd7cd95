//! Progress and metrics reporting. Library code emits events to a `MetricsSink`; the command
//! line turns them into progress bars and files, tests collect or ignore them.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

/// What a long-running loop reports.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// An epoch starts: `epoch` of `epochs`, with `steps` steps.
    EpochStart { epoch: usize, epochs: usize, steps: usize },
    /// A step finished; running averages over the epoch so far.
    Step { step: usize, steps: usize, loss: f64, acc: f64, samples_per_s: f64 },
    /// An evaluation pass starts (`batches` batches).
    EvalStart { batches: usize },
    /// The epoch's summary record, as written to metrics.jsonl.
    EpochEnd { record: &'a Value },
    /// A human-readable note (resumed, checkpoint written, …).
    Message(&'a str),
}

/// Running sums of a pass over batches: the loss, the top-1 hits and, where the pass counts
/// them, the top-5 hits.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tally {
    pub loss_sum: f64,
    pub correct: usize,
    pub correct5: Option<usize>,
    pub seen: usize,
}

impl Tally {
    pub fn add(&mut self, loss: f64, correct: usize, n: usize) {
        self.loss_sum += loss * n as f64;
        self.correct += correct;
        self.seen += n;
    }

    /// Adds a batch's top-5 hits.
    pub fn add_top5(&mut self, correct5: usize) {
        self.correct5 = Some(self.correct5.unwrap_or(0) + correct5);
    }

    /// Top-5 accuracy, when the pass counted it.
    pub fn acc5(&self) -> Option<f64> {
        self.correct5.map(|c| c as f64 / self.seen.max(1) as f64)
    }

    pub fn loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }

    pub fn acc(&self) -> f64 {
        self.correct as f64 / self.seen.max(1) as f64
    }
}

/// Where a run stands: the epoch in progress, how many of its steps are done and their
/// running sums. Between epochs `step` is 0 and the tally empty; a run interrupted mid-epoch
/// (Ctrl-C) checkpoints its position and continues from that step.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Position {
    pub epoch: usize,
    pub step: usize,
    pub tally: Tally,
}

impl Position {
    /// The start of `epoch`.
    pub fn epoch_start(epoch: usize) -> Self {
        Self { epoch, ..Self::default() }
    }

    /// Checkpoint metadata; the loss sum is stored by its bits, so a resumed epoch reports
    /// exactly what the uninterrupted one would.
    pub fn to_meta(&self) -> Vec<(String, String)> {
        let mut meta = vec![
            ("next_epoch".into(), self.epoch.to_string()),
            ("next_step".into(), self.step.to_string()),
            ("tally_loss_bits".into(), self.tally.loss_sum.to_bits().to_string()),
            ("tally_correct".into(), self.tally.correct.to_string()),
            ("tally_seen".into(), self.tally.seen.to_string()),
        ];
        if let Some(c5) = self.tally.correct5 {
            meta.push(("tally_correct5".into(), c5.to_string()));
        }
        meta
    }
}

pub trait MetricsSink {
    fn event(&mut self, event: Event<'_>);
}

/// Discards everything.
pub struct NullSink;

impl MetricsSink for NullSink {
    fn event(&mut self, _: Event<'_>) {}
}

/// Keeps every epoch record (for tests and library users).
#[derive(Default)]
pub struct CollectSink {
    pub epochs: Vec<Value>,
}

impl MetricsSink for CollectSink {
    fn event(&mut self, event: Event<'_>) {
        if let Event::EpochEnd { record } = event {
            self.epochs.push(record.clone());
        }
    }
}

/// Raises `stop` once step `step` (1-based) of epoch `epoch` is done: a Ctrl-C in the middle
/// of an epoch, for resume tests.
pub struct StopAfterStep<'a> {
    pub epoch: usize,
    pub step: usize,
    pub stop: &'a AtomicBool,
    current_epoch: Option<usize>,
}

impl<'a> StopAfterStep<'a> {
    pub fn new(epoch: usize, step: usize, stop: &'a AtomicBool) -> Self {
        Self { epoch, step, stop, current_epoch: None }
    }
}

impl MetricsSink for StopAfterStep<'_> {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::EpochStart { epoch, .. } => self.current_epoch = Some(epoch),
            Event::Step { step, .. } if self.current_epoch == Some(self.epoch) && step == self.step => {
                self.stop.store(true, Ordering::SeqCst)
            }
            _ => {}
        }
    }
}

/// Raises `stop` once epoch `epoch` has been recorded: an interruption at an epoch boundary
/// (resume tests, a fixed-length slice of a longer run).
pub struct StopAfterEpoch<'a> {
    pub epoch: usize,
    pub stop: &'a AtomicBool,
}

impl MetricsSink for StopAfterEpoch<'_> {
    fn event(&mut self, event: Event<'_>) {
        if let Event::EpochEnd { record } = event {
            if record.get("epoch").and_then(Value::as_u64) == Some(self.epoch as u64) {
                self.stop.store(true, Ordering::SeqCst);
            }
        }
    }
}
