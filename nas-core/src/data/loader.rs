//! Batches assembled ahead of the training step. A producer thread walks the epoch's order
//! (a seeded shuffle) and builds each batch with rayon, one image per task (for a streamed set
//! also its reading and decoding), into a bounded channel, so loading and augmentation overlap
//! the step that consumes the previous batch and at most `prefetch` batches wait in memory. Every sample's
//! augmentation draws from its own stream keyed by (seed, epoch, position): the batches do not
//! depend on thread timing, and an epoch can be replayed exactly on resume.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::{Augment, Normalize, Samples};
use crate::error::Result;
use crate::rng::{self, Purpose};

/// One batch on the host: images (N, C, H, W) as f32 and labels.
#[derive(Debug, Clone)]
pub struct HostBatch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub shape: (usize, usize, usize, usize),
}

impl HostBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Moves the batch to `device`: images (N, C, H, W) f32 and labels (N,) u32.
    pub fn to_device(self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let n = self.labels.len();
        let x = Tensor::from_vec(self.images, self.shape, &Device::Cpu)?.to_device(device)?;
        let y = Tensor::from_vec(self.labels, n, &Device::Cpu)?.to_device(device)?;
        Ok((x, y))
    }
}

/// How one pass over a set is cut into batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPlan {
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub augment: Augment,
    pub seed: u64,
    pub epoch: usize,
    /// Tells apart several loaders of one epoch (search-train, search-valid).
    pub stream: u64,
}

impl BatchPlan {
    pub fn num_batches(&self, n: usize) -> usize {
        if self.batch_size == 0 {
            0
        } else if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    fn key(&self) -> u64 {
        ((self.epoch as u64) << 16) | self.stream
    }

    /// The sample order of this epoch.
    pub fn order(&self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if self.shuffle {
            order.shuffle(&mut rng::stream(self.seed, Purpose::Shuffle, self.key(), 0));
        }
        order
    }
}

/// Which of every step's batches a process assembles: a step is `group` consecutive batches
/// of the epoch (accumulated micro-batches × data-parallel ranks), of which this process
/// takes `count` from `start` on (rank r of R with N micro-batches each: start r·N, count N,
/// group R·N). Batch b stays batch b whoever assembles it, with the same samples and the
/// same augmentation draws (keyed by its positions in the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub group: usize,
    pub start: usize,
    pub count: usize,
}

impl Shard {
    /// Every batch, one per step.
    pub const WHOLE: Shard = Shard { group: 1, start: 0, count: 1 };

    /// Rank `rank` of `ranks`, each accumulating `accumulate` micro-batches per step.
    pub fn of_rank(rank: usize, ranks: usize, accumulate: usize) -> Shard {
        Shard { group: ranks * accumulate, start: rank * accumulate, count: accumulate }
    }

    fn takes(&self, b: usize) -> bool {
        (self.start..self.start + self.count).contains(&(b % self.group.max(1)))
    }
}

/// The steps of one epoch: per step this process's micro-batches (`Shard`), in order, or the
/// error that stopped assembling one (an unreadable file).
pub struct StepIter {
    inner: BatchIter,
    count: usize,
    steps: usize,
}

impl StepIter {
    /// The epoch's steps from step `first` on; a step is `shard.group` batches of `plan`, and
    /// only whole steps are taken (`drop_last` at the step).
    pub fn new(set: Samples, norm: Normalize, plan: BatchPlan, shard: Shard, prefetch: usize, first: usize) -> Self {
        let steps = plan.num_batches(set.len()) / shard.group.max(1);
        let inner = BatchIter::spawn(set, norm, plan, shard, steps, prefetch.max(1) * shard.count.max(1), first);
        Self { inner, count: shard.count.max(1), steps: steps.saturating_sub(first) }
    }

    /// Steps still to come.
    pub fn remaining(&self) -> usize {
        self.steps
    }
}

impl Iterator for StepIter {
    type Item = Result<Vec<HostBatch>>;

    fn next(&mut self) -> Option<Result<Vec<HostBatch>>> {
        if self.steps == 0 {
            return None;
        }
        let step: Vec<Result<HostBatch>> = self.inner.by_ref().take(self.count).collect();
        // A failed batch ends its producer early: report it rather than a short step.
        if step.len() < self.count && step.iter().all(Result::is_ok) {
            return None;
        }
        self.steps -= 1;
        Some(step.into_iter().collect())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.steps, Some(self.steps))
    }
}

