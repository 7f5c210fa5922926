//! The training loop, written once for every backend: shuffle, step through the batches,
//! evaluate, read the epoch's metrics once, stop if the loss diverged, report. A run goes from a
//! [`Position`] to a [`Position`], so a stopped run can go on where it stopped.

use crate::backend::{Backend, Split, Workload};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::ops::ControlFlow;
use web_time::Instant;

/// The shape of the learning rate over a run (`--lr-schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// lr throughout.
    Constant,
    /// lr · decay^⌊(epoch−1)/every⌋: multiplied by --lr-decay every --lr-decay-every epochs.
    Step,
    /// lr · ½(1 + cos(π·progress)), progress going from 0 to 1 over the steps after warm-up.
    Cosine,
}

crate::network::display_as_value_enum!(LrSchedule);

/// How many epochs, and the learning rate of each step.
///
/// With `warmup_epochs` W, the first W epochs' steps ramp the rate linearly from lr/(W·batches)
/// to lr, one step at a time; then the schedule's shape takes over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub epochs: usize,
    pub lr: f32,
    pub shape: LrSchedule,
    /// The step schedule's factor and period.
    pub lr_decay: f32,
    pub lr_decay_every: usize,
    pub warmup_epochs: usize,
}

impl Schedule {
    /// `epochs` epochs at a constant `lr`.
    pub fn constant(epochs: usize, lr: f32) -> Schedule {
        Schedule {
            epochs,
            lr,
            shape: LrSchedule::Constant,
            lr_decay: 1.0,
            lr_decay_every: 1,
            warmup_epochs: 0,
        }
    }

    /// The learning rate of epoch `epoch`'s (counted from 1) first step.
    pub fn lr_at(&self, epoch: usize) -> f32 {
        self.lr_at_step(epoch, 0, 1)
    }

    /// The learning rate of step `batch` (from 0) of epoch `epoch` (from 1), of `batches`.
    pub fn lr_at_step(&self, epoch: usize, batch: usize, batches: usize) -> f32 {
        let base = match self.shape {
            LrSchedule::Constant => self.lr,
            LrSchedule::Step => {
                let decays = (epoch - 1) / self.lr_decay_every;
                // Past 2³¹ decays the factor is 0 (decay < 1) or 1 (decay = 1) either way.
                self.lr * self.lr_decay.powi(decays.min(i32::MAX as usize) as i32)
            }
            LrSchedule::Cosine => {
                let (step, warmup, total) = self.steps(epoch, batch, batches);
                let progress = ((step - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
                (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
            }
        };
        let (step, warmup, _) = self.steps(epoch, batch, batches);
        if step < warmup {
            (base as f64 * (step + 1.0) / warmup) as f32
        } else {
            base
        }
    }

    /// (this step's index from 0, warm-up steps, all steps) as f64, for the formulas.
    fn steps(&self, epoch: usize, batch: usize, batches: usize) -> (f64, f64, f64) {
        let batches = batches as f64;
        (
            (epoch - 1) as f64 * batches + batch as f64,
            self.warmup_epochs as f64 * batches,
            self.epochs as f64 * batches,
        )
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
    /// After each epoch's metrics are read, before the epoch's report: each batch trained this
    /// epoch, from `first` (as [`Observer::epoch_started`] gave it), as its summed loss and its
    /// correct count (what the web page's chart draws between epochs).
    fn batches_trained(&mut self, _epoch: usize, _first: usize, _batch_loss: &[f32], _batch_correct: &[u32]) {}
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
#[cfg(feature = "native")]
pub fn run(
    backend: &mut dyn Backend,
    work: &Workload,
    schedule: &Schedule,
    position: Position,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    pollster::block_on(run_async(backend, work, schedule, position, observer))
}

/// [`run`], awaiting each epoch's end instead of blocking on it: the one training loop, which
/// the web awaits and the command line blocks on.
pub async fn run_async(
    backend: &mut dyn Backend,
    work: &Workload<'_>,
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
    let mut steps = Vec::with_capacity(batches);
    let mut stop = false;
    while position.epochs_done < schedule.epochs && !stop {
        let epoch = position.epochs_done + 1;
        let first = position.batches_done;
        // Steps are counted from 1 over the whole run (Adam's t; the dropout masks' counter).
        let steps_before = (epoch as u64 - 1).saturating_mul(batches as u64);
        steps.clear();
        steps.extend((0..batches).map(|b| {
            let lr = schedule.lr_at_step(epoch, b, batches);
            work.optimizer
                .step_constants(lr, steps_before.saturating_add(b as u64 + 1))
        }));
        let lr = steps[first].lr;
        if first == 0 {
            // Shuffling permutes this index, never the data.
            position.order.shuffle(&mut position.rng);
        }
        observer.epoch_started(epoch, first, batches);
        let started = Instant::now();
        backend.begin_epoch(&position.order, &steps)?;
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
        let metrics = backend.end_epoch_async().await?;
        observer.batches_trained(epoch, first, &metrics.batch_loss, &metrics.batch_correct);
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
#[cfg(feature = "native")]
struct EachEpoch<F>(F);

#[cfg(feature = "native")]
impl<F: FnMut(&EpochReport) -> Result<()> + Send> Observer for EachEpoch<F> {
    fn epoch_done(&mut self, report: &EpochReport, _: &Position, _: &mut dyn Backend) -> Result<ControlFlow<()>> {
        (self.0)(report)?;
        Ok(ControlFlow::Continue(()))
    }
}

#[cfg(feature = "native")]
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
            shape: LrSchedule::Step,
            lr_decay: 0.5,
            lr_decay_every: 5,
            ..Schedule::constant(12, 0.01)
        };
        let lrs: Vec<f32> = (1..=12).map(|e| s.lr_at(e)).collect();
        assert_eq!(&lrs[..5], &[0.01; 5]);
        assert_eq!(&lrs[5..10], &[0.005; 5]);
        assert_eq!(&lrs[10..], &[0.0025; 2]);
    }

    #[test]
    fn warmup_ramps_per_step_then_cosine_falls_to_near_zero() {
        let s = Schedule {
            shape: LrSchedule::Cosine,
            warmup_epochs: 1,
            ..Schedule::constant(3, 1.0)
        };
        // 4 steps per epoch: warm-up 1/4, 2/4, 3/4, 4/4; then cos over the 8 steps after it.
        let lrs: Vec<f32> = (1..=3)
            .flat_map(|e| (0..4).map(move |b| s.lr_at_step(e, b, 4)))
            .collect();
        assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert_eq!(lrs[4], 1.0);
        let expected = |k: f64| (0.5 * (1.0 + (std::f64::consts::PI * k / 8.0).cos())) as f32;
        for (k, &lr) in lrs[4..].iter().enumerate() {
            assert_eq!(lr, expected(k as f64), "step {k} after warm-up");
        }
        assert!(lrs.windows(2).skip(4).all(|w| w[1] < w[0]), "{lrs:?}");
    }

    #[test]
    fn constant_is_exactly_lr() {
        let s = Schedule::constant(5, 0.3);
        assert!((1..=5).all(|e| (0..7).all(|b| s.lr_at_step(e, b, 7) == 0.3)));
    }
}
