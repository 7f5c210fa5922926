//! The trainer as a person sees it in a terminal: each test runs the binary cargo built inside
//! a detached tmux session (160×40), reads the screen with `tmux capture-pane` while the run
//! goes and after it ends, and checks what is on it: a progress bar below the epoch lines while
//! an epoch trains (batches on the CPU; a spinner, then an estimated bar, on the GPU), the
//! epoch lines whole once it is done, and no stray warnings.
//!
//! tmux must be installed (`apt-get install tmux`; .ci/run installs it): without it these
//! tests fail, saying so, rather than pass without looking.

mod common;

use common::BIN;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a screen may take to show what a test waits for (the whole suite shares 2 cores).
const PATIENCE: Duration = Duration::from_secs(180);

/// A tmux server of our own (its own socket), running one command in one session; killed
/// when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    /// Starts `args` (the binary's arguments) in a 160×40 session, from the crate's folder (so
    /// the data folder prints as data/mnist), with XDG_RUNTIME_DIR and RUST_LOG unset, as on a
    /// fresh headless machine. The pane stays after the program ends, showing its exit status.
    fn start(name: &str, args: &str) -> Tmux {
        match Command::new("tmux").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!("tmux is not installed: these tests look at the terminal through it (apt-get install tmux)"),
        }
        assert!(
            Path::new(BIN).is_absolute() && Path::new(BIN).is_file(),
            "the binary cargo built: {BIN}"
        );
        let tmux = Tmux {
            socket: format!("gpu-mlp-test-{}-{name}", std::process::id()),
        };
        let shell = format!(
            "env -u XDG_RUNTIME_DIR -u RUST_LOG GPU_MLP_CACHE_DIR='{}' '{BIN}' {args}; echo \"[exit $?]\"; sleep 600",
            common::tune_cache_dir().display()
        );
        let status = tmux
            .tmux()
            .args(["new-session", "-d", "-s", "run", "-x", "160", "-y", "40", "-c"])
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(shell)
            .status()
            .expect("tmux starts");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    /// The screen's lines now, trailing blanks dropped.
    fn screen(&self) -> Vec<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "run"])
            .output()
            .expect("tmux capture-pane runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }

    /// Reads the screen until `seen` holds (then returns that screen), or fails after
    /// [`PATIENCE`] naming `what` and showing the last screen.
    fn wait_for(&self, what: &str, seen: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if seen(&screen) {
                return screen;
            }
            if screen.iter().any(|l| l.starts_with("[exit")) || Instant::now() > deadline {
                panic!("never saw {what}; the screen:\n{}", screen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the program to end; returns the final screen.
    fn finished(&self) -> Vec<String> {
        self.wait_for("the run end", |s| s.iter().any(|l| l.starts_with("[exit")))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// The index of the first line that satisfies `f`.
fn find(screen: &[String], f: impl Fn(&str) -> bool) -> Option<usize> {
    screen.iter().position(|l| f(l))
}

/// An epoch's line, whole: "epoch 2/3  train loss 0.1040  acc  96.81%  test acc  96.60%
/// 1.73 s  34,694 samples/s".
fn is_epoch_line(line: &str, epoch: usize, epochs: usize) -> bool {
    line.starts_with(&format!("epoch {epoch}/{epochs}  train loss "))
        && line.contains("  test acc ")
        && line.ends_with(" samples/s")
}

/// What the screen must never show: a driver's warning, or a bar left behind.
fn assert_clean_end(screen: &[String], epochs: usize) {
    let text = screen.join("\n");
    for stray in [
        "XDG_RUNTIME_DIR",
        "WARNING",
        "warning",
        "error",
        "[=",
        "batches",
        "estimat",
    ] {
        assert!(!text.contains(stray), "the final screen shows {stray:?}:\n{text}");
    }
    for epoch in 1..=epochs {
        assert!(
            screen.iter().any(|l| is_epoch_line(l, epoch, epochs)),
            "epoch {epoch}'s line is not whole on the final screen:\n{text}"
        );
    }
    assert!(screen.iter().any(|l| l.starts_with("done: test accuracy")), "{text}");
    assert_eq!(screen.last().map(String::as_str), Some("[exit 0]"), "{text}");
}

/// CPU: a bar counts the batches (`[====>   ] 389/600 batches`) below the epoch lines printed
/// so far; when the run ends the bar is gone and every line is whole.
#[test]
fn the_cpu_run_shows_a_batch_bar_below_the_epoch_lines() {
    let tmux = Tmux::start(
        "cpu",
        "--device cpu --threads 1 --layers 784,256,256,10 --epochs 3 --test-examples 1000",
    );
    let is_bar = |line: &str, epoch: usize| {
        line.starts_with(&format!("epoch {epoch}/3 ["))
            && line.contains("=")
            && line.contains("/600 batches")
            && line.contains("ETA")
    };
    tmux.wait_for("epoch 1's bar, part-way", |s| {
        find(s, |l| is_bar(l, 1) && !l.contains(" 0/600") && !l.contains("600/600")).is_some()
    });
    let screen = tmux.wait_for("epoch 2's bar below epoch 1's line", |s| {
        match (find(s, |l| is_epoch_line(l, 1, 3)), find(s, |l| is_bar(l, 2))) {
            (Some(line), Some(bar)) => bar > line,
            _ => false,
        }
    });
    // Only one bar at a time, and it is the last line.
    assert_eq!(
        screen.iter().filter(|l| l.contains("batches")).count(),
        1,
        "{screen:#?}"
    );
    assert!(is_bar(screen.last().unwrap(), 2), "{screen:#?}");

    let screen = tmux.finished();
    assert_clean_end(&screen, 3);
    // Exactly: the two header lines, three epochs, done, and the shell's exit line.
    assert_eq!(screen.iter().filter(|l| !l.is_empty()).count(), 7, "{screen:#?}");
}

/// GPU: the first epoch, one submit with no progress to read, shows a spinner that says it is
/// estimating; the second a bar driven by the clock against the first epoch's time, labelled
/// as an estimate; at the end only the lines remain (and, on a software adapter, its note).
#[test]
fn the_gpu_run_spins_then_shows_an_estimated_bar() {
    let tmux = Tmux::start(
        "gpu",
        "--device gpu --train-examples 8000 --test-examples 1000 --epochs 3",
    );
    tmux.wait_for("epoch 1's spinner", |s| {
        find(s, |l| l.starts_with("epoch 1/3 ") && l.contains("estimating")).is_some()
    });
    let screen = tmux.wait_for("epoch 2's estimated bar below epoch 1's line", |s| {
        let bar = find(s, |l| {
            l.starts_with("epoch 2/3 [") && l.contains("%") && l.contains("estimated from epoch 1")
        });
        match (find(s, |l| is_epoch_line(l, 1, 3)), bar) {
            (Some(line), Some(bar)) => bar > line,
            _ => false,
        }
    });
    assert!(screen.last().unwrap().starts_with("epoch 2/3 ["), "{screen:#?}");

    let screen = tmux.finished();
    let software_note = "note: no hardware GPU found; running the GPU kernels on the software adapter";
    let lines: Vec<String> = screen
        .iter()
        .filter(|l| !l.starts_with(software_note))
        .cloned()
        .collect();
    assert_clean_end(&lines, 3);
    assert_eq!(lines.iter().filter(|l| !l.is_empty()).count(), 7, "{screen:#?}");
}

/// `--quiet` in a terminal: the epoch lines, and never a bar.
#[test]
fn quiet_shows_no_bar_in_a_terminal() {
    let tmux = Tmux::start(
        "quiet",
        "--device cpu --threads 1 --layers 784,256,256,10 --epochs 2 --test-examples 1000 --quiet",
    );
    let deadline = Instant::now() + PATIENCE;
    let screen = loop {
        let screen = tmux.screen();
        assert!(
            !screen.iter().any(|l| l.contains("batches") || l.contains("[=")),
            "a bar with --quiet:\n{}",
            screen.join("\n")
        );
        if screen.iter().any(|l| l.starts_with("[exit")) {
            break screen;
        }
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_clean_end(&screen, 2);
}
