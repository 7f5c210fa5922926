//! Every way a run can fail, as types. The CLI prints the one sentence each carries and exits 1.

use crate::data::DataError;
use crate::footprint::human_bytes;
use std::fmt;
use thiserror::Error;

/// A run's failure: bad data, a bad setting, a GPU fault, or training that diverged.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(
        "training diverged: the loss became {value} at epoch {epoch}, batch {batch} of {batches} \
         (lr {lr}, l2 {l2}); {hint}"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        batches: usize,
        value: String,
        lr: f32,
        l2: f32,
        /// What to change, given the settings (see [`Error::divergence_hint`]).
        hint: String,
    },
    #[error("cannot start {threads} CPU threads: {message}")]
    Threads { threads: usize, message: String },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    MetricsFile(#[from] crate::metrics_file::MetricsFileError),
    #[cfg(feature = "native")]
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Image(#[from] crate::preprocess::ImageError),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// Stopped by a signal: the run has said where it stopped; exit with `code`.
    #[error("stopped by {signal}")]
    Interrupted { signal: &'static str, code: u8 },
}

/// Flags that cannot go with the checkpoint a run resumes from.
#[derive(Debug, Error, PartialEq)]
pub enum ResumeError {
    #[error("{flag} {given} contradicts the checkpoint {path}, which was trained with {flag} {stored}: leave {flag} out to resume")]
    Contradicts {
        path: std::path::PathBuf,
        flag: &'static str,
        given: String,
        stored: String,
    },
    #[error("--epochs {given} is fewer than the {done} epochs the checkpoint {path} has trained: pass --epochs {done} or more")]
    TooFewEpochs {
        path: std::path::PathBuf,
        given: usize,
        done: usize,
    },
    #[error("the checkpoint {path} has finished its {epochs} epochs: pass --epochs N with N > {epochs} to train on")]
    Finished { path: std::path::PathBuf, epochs: usize },
    #[error(
        "the training data differs from that of the checkpoint {path} (CRC-32 {found:08x}, the checkpoint's \
         {stored:08x}): resume with the same --data-dir, --train-examples and --validation"
    )]
    OtherData {
        path: std::path::PathBuf,
        found: u32,
        stored: u32,
    },
    #[error("the checkpoint {path} is damaged: {problem}")]
    Damaged { path: std::path::PathBuf, problem: String },
}

impl Error {
    /// What most likely made a run with learning rate `lr` and L2 decay `l2` diverge.
    pub fn divergence_hint(lr: f32, l2: f32) -> String {
        let shrink = lr * l2;
        if shrink >= 0.5 {
            // Each step multiplies the weights by (1 - lr·l2) before the gradient: at 1 and
            // beyond they flip sign and grow.
            format!(
                "--l2 {l2} with --lr {lr} multiplies the weights by {:.3} at every step, which \
                 cannot settle: lower --l2 to well below 1/lr (e.g. {})",
                1.0 - shrink,
                0.01 / lr
            )
        } else {
            format!(
                "try a smaller --lr, e.g. {}; if a small lr diverges too, look at --init (uniform \
                 and normal draw large weights) and at --loss (mse with sigmoid saturates)",
                lr / 10.0
            )
        }
    }

    /// True when standard output's reader has gone away (a closed pipe).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// The flag a list of layer widths came from, so that messages use the syntax of the command
/// that was run: `train --layers 784,128,10`, `bench --networks 784-128-10,784-64-10`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WidthsFlag {
    Layers,
    Networks,
}

impl WidthsFlag {
    /// A valid value of the flag, for messages.
    pub fn example(self) -> &'static str {
        match self {
            WidthsFlag::Layers => "784,128,10",
            WidthsFlag::Networks => "784-128-10 (several: 784-128-10,784-64-10)",
        }
    }
}

impl fmt::Display for WidthsFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WidthsFlag::Layers => "--layers",
            WidthsFlag::Networks => "--networks",
        })
    }
}

