//! The epoch loop of a run, written once for the search and for retraining. A run plugs in
//! as an `EpochTask`: its batches, its step, its evaluation, the fields it adds to each epoch's
//! record and the state it checkpoints. `EpochLoop` owns the rest: the run's position, the
//! stop flag, divergence checks, the running tally and the step events, checkpoints when
//! stopped and at every epoch's end, the metrics log, and resuming with the log cut back to
//! the checkpoint.
//!
//! A step leaves its loss and its number of correct predictions on the device; the loop reads
//! them back every `sync_every(device)` steps (every step on the CPU, where a read stalls no
//! device queue; every 25 on an accelerator) and adds them to the tally on the host in step
//! order, so the sums are the same however often it reads. A non-finite loss among them stops
//! the run at the first such step.
//!
//! Reproducibility is the task's part: data order, augmentation and any other randomness of a
//! step must depend only on (seed, epoch, step), so that the checkpoint's position plus the
//! task's tensors are the whole state.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Map, Value};

use crate::checkpoint::{load_tensors, save_tensors, LoadedTensors};
use crate::data::{Augment, BatchIter, BatchPlan, Normalize, Samples};
use crate::dist;
use crate::metrics::{Event, MetricsSink, Position, Tally};
use crate::nn::{cross_entropy, topk_counts};
use crate::run_dir::{RunDir, CHECKPOINT};
use crate::run_error::{RunError, RunResult};

/// Batches a loader assembles ahead of the step that consumes them.
pub const PREFETCH: usize = 2;

/// Steps between two reads of step results on an accelerator; each read waits for the device.
pub const DEVICE_SYNC_EVERY: usize = 25;

/// Steps whose results are read back together on `device`: 1 on the CPU.
pub fn sync_every(device: &Device) -> usize {
    if device.is_cpu() {
        1
    } else {
        DEVICE_SYNC_EVERY
    }
}

/// What one step (or evaluation batch) leaves on the device: the batch's mean loss and its
/// number of correct predictions (a scalar, or the pair [top-1, top-5] of `nn::topk_counts`,
/// the same kind every step of a pass), and the batch size.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub loss: Tensor,
    pub correct: Tensor,
    pub n: usize,
}

/// The batches of the rest of an epoch.
pub struct EpochBatches<B> {
    /// Steps of the whole epoch, those done before a resume included.
    pub steps: usize,
    pub batches: Box<dyn Iterator<Item = B>>,
}

/// A search or a retraining run, as the epoch loop drives it.
pub trait EpochTask {
    /// What one step consumes.
    type Batch;
    /// The `format` metadata of this task's checkpoints.
    const CHECKPOINT_FORMAT: &'static str;
    /// What errors call a checkpoint of this task ("search", "training").
    const CHECKPOINT_KIND: &'static str;

    /// Prepares epoch `epoch` (learning rate and whatever else depends on it) and returns its
    /// batches from step `first` on.
    fn begin_epoch(&mut self, epoch: usize, first: usize) -> RunResult<EpochBatches<Self::Batch>>;

    /// Step `step` of epoch `epoch`.
    fn step(&mut self, epoch: usize, step: usize, batch: Self::Batch) -> RunResult<StepOutput>;

    /// Work after the last step of epoch `epoch`, before its evaluation (diagnostics).
    fn end_epoch(&mut self, _epoch: usize) -> RunResult<()> {
        Ok(())
    }

    /// Whether the task has decided to end the run before its last epoch (early stopping);
    /// asked before every epoch.
    fn stopped_early(&self) -> bool {
        false
    }

    /// The evaluation at the end of an epoch (validation or test split).
    fn evaluate(&mut self, sink: &mut dyn MetricsSink) -> RunResult<Tally>;

    /// The task's own fields of epoch `epoch`'s record (learning rate, genotype, …), next to
    /// the loop's epoch, train and valid loss and accuracy, and seconds.
    fn record_fields(&self, epoch: usize) -> RunResult<Map<String, Value>>;

    /// The tensors of a checkpoint.
    fn checkpoint_tensors(&self) -> RunResult<Vec<(String, Tensor)>>;

    /// The metadata of a checkpoint besides the format and the position.
    fn checkpoint_meta(&self) -> RunResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Restores what `checkpoint_tensors` and `checkpoint_meta` wrote, from the checkpoint at
    /// `path`.
    fn restore(&mut self, ck: &LoadedTensors, path: &Path) -> RunResult<()>;
}

