//! Turns library events into progress output: indicatif bars on a terminal, plain periodic
//! lines otherwise, nothing but errors and results with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nas_core::metrics::{Event, MetricsSink};
use serde_json::Value;

pub struct Progress {
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    epoch: usize,
    epochs: usize,
    last_line: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self { quiet, tty: std::io::stderr().is_terminal(), bar: None, epoch: 0, epochs: 0, last_line: Instant::now() }
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
