//! The progress bar a person watches on stderr while an epoch trains (indicatif).
//!
//! - On a backend that steps batch by batch (the CPU), the bar counts the epoch's batches.
//! - On the GPU an epoch is recorded, submitted once and read back once: there is no batch
//!   count to show until it is over. The first epoch shows a spinner that says so; each later
//!   epoch shows a bar that advances with the time elapsed against the previous epoch's
//!   duration, from a ticking thread, labelled as an estimate (it stops at 99% if the epoch
//!   runs longer than the one before).
//!
//! A bar lives for one epoch and is cleared before the epoch's line is printed, so the lines on
//! stdout (the run's record) are never garbled; anything printed while a bar is shown goes
//! through [`Progress::suspend`]. The caller decides whether to show a bar at all (see
//! [`wanted`]): not when stderr is not a terminal, nor with `--json` or `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the GPU's estimated bar moves, and a spinner turns.
const TICK: Duration = Duration::from_millis(100);
/// The estimated bar never claims the epoch is done: it stops short of the end.
const ESTIMATE_CAP: f64 = 0.99;
/// Steps of the estimated bar (its length; the position is a share of it).
const ESTIMATE_STEPS: u64 = 1000;

/// Whether a person can watch a bar: stderr is a terminal that can move its cursor.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// The estimated bar's position for an epoch `elapsed` into it, when the previous one took
/// `previous`: the share of `previous` elapsed, in [`ESTIMATE_STEPS`], capped below the end.
pub fn estimated_position(elapsed: Duration, previous: Duration) -> u64 {
    let share = if previous.is_zero() {
        ESTIMATE_CAP
    } else {
        (elapsed.as_secs_f64() / previous.as_secs_f64()).min(ESTIMATE_CAP)
    };
    (share * ESTIMATE_STEPS as f64) as u64
}