/// The position of a run of `epochs` epochs on `device`, and the loop that advances it.
#[derive(Debug)]
pub struct EpochLoop {
    epochs: usize,
    /// The epoch the run starts at (a later stage of a run that continues an earlier one).
    first: usize,
    device: Device,
    position: Position,
    sync_every: usize,
}

impl EpochLoop {
    /// A run from its start; step results are read back every `sync_every(device)` steps.
    pub fn new(epochs: usize, device: &Device) -> Self {
        Self { epochs, first: 0, device: device.clone(), position: Position::default(), sync_every: sync_every(device) }
    }

    /// A run whose first epoch is `first` (the epochs before it belong to an earlier stage).
    pub fn starting_at(mut self, first: usize) -> Self {
        self.first = first;
        self.position = Position::epoch_start(first);
        self
    }

    /// Reads step results back every `n` steps instead.
    pub fn reading_every(mut self, n: usize) -> Self {
        self.sync_every = n.max(1);
        self
    }

    /// Where the run continues: the next epoch, and the step within it after an interruption.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Runs the remaining epochs of `task`, writing metrics and checkpoints to `dir`, until the
    /// last or until the task stops early. Returns the evaluation of the last epoch it ran
    /// (None when none was left). A raised `stop` ends
    /// the run before the next step with a checkpoint of the position and
    /// `RunError::Interrupted`.
    pub fn run<T: EpochTask>(
        &mut self,
        task: &mut T,
        dir: Option<&RunDir>,
        sink: &mut dyn MetricsSink,
        stop: &AtomicBool,
    ) -> RunResult<Option<Tally>> {
        // Under data parallelism rank 0 alone writes metrics and checkpoints.
        let dir = dir.filter(|_| dist::is_writer());
        let mut last = None;
        while self.position.epoch < self.epochs && !task.stopped_early() {
            let epoch = self.position.epoch;
            let started = Instant::now();
            let train = self.train_epoch(task, dir, sink, stop)?;
            task.end_epoch(epoch)?;
            let valid = task.evaluate(sink)?;
            // Every rank stops together, whichever rank's statistics diverged.
            if dist::any(dist::world().as_ref(), !valid.loss().is_finite())? {
                // The last step left the weights unusable; the previous checkpoint stays.
                return Err(RunError::DivergedValid { epoch, loss: valid.loss() });
            }
            let mut record = json!({
                "epoch": epoch,
                "train_loss": train.loss(),
                "train_acc": train.acc(),
                "valid_loss": valid.loss(),
                "valid_acc": valid.acc(),
            });
            if let Some(fields) = record.as_object_mut() {
                for (key, acc5) in [("train_top5", train.acc5()), ("valid_top5", valid.acc5())] {
                    if let Some(a) = acc5 {
                        fields.insert(key.into(), json!(a));
                    }
                }
                fields.extend(task.record_fields(epoch)?);
                fields.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
            }
            self.position = Position::epoch_start(epoch + 1);
            if let Some(dir) = dir {
                dir.append_metrics(&record)?;
                self.save_checkpoint(task, &dir.file(CHECKPOINT))?;
                tracing::info!(epoch, path = %dir.file(CHECKPOINT).display(), "checkpoint written");
            }
            sink.event(Event::EpochEnd { record: &record });
            last = Some(valid);
        }
        Ok(last)
    }

    /// Trains the rest of the epoch at the current position; returns its running tally.
    fn train_epoch<T: EpochTask>(
        &mut self,
        task: &mut T,
        dir: Option<&RunDir>,
        sink: &mut dyn MetricsSink,
        stop: &AtomicBool,
    ) -> RunResult<Tally> {
        let Position { epoch, step: first, tally } = self.position;
        let EpochBatches { steps, batches } = task.begin_epoch(epoch, first)?;
        sink.event(Event::EpochStart { epoch, epochs: self.epochs, steps });
        let mut progress = Progress { epoch, steps, tally, started: Instant::now(), seen_before: tally.seen };
        let mut pending = Pending::new(first, self.sync_every);
        for (step, batch) in (first..).zip(batches) {
            // A Ctrl-C on any rank stops every rank before the same step.
            if dist::any(dist::world().as_ref(), stop.load(Ordering::Relaxed))? {
                progress.take(&mut pending, sink)?;
                self.position = Position { epoch, step, tally: progress.tally };
                if let Some(dir) = dir {
                    self.save_checkpoint(task, &dir.file(CHECKPOINT))?;
                }
                return Err(RunError::Interrupted { epoch, step });
            }
            if pending.push(task.step(epoch, step, batch)?) {
                progress.take(&mut pending, sink)?;
            }
        }
        progress.take(&mut pending, sink)?;
        Ok(progress.tally)
    }

