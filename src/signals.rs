//! Ctrl-C (SIGINT) and SIGTERM during training: the first asks the run to stop at its next
//! consistent point (the trainer polls [`StopSignal::requested`]); a second exits at once with
//! 128 + the signal's number, writing nothing.
//!
//! Built on `signal-hook`, which (unlike `ctrlc`) says which signal came, so the exit status can
//! be 130 for SIGINT and 143 for SIGTERM. The second signal is handled inside the signal handler
//! itself (`flag::register_conditional_shutdown`), so it exits even while the main thread is
//! blocked waiting for the GPU; a watcher thread prints what the first one will do.
//! On platforms without Unix signals nothing is installed and the process stops as it always did.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A signal that asks the run to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    /// "SIGINT" or "SIGTERM".
    pub name: &'static str,
    /// The exit status for it: 128 + its number (130, 143).
    pub code: u8,
}

/// Whether a stop was asked for. Lives as long as the process: the handlers stay installed.
pub struct StopSignal {
    received: Arc<AtomicUsize>,
}

impl StopSignal {
    /// A stop that is never requested (tests, and platforms without signals).
    pub fn never() -> StopSignal {
        StopSignal {
            received: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Installs the handlers. `on_first` runs on a watcher thread when the first signal comes,
    /// to say what the run will do.
    #[cfg(unix)]
    pub fn install(on_first: impl Fn(Signal) + Send + 'static) -> io::Result<StopSignal> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let first = Arc::new(AtomicBool::new(false));
        // What the handler records, and what the run is told once the watcher has said what
        // will happen: the run stops only after that line is on stderr, never before it.
        let raw = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM] {
            // Order matters: the shutdown is registered before the flag it tests is set, so the
            // first signal finds it unset and only the second exits.
            flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&first))?;
            flag::register(signal, Arc::clone(&first))?;
            register_first(signal, &raw)?;
        }
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let acknowledged = Arc::clone(&received);
        std::thread::Builder::new()
            .name("gpu-mlp-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    let code = raw.load(Ordering::SeqCst);
                    if let Some(signal) = decode(code) {
                        on_first(signal);
                        acknowledged.store(code, Ordering::SeqCst);
                    }
                }
            })?;
        Ok(StopSignal { received })
    }

    #[cfg(not(unix))]
    pub fn install(_on_first: impl Fn(Signal) + Send + 'static) -> io::Result<StopSignal> {
        Ok(StopSignal::never())
    }

    /// The first signal received, if one was.
    pub fn requested(&self) -> Option<Signal> {
        decode(self.received.load(Ordering::SeqCst))
    }
}

/// Records `signal` in `received` unless another came first (a compare-and-swap is safe in a
/// signal handler).
#[cfg(unix)]
fn register_first(signal: i32, received: &Arc<AtomicUsize>) -> io::Result<()> {
    let received = Arc::clone(received);
    let action = move || {
        let _ = received.compare_exchange(0, signal as usize, Ordering::SeqCst, Ordering::SeqCst);
    };
    // SAFETY: the action only does an atomic compare-and-swap: async-signal-safe, no allocation,
    // no locks.
    unsafe { signal_hook::low_level::register(signal, action) }.map(|_| ())
}

fn decode(signal: usize) -> Option<Signal> {
    match signal {
        0 => None,
        2 => Some(Signal {
            name: "SIGINT",
            code: 130,
        }),
        15 => Some(Signal {
            name: "SIGTERM",
            code: 143,
        }),
        other => Some(Signal {
            name: "a signal",
            code: (128 + other).min(255) as u8,
        }),
    }
}
