//! The interface between the trainer and a device.
//!
//! The trainer (`train.rs`) is written once. A device implements two traits:
//! - [`BatchOps`]: the ops one batch is made of. [`forward_backward`] and [`forward`] below call
//!   them in textbook order. The CPU runs each op at once; the GPU records it as a dispatch.
//! - [`Backend`]: a run's life: upload once, then per epoch a permutation, the batches, the
//!   evaluations, and one read of the metrics.
//!
//! Tensors of a batch, for a network of `L` layers (row-major, one example per row):
//! - `A_0 = X`, the batch's images scaled to [0,1]            (rows × widths[0])
//! - `A_l = f(Z_l)`, `Z_l = A_{l-1}·W_l + b_l`, for l < L     (rows × widths[l])
//! - `Z_L`, the logits; the output non-linearity lives in the loss op
//! - `dZ_l = ∂loss/∂Z_l`, and the gradients `dW_l`, `db_l` in the flat gradient buffer.

use crate::data::{Dataset, Standardization};
use crate::dropout::Dropout;
use crate::error::Result;
use crate::network::NetworkSpec;
use crate::optim::{Optimizer, StepConstants};
use serde::Serialize;

/// The ops of one batch. `layer` counts from 0 (the layer fed by the input).
pub trait BatchOps {
    /// `X ← images[permutation[start..start+rows]] / 255`, and the matching labels.
    fn gather_batch(&mut self);
    /// `A_l = f(A_{l-1}·W_l + b_l)`; for the last layer, the logits `Z_L = A_{L-1}·W_L + b_L`.
    fn dense_forward(&mut self, layer: usize);
    /// From the logits: the output non-linearity, the batch's summed loss and correct count
    /// (kept per batch) and, when `with_grad`, `dZ_L = ∂(mean loss)/∂Z_L`.
    fn output_loss(&mut self, with_grad: bool);
    /// `dW_l = A_{l-1}ᵀ·dZ_l` and `db_l = Σ_rows dZ_l`.
    fn dense_backward_weights(&mut self, layer: usize);
    /// `dZ_{l-1} = (dZ_l·W_lᵀ) ⊙ f'(A_{l-1})`, for `layer ≥ 1`.
    fn dense_backward_input(&mut self, layer: usize);
}

/// Forward and backward pass of one batch: leaves `∂(mean loss)/∂θ` in the gradient buffer.
/// (The update, `θ ← θ - lr·(∂θ + λ·W)` or another optimiser's, is the backend's
/// `train_batch`, after this.)
pub fn forward_backward(ops: &mut impl BatchOps, layers: usize) {
    ops.gather_batch();
    for layer in 0..layers {
        ops.dense_forward(layer);
    }
    ops.output_loss(true);
    for layer in (0..layers).rev() {
        ops.dense_backward_weights(layer);
        if layer > 0 {
            ops.dense_backward_input(layer);
        }
    }
}

/// Forward pass only, for evaluation: loss and correct count, no gradients.
pub fn forward(ops: &mut impl BatchOps, layers: usize) {
    ops.gather_batch();
    for layer in 0..layers {
        ops.dense_forward(layer);
    }
    ops.output_loss(false);
}

/// What one run trains on: the network, the data, and the batching.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    pub spec: &'a NetworkSpec,
    pub train: &'a Dataset,
    pub validation: Option<&'a Dataset>,
    pub test: Option<&'a Dataset>,
    pub batch_size: usize,
    /// L2 weight decay λ: the update adds λ·W to the weights' gradient (never to biases).
    pub l2: f32,
    /// The update rule.
    pub optimizer: Optimizer,
    /// Inverted dropout in training (never in evaluation).
    pub dropout: Dropout,
    /// `--normalize standardize`: the training set's per-pixel statistics; None: x = p/255.
    pub standardize: Option<&'a Standardization>,
}

