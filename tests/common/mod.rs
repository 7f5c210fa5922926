//! What the integration tests share (`mod common;` in each): one tolerance check, the random
//! data generators, every value of the network's enums, IDX file builders, the shipped MNIST
//! and the binary.

// Each test binary uses a part of this.
#![allow(dead_code)]

use clap::ValueEnum;
use flate2::write::GzEncoder;
use flate2::Compression;
use gpu_mlp::data::{load_mnist, Dataset, Mnist};
use gpu_mlp::network::{Activation, Init, Loss, NetworkSpec, Output};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output as ProcessOutput};
use std::sync::LazyLock;

// ---------------------------------------------------------------------------------------------
// The binary and the data
// ---------------------------------------------------------------------------------------------

/// The `gpu-mlp` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_gpu-mlp");

/// `data/mnist`: the four MNIST files shipped with the repository.
pub fn mnist_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))
}

/// The shipped MNIST, loaded once per test binary.
pub fn mnist() -> &'static Mnist {
    static MNIST: LazyLock<Mnist> = LazyLock::new(|| load_mnist(&mnist_dir()).expect("MNIST in data/mnist"));
    &MNIST
}

/// The binary with `args`, backtraces off so that a panic shows its usual hint, its tuning cache
/// in [`tune_cache_dir`]. Nothing else is set: the program quiets Mesa itself (its
/// XDG_RUNTIME_DIR note), so the tests do not.
pub fn command(args: &[&str]) -> Command {
    let mut command = gpu_mlp();
    command
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    command
}

/// Runs the binary with `args` to its end.
pub fn run(args: &[&str]) -> ProcessOutput {
    command(args).output().expect("the gpu-mlp binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A run's command line, status and output, for a failed assertion's message.
pub fn describe(args: &[&str], out: &ProcessOutput) -> String {
    format!(
        "gpu-mlp {}\n  status: {}\n  stdout: {}\n  stderr: {}",
        args.join(" "),
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `args`, which must succeed; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "failed\n{}", describe(args, &out));
    text(&out.stdout)
}

/// Runs `args`, which must fail with status 1 and exactly one `error:` line on stderr, no panic,
/// mentioning every needle. Returns that line.
pub fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = run(args);
    let context = describe(args, &out);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "wrong exit status\n{context}");
    assert!(!stderr.contains("panicked"), "it panicked\n{context}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "not one error line\n{context}");
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "the error does not mention {needle:?}\n{context}"
        );
    }
    errors[0].to_string()
}

/// A temporary path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

// ---------------------------------------------------------------------------------------------
// Every value of the network's enums (as `--help` lists them, in that order)
// ---------------------------------------------------------------------------------------------

pub fn activations() -> &'static [Activation] {
    Activation::value_variants()
}

pub fn outputs() -> &'static [Output] {
    Output::value_variants()
}

pub fn losses() -> &'static [Loss] {
    Loss::value_variants()
}

pub fn inits() -> &'static [Init] {
    Init::value_variants()
}

pub fn spec(widths: &[usize], activation: Activation, output: Output, loss: Loss) -> NetworkSpec {
    NetworkSpec {
        widths: widths.to_vec(),
        activation,
        output,
        loss,
    }
}

// ---------------------------------------------------------------------------------------------
// Random data
// ---------------------------------------------------------------------------------------------

/// A seeded generator: the library's own (ChaCha8, the same stream on every machine).
pub fn rng(seed: u64) -> ChaCha8Rng {
    gpu_mlp::init::rng(seed)
}

/// U(lo, hi) without the values closer to 0 than `margin` (so no term of a sum vanishes, and no
/// ReLU input sits on the kink).
pub fn nonzero(rng: &mut ChaCha8Rng, lo: f32, hi: f32, margin: f32) -> f32 {
    loop {
        let v = rng.random_range(lo..hi);
        if v.abs() >= margin {
            return v;
        }
    }
}

/// `len` draws of [`nonzero`].
pub fn nonzero_vec(rng: &mut ChaCha8Rng, len: usize, lo: f32, hi: f32, margin: f32) -> Vec<f32> {
    (0..len).map(|_| nonzero(rng, lo, hi, margin)).collect()
}