/// The thread that moves the estimated bar; stopped (and joined) when dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(bar: ProgressBar, started: Instant, previous: Duration) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || loop {
                bar.set_position(estimated_position(started.elapsed(), previous));
                if stopped.recv_timeout(TICK) != Err(RecvTimeoutError::Timeout) {
                    break;
                }
            })
            .ok();
        Ticker {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The bar being shown, shared with whatever else prints while it is up (the signal handler's
/// announcement), so that it can take the bar down for its lines and put it back.
#[derive(Clone, Default)]
pub struct SharedBar(Arc<Mutex<Option<ProgressBar>>>);

impl SharedBar {
    /// Runs `f` (which prints) with the bar hidden, then shows the bar again.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let bar = self.0.lock().map(|bar| bar.clone()).unwrap_or(None);
        match bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn set(&self, bar: Option<ProgressBar>) -> Option<ProgressBar> {
        let mut slot = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *slot, bar)
    }

    fn get(&self) -> Option<ProgressBar> {
        self.0.lock().map(|bar| bar.clone()).unwrap_or(None)
    }
}

/// The bar of a run: one per epoch.
pub struct Progress {
    /// True when batches are trained one by one and reported (the CPU).
    steps_each_batch: bool,
    epochs: usize,
    target: fn() -> ProgressDrawTarget,
    bar: SharedBar,
    ticker: Option<Ticker>,
    /// The last finished epoch and how long it took: the GPU bar's estimate.
    previous: Option<(usize, Duration)>,
}

impl Progress {
    /// A bar on stderr for a run of `epochs` epochs on a backend that
    /// [`steps_each_batch`](crate::backend::Backend::steps_each_batch) or not.
    /// `bar` is where it keeps the bar it shows, for others to [`SharedBar::suspend`].
    pub fn new(bar: SharedBar, steps_each_batch: bool, epochs: usize) -> Progress {
        let mut progress = Progress::with_target(steps_each_batch, epochs, ProgressDrawTarget::stderr);
        progress.bar = bar;
        progress
    }

    /// The same, drawing where `target` says (tests draw to a hidden target).
    pub fn with_target(steps_each_batch: bool, epochs: usize, target: fn() -> ProgressDrawTarget) -> Progress {
        Progress {
            steps_each_batch,
            epochs,
            target,
            bar: SharedBar::default(),
            ticker: None,
            previous: None,
        }
    }

    /// "epoch  3/10", as the epoch lines write it.
    fn prefix(&self, epoch: usize) -> String {
        let width = self.epochs.to_string().len();
        format!("epoch {epoch:>width$}/{}", self.epochs)
    }

    /// Shows the bar of epoch `epoch`, whose batches `first..batches` are about to train.
    pub fn epoch_started(&mut self, epoch: usize, first: usize, batches: usize) {
        self.clear();
        let started = Instant::now();
        let bar = if self.steps_each_batch {
            let bar = ProgressBar::with_draw_target(Some(batches as u64), (self.target)());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} batches  {elapsed} (ETA {eta})")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_position(first as u64);
            bar
        } else if let Some((previous_epoch, previous)) = self.previous {
            let bar = ProgressBar::with_draw_target(Some(ESTIMATE_STEPS), (self.target)());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:40}] ~{percent}%  {elapsed}  {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(format!(
                "estimated from epoch {previous_epoch} ({:.1} s): the GPU runs an epoch as one submit",
                previous.as_secs_f64()
            ));
            self.ticker = Some(Ticker::start(bar.clone(), started, previous));
            bar
        } else {
            let bar = ProgressBar::with_draw_target(None, (self.target)());
            bar.set_style(
                ProgressStyle::with_template("{prefix} {spinner} {elapsed}  {msg}")
                    .expect("a valid template")
                    .tick_chars("-\\|/ "),
            );
            bar.set_message("estimating: the GPU runs an epoch as one submit, timed for the next epochs' bars");
            bar
        };
        bar.set_prefix(self.prefix(epoch));
        bar.enable_steady_tick(TICK);
        self.bar.set(Some(bar.with_finish(ProgressFinish::AndClear)));
    }

    /// Batch `batch` (from 0) of the epoch is trained.
    pub fn batch_done(&mut self, batch: usize) {
        if let Some(bar) = self.bar.get() {
            bar.set_position(batch as u64 + 1);
        }
    }

    /// The epoch is over after `seconds`: the bar goes, and the next GPU bar is timed on it.
    pub fn epoch_done(&mut self, epoch: usize, seconds: f64) {
        self.clear();
        self.previous = Some((epoch, Duration::from_secs_f64(seconds.max(0.0))));
    }

    /// Runs `f` (which prints) with the bar hidden, then shows the bar again.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the bar from the terminal, and stops its thread.
    pub fn clear(&mut self) {
        self.ticker = None;
        if let Some(bar) = self.bar.set(None) {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_follows_the_clock_and_stops_short_of_the_end() {
        let previous = Duration::from_secs(10);
        assert_eq!(estimated_position(Duration::ZERO, previous), 0);
        assert_eq!(estimated_position(Duration::from_secs(5), previous), 500);
        assert_eq!(estimated_position(Duration::from_secs(10), previous), 990);
        assert_eq!(estimated_position(Duration::from_secs(30), previous), 990);
        assert_eq!(estimated_position(Duration::from_secs(1), Duration::ZERO), 990);
    }

    #[test]
    fn a_gpu_run_spins_first_then_estimates_from_the_last_epoch() {
        let mut progress = Progress::with_target(false, 3, ProgressDrawTarget::hidden);
        progress.epoch_started(1, 0, 600);
        let bar = progress.bar.get().unwrap();
        assert_eq!(bar.length(), None, "the first GPU epoch has no length: a spinner");
        assert!(progress.ticker.is_none());
        progress.epoch_done(1, 0.5);
        assert!(progress.bar.get().is_none() && bar.is_finished());

        progress.epoch_started(2, 0, 600);
        let bar = progress.bar.get().unwrap();
        assert_eq!(bar.length(), Some(ESTIMATE_STEPS));
        assert!(progress.ticker.is_some());
        std::thread::sleep(Duration::from_millis(350));
        let position = bar.position();
        assert!((300..=990).contains(&position), "after 0.35 s of 0.5 s: {position}");
        progress.epoch_done(2, 0.5);
        assert!(progress.ticker.is_none() && bar.is_finished());
    }

    #[test]
    fn a_cpu_bar_counts_batches_from_where_the_epoch_starts() {
        let mut progress = Progress::with_target(true, 2, ProgressDrawTarget::hidden);
        progress.epoch_started(1, 5, 600);
        let bar = progress.bar.get().unwrap();
        assert_eq!((bar.position(), bar.length()), (5, Some(600)));
        progress.batch_done(5);
        assert_eq!(bar.position(), 6);
        assert_eq!(progress.suspend(|| 7), 7);
        drop(progress);
        assert!(bar.is_finished());
    }
}