impl<'a> Workload<'a> {
    /// Training only, no held-out data, plain SGD without L2 or dropout: what the benchmarks
    /// time.
    pub fn training(spec: &'a NetworkSpec, train: &'a Dataset, batch_size: usize) -> Workload<'a> {
        Workload {
            spec,
            train,
            validation: None,
            test: None,
            batch_size,
            l2: 0.0,
            optimizer: Optimizer::SGD,
            dropout: Dropout::NONE,
            standardize: None,
        }
    }

    /// Training batches per epoch; the last one is smaller when the batch size does not divide.
    pub fn batches(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    /// Rows per evaluation chunk: at least 1000 so that evaluation runs on large matmuls.
    pub fn eval_rows(&self) -> usize {
        let largest = [self.validation, self.test].iter().flatten().map(|d| d.len()).max();
        self.batch_size.max(1000).min(largest.unwrap_or(0)).max(1)
    }

    /// Rows of the largest batch either pass runs: what the activation buffers are sized for.
    pub fn max_rows(&self) -> usize {
        self.batch_size.max(self.eval_rows())
    }
}

/// The held-out sets a backend can evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Validation,
    Test,
}

/// Loss and accuracy of one evaluated split.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SplitMetrics {
    pub loss_sum: f64,
    pub correct: u64,
    pub examples: u64,
}

impl SplitMetrics {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.examples as f64
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.examples as f64
    }
}

/// How much work a GPU epoch took to drive: the figures that show it ran without stalls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GpuCounters {
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Command buffers submitted to the queue.
    pub submits: u64,
    /// Buffers mapped for reading back to the host.
    pub readbacks: u64,
}

/// What one epoch measured, read from the device once at its end.
#[derive(Clone, Debug, Default)]
pub struct EpochMetrics {
    /// Per training batch trained this epoch, in order: the sum of its examples' losses
    /// (non-finite once training diverged).
    pub batch_loss: Vec<f32>,
    /// Per training batch: how many of its examples were classified right.
    pub batch_correct: Vec<u32>,
    pub validation: Option<SplitMetrics>,
    pub test: Option<SplitMetrics>,
    /// GPU only.
    pub counters: Option<GpuCounters>,
}

/// A future that stays on its thread (wgpu's futures on the web are not `Send`).
pub type LocalFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Called after each training step with the batch's index; `Break` stops the epoch after it.
pub type AfterBatch<'a> = dyn FnMut(usize) -> std::ops::ControlFlow<()> + Send + 'a;

/// Trains `batches` one at a time on `backend`, calling `after_batch` after each: the default
/// [`Backend::train_batches`]. Returns how many were trained.
pub fn step_batches<B: Backend + ?Sized>(
    backend: &mut B,
    batches: std::ops::Range<usize>,
    after_batch: &mut AfterBatch,
) -> Result<usize> {
    let mut trained = 0;
    for batch in batches {
        backend.train_batch(batch)?;
        trained += 1;
        if after_batch(batch).is_break() {
            break;
        }
    }
    Ok(trained)
}

/// The optimiser's state beyond the parameters, as a checkpoint stores it: named flat buffers of
/// the parameter layout (momentum, Adam's moments, …) and a step count. Plain SGD has none.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// "sgd".
    pub name: String,
    /// Update steps taken (what bias-corrected optimisers need); 0 for SGD, which needs none.
    pub step: u64,
    /// Each buffer `layout.total` long, in the order of [`crate::network::ParamLayout`].
    pub buffers: Vec<(String, Vec<f32>)>,
}

impl OptimizerState {
    /// Plain SGD: no state.
    pub fn sgd() -> OptimizerState {
        OptimizerState {
            name: "sgd".into(),
            step: 0,
            buffers: Vec::new(),
        }
    }

