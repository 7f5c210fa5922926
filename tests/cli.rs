//! Tests of the `gpu-mlp` binary itself: every kind of bad input ends the run with exit status 1
//! (2 for clap's own errors) and one `error: …` sentence naming what is wrong, never a panic;
//! a diverging run stops and says where; `--json` and the text table have one line per epoch,
//! and the keys of `--json` and `bench --json` are pinned; `--l2` reaches the update on both
//! devices; 1 and 2 threads agree; `--device auto` and a machine without a GPU adapter.
//!
//! Most runs pass `--device cpu` ([`gpu_mlp`]); the ones about devices choose their own.

mod common;

use common::{
    assert_close, bits, describe, digit_labels, gzip, idx_images, idx_labels, json_objects, text, TEST_IMAGES,
    TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
};
use gpu_mlp::gpu::context::{list_adapters, AdapterKind};
use gpu_mlp::model::{Checkpoint, SpecHints};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;
use tempfile::TempDir;

const PIXELS: usize = 28 * 28;

/// Examples in the synthetic data set: enough for a batch of 10.
const SYNTHETIC_TRAIN: u32 = 60;
const SYNTHETIC_TEST: u32 = 20;

/// Runs `gpu-mlp ARGS --device cpu` (the device last, so that it also lands after a `train`
/// subcommand) on one CPU thread, with backtraces off so that a panic shows its usual hint.
fn gpu_mlp(args: &[&str]) -> Output {
    common::gpu_mlp()
        .args(args)
        .args(["--device", "cpu"])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("the gpu-mlp binary runs")
}

/// Lines of a run's stdout that report an epoch, as text or as JSON.
fn epoch_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("epoch ") || l.starts_with('{'))
        .collect()
}

/// Runs `args`, which must fail with exit status `code` and an `error:` message on stderr that
/// contains every one of `needles`, without a panic and without printing any epoch. For our own
/// errors (status 1) the message must be exactly one line. Returns stderr.
fn fails_with(code: i32, args: &[&str], needles: &[&str]) -> String {
    let out = gpu_mlp(args);
    let context = describe(args, &out);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "wrong exit status\n{context}");
    assert!(stderr.starts_with("error: "), "no `error:` message\n{context}");
    assert!(!stderr.contains("panicked"), "it panicked\n{context}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "it panicked\n{context}");
    if code == 1 {
        assert_eq!(stderr.trim_end().lines().count(), 1, "not one line\n{context}");
    }
    for needle in needles {
        assert!(stderr.contains(needle), "stderr does not mention {needle:?}\n{context}");
    }
    assert!(epoch_lines(&stdout).is_empty(), "epochs were printed\n{context}");
    stderr
}

/// Runs `args`, which must succeed with nothing on stderr; returns stdout.
fn succeeds(args: &[&str]) -> String {
    let out = gpu_mlp(args);
    assert!(out.status.success(), "run failed\n{}", describe(args, &out));
    assert!(out.stderr.is_empty(), "stderr is not empty\n{}", describe(args, &out));
    text(&out.stdout)
}

// --- A small synthetic MNIST in a temporary folder -------------------------------------------

/// An IDX label file: header for `count` labels, then `labels` labels 0, 1, … 9, 0, …
fn digit_label_file(count: u32, labels: usize) -> Vec<u8> {
    idx_labels(count, &digit_labels(labels))
}