    /// Writes the task's state and the run's position, atomically.
    pub fn save_checkpoint<T: EpochTask>(&self, task: &T, path: &Path) -> RunResult<()> {
        let mut meta: HashMap<String, String> = task.checkpoint_meta()?.into_iter().collect();
        meta.insert("format".into(), T::CHECKPOINT_FORMAT.into());
        meta.insert(WORLD_SIZE.into(), dist::world().size().to_string());
        meta.extend(self.position.to_meta());
        Ok(save_tensors(path, &task.checkpoint_tensors()?, meta)?)
    }

    /// Restores a checkpoint written by `save_checkpoint`; returns the position to continue at.
    pub fn load_checkpoint<T: EpochTask>(&mut self, task: &mut T, path: &Path) -> RunResult<Position> {
        let ck = load_tensors(path, &self.device)?;
        if ck.meta("format") != Some(T::CHECKPOINT_FORMAT) {
            return Err(RunError::run_dir(path, format!("not a {} checkpoint of this version", T::CHECKPOINT_KIND)));
        }
        if ck.meta(crate::checkpoint::CHECKSUM).is_none() {
            // Every checkpoint this version writes has one; without it nothing vouches for it.
            return Err(RunError::run_dir(
                path,
                "has no checksum: written by an earlier version, or its header is damaged",
            ));
        }
        // Data and sampling streams are cut by rank: only the same number of processes can
        // continue a run exactly. Checkpoints without the field come from one process.
        let saved: usize = ck
            .meta(WORLD_SIZE)
            .map_or(Ok(1), str::parse)
            .map_err(|e| RunError::run_dir(path, format!("`{WORLD_SIZE}` of the checkpoint: {e}")))?;
        let size = dist::world().size();
        if saved != size {
            return Err(RunError::run_dir(
                path,
                format!(
                    "was written by a run of {saved} process(es), and this one has {size}: resume it with the same number (mpirun -np {saved})"
                ),
            ));
        }
        task.restore(&ck, path)?;
        self.position = ck.position(path)?;
        Ok(self.position)
    }

    /// Continues the run in `dir` from its checkpoint (or from its first epoch when it has
    /// none), dropping metric records the checkpoint does not cover.
    pub fn resume<T: EpochTask>(&mut self, task: &mut T, dir: &RunDir) -> RunResult<Position> {
        let ck = dir.file(CHECKPOINT);
        let position = if ck.exists() { self.load_checkpoint(task, &ck)? } else { Position::epoch_start(self.first) };
        if dist::is_writer() {
            dir.truncate_metrics(position.epoch)?;
        }
        Ok(position)
    }
}

/// The checkpoint metadata naming the number of processes that wrote it.
pub const WORLD_SIZE: &str = "world_size";

/// Loss and accuracy over `set` in order, without augmentation, of the network whose logits
/// `forward` computes from images on `device`.
pub fn evaluate_set(
    set: &Samples,
    normalize: &Normalize,
    batch_size: usize,
    device: &Device,
    sink: &mut dyn MetricsSink,
    mut forward: impl FnMut(&Tensor) -> candle_core::Result<Tensor>,
) -> RunResult<Tally> {
    let plan = BatchPlan {
        batch_size,
        shuffle: false,
        drop_last: false,
        augment: Augment::NONE,
        seed: 0,
        epoch: 0,
        stream: 2,
    };
    let it = BatchIter::new(set.clone(), normalize.clone(), plan, PREFETCH);
    sink.event(Event::EvalStart { batches: it.remaining() });
    let mut tally = Tally::default();
    let mut pending = Pending::new(0, sync_every(device));
    for hb in it {
        let (x, y) = hb?.to_device(device)?;
        let logits = forward(&x)?;
        let out = StepOutput { loss: cross_entropy(&logits, &y)?, correct: topk_counts(&logits, &y)?, n: y.dim(0)? };
        if pending.push(out) {
            for r in pending.read()? {
                r.add_to(&mut tally);
            }
        }
    }
    for r in pending.read()? {
        r.add_to(&mut tally);
    }
    Ok(tally)
}