/// `len` values with magnitudes U(min..max) and random signs: never zero nor within `min` of it
/// (the distribution of [`nonzero_vec`] over ±max with margin `min`, drawn as magnitude and sign).
pub fn signed_vec(rng: &mut ChaCha8Rng, len: usize, min: f32, max: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let magnitude = rng.random_range(min..max);
            if rng.random_range(0..2) == 0 {
                magnitude
            } else {
                -magnitude
            }
        })
        .collect()
}

/// `len` examples of `features` random pixels in 1..=255 (none zero) with random labels.
pub fn random_dataset(rng: &mut ChaCha8Rng, len: usize, features: usize, classes: usize) -> Dataset {
    Dataset {
        images: (0..len * features).map(|_| rng.random_range(1..=255u8)).collect(),
        labels: (0..len).map(|_| rng.random_range(0..classes as u8)).collect(),
        features,
        classes,
    }
}

/// An output buffer before the op runs: NaN everywhere, so an element it fails to write fails
/// the comparison instead of passing as a stale right answer.
pub fn poisoned(len: usize) -> Vec<f32> {
    vec![f32::NAN; len]
}

/// The bit patterns: what "bit for bit" compares.
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// The tolerance check
// ---------------------------------------------------------------------------------------------

/// `got` against `want`, element by element: element i passes when both are finite and
/// `|got[i] − want[i]| ≤ allowed(i)`, all in f64. A NaN in an output is an element the op or
/// kernel did not write over its NaN poison.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Elements that fail.
    pub failed: usize,
    /// The element furthest outside (or, when none fails, nearest to) its tolerance, by
    /// error / allowance; a non-finite element counts as infinitely far. The first on ties.
    pub worst: usize,
    pub worst_ratio: f64,
    pub got: f32,
    pub want: f64,
    pub error: f64,
    pub allowed: f64,
    /// The largest |got − want| over all elements (NaN if any is NaN).
    pub max_error: f64,
}

/// Compares `got` with `want` (of the same length) within `allowed(i)` at element i.
pub fn compare<W: Copy + Into<f64>>(got: &[f32], want: &[W], allowed: impl Fn(usize) -> f64) -> Comparison {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut c = Comparison {
        failed: 0,
        worst: 0,
        worst_ratio: -1.0,
        got: f32::NAN,
        want: f64::NAN,
        error: f64::NAN,
        allowed: f64::NAN,
        max_error: 0.0,
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let w: f64 = w.into();
        let error = (g as f64 - w).abs();
        let allowance = allowed(i);
        let ok = g.is_finite() && w.is_finite() && error <= allowance;
        let ratio = match (ok, allowance > 0.0) {
            (true, true) => error / allowance,
            (true, false) => 0.0,
            (false, true) if error.is_finite() => error / allowance,
            (false, _) => f64::INFINITY,
        };
        c.failed += !ok as usize;
        if ratio > c.worst_ratio {
            (c.worst, c.worst_ratio) = (i, ratio);
            (c.got, c.want, c.error, c.allowed) = (g, w, error, allowance);
        }
        c.max_error = if error.is_nan() || c.max_error.is_nan() {
            f64::NAN
        } else {
            c.max_error.max(error)
        };
    }
    c
}

/// The tolerance `abs + rel·|want[i]|`.
pub fn within<W: Copy + Into<f64>>(want: &[W], abs: f64, rel: f64) -> impl Fn(usize) -> f64 + '_ {
    move |i| abs + rel * want[i].into().abs()
}

/// [`compare`] within `abs + rel·|want|`: `None` when every element passes, else the failure.
pub fn max_violation<W: Copy + Into<f64>>(got: &[f32], want: &[W], abs: f64, rel: f64) -> Option<Comparison> {
    let c = compare(got, want, within(want, abs, rel));
    (c.failed > 0).then_some(c)
}