    /// Checks that this is the state of `optimizer` for `total` parameters: its name, and its
    /// buffers' names (in order) and lengths.
    pub fn check_fits(&self, optimizer: &Optimizer, total: usize) -> Result<()> {
        let names = optimizer.state_names();
        let fits = self.name == optimizer.kind.to_string()
            && self.buffers.len() == names.len()
            && self
                .buffers
                .iter()
                .zip(names)
                .all(|((name, values), want)| name == want && values.len() == total);
        if fits {
            return Ok(());
        }
        Err(crate::error::ConfigError::OptimizerStateMismatch {
            found: self.name.clone(),
            buffers: self
                .buffers
                .iter()
                .map(|(name, _)| name.clone())
                .collect::<Vec<_>>()
                .join(", "),
            expected: optimizer.kind.to_string(),
        }
        .into())
    }
}

/// A device that trains: the CPU reference or the GPU.
pub trait Backend {
    /// "cpu" or "gpu".
    fn device(&self) -> &'static str;
    /// What runs the ops: the GPU adapter's name, or the CPU and its threads.
    fn adapter(&self) -> String;
    /// The GPU's matmul variants, per layer and op, as a checkpoint records them
    /// ([`crate::gpu::kernels::matmul::MatmulPlan::names`]); None on the CPU.
    fn matmul_variants(&self) -> Option<Vec<[String; 3]>> {
        None
    }
    /// How the GPU's matmul variants were chosen, for reports: "tuned in 0.81 s: layer 0: forward
    /// direct, …"; None on the CPU.
    fn kernel_choice(&self) -> Option<String> {
        None
    }
    /// Starts an epoch: the order of the training examples, and the constants of each of its
    /// steps (`steps[batch]`: learning rate, Adam's bias corrections, the dropout step counter).
    fn begin_epoch(&mut self, permutation: &[u32], steps: &[StepConstants]) -> Result<()>;
    /// One optimiser step on training batch `batch` (examples `permutation[batch·size ..]`).
    fn train_batch(&mut self, batch: usize) -> Result<()>;
    /// SGD steps on `batches`, in order; returns how many were trained. On a backend that
    /// [`steps_each_batch`](Backend::steps_each_batch), `after_batch` is called after each step
    /// and a `Break` from it ends the epoch there; other backends train every batch and never
    /// call it. A backend may override this to set up once for all the batches.
    fn train_batches(&mut self, batches: std::ops::Range<usize>, after_batch: &mut AfterBatch) -> Result<usize> {
        step_batches(self, batches, after_batch)
    }
    /// True when a batch is trained by the time `train_batch` returns (the CPU); false when the
    /// batches only run at `end_epoch` (the GPU records the epoch and submits it once).
    fn steps_each_batch(&self) -> bool {
        true
    }
    /// Evaluates a held-out split with the current parameters.
    fn evaluate(&mut self, split: Split) -> Result<()>;
    /// Ends the epoch: waits for the device and reads the epoch's metrics (the one readback).
    fn end_epoch(&mut self) -> Result<EpochMetrics>;
    /// [`Backend::end_epoch`] for a caller that must not block (the web, where the browser maps
    /// the buffer while the page waits). A backend that finishes its epoch synchronously (the
    /// CPU) needs nothing more than this default.
    fn end_epoch_async(&mut self) -> LocalFuture<'_, Result<EpochMetrics>> {
        Box::pin(std::future::ready(self.end_epoch()))
    }
    /// The current parameters, in the flat layout of [`crate::network::ParamLayout`].
    fn parameters(&mut self) -> Result<Vec<f32>>;
    /// The logits `Z_L` of every example of a held-out split with the current parameters,
    /// examples × classes row-major, computed on this device (forward pass only): what eval,
    /// predict and the confusion matrix read. Empty when the workload has no such split. Not
    /// while an epoch is in progress.
    fn logits(&mut self, split: Split) -> Result<Vec<f32>>;
    /// The optimiser's state (its buffers, read back from the device, and the steps taken), for a
    /// checkpoint.
    fn optimizer_state(&mut self) -> Result<OptimizerState>;
    /// Restores the optimiser's state from a checkpoint; refuses the state of another optimiser
    /// or network ([`OptimizerState::check_fits`]).
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()>;
}