/// The four files of a valid small data set (name, raw contents).
fn good_files() -> [(&'static str, Vec<u8>); 4] {
    let (train, test) = (SYNTHETIC_TRAIN, SYNTHETIC_TEST);
    [
        (TRAIN_IMAGES, idx_images(train, 28, 28, train as usize * PIXELS)),
        (TRAIN_LABELS, digit_label_file(train, train as usize)),
        (TEST_IMAGES, idx_images(test, 28, 28, test as usize * PIXELS)),
        (TEST_LABELS, digit_label_file(test, test as usize)),
    ]
}

/// A folder with the four good files, gzipped as `NAME.gz`, except that `faulty` (a base name)
/// is written as `faulty_name` (relative to the folder) with `faulty_bytes`; `None` leaves it out.
fn data_dir_with(faulty: &str, replacement: Option<(String, Vec<u8>)>) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in good_files() {
        if name != faulty {
            fs::write(dir.path().join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        }
    }
    if let Some((name, bytes)) = replacement {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Trains on `dir`, which must fail naming `file` (and every one of `needles`).
fn data_fault(dir: &Path, file: &str, needles: &[&str]) -> String {
    let args = ["--data-dir", path_arg(dir), "--batch-size", "10", "--epochs", "1"];
    let stderr = fails_with(1, &args, needles);
    assert!(stderr.contains(file), "the message does not name {file}: {stderr}");
    stderr
}

/// The control for the data-fault tests: the synthetic set, unharmed, trains.
#[test]
fn synthetic_data_trains() {
    let dir = data_dir_with("", None);
    let stdout = succeeds(&[
        "--data-dir",
        path_arg(dir.path()),
        "--batch-size",
        "10",
        "--epochs",
        "2",
    ]);
    assert_eq!(epoch_lines(&stdout).len(), 2, "{stdout}");
    assert!(stdout.contains("60 train, 0 validation, 20 test"), "{stdout}");
}

#[test]
fn missing_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-mnist-here");
    data_fault(&dir, "no-mnist-here", &["--data-dir", "does not exist"]);
}

#[test]
fn missing_data_file() {
    let dir = data_dir_with(TEST_LABELS, None);
    data_fault(dir.path(), TEST_LABELS, &["no MNIST file found"]);
}

#[test]
fn empty_data_file() {
    let dir = data_dir_with(TRAIN_LABELS, Some((TRAIN_LABELS.to_string(), Vec::new())));
    data_fault(dir.path(), TRAIN_LABELS, &["is empty"]);
}

#[test]
fn truncated_data_file() {
    // The header promises 60 images; the body stops one pixel short.
    let bytes = idx_images(SYNTHETIC_TRAIN, 28, 28, SYNTHETIC_TRAIN as usize * PIXELS - 1);
    let dir = data_dir_with(TRAIN_IMAGES, Some((format!("{TRAIN_IMAGES}.gz"), gzip(&bytes))));
    data_fault(dir.path(), TRAIN_IMAGES, &["truncated"]);
}

#[test]
fn truncated_gzip_stream() {
    let good = gzip(&idx_images(SYNTHETIC_TEST, 28, 28, SYNTHETIC_TEST as usize * PIXELS));
    let cut = good[..good.len() / 2].to_vec();
    let dir = data_dir_with(TEST_IMAGES, Some((format!("{TEST_IMAGES}.gz"), cut)));
    data_fault(dir.path(), TEST_IMAGES, &["corrupt gzip"]);
}

#[test]
fn wrong_magic_number() {
    let mut bytes = idx_images(SYNTHETIC_TEST, 28, 28, SYNTHETIC_TEST as usize * PIXELS);
    bytes[3] = 0x04; // 2052: four dimensions
    let dir = data_dir_with(TEST_IMAGES, Some((TEST_IMAGES.to_string(), bytes)));
    data_fault(dir.path(), TEST_IMAGES, &["magic number 2052", "2051"]);
}

#[test]
fn fewer_labels_than_images() {
    let n = SYNTHETIC_TRAIN - 1;
    let dir = data_dir_with(
        TRAIN_LABELS,
        Some((format!("{TRAIN_LABELS}.gz"), gzip(&digit_label_file(n, n as usize)))),
    );
    let stderr = data_fault(dir.path(), TRAIN_LABELS, &["60 images", "59 labels"]);
    assert!(stderr.contains(TRAIN_IMAGES), "{stderr}");
}

#[test]
fn gz_file_that_is_not_gzip() {
    // A raw (valid) IDX file under a .gz name.
    let bytes = digit_label_file(SYNTHETIC_TEST, SYNTHETIC_TEST as usize);
    let dir = data_dir_with(TEST_LABELS, Some((format!("{TEST_LABELS}.gz"), bytes)));
    data_fault(dir.path(), TEST_LABELS, &["not gzip"]);
}

// --- Settings that cannot describe a run ------------------------------------------------------

/// A small MNIST run, then the settings under test.
fn small<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--train-examples", "200", "--test-examples", "100", "--epochs", "1"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn layers_that_do_not_match_the_data() {
    fails_with(1, &small(&["--layers", "785,128,10"]), &["--layers", "785", "784"]);
    fails_with(
        1,
        &small(&["--layers", "784,128,9"]),
        &["--layers", "9 outputs", "10 classes"],
    );
    fails_with(
        1,
        &["--dataset", "xor", "--layers", "2,8,3"],
        &["--layers", "3 outputs", "2 classes"],
    );
}

#[test]
fn malformed_layers() {
    fails_with(1, &small(&["--layers", "784,0,10"]), &["--layers", "width 0"]);
    fails_with(1, &small(&["--layers", "784"]), &["--layers", "at least two widths"]);
    fails_with(1, &small(&["--layers", "784,abc,10"]), &["--layers", "784,abc,10"]);
    fails_with(1, &small(&["--layers", ""]), &["--layers", "not a list of widths"]);
    fails_with(
        1,
        &small(&["--layers", "784,,10"]),
        &["--layers", "not a list of widths"],
    );
}

#[test]
fn bad_batch_sizes() {
    fails_with(1, &small(&["--batch-size", "0"]), &["--batch-size", "at least 1"]);
    fails_with(
        1,
        &["--train-examples", "50", "--batch-size", "51", "--epochs", "1"],
        &["--batch-size 51", "50 examples"],
    );
    // On the full training set (which is only loaded, never trained on).
    fails_with(1, &["--batch-size", "60001"], &["--batch-size 60001", "60000 examples"]);
}

#[test]
fn bad_learning_rates() {
    for lr in ["0", "-1", "-0.5", "nan", "inf"] {
        let stderr = fails_with(1, &small(&["--lr", lr]), &["--lr must be a positive number"]);
        let shown = if lr == "nan" { "NaN" } else { lr };
        assert!(stderr.contains(shown), "{stderr}");
    }
    fails_with(1, &small(&["--lr", "fast"]), &["--lr", "fast"]);
}

#[test]
fn bad_learning_rate_decay() {
    for decay in ["0", "1.5", "-0.5"] {
        fails_with(1, &small(&["--lr-decay", decay]), &["--lr-decay", "(0, 1]", decay]);
    }
    fails_with(1, &small(&["--lr-decay-every", "0"]), &["--lr-decay-every"]);
}

#[test]
fn bad_counts() {
    fails_with(
        1,
        &["--train-examples", "200", "--epochs", "0"],
        &["--epochs", "at least 1"],
    );
    fails_with(1, &small(&["--threads", "0"]), &["--threads", "at least 1"]);
    fails_with(1, &small(&["--l2", "-1"]), &["--l2", "-1"]);
}

#[test]
fn validation_as_large_as_the_training_set() {
    fails_with(
        1,
        &small(&["--validation", "200"]),
        &["--validation 200", "200 examples"],
    );
    fails_with(
        1,
        &small(&["--validation", "1000"]),
        &["--validation 1000", "200 examples"],
    );
    fails_with(1, &["--dataset", "xor", "--validation", "1"], &["--validation", "xor"]);
}

/// Values that clap itself refuses (exit status 2).
#[test]
fn unknown_enum_values() {
    fails_with(1, &small(&["--activation", "foo"]), &["foo", "--activation", "relu"]);
    fails_with(1, &small(&["--loss", "hinge"]), &["hinge", "--loss"]);
    fails_with(1, &small(&["--dataset", "cifar"]), &["cifar", "--dataset"]);
    fails_with(1, &small(&["--batch-size", "-3"]), &["'-3'"]);
}

/// A learning rate this large overflows the weights within a few batches, whatever the seed.
#[test]
fn divergence_stops_with_the_epoch_and_batch() {
    for seed in ["1", "2", "3"] {
        let args = [
            "--train-examples",
            "2000",
            "--test-examples",
            "500",
            "--epochs",
            "2",
            "--lr",
            "1e10",
            "--seed",
            seed,
        ];
        let stderr = fails_with(
            1,
            &args,
            &["diverged", "epoch 1", "batch ", "of 20", "smaller --lr", "1000000000"],
        );
        assert!(
            stderr.contains("became inf") || stderr.contains("became NaN"),
            "{stderr}"
        );
    }
}

// --- Output -----------------------------------------------------------------------------------

fn number(epoch: &serde_json::Map<String, Value>, key: &str) -> f64 {
    epoch
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} is not a number in {epoch:?}"))
}