/// Iterator over the batches of one epoch, produced on a background thread; a batch that could
/// not be assembled is its error, and the last item.
pub struct BatchIter {
    rx: Option<Receiver<Result<HostBatch>>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl BatchIter {
    pub fn new(set: Samples, norm: Normalize, plan: BatchPlan, prefetch: usize) -> Self {
        Self::starting_at(set, norm, plan, prefetch, 0)
    }

    /// The epoch's batches from batch `first` on, exactly as `new` would produce them after
    /// `first` batches (a run resumed mid-epoch).
    pub fn starting_at(set: Samples, norm: Normalize, plan: BatchPlan, prefetch: usize, first: usize) -> Self {
        let total = plan.num_batches(set.len());
        Self::spawn(set, norm, plan, Shard::WHOLE, total, prefetch, first)
    }

    /// The batches `shard` takes of the first `steps` steps, from step `first` on.
    fn spawn(
        set: Samples,
        norm: Normalize,
        plan: BatchPlan,
        shard: Shard,
        steps: usize,
        prefetch: usize,
        first: usize,
    ) -> Self {
        let group = shard.group.max(1);
        let (tx, rx) = sync_channel(prefetch.max(1));
        let handle = std::thread::spawn(move || {
            let order = plan.order(set.len());
            let batches = order.chunks(plan.batch_size.max(1)).take(steps * group).enumerate().skip(first * group);
            for (b, idx) in batches.filter(|(b, _)| shard.takes(*b)) {
                let batch = assemble(&set, &norm, &plan, b * plan.batch_size, idx);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        let remaining = steps.saturating_sub(first) * shard.count.min(group);
        Self { rx: Some(rx), handle: Some(handle), remaining }
    }

    /// Batches still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

/// Builds one batch: sample `idx[j]` at epoch position `first + j`.
fn assemble(set: &Samples, norm: &Normalize, plan: &BatchPlan, first: usize, idx: &[usize]) -> Result<HostBatch> {
    let (c, h, w) = set.shape();
    let len = c * h * w;
    let mut images = vec![0f32; idx.len() * len];
    images.par_chunks_mut(len).zip(idx.par_iter()).enumerate().try_for_each(|(j, (dst, &i))| {
        let mut rng = rng::stream(plan.seed, Purpose::Augment, plan.key(), (first + j) as u64);
        set.write(i, &plan.augment, norm, &mut rng, dst)
    })?;
    let labels = set.labels();
    Ok(HostBatch { images, labels: idx.iter().map(|&i| labels[i]).collect(), shape: (idx.len(), c, h, w) })
}

impl Iterator for BatchIter {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Result<HostBatch>> {
        let batch = self.rx.as_ref()?.recv().ok();
        if batch.is_some() {
            self.remaining = self.remaining.saturating_sub(1);
        }
        batch
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked producer return.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageSet;

    fn set(n: usize) -> Samples {
        ImageSet {
            pixels: (0..n * 3 * 4 * 4).map(|v| (v % 251) as u8).collect(),
            labels: (0..n as u32).collect(),
            channels: 3,
            height: 4,
            width: 4,
        }
        .into()
    }

    fn all(it: impl Iterator<Item = Result<HostBatch>>) -> Vec<HostBatch> {
        it.collect::<Result<_>>().unwrap()
    }

    fn steps(it: StepIter) -> Vec<Vec<HostBatch>> {
        it.collect::<Result<_>>().unwrap()
    }

    fn plan(epoch: usize) -> BatchPlan {
        BatchPlan { batch_size: 4, shuffle: true, drop_last: true, augment: Augment::CIFAR, seed: 9, epoch, stream: 0 }
    }

    fn norm() -> Normalize {
        Normalize { mean: vec![0.5; 3], std: vec![0.25; 3] }
    }

    #[test]
    fn epochs_are_permutations_and_reproducible() {
        let a = all(BatchIter::new(set(10), norm(), plan(0), 2));
        let b = all(BatchIter::new(set(10), norm(), plan(0), 1));
        let c = all(BatchIter::new(set(10), norm(), plan(1), 2));
        assert_eq!(a.len(), 2);
        let mut labels: Vec<u32> = a.iter().flat_map(|b| b.labels.clone()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), 8);
        assert_eq!(a.iter().map(|b| &b.images).collect::<Vec<_>>(), b.iter().map(|b| &b.images).collect::<Vec<_>>());
        assert_ne!(a.iter().map(|b| &b.labels).collect::<Vec<_>>(), c.iter().map(|b| &b.labels).collect::<Vec<_>>());
    }

    #[test]
    fn starting_mid_epoch_gives_the_remaining_batches() {
        let whole = all(BatchIter::new(set(20), norm(), plan(3), 2));
        let rest = BatchIter::starting_at(set(20), norm(), plan(3), 2, 2);
        assert_eq!(rest.remaining(), 3);
        let rest = all(rest);
        assert_eq!(rest.len(), 3);
        for (a, b) in whole[2..].iter().zip(&rest) {
            assert_eq!((&a.images, &a.labels), (&b.images, &b.labels));
        }
    }

    /// Two ranks of two micro-batches each assemble between them exactly the batches of the
    /// whole epoch, four per step, each as the whole epoch's iterator does; resuming at a step
    /// gives the rest.
    #[test]
    fn shards_split_every_step_into_the_same_batches() {
        let whole = all(BatchIter::new(set(40), norm(), plan(2), 2));
        assert_eq!(whole.len(), 10);
        let ranks: Vec<Vec<Vec<HostBatch>>> =
            (0..2).map(|r| steps(StepIter::new(set(40), norm(), plan(2), Shard::of_rank(r, 2, 2), 2, 0))).collect();
        // 10 batches of 4 make 2 whole steps of 4 batches; the last two batches are dropped.
        for r in &ranks {
            assert_eq!(r.len(), 2);
        }
        for step in 0..2 {
            for (r, rank) in ranks.iter().enumerate() {
                for (m, b) in rank[step].iter().enumerate() {
                    let w = &whole[step * 4 + r * 2 + m];
                    assert_eq!((&b.images, &b.labels), (&w.images, &w.labels), "step {step} rank {r} micro {m}");
                }
            }
        }
        let rest = steps(StepIter::new(set(40), norm(), plan(2), Shard::of_rank(1, 2, 2), 2, 1));
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0][1].labels, whole[7].labels);
        let it = StepIter::new(set(40), norm(), plan(2), Shard::of_rank(0, 2, 2), 2, 1);
        assert_eq!(it.remaining(), 1);
    }

    #[test]
    fn keeps_last_partial_batch_when_asked() {
        let p = BatchPlan { drop_last: false, shuffle: false, ..plan(0) };
        let sizes: Vec<usize> = all(BatchIter::new(set(10), norm(), p, 2)).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[test]
    fn early_drop_does_not_hang() {
        let mut it = BatchIter::new(set(40), norm(), plan(0), 1);
        assert!(it.next().is_some());
        drop(it);
    }
}