/// Step results still on the device, from step `next` on.
struct Pending {
    next: usize,
    every: usize,
    outputs: Vec<StepOutput>,
}

impl Pending {
    fn new(first: usize, every: usize) -> Self {
        Self { next: first, every: every.max(1), outputs: Vec::new() }
    }

    /// Queues a step's results; true once it is time to read them back.
    fn push(&mut self, out: StepOutput) -> bool {
        self.outputs.push(out);
        self.outputs.len() >= self.every
    }

    /// Every queued step's results, in step order, read in one transfer each for the losses
    /// and the counts. The loss is read as f64 and the counts as f32, exactly the values a
    /// per-step `to_scalar` gives.
    fn read(&mut self) -> RunResult<Vec<StepRead>> {
        if self.outputs.is_empty() {
            return Ok(Vec::new());
        }
        let losses: Vec<&Tensor> = self.outputs.iter().map(|o| &o.loss).collect();
        let corrects: Vec<&Tensor> = self.outputs.iter().map(|o| &o.correct).collect();
        let losses = Tensor::stack(&losses, 0)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let counts = Tensor::stack(&corrects, 0)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        // One count per step (top-1) or two (top-1, top-5).
        let per = counts.len() / losses.len().max(1);
        let first = self.next;
        self.next += self.outputs.len();
        let sizes = self.outputs.drain(..).map(|o| o.n);
        Ok(losses
            .into_iter()
            .zip(counts.chunks(per.max(1)))
            .zip(sizes)
            .enumerate()
            .map(|(i, ((loss, c), n))| StepRead {
                step: first + i,
                loss,
                correct: c[0] as usize,
                correct5: c.get(1).map(|&v| v as usize),
                n,
            })
            .collect())
    }
}

/// One step's results as read back.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StepRead {
    step: usize,
    loss: f64,
    correct: usize,
    correct5: Option<usize>,
    n: usize,
}

impl StepRead {
    fn add_to(&self, tally: &mut Tally) {
        tally.add(self.loss, self.correct, self.n);
        if let Some(c5) = self.correct5 {
            tally.add_top5(c5);
        }
    }
}

/// The running tally of an epoch and what its step events report.
struct Progress {
    epoch: usize,
    steps: usize,
    tally: Tally,
    started: Instant,
    seen_before: usize,
}