fn fraction(epoch: &serde_json::Map<String, Value>, key: &str) -> f64 {
    let value = number(epoch, key);
    assert!((0.0..=1.0).contains(&value), "{key} = {value} is not in [0, 1]");
    value
}

#[test]
fn json_has_one_object_per_epoch_with_the_schedule() {
    let args = [
        "--json",
        "--train-examples",
        "1000",
        "--test-examples",
        "200",
        "--validation",
        "100",
        "--epochs",
        "4",
        "--lr",
        "0.2",
        "--lr-decay",
        "0.5",
        "--lr-decay-every",
        "2",
    ];
    let epochs = json_objects(&succeeds(&args));
    assert_eq!(epochs.len(), 4);
    for (i, epoch) in epochs.iter().enumerate() {
        assert_eq!(epoch["epoch"], i as u64 + 1);
        assert_eq!(epoch["device"], "cpu");
        let loss = number(epoch, "train_loss");
        assert!(loss.is_finite() && loss > 0.0, "train_loss {loss}");
        fraction(epoch, "train_accuracy");
        fraction(epoch, "test_accuracy");
        fraction(epoch, "validation_accuracy");
        assert!(number(epoch, "seconds") > 0.0);
        assert!(number(epoch, "samples_per_second") > 0.0);
    }
    let lrs: Vec<f32> = epochs.iter().map(|e| number(e, "lr") as f32).collect();
    assert_eq!(lrs, [0.2, 0.2, 0.1, 0.1]);
    // It learns: the last epoch is better than the first, and reaches what this run measures
    // (seed 1: 82.5% of the 200 test images, with 1 or 2 threads), to within 4 images (thread
    // counts and CPUs round differently).
    assert!(number(&epochs[3], "train_loss") < number(&epochs[0], "train_loss"));
    let accuracy = number(&epochs[3], "test_accuracy");
    assert!((accuracy - 0.825).abs() <= 0.02, "{:?}", epochs[3]);
}