/// A setting that cannot describe a trainable run.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("{flag} '{text}' is not a list of widths: write them like {}", .flag.example())]
    BadLayers { flag: WidthsFlag, text: String },
    #[error(
        "{flag} {layers} needs at least two widths: the input and the classes, e.g. {}",
        .flag.example()
    )]
    TooFewLayers { flag: WidthsFlag, layers: String },
    #[error("{flag} {layers} has a layer of width 0 (position {position}): every layer needs at least one unit")]
    ZeroWidth {
        flag: WidthsFlag,
        layers: String,
        position: usize,
    },
    #[error(
        "{flag} {layers} starts with {inputs} inputs but the data has {features} features per example: \
         make the first width {features}"
    )]
    InputMismatch {
        flag: WidthsFlag,
        layers: String,
        inputs: usize,
        features: usize,
    },
    #[error(
        "{flag} {layers} ends with {outputs} outputs but the data has {classes} classes: \
         make the last width {classes}"
    )]
    OutputMismatch {
        flag: WidthsFlag,
        layers: String,
        outputs: usize,
        classes: usize,
    },
    #[error("{flag} {layers} has more parameters than this machine can address: make the layers narrower")]
    TooManyParameters { flag: WidthsFlag, layers: String },
    #[error("the {what} of this run need more bytes than this machine can address")]
    Unaddressable { what: &'static str },
    #[error(
        "this run needs {} of memory but {} is free ({limited_by}); the largest part is the {largest} \
         ({}): use a smaller {fix}",
        human_bytes(*.needed), human_bytes(*.available), human_bytes(*.largest_bytes)
    )]
    OutOfMemory {
        needed: u64,
        available: u64,
        limited_by: &'static str,
        largest: &'static str,
        largest_bytes: u64,
        fix: String,
    },
    #[error("--batch-size must be at least 1")]
    ZeroBatch,
    #[error(
        "--batch-size {batch} is larger than the training set ({examples} examples): \
         use at most {examples} (that is full-batch gradient descent)"
    )]
    BatchTooLarge { batch: usize, examples: usize },
    #[error("--lr must be a positive number, got {0}")]
    BadLearningRate(f32),
    #[error("--lr-decay must be in (0, 1], got {0}")]
    BadDecay(f32),
    #[error("--lr-decay-every must be at least 1 epoch")]
    ZeroDecayEvery,
    #[error("--l2 must be zero or positive, got {0}")]
    BadL2(f32),
    #[error(
        "--l2 {l2} with --lr {lr} multiplies the weights by 1 - lr·l2 = {} at every step, so \
         training cannot converge: use an --l2 well below 2/lr = {} (typically 1e-4 to 1e-2)",
        1.0 - .lr * .l2, 2.0 / .lr
    )]
    L2TooLarge { l2: f32, lr: f32 },
    #[error("{flag} must be in [0, 1) (a probability of dropping a unit), got {value}")]
    BadDropout { flag: &'static str, value: f32 },
    #[error("{flag} must be in [0, 1) (the weight of the past in an average), got {value}")]
    BadBeta { flag: &'static str, value: f32 },
    #[error("--eps must be a positive number (it keeps the step finite where √s is 0), got {0}")]
    BadEps(f32),
    #[error("--weight-decay must be zero or positive, got {0}")]
    BadWeightDecay(f32),
    #[error("{flag} applies to --optimizer {users}, not to --optimizer {optimizer}: drop it, or choose one of those")]
    UnusedOptimizerFlag {
        flag: &'static str,
        optimizer: crate::optim::OptimizerKind,
        users: String,
    },
    #[error("--warmup-epochs {warmup} is not shorter than the run (--epochs {epochs}): warm up for fewer epochs")]
    WarmupTooLong { warmup: usize, epochs: usize },
    #[error("--lr-decay and --lr-decay-every shape --lr-schedule step, not --lr-schedule {schedule}: drop them, or use step")]
    DecayWithoutStep { schedule: crate::train::LrSchedule },
    #[error("--epochs must be at least 1")]
    ZeroEpochs,
    #[error("--train-examples must be at least 1")]
    ZeroTrainExamples,
    #[error("--threads must be at least 1")]
    ZeroThreads,
    #[error(
        "--validation {requested} leaves no training data: the training set has {examples} examples, \
         hold out fewer"
    )]
    ValidationTooLarge { requested: usize, examples: usize },
    #[error("--dataset xor has its own 4 examples: --validation and --data-dir do not apply to it")]
    XorOptions,
    #[error("--save-every must be at least 1 epoch")]
    ZeroSaveEvery,
    #[error("--confusion needs a test set: leave out --test-examples 0")]
    ConfusionWithoutTest,
    #[error(
        "the checkpoint's optimiser state is {found} ({buffers}), which does not fit --optimizer {expected}: \
         resume with the checkpoint's own optimiser"
    )]
    OptimizerStateMismatch {
        found: String,
        buffers: String,
        expected: String,
    },
}

/// A fault of the GPU path, naming the adapter, kernel or buffer involved.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found: install a Vulkan driver (on Debian/Ubuntu without a GPU: \
         `apt-get install mesa-vulkan-drivers libvulkan1` for the lavapipe software driver; \
         with a GPU: its vendor's driver), or run with --device cpu"
    )]
    NoAdapter,
    #[error("could not open the GPU '{adapter}': {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("the GPU rejected kernel '{kernel}': {message}")]
    Kernel { kernel: String, message: String },
    #[error(
        "buffer '{buffer}' needs {needed} bytes but '{adapter}' allows at most {limit} bytes per buffer \
         binding: {hint}"
    )]
    BufferTooLarge {
        buffer: String,
        needed: u64,
        limit: u64,
        adapter: String,
        hint: String,
    },
    #[error("the GPU ran out of memory allocating '{buffer}' ({bytes} bytes): {message}")]
    OutOfMemory {
        buffer: String,
        bytes: u64,
        message: String,
    },
    #[error("GPU error while {context}: {message}")]
    Device { context: String, message: String },
    #[error("the GPU device was lost while {context}: {message}")]
    Lost { context: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
