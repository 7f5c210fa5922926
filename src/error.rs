//! Every way a run can fail, as types. The CLI prints the one sentence each carries and exits 1.

use crate::data::DataError;
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
         (lr {lr}); try a smaller --lr, e.g. {suggested}"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        batches: usize,
        value: String,
        lr: f32,
        suggested: f32,
    },
    #[error("cannot start {threads} CPU threads: {message}")]
    Threads { threads: usize, message: String },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
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

/// A setting that cannot describe a trainable run.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("--layers '{text}' is not a list of widths: write them like 784,128,10")]
    BadLayers { text: String },
    #[error("--layers {layers} needs at least two widths: the input and the classes, e.g. 784,128,10")]
    TooFewLayers { layers: String },
    #[error("--layers {layers} has a layer of width 0 (position {position}): every layer needs at least one unit")]
    ZeroWidth { layers: String, position: usize },
    #[error(
        "--layers {layers} starts with {inputs} inputs but the data has {features} features per example: \
         make the first width {features}"
    )]
    InputMismatch {
        layers: String,
        inputs: usize,
        features: usize,
    },
    #[error(
        "--layers {layers} ends with {outputs} outputs but the data has {classes} classes: \
         make the last width {classes}"
    )]
    OutputMismatch {
        layers: String,
        outputs: usize,
        classes: usize,
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
        "the checkpoint holds the state of optimizer '{name}' ({buffers} buffers), but this gpu-mlp \
         trains with plain SGD only"
    )]
    OptimizerState { name: String, buffers: usize },
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