#[test]
fn json_validation_is_null_without_validation() {
    let args = [
        "--json",
        "--train-examples",
        "500",
        "--test-examples",
        "100",
        "--epochs",
        "2",
    ];
    let epochs = json_objects(&succeeds(&args));
    assert_eq!(epochs.len(), 2);
    for epoch in &epochs {
        assert_eq!(epoch.get("validation_accuracy"), Some(&Value::Null), "{epoch:?}");
        fraction(epoch, "test_accuracy");
        assert_eq!(number(epoch, "lr") as f32, 0.3, "the default lr");
    }
}

#[test]
fn text_output_has_one_line_per_epoch() {
    // Also through the explicit `train` subcommand.
    for train in [&[][..], &["train"][..]] {
        let mut args = train.to_vec();
        args.extend(["--train-examples", "500", "--test-examples", "100", "--epochs", "3"]);
        let stdout = succeeds(&args);
        let epochs = epoch_lines(&stdout);
        assert_eq!(epochs.len(), 3, "{stdout}");
        for (i, line) in epochs.iter().enumerate() {
            assert!(line.starts_with(&format!("epoch {}/3 ", i + 1)), "{line}");
            assert!(line.contains("train loss") && line.contains("test acc"), "{line}");
        }
        assert!(stdout.contains("784-128-10"), "{stdout}");
        assert!(
            stdout.lines().last().unwrap().starts_with("done: test accuracy"),
            "{stdout}"
        );
    }
}

#[test]
fn xor_trains_from_the_command_line() {
    let stdout = succeeds(&["--dataset", "xor", "--verbose"]);
    assert_eq!(epoch_lines(&stdout).len(), 200);
    assert!(epoch_lines(&stdout)[0].contains("lr 0.5"), "--verbose shows the lr");
    assert!(stdout.contains("done: test accuracy 100.00%"), "{stdout}");
}

// --- Devices, threads and the keys of the output ----------------------------------------------

/// Runs `gpu-mlp ARGS` as given (the device among them) with `env` added; quiet Mesa, no
/// backtraces.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = common::gpu_mlp();
    command
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the gpu-mlp binary runs")
}

/// [`run_with`], which must succeed; returns stdout.
fn run_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_with(args, env);
    assert!(out.status.success(), "run failed\n{}", describe(args, &out));
    text(&out.stdout)
}

