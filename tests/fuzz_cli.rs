//! Property test: random argument vectors, drawn from every flag of `train` and `bench` with
//! extreme values (0, 1, negative, NaN, inf, 2³², 2⁶⁴−1, huge widths and depths, junk), never
//! make the binary panic, abort or hang. Each run either succeeds or exits 1 with exactly one
//! `error: ` sentence on stderr; `--json` output is valid JSON, line by line.
//!
//! Every run is under an address-space limit (`prlimit --as`), so an allocation that escaped
//! the up-front size checks fails the test (as an abort) instead of exhausting the machine; and
//! under a time limit: a run still going at the limit passes only if it was visibly making
//! progress (a long run asked for, not a hang).
//!
//! The seed is fixed; `GPU_MLP_FUZZ_CASES=N` runs N cases instead of the CI's 1500, e.g.
//! `GPU_MLP_FUZZ_CASES=20000 cargo test --release --test fuzz_cli` for a longer run.

mod common;

use common::{digit_labels, idx_images, idx_labels, BIN, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How the runs ended: trained to the end, stopped by us while training, refused with an error.
static TRAINED: AtomicUsize = AtomicUsize::new(0);
static STOPPED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of address space each run may take: room for the GPU driver, nowhere near the machine.
const ADDRESS_SPACE: &str = "4294967296";
/// A run still going after this is checked for progress and stopped.
const TIME_LIMIT: Duration = Duration::from_secs(20);

fn cases() -> u32 {
    std::env::var("GPU_MLP_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500)
}

const COUNTS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "7",
    "100",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "NaN",
    "",
    "1e3",
    "abc",
];
const REALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "0.5",
    "0.9",
    "NaN",
    "inf",
    "-inf",
    "1e38",
    "1e-45",
    "4294967296",
    "0.999999",
    "2",
    "x",
];

fn widths(sep: &str) -> Vec<String> {
    let deep = std::iter::repeat_n("3", 300).collect::<Vec<_>>().join(sep);
    [
        "784,10".to_string(),
        "784,0,10".to_string(),
        "784".to_string(),
        "784,18446744073709551615,10".to_string(),
        "784,100000000,10".to_string(),
        "784,4294967296,4294967296,10".to_string(),
        "784,65536,65536,10".to_string(),
        "2,8,2".to_string(),
        format!("784,{deep},10"),
        ",".to_string(),
        "784,-1,10".to_string(),
        "784,16,10".to_string(),
        String::new(),
    ]
    .into_iter()
    .map(|w| w.replace(',', sep))
    .collect()
}

/// The flags of `train`, each with the values it is drawn from.
fn train_flags() -> Vec<(&'static str, Vec<String>)> {
    let list = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let mut flags = vec![("--layers", widths(","))];
    for flag in [
        "--batch-size",
        "--epochs",
        "--validation",
        "--train-examples",
        "--test-examples",
        "--threads",
        "--lr-decay-every",
        "--warmup-epochs",
        "--seed",
    ] {
        flags.push((flag, list(COUNTS)));
    }
    for flag in [
        "--lr",
        "--lr-decay",
        "--l2",
        "--dropout",
        "--input-dropout",
        "--momentum",
        "--beta1",
        "--beta2",
        "--eps",
        "--weight-decay",
    ] {
        flags.push((flag, list(REALS)));
    }
    flags.extend([
        ("--activation", list(&["relu", "sigmoid", "tanh", "bogus"])),
        ("--output", list(&["softmax", "sigmoid", "x"])),
        ("--loss", list(&["ce", "mse", ""])),
        ("--init", list(&["he", "xavier", "uniform", "normal", "zero"])),
        (
            "--optimizer",
            list(&["sgd", "momentum", "rmsprop", "adam", "adamw", "lbfgs"]),
        ),
        ("--normalize", list(&["scale", "standardize", "minmax"])),
        ("--lr-schedule", list(&["constant", "step", "cosine", "linear"])),
        ("--dataset", list(&["mnist", "mnist", "mnist", "xor"])),
        ("--device", list(&["cpu", "cpu", "cpu", "gpu", "auto", "tpu"])),
    ]);
    flags
}

/// `bench`'s own flags.
fn bench_flags() -> Vec<(&'static str, Vec<String>)> {
    let list = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let mut networks = widths("-");
    networks.push("784-16-10,784-8-10".into());
    networks.push("784-16-10,".into());
    vec![
        ("--networks", networks),
        ("--batch-size", list(COUNTS)),
        ("--epochs", list(&["0", "1", "2", "18446744073709551615", "-1", "x"])),
        ("--threads", list(COUNTS)),
        ("--device", list(&["cpu", "cpu", "cpu", "cpu", "gpu", "all", "x"])),
    ]
}

