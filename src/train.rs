//! The training loop, written once for every backend: shuffle, step through the batches,
//! evaluate, read the epoch's metrics once, stop if the loss diverged, report.

use crate::backend::{Backend, Split, Workload};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// How many epochs, and the learning rate of each: `lr · decay^⌊(epoch-1)/every⌋`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub epochs: usize,
    pub lr: f32,
    pub lr_decay: f32,
    pub lr_decay_every: usize,
}

impl Schedule {
    /// The learning rate of epoch `epoch` (counted from 1).
    pub fn lr_at(&self, epoch: usize) -> f32 {
        let decays = (epoch - 1) / self.lr_decay_every;
        self.lr * self.lr_decay.powi(decays as i32)
    }
}

/// One epoch's results, as printed (and as the `--json` object, field for field).
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    /// Mean loss over the epoch's training examples, each taken as its batch was trained.
    pub train_loss: f64,
    /// Fraction of the epoch's training examples classified right as their batch was trained.
    pub train_accuracy: f64,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
    /// Wall-clock seconds for the epoch: training, evaluation and the metrics readback.
    pub seconds: f64,
    /// Training examples per second of `seconds`.
    pub samples_per_second: f64,
    pub device: &'static str,
    pub adapter: String,
    pub lr: f32,
    pub batch_size: usize,
    pub batches: usize,
    /// GPU only (null on the CPU): work recorded and submitted this epoch, and host readbacks.
    pub dispatches: Option<u64>,
    pub submits: Option<u64>,
    pub readbacks: Option<u64>,
}

/// Trains `work` on `backend` for `schedule.epochs` epochs, shuffling with `rng`. Calls
/// `on_epoch` after each epoch; stops with [`Error::Diverged`] at the first epoch whose loss is
/// not finite. Returns every epoch's report.
pub fn train(
    backend: &mut dyn Backend,
    work: &Workload,
    schedule: &Schedule,
    rng: &mut ChaCha8Rng,
    mut on_epoch: impl FnMut(&EpochReport) -> Result<()>,
) -> Result<Vec<EpochReport>> {
    let examples = work.train.len();
    let batches = work.batches();
    // Shuffling permutes this index, never the data.
    let mut permutation: Vec<u32> = (0..examples as u32).collect();
    let mut reports = Vec::with_capacity(schedule.epochs);
    for epoch in 1..=schedule.epochs {
        let lr = schedule.lr_at(epoch);
        permutation.shuffle(rng);
        let started = Instant::now();
        backend.begin_epoch(&permutation, lr)?;
        backend.train_batches(0..batches)?;
        if work.validation.is_some() {
            backend.evaluate(Split::Validation)?;
        }
        if work.test.is_some() {
            backend.evaluate(Split::Test)?;
        }
        let metrics = backend.end_epoch()?;
        let seconds = started.elapsed().as_secs_f64();

        if let Some(batch) = metrics.batch_loss.iter().position(|loss| !loss.is_finite()) {
            return Err(Error::Diverged {
                epoch,
                batch: batch + 1,
                batches,
                value: metrics.batch_loss[batch].to_string(),
                lr,
                suggested: lr / 10.0,
            });
        }
        let loss_sum: f64 = metrics.batch_loss.iter().map(|&l| l as f64).sum();
        let correct: u64 = metrics.batch_correct.iter().map(|&c| c as u64).sum();
        let report = EpochReport {
            epoch,
            epochs: schedule.epochs,
            train_loss: loss_sum / examples as f64,
            train_accuracy: correct as f64 / examples as f64,
            test_loss: metrics.test.map(|m| m.mean_loss()),
            test_accuracy: metrics.test.map(|m| m.accuracy()),
            validation_loss: metrics.validation.map(|m| m.mean_loss()),
            validation_accuracy: metrics.validation.map(|m| m.accuracy()),
            seconds,
            samples_per_second: examples as f64 / seconds,
            device: backend.device(),
            adapter: backend.adapter(),
            lr,
            batch_size: work.batch_size,
            batches,
            dispatches: metrics.counters.map(|c| c.dispatches),
            submits: metrics.counters.map(|c| c.submits),
            readbacks: metrics.counters.map(|c| c.readbacks),
        };
        on_epoch(&report)?;
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_halves_every_five_epochs() {
        let s = Schedule {
            epochs: 12,
            lr: 0.01,
            lr_decay: 0.5,
            lr_decay_every: 5,
        };
        let lrs: Vec<f32> = (1..=12).map(|e| s.lr_at(e)).collect();
        assert_eq!(&lrs[..5], &[0.01; 5]);
        assert_eq!(&lrs[5..10], &[0.005; 5]);
        assert_eq!(&lrs[10..], &[0.0025; 2]);
    }
}