fn params_of(path: &Path) -> Vec<f32> {
    Checkpoint::load(path, &SpecHints::default())
        .expect("a model file")
        .model
        .params
}

/// `--l2` end to end, on both devices: from the same saved weights θ₀, one full-batch step
/// (1,000 examples, lr 0.1) with `--l2 0.5` and one without differ by exactly lr·λ·θ₀ = 0.05·θ₀
/// on every weight and not at all on the biases (the gradient at θ₀ is the same bits in both).
/// A device that dropped the flag, or decayed the biases, fails.
#[test]
fn l2_reaches_the_update_on_both_devices() {
    let dir = TempDir::new().unwrap();
    let path = |name: &str| dir.path().join(format!("{name}.safetensors"));
    let common = [
        "--layers",
        "784,32,10",
        "--train-examples",
        "1000",
        "--test-examples",
        "100",
    ];
    let init = path("init");
    let mut args = common.to_vec();
    args.extend(["--device", "cpu", "--epochs", "1", "--save", path_arg(&init)]);
    run_ok(&args, &[]);
    let theta0 = params_of(&init);
    let layout = gpu_mlp::network::NetworkSpec {
        widths: vec![784, 32, 10],
        activation: gpu_mlp::network::Activation::Relu,
        output: gpu_mlp::network::Output::Softmax,
        loss: gpu_mlp::network::Loss::Ce,
    }
    .layout();
    for device in ["cpu", "gpu"] {
        let step = |l2: &str| {
            let out = path(&format!("{device}-l2-{l2}"));
            let mut args = common.to_vec();
            args.extend(["--device", device, "--threads", "1", "--init-from", path_arg(&init)]);
            args.extend(["--batch-size", "1000", "--epochs", "1", "--lr", "0.1", "--l2", l2]);
            args.extend(["--save", path_arg(&out)]);
            run_ok(&args, &[]);
            params_of(&out)
        };
        let (plain, decayed) = (step("0"), step("0.5"));
        let w = layout.weight_count;
        let difference: Vec<f32> = plain[..w].iter().zip(&decayed[..w]).map(|(a, b)| a - b).collect();
        let want: Vec<f32> = theta0[..w].iter().map(|t| 0.1 * 0.5 * t).collect();
        let max = assert_close(
            &format!("{device}: --l2 0.5's share of the step"),
            &difference,
            &want,
            1e-6,
            1e-4,
        );
        assert!(
            bits(&plain[w..]) == bits(&decayed[w..]),
            "{device}: --l2 changed the biases"
        );
        println!("{device}: --l2 0.5 moved the weights by 0.05·θ₀ to {max:.1e}");
    }
}

/// The CPU with 1 and with 2 threads: each is bit-identical run to run (what `--seed` promises
/// for the same `--threads`), and the two agree within the step-parity tolerance (1e-4 +
/// 1e-3·|w|), their losses within 1e-5 relative, but bit for bit is not promised: the threads'
/// partial gradients are summed in another grouping.
#[test]
fn one_and_two_threads_agree_within_tolerance() {
    let dir = TempDir::new().unwrap();
    let run = |threads: &str, name: &str| {
        let path = dir.path().join(format!("{name}.safetensors"));
        let args = [
            "--device",
            "cpu",
            "--threads",
            threads,
            "--train-examples",
            "2000",
            "--test-examples",
            "500",
            "--epochs",
            "2",
            "--json",
            "--save",
            path_arg(&path),
        ];
        let epochs = json_objects(&run_ok(&args, &[]));
        (epochs, params_of(&path))
    };
    let (one, two, two_again) = (run("1", "one"), run("2", "two"), run("2", "two-again"));
    assert!(
        bits(&two.1) == bits(&two_again.1),
        "2 threads twice gave different weights"
    );
    let max = assert_close("1 thread vs 2", &one.1, &two.1, 1e-4, 1e-3);
    for (a, b) in one.0.iter().zip(&two.0) {
        let (a, b) = (number(a, "train_loss"), number(b, "train_loss"));
        assert!((a - b).abs() <= 1e-5 * a, "train loss {a} with 1 thread, {b} with 2");
    }
    let differ = one
        .1
        .iter()
        .zip(&two.1)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    println!(
        "1 vs 2 threads: max weight difference {max:.1e}; {differ} of {} weights differ in their bits",
        one.1.len()
    );
}

