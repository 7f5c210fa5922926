//! The training loop, written once for every backend: shuffle, step through the batches,
//! evaluate, read the epoch's metrics once, stop if the loss diverged, report. A run goes from a
//! [`Position`] to a [`Position`], so a stopped run can go on where it stopped.

use crate::backend::{Backend, Split, Workload};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::ops::ControlFlow;
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
        // Past 2³¹ decays the factor is 0 (decay < 1) or 1 (decay = 1) either way.
        self.lr * self.lr_decay.powi(decays.min(i32::MAX as usize) as i32)
    }
}

/// One epoch's results, as printed (and as the `--json` object, field for field).
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    /// The layer widths, "784-128-10".
    pub network: String,
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

/// Where a run stands between two training steps: how far it has trained, the order of the
/// training examples, and the generator that shuffles the epochs to come. A run starts at
/// [`Position::start`]; it ends at a position a checkpoint can store and [`run`] can go on from,
/// to the same result bit for bit as if it had never stopped.
#[derive(Clone, Debug)]
pub struct Position {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Batches of the unfinished epoch `epochs_done + 1` already trained: 0 at an epoch's end;
    /// more only when a run was stopped inside an epoch (on a backend that steps batch by batch).
    pub batches_done: usize,
    /// The order of the training examples: that of the unfinished epoch if `batches_done > 0`,
    /// else that of the last epoch, which the next epoch shuffles again.
    pub order: Vec<u32>,
    /// The generator, as it is after the shuffles of the epochs begun so far.
    pub rng: ChaCha8Rng,
    /// The unfinished epoch's batches already trained: their summed loss and correct count.
    pub partial_loss: f64,
    pub partial_correct: u64,
}

impl Position {
    /// Nothing trained yet on `examples` training examples; `rng` shuffles the epochs.
    pub fn start(rng: ChaCha8Rng, examples: usize) -> Position {
        Position {
            epochs_done: 0,
            batches_done: 0,
            order: (0..examples as u32).collect(),
            rng,
            partial_loss: 0.0,
            partial_correct: 0,
        }
    }
}