impl Progress {
    /// Reads back the pending steps and adds them to the tally in order, with a step event
    /// each; the first non-finite loss ends the run as diverged at its step.
    fn take(&mut self, pending: &mut Pending, sink: &mut dyn MetricsSink) -> RunResult<()> {
        for r in pending.read()? {
            if !r.loss.is_finite() {
                return Err(RunError::Diverged { epoch: self.epoch, step: r.step, loss: r.loss });
            }
            r.add_to(&mut self.tally);
            let step = r.step;
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            sink.event(Event::Step {
                step: step + 1,
                steps: self.steps,
                loss: self.tally.loss(),
                acc: self.tally.acc(),
                samples_per_s: (self.tally.seen - self.seen_before) as f64 / secs,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(loss: f32, correct: f32, n: usize) -> StepOutput {
        StepOutput {
            loss: Tensor::new(loss, &Device::Cpu).unwrap(),
            correct: Tensor::new(correct, &Device::Cpu).unwrap(),
            n,
        }
    }

    #[test]
    fn pending_steps_read_back_in_order_with_their_step_numbers() -> RunResult<()> {
        let mut p = Pending::new(3, 2);
        assert!(!p.push(out(0.5, 4.0, 8)));
        assert!(p.push(out(0.25, 6.0, 8)));
        let r = |step, loss, correct, correct5, n| StepRead { step, loss, correct, correct5, n };
        assert_eq!(p.read()?, vec![r(3, 0.5, 4, None, 8), r(4, 0.25, 6, None, 8)]);
        assert!(!p.push(out(0.1, 1.0, 2)));
        // The f32 loss widened to f64, as a per-step read gives it.
        assert_eq!(p.read()?, vec![r(5, 0.1f32 as f64, 1, None, 2)]);
        assert!(p.read()?.is_empty());
        // Steps counting top-5 hits leave a pair per step.
        for (l, c) in [(0.5f32, [3f32, 7.0]), (0.25, [5.0, 8.0])] {
            p.push(StepOutput { loss: Tensor::new(l, &Device::Cpu)?, correct: Tensor::new(&c, &Device::Cpu)?, n: 8 });
        }
        assert_eq!(p.read()?, vec![r(6, 0.5, 3, Some(7), 8), r(7, 0.25, 5, Some(8), 8)]);
        Ok(())
    }

    /// Epochs of 5 steps with losses 1/(1+step) (NaN at `nan_at`) and 3 correct of 4.
    struct Fake {
        nan_at: Option<(usize, usize)>,
    }

    impl EpochTask for Fake {
        type Batch = ();
        const CHECKPOINT_FORMAT: &'static str = "fake-1";
        const CHECKPOINT_KIND: &'static str = "fake";

        fn begin_epoch(&mut self, _: usize, first: usize) -> RunResult<EpochBatches<()>> {
            Ok(EpochBatches { steps: 5, batches: Box::new(std::iter::repeat_n((), 5 - first)) })
        }

        fn step(&mut self, epoch: usize, step: usize, _: ()) -> RunResult<StepOutput> {
            let loss = if self.nan_at == Some((epoch, step)) { f32::NAN } else { 1.0 / (1 + step) as f32 };
            Ok(out(loss, 3.0, 4))
        }

        fn evaluate(&mut self, _: &mut dyn MetricsSink) -> RunResult<Tally> {
            Ok(Tally { loss_sum: 2.0, correct: 1, correct5: None, seen: 4 })
        }

        fn record_fields(&self, epoch: usize) -> RunResult<Map<String, Value>> {
            Ok(Map::from_iter([("lr".to_string(), json!(0.1 / (1 + epoch) as f64))]))
        }

        fn checkpoint_tensors(&self) -> RunResult<Vec<(String, Tensor)>> {
            Ok(Vec::new())
        }

        fn restore(&mut self, _: &LoadedTensors, _: &Path) -> RunResult<()> {
            Ok(())
        }
    }

    /// Every step event and epoch record, in order.
    #[derive(Default)]
    struct Events(Vec<String>);

    impl MetricsSink for Events {
        fn event(&mut self, e: Event<'_>) {
            match e {
                Event::Step { step, loss, acc, .. } => self.0.push(format!("step {step} {loss} {acc}")),
                Event::EpochEnd { record } => {
                    let mut r = record.clone();
                    r.as_object_mut().map(|o| o.remove("seconds"));
                    self.0.push(r.to_string())
                }
                _ => {}
            }
        }
    }

    #[test]
    fn reading_back_every_few_steps_reports_what_reading_every_step_does() {
        let run = |every: usize| {
            let mut events = Events::default();
            EpochLoop::new(2, &Device::Cpu)
                .reading_every(every)
                .run(&mut Fake { nan_at: None }, None, &mut events, &AtomicBool::new(false))
                .unwrap();
            events.0
        };
        let each = run(1);
        assert_eq!(each.len(), 2 * 5 + 2);
        // The running loss after step 2 of an epoch: (1 + 1/2)·4 / 8, from the host sums.
        assert_eq!(each[1], format!("step 2 {} 0.75", (1.0f64 + 0.5) * 4.0 / 8.0));
        assert_eq!(run(3), each);
        assert_eq!(run(25), each);
    }

    #[test]
    fn divergence_is_reported_at_its_step_whenever_it_is_read() {
        for every in [1, 2, 4] {
            let err = EpochLoop::new(2, &Device::Cpu)
                .reading_every(every)
                .run(&mut Fake { nan_at: Some((1, 2)) }, None, &mut Events::default(), &AtomicBool::new(false))
                .unwrap_err();
            assert!(matches!(err, RunError::Diverged { epoch: 1, step: 2, .. }), "every {every}: {err}");
        }
    }

    #[test]
    fn the_first_non_finite_loss_of_a_read_is_the_divergence() {
        let mut pending = Pending::new(10, 3);
        for l in [1.0, f32::NAN, f32::INFINITY] {
            pending.push(out(l, 1.0, 4));
        }
        let mut progress =
            Progress { epoch: 2, steps: 20, tally: Tally::default(), started: Instant::now(), seen_before: 0 };
        let mut sink = crate::metrics::NullSink;
        let err = progress.take(&mut pending, &mut sink).unwrap_err();
        assert!(matches!(err, RunError::Diverged { epoch: 2, step: 11, .. }), "{err}");
        assert_eq!(progress.tally.seen, 4, "the steps before it are counted");
    }
}