/// The keys of `--json`, in order, on both devices (the GPU's counters are numbers, the CPU's
/// null), as README.md lists them and `--metrics-out` writes them.
#[test]
fn the_keys_of_json_are_pinned() {
    const KEYS: [&str; 19] = [
        "epoch",
        "epochs",
        "network",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "validation_loss",
        "validation_accuracy",
        "seconds",
        "samples_per_second",
        "device",
        "adapter",
        "lr",
        "batch_size",
        "batches",
        "dispatches",
        "submits",
        "readbacks",
    ];
    for device in ["cpu", "gpu"] {
        let args = [
            "--device",
            device,
            "--json",
            "--train-examples",
            "300",
            "--test-examples",
            "50",
        ];
        let epochs = json_objects(&run_ok(&[&args[..], &["--epochs", "1"]].concat(), &[]));
        let keys: Vec<&str> = epochs[0].keys().map(String::as_str).collect();
        assert_eq!(keys, KEYS, "{device}");
        for counter in ["dispatches", "submits", "readbacks"] {
            let value = &epochs[0][counter];
            assert_eq!(value.is_null(), device == "cpu", "{device}: {counter} = {value}");
        }
    }
}

/// The keys of `bench --json`, in order: one object per device and network, the GPU's with its
/// counters and its matmul variants. (A small bench: one network, one timed epoch of 10 batches per device.)
#[test]
fn the_keys_of_bench_json_are_pinned() {
    const KEYS: [&str; 9] = [
        "device",
        "adapter",
        "network",
        "batch_size",
        "epoch_seconds",
        "samples_per_second",
        "gflops",
        "percent_of_ceiling",
        "train_loss",
    ];
    let args = [
        "bench",
        "--json",
        "--device",
        "all",
        "--networks",
        "784-10-10",
        "--epochs",
        "1",
        "--batch-size",
        "6000",
    ];
    let rows = json_objects(&run_ok(&args, &[]));
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        let mut want = KEYS.to_vec();
        if row["device"] == "gpu" {
            want.extend(["dispatches", "submits", "readbacks", "matmul_variants"]);
        }
        assert_eq!(keys, want, "{row:?}");
    }
    assert_eq!(
        (&rows[0]["device"], &rows[1]["device"]),
        (&Value::from("cpu"), &Value::from("gpu"))
    );
}

/// With every Vulkan driver hidden, there is no adapter: `--device gpu` is one sentence naming
/// the fix (the driver package to install, or --device cpu), `--list-devices` says so, and
/// `--device auto` trains on the CPU. With the drivers visible, `--device auto` takes the GPU if
/// and only if there is a hardware one (lavapipe, a software adapter, does not count).
#[test]
fn device_auto_and_a_machine_without_a_gpu_adapter() {
    let hidden = [
        ("VK_ICD_FILENAMES", "/nonexistent"),
        ("VK_DRIVER_FILES", "/nonexistent"),
        ("WGPU_BACKEND", "vulkan"),
    ];
    let small = [
        "--json",
        "--train-examples",
        "200",
        "--test-examples",
        "50",
        "--epochs",
        "1",
    ];
    let args = [&["--device", "gpu"][..], &small].concat();
    let out = run_with(&args, &hidden);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for needle in [
        "no GPU adapter found",
        "apt-get install mesa-vulkan-drivers libvulkan1",
        "or run with --device cpu",
    ] {
        assert!(errors[0].contains(needle), "no {needle:?} in {stderr}");
    }
    assert!(
        !stderr.contains("panicked") && out.stdout.is_empty(),
        "{}",
        describe(&args, &out)
    );

    let listed = run_ok(&["--list-devices"], &hidden);
    assert!(listed.starts_with("no GPU adapters found ("), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("cpu  [")), "{listed}");

    let auto = [&["--device", "auto"][..], &small].concat();
    let epochs = json_objects(&run_ok(&auto, &hidden));
    assert_eq!(epochs[0]["device"], "cpu");

    let hardware = list_adapters().iter().any(|a| a.kind == AdapterKind::Hardware);
    let epochs = json_objects(&run_ok(&auto, &[]));
    assert_eq!(
        epochs[0]["device"],
        if hardware { "gpu" } else { "cpu" },
        "{:?}",
        epochs[0]
    );
}