/// An argument vector: a few flags with drawn values, sometimes `--json`, `--verbose`, a stray
/// word or a flag without its value.
fn argv(bench: bool) -> impl Strategy<Value = Vec<String>> {
    let flags = if bench { bench_flags() } else { train_flags() };
    let pairs: Vec<BoxedStrategy<Vec<String>>> = flags
        .into_iter()
        .map(|(flag, values)| {
            prop::sample::select(values)
                .prop_map(move |value| vec![flag.to_string(), value])
                .boxed()
        })
        .collect();
    let extras = prop::sample::select(vec!["", "", "", "--json", "--verbose", "stray", "--epochs", "--json"]);
    (
        prop::collection::vec(prop::strategy::Union::new(pairs), 0..5),
        extras.clone(),
        extras,
    )
        .prop_map(move |(pairs, a, b)| {
            let mut args: Vec<String> = if bench { vec!["bench".into()] } else { vec![] };
            args.extend(pairs.into_iter().flatten());
            args.extend([a, b].iter().filter(|s| !s.is_empty()).map(|s| s.to_string()));
            args
        })
}

/// A tiny MNIST-format data set (300 training, 10 test examples), so a run takes milliseconds.
fn tiny_data(dir: &Path) {
    let images = |count: u32| idx_images(count, 28, 28, count as usize * 784);
    let labels = |count: u32| idx_labels(count, &digit_labels(count as usize));
    std::fs::write(dir.join(TRAIN_IMAGES), images(300)).unwrap();
    std::fs::write(dir.join(TRAIN_LABELS), labels(300)).unwrap();
    std::fs::write(dir.join(TEST_IMAGES), images(10)).unwrap();
    std::fs::write(dir.join(TEST_LABELS), labels(10)).unwrap();
}

/// CPU seconds (user + system) process `pid` has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs the binary on `args` (plus the tiny data) and checks how it ended.
fn check_run(args: &[String], data: &Path) -> Result<(), TestCaseError> {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--as={ADDRESS_SPACE}"))
        .arg("--")
        .arg(BIN)
        .args(args)
        .env("GPU_MLP_CACHE_DIR", common::tune_cache_dir());
    let xor = args.windows(2).any(|w| w[0] == "--dataset" && w[1] == "xor");
    if !xor {
        command.arg("--data-dir").arg(data);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit runs (util-linux)");
    // Read both pipes on threads, so a chatty run never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).ok();
        s
    });
    let started = Instant::now();
    let mut busy = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIME_LIMIT {
            busy = cpu_seconds(child.id()) > TIME_LIMIT.as_secs_f64() / 4.0;
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    let what = format!("gpu-mlp {}\nstdout:\n{stdout}\nstderr:\n{stderr}", args.join(" "));
    prop_assert!(!stderr.contains("panicked"), "panic: {what}");
    prop_assert!(!stderr.contains("memory allocation"), "abort: {what}");
    let Some(status) = status else {
        // Stopped at the time limit: fine only for a run that was training (epoch lines).
        // Training prints a line per epoch, bench a line per measurement; a run that printed
        // nothing yet must at least be computing (a hang waits without using the CPU).
        let printed = if args.first().is_some_and(|a| a == "bench") {
            !stdout.is_empty()
        } else {
            stdout.contains("epoch")
        };
        prop_assert!(printed || busy, "no progress by the time limit: {what}");
        STOPPED.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    match status.code() {
        Some(0) => {
            TRAINED.fetch_add(1, Ordering::Relaxed);
        }
        Some(1) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            let errors = stderr.lines().filter(|l| l.starts_with("error: ")).count();
            prop_assert_eq!(errors, 1, "not one error sentence: {}", what);
            let others = stderr
                .lines()
                .filter(|l| !l.starts_with("error: ") && !l.starts_with("note: "))
                .count();
            prop_assert_eq!(others, 0, "stray stderr lines: {}", what);
        }
        other => prop_assert!(false, "exit {other:?} (signal {:?}): {what}", {
            use std::os::unix::process::ExitStatusExt;
            status.signal()
        }),
    }
    if args.iter().any(|a| a == "--json") && status.code() == Some(0) {
        for line in stdout.lines() {
            prop_assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not JSON: {line}\n{what}"
            );
        }
    }
    Ok(())
}

fn run_cases(bench: bool, cases: u32) {
    let data = tempfile::tempdir().unwrap();
    tiny_data(data.path());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let seed = if bench { [2u8; 32] } else { [1u8; 32] };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    runner
        .run(&argv(bench), |args| check_run(&args, data.path()))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn random_train_arguments_never_crash() {
    let cases = cases();
    run_cases(false, cases);
    // The generator must reach training, not only the argument checks.
    let (trained, stopped, refused) = (
        TRAINED.load(Ordering::Relaxed),
        STOPPED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
    );
    println!("{cases} cases: {trained} trained, {stopped} stopped while training, {refused} refused");
    assert!(trained >= cases as usize / 20, "only {trained} of {cases} runs trained");
    assert!(
        refused >= cases as usize / 4,
        "only {refused} of {cases} runs were refused"
    );
}

#[test]
fn random_bench_arguments_never_crash() {
    run_cases(true, (cases() / 25).max(20));
}
