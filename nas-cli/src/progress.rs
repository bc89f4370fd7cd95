//! Turns library events into progress output: indicatif bars on a terminal, plain periodic
//! lines otherwise, nothing but errors and results with `--quiet`; and, with `--tensorboard`,
//! each epoch's record into TensorBoard events (`crate::tensorboard`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nas_core::metrics::{Event, MetricsSink};
use serde_json::Value;

use crate::tensorboard::TensorBoard;

pub struct Progress {
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
    last_line: Instant,
    tensorboard: Option<TensorBoard>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            bar: None,
            epoch: 0,
            epochs: 0,
            last_line: Instant::now(),
            tensorboard: None,
        }
    }

    /// Also writes the epochs' records to `tensorboard`.
    pub fn with_tensorboard(mut self, tensorboard: Option<TensorBoard>) -> Self {
        self.tensorboard = tensorboard;
        self
    }

    /// Passes `event` on to TensorBoard. A failed write is reported (with `--quiet` too) and
    /// ends the TensorBoard events, not the run: metrics.jsonl still has every record.
    fn tensorboard(&mut self, event: &Event<'_>) {
        let Some(tb) = &mut self.tensorboard else { return };
        if let Err(e) = tb.event(event) {
            let path = tb.path().display().to_string();
            self.tensorboard = None;
            self.line(&format!("warning: TensorBoard: {e:#}; no more events are written to {path}"));
        }
    }

    fn finish_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}

fn num(r: &Value, k: &str) -> f64 {
    r.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

impl MetricsSink for Progress {
    fn event(&mut self, event: Event<'_>) {
        let epoch_end = matches!(event, Event::EpochEnd { .. });
        self.show(event.clone());
        self.tensorboard(&event);
        if epoch_end {
            crate::release_free_pages();
        }
    }
}

impl Progress {
    fn show(&mut self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        match event {
            Event::EpochStart { epoch, epochs, steps } => {
                self.finish_bar();
                (self.epoch, self.epochs) = (epoch, epochs);
                if self.tty {
                    let bar = ProgressBar::new(steps as u64);
                    let style =
                        ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} eta {eta}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> ");
                    bar.set_style(style);
                    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
                    bar.enable_steady_tick(Duration::from_millis(500));
                    self.bar = Some(bar);
                }
                self.last_line = Instant::now();
            }
            Event::Step { step, steps, loss, acc, samples_per_s } => {
                let msg = format!("loss {loss:.4} acc {acc:.3} {samples_per_s:.1} img/s");
                match &self.bar {
                    Some(b) => {
                        b.set_position(step as u64);
                        b.set_message(msg);
                    }
                    None => {
                        if self.last_line.elapsed() >= Duration::from_secs(30) || step == steps {
                            eprintln!("epoch {}/{} step {step}/{steps} {msg}", self.epoch + 1, self.epochs);
                            self.last_line = Instant::now();
                        }
                    }
                }
            }
            Event::EvalStart { batches } => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("evaluating ({batches} batches)"));
                }
            }
            Event::EpochEnd { record } => {
                self.finish_bar();
                self.line(&format!(
                    "epoch {}/{}: train loss {:.4} acc {:.4} | valid loss {:.4} acc {:.4} | lr {:.5} | {:.1}s",
                    self.epoch + 1,
                    self.epochs,
                    num(record, "train_loss"),
                    num(record, "train_acc"),
                    num(record, "valid_loss"),
                    num(record, "valid_acc"),
                    num(record, "lr"),
                    num(record, "seconds"),
                ));
            }
            Event::Message(m) => self.line(m),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish_bar();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorboard::{EventFile, TensorBoard};

    /// A disk that is full.
    struct Full;

    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("no space left"))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_tensorboard_write_ends_the_events_not_the_run() {
        let tb = TensorBoard::new(EventFile::over(Full, "tb/events".into()));
        let mut progress = Progress::new(true).with_tensorboard(Some(tb));
        let record = serde_json::json!({"epoch": 0, "train_loss": 1.0});
        progress.event(Event::EpochEnd { record: &record });
        assert!(progress.tensorboard.is_none());
        progress.event(Event::EpochEnd { record: &record });
    }
}