/// What a run's caller sees as it goes: the trainer calls these between steps.
pub trait Observer: Send {
    /// Before epoch `epoch` (from 1) trains its batches `first..batches`.
    fn epoch_started(&mut self, _epoch: usize, _first: usize, _batches: usize) {}
    /// After training batch `batch`, on backends that train one batch at a time (the CPU; see
    /// [`Backend::steps_each_batch`]). `Break` stops the run after this batch.
    fn batch_done(&mut self, _batch: usize) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// After each finished epoch, with the position a checkpoint would store and the backend
    /// that holds the parameters. `Break` stops the run here.
    fn epoch_done(
        &mut self,
        _report: &EpochReport,
        _position: &Position,
        _backend: &mut dyn Backend,
    ) -> Result<ControlFlow<()>> {
        Ok(ControlFlow::Continue(()))
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The epochs finished in this run, in order.
    pub reports: Vec<EpochReport>,
    /// Where training stands: the position to resume from.
    pub position: Position,
    /// True when the observer stopped the run before `schedule.epochs`.
    pub stopped: bool,
}

/// Trains `work` on `backend` from `position` until `schedule.epochs` epochs are done, or until
/// `observer` stops it. Stops with [`Error::Diverged`] at the first epoch whose loss is not
/// finite.
pub fn run(
    backend: &mut dyn Backend,
    work: &Workload,
    schedule: &Schedule,
    mut position: Position,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let examples = work.train.len();
    let batches = work.batches();
    assert_eq!(
        position.order.len(),
        examples,
        "the position is for another training set"
    );
    // Grown as epochs finish: --epochs may be any number.
    let mut reports = Vec::new();
    let mut stop = false;
    while position.epochs_done < schedule.epochs && !stop {
        let epoch = position.epochs_done + 1;
        let lr = schedule.lr_at(epoch);
        let first = position.batches_done;
        if first == 0 {
            // Shuffling permutes this index, never the data.
            position.order.shuffle(&mut position.rng);
        }
        observer.epoch_started(epoch, first, batches);
        let started = Instant::now();
        backend.begin_epoch(&position.order, lr)?;
        let trained = backend.train_batches(first..batches, &mut |batch| {
            let flow = observer.batch_done(batch);
            stop |= flow.is_break();
            flow
        })?;
        let finished = first + trained == batches;
        if finished {
            if work.validation.is_some() {
                backend.evaluate(Split::Validation)?;
            }
            if work.test.is_some() {
                backend.evaluate(Split::Test)?;
            }
        }
        let metrics = backend.end_epoch()?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(b) = metrics.batch_loss.iter().position(|loss| !loss.is_finite()) {
            return Err(Error::Diverged {
                epoch,
                batch: first + b + 1,
                batches,
                value: metrics.batch_loss[b].to_string(),
                lr,
                l2: work.l2,
                hint: Error::divergence_hint(lr, work.l2),
            });
        }
        position.partial_loss += metrics.batch_loss.iter().map(|&l| l as f64).sum::<f64>();
        position.partial_correct += metrics.batch_correct.iter().map(|&c| c as u64).sum::<u64>();
        if !finished {
            position.batches_done = first + trained;
            return Ok(Outcome {
                reports,
                position,
                stopped: true,
            });
        }
        let report = EpochReport {
            epoch,
            epochs: schedule.epochs,
            network: work.spec.name(),
            train_loss: position.partial_loss / examples as f64,
            train_accuracy: position.partial_correct as f64 / examples as f64,
            test_loss: metrics.test.map(|m| m.mean_loss()),
            test_accuracy: metrics.test.map(|m| m.accuracy()),
            validation_loss: metrics.validation.map(|m| m.mean_loss()),
            validation_accuracy: metrics.validation.map(|m| m.accuracy()),
            seconds,
            samples_per_second: (examples - first * work.batch_size) as f64 / seconds,
            device: backend.device(),
            adapter: backend.adapter(),
            lr,
            batch_size: work.batch_size,
            batches,
            dispatches: metrics.counters.map(|c| c.dispatches),
            submits: metrics.counters.map(|c| c.submits),
            readbacks: metrics.counters.map(|c| c.readbacks),
        };
        position.epochs_done = epoch;
        position.batches_done = 0;
        position.partial_loss = 0.0;
        position.partial_correct = 0;
        stop |= observer.epoch_done(&report, &position, backend)?.is_break();
        reports.push(report);
    }
    Ok(Outcome {
        stopped: position.epochs_done < schedule.epochs,
        reports,
        position,
    })
}

/// Calls a closure after each epoch: the simplest observer.
struct EachEpoch<F>(F);

impl<F: FnMut(&EpochReport) -> Result<()> + Send> Observer for EachEpoch<F> {
    fn epoch_done(&mut self, report: &EpochReport, _: &Position, _: &mut dyn Backend) -> Result<ControlFlow<()>> {
        (self.0)(report)?;
        Ok(ControlFlow::Continue(()))
    }
}

/// Trains `work` on `backend` for `schedule.epochs` epochs from the start, shuffling with `rng`
/// (left as the run leaves it). Calls `on_epoch` after each epoch; returns every epoch's report.
pub fn train(
    backend: &mut dyn Backend,
    work: &Workload,
    schedule: &Schedule,
    rng: &mut ChaCha8Rng,
    on_epoch: impl FnMut(&EpochReport) -> Result<()> + Send,
) -> Result<Vec<EpochReport>> {
    let start = Position::start(rng.clone(), work.train.len());
    let outcome = run(backend, work, schedule, start, &mut EachEpoch(on_epoch))?;
    *rng = outcome.position.rng;
    Ok(outcome.reports)
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