/// [`compare`], as a sentence on failure: a length mismatch, nothing to compare, or how many
/// elements failed and the worst of them (index, both values, error, allowance). Returns the
/// largest absolute error.
pub fn try_check<W: Copy + Into<f64>>(
    what: &str,
    got: &[f32],
    want: &[W],
    allowed: impl Fn(usize) -> f64,
) -> Result<f64, String> {
    if got.len() != want.len() || want.is_empty() {
        return Err(format!("{what}: {} values, {} expected", got.len(), want.len()));
    }
    let c = compare(got, want, allowed);
    if c.failed == 0 {
        return Ok(c.max_error);
    }
    let i = c.worst;
    let not_finite = if c.got.is_finite() && c.want.is_finite() {
        String::new()
    } else {
        format!(" (element {i} is not finite; NaN: the output was not written)")
    };
    Err(format!(
        "{what}: {} of {} elements out of tolerance; worst at {i}: got {}, want {}, error {:e}, allowed {:e}{not_finite}; \
         max error {:e}",
        c.failed,
        got.len(),
        c.got,
        c.want,
        c.error,
        c.allowed,
        c.max_error,
    ))
}

/// [`try_check`], failing the test on an error.
pub fn check<W: Copy + Into<f64>>(what: &str, got: &[f32], want: &[W], allowed: impl Fn(usize) -> f64) -> f64 {
    try_check(what, got, want, allowed).unwrap_or_else(|message| panic!("{message}"))
}

/// [`check`] within `abs + rel·|want|`; prints the largest error and how close the worst
/// element came to its tolerance (`cargo test -- --nocapture`). Returns the largest error.
pub fn assert_close<W: Copy + Into<f64>>(what: &str, got: &[f32], want: &[W], abs: f64, rel: f64) -> f64 {
    let max_error = check(what, got, want, within(want, abs, rel));
    let worst = compare(got, want, within(want, abs, rel)).worst_ratio;
    println!("{what}: max abs err {max_error:.3e}, worst err/tolerance {worst:.3}");
    max_error
}

/// Every line of `text` as one JSON object (what `--json` and a JSON-lines metrics file hold):
/// anything else fails the test.
pub fn json_objects(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(object)) => object,
            other => panic!("not a JSON object: {line:?} ({other:?})"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// IDX files
// ---------------------------------------------------------------------------------------------

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
pub const MNIST_FILES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// An IDX image file whose header says `count` images of `rows`×`cols` and whose body holds
/// `body` bytes (pixel i is i mod 256, so 0 and 255 both occur once there are enough).
pub fn idx_images(count: u32, rows: u32, cols: u32, body: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for field in [2051, count, rows, cols] {
        bytes.extend_from_slice(&u32::to_be_bytes(field));
    }
    bytes.extend((0..body).map(|i| i as u8));
    bytes
}

/// An IDX label file whose header says `count` labels, followed by `labels`.
pub fn idx_labels(count: u32, labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&2049u32.to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

/// An IDX file: `magic`, then each of `dims` (big-endian u32), then `body`.
pub fn idx_file(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(body);
    bytes
}

/// Writes `set` as the IDX image and label files `{name}-images-idx3-ubyte` and
/// `{name}-labels-idx1-ubyte` in `dir` (`name` is `train` or `t10k`).
pub fn write_idx_pair(dir: &Path, name: &str, set: &Dataset) {
    let count = u32::try_from(set.len()).expect("a test set under 2^32 examples");
    let (rows, cols) = (28, 28);
    assert_eq!(set.images.len(), set.len() * rows * cols, "28×28 images");
    let images = idx_file(2051, &[count, rows as u32, cols as u32], &set.images);
    std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), images).unwrap();
    let labels = idx_file(2049, &[count], &set.labels);
    std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), labels).unwrap();
}

/// Labels 0, 1, … 9, 0, 1, …: `count` of them.
pub fn digit_labels(count: usize) -> Vec<u8> {
    (0..count).map(|i| (i % 10) as u8).collect()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Where the binary keeps its GPU tuning cache in the tests (`GPU_MLP_CACHE_DIR`): under cargo's
/// scratch folder for tests, never the user's own cache.
pub fn tune_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tune-cache")
}

/// The binary, with its tuning cache in [`tune_cache_dir`].
pub fn gpu_mlp() -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command.env("GPU_MLP_CACHE_DIR", tune_cache_dir());
    command
}
