//! Ctrl-C and SIGTERM, sent to the real binary: the first stops the run at its next consistent
//! point (the next batch on the CPU, the end of the epoch in flight on the GPU), writes the
//! checkpoint, prints the `--resume` command and exits 130 or 143; running that command ends
//! with the weights of a run never interrupted. A second Ctrl-C exits at once and writes nothing.

#![cfg(unix)]

mod common;

use common::{arg, command};

use gpu_mlp::model::{Checkpoint, SpecHints};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A run in the background, its stdout lines coming through a channel.
struct Running {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = command(args);
        command
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the gpu-mlp binary starts");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stdout: Vec::new(),
        }
    }

    /// Waits for a stdout line starting with `prefix`, spaces collapsed (the epoch lines pad
    /// their numbers: `epoch  1/40`).
    fn wait_for(&mut self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let found = line
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .starts_with(prefix);
                self.stdout.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("no line starting with {prefix:?}; stdout so far: {:?}", self.stdout);
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit; returns (status code, stderr).
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        self.stdout.extend(self.lines.try_iter());
        (status.code(), stderr)
    }
}

fn load(path: &Path) -> Checkpoint {
    Checkpoint::load(path, &SpecHints::default()).expect("a checkpoint")
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (load(a).model.params, load(b).model.params);
    let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    assert_eq!(differ, 0, "{differ} of {} parameters differ", a.len());
}

/// Runs the `resume with:` command a stopped run printed, exactly as printed.
fn run_printed_resume(stderr: &str) {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("resume with: "))
        .unwrap_or_else(|| panic!("no resume command in:\n{stderr}"));
    let words = shlex::split(line).expect("a shell command");
    assert_eq!(words[0], common::BIN, "the command names this binary");
    let out = command(&words[1..].iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Interrupts a run of `args` with `signal` after its first epoch; checks the exit status, the
/// messages and the checkpoint; resumes with the printed command; compares with a run never
/// interrupted. Returns the stopped checkpoint's (epochs_done, batches_done).
fn interrupt_and_resume(args: &[&str], signal: &str, code: i32, expect: &[&str]) -> (usize, usize) {
    let dir = TempDir::new().unwrap();
    let (stopped, straight) = (
        dir.path().join("stopped.safetensors"),
        dir.path().join("straight.safetensors"),
    );
    let mut with_save = args.to_vec();
    with_save.extend(["--save", arg(&stopped)]);
    let mut run = Running::start(&with_save, &[]);
    run.wait_for("epoch 1/");
    run.signal(signal);
    let (status, stderr) = run.finish();
    assert_eq!(status, Some(code), "exit status after {signal}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in expect {
        assert!(stderr.contains(needle), "stderr does not say {needle:?}:\n{stderr}");
    }
    assert!(
        stderr.contains(&format!("checkpoint written to {}", stopped.display())),
        "{stderr}"
    );
    let state = load(&stopped).training.unwrap();
    let at = (state.position.epochs_done, state.position.batches_done);
    run_printed_resume(&stderr);
    let mut whole = args.to_vec();
    whole.extend(["--save", arg(&straight)]);
    let out = command(&whole).output().unwrap();
    assert!(out.status.success());
    assert_same_weights(&stopped, &straight);
    at
}

/// Small steps on 30,000 examples: epochs long enough to be interrupted inside (0.1 s each on 2
/// cores), and enough of them (4 s) that the signal, sent once epoch 1 is printed, always comes
/// before the end even on a loaded machine.
const CPU_RUN: [&str; 14] = [
    "--device",
    "cpu",
    "--threads",
    "2",
    "--layers",
    "784,32,10",
    "--batch-size",
    "5",
    "--train-examples",
    "30000",
    "--test-examples",
    "500",
    "--epochs",
    "40",
];

#[test]
fn sigint_on_the_cpu_stops_after_the_batch_and_resumes_exactly() {
    let (epochs, batches) = interrupt_and_resume(
        &CPU_RUN,
        "INT",
        130,
        &[
            "SIGINT received: stopping after the current batch",
            "stopped by SIGINT in epoch",
        ],
    );
    assert!(
        epochs >= 1 && batches > 0,
        "stopped inside an epoch: after epoch {epochs}, batch {batches}"
    );
}

#[test]
fn sigterm_on_the_cpu_exits_143_and_resumes_exactly() {
    interrupt_and_resume(&CPU_RUN, "TERM", 143, &["SIGTERM received", "send SIGTERM again"]);
}

#[test]
fn sigint_on_the_gpu_stops_when_the_epoch_ends_and_resumes_exactly() {
    let (epochs, batches) = interrupt_and_resume(
        &[
            "--device",
            "gpu",
            "--layers",
            "784,32,10",
            "--train-examples",
            "4000",
            "--test-examples",
            "300",
            "--batch-size",
            "50",
            "--epochs",
            "6",
        ],
        "INT",
        130,
        // The signal comes while epoch 2 runs (rarely, still at the end of epoch 1).
        &[
            "SIGINT received: stopping when epoch ",
            " ends, in about ",
            "stopped by SIGINT after epoch",
        ],
    );
    assert_eq!(batches, 0, "the GPU stops between epochs");
    assert!((1..6).contains(&epochs), "stopped after epoch {epochs}");
}

#[test]
fn without_save_a_stopped_run_says_nothing_was_saved() {
    let mut run = Running::start(&CPU_RUN, &[]);
    run.wait_for("epoch 1/");
    run.signal("INT");
    let (status, stderr) = run.finish();
    assert_eq!(status, Some(130));
    assert!(stderr.contains("nothing was saved (no --save was given)"), "{stderr}");
}

#[test]
fn a_second_sigint_exits_at_once_and_leaves_the_earlier_file() {
    let dir = TempDir::new().unwrap();
    let path: PathBuf = dir.path().join("model.safetensors");
    let mut args = CPU_RUN.to_vec();
    args.extend(["--save", arg(&path), "--save-every", "1"]);
    // Saves are written in slow pieces (a test hook): 16 × 150 ms each.
    let mut run = Running::start(&args, &[(gpu_mlp::model::SLOW_SAVE_ENV, "150")]);
    run.wait_for("epoch 1/");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the epoch-1 checkpoint never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let earlier = std::fs::read(&path).unwrap();
    run.signal("INT");
    // Wait until the stop's checkpoint is being written, then interrupt again.
    let temp_exists = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    while !temp_exists() {
        assert!(Instant::now() < deadline, "the stop's checkpoint was never begun");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = Instant::now();
    run.signal("INT");
    let (status, stderr) = run.finish();
    let took = second.elapsed();
    assert_eq!(status, Some(130), "{stderr}");
    assert!(
        took < Duration::from_millis(1500),
        "took {took:?} to exit (a save takes 2.4 s)"
    );
    assert!(!stderr.contains("checkpoint written"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), earlier, "the earlier file changed");
    assert_eq!(load(&path).training.unwrap().position.epochs_done, 1);
}
