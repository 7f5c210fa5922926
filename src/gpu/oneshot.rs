//! Each kernel run once on host data, with the signature of its CPU twin in `cpu::ops`: what the
//! parity tests compare, op by op. Every output buffer is filled with NaN before the kernel
//! runs, so an element the kernel fails to write shows up as NaN, never as a stale right answer.
//! The updates work in place: their buffers end in NaN guards, which must come back untouched.
//!
//! A kernel that reads a training step's values (an update's lr and bias corrections, a dropout
//! mask's step) reads them from a one-step run table, through a batch-table entry marked as a
//! training batch, as in training.

use super::context::GpuContext;
use super::kernels::gather::{GatherBindings, GatherParams};
use super::kernels::matmul::{MatmulBindings, MatmulOp, MatmulParams, MatmulVariant};
use super::kernels::output_loss::{OutputLossBindings, OutputLossParams, METRICS_PER_BATCH};
use super::kernels::update::{self, UpdateBuffers, UpdateParams};
use super::kernels::{params_buffer, BatchBinding, BatchEntry, BatchTable, Kernels};
use crate::data::Standardization;
use crate::dropout::Dropout;
use crate::error::GpuError;
use crate::network::{Activation, LayerShape, Loss, Output};
use crate::optim::{Optimizer, OptimizerKind, StepConstants, UpdateConstants};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use wgpu::BufferUsages as U;

/// Floats placed before a layer's weights in the parameter buffer, so the kernels' use of
/// `weight_offset` is tested too. NaN: reading them by mistake poisons the result. A multiple
/// of 4, as a vec4 variant needs ([`MatmulVariant::fits`]).
const WEIGHT_PREFIX: usize = 4;

/// NaN floats after the padding of each buffer an update works on in place: one whole vec4, so
/// that a kernel that writes a vector past the parameters changes them.
const GUARD: usize = 4;

/// A dropout mask as a training step applies it: dropout layer `layer` (0: the input, l ≥ 1:
/// hidden layer l's output) of `dropout`, at step `step`.
#[derive(Clone, Copy, Debug)]
pub struct MaskAt {
    pub dropout: Dropout,
    pub step: u32,
    pub layer: usize,
}

/// Group 1 of a one-shot run: its one batch (rows `start ..` of the order), and for a training
/// batch the step it reads and the run's dropout.
#[derive(Clone, Copy)]
struct OneBatch {
    start: usize,
    rows: usize,
    training: Option<(StepConstants, Dropout)>,
}

impl OneBatch {
    /// An evaluation batch: no step, no dropout.
    fn rows(rows: usize) -> OneBatch {
        OneBatch {
            start: 0,
            rows,
            training: None,
        }
    }

    /// A training batch of `rows` whose masks are `mask`'s.
    fn masked(rows: usize, mask: Option<MaskAt>) -> OneBatch {
        let step = |m: MaskAt| StepConstants {
            step: m.step,
            ..StepConstants::default()
        };
        OneBatch {
            training: mask.map(|m| (step(m), m.dropout)),
            ..OneBatch::rows(rows)
        }
    }

    /// A training step with `step`'s constants and no dropout.
    fn step(step: StepConstants) -> OneBatch {
        OneBatch {
            training: Some((step, Dropout::NONE)),
            ..OneBatch::rows(0)
        }
    }
}

/// What an update kernel leaves: the parameters and the state buffers.
#[derive(Clone, Debug)]
pub struct Updated {
    pub params: Vec<f32>,
    /// In the order of [`Optimizer::state_names`].
    pub state: Vec<Vec<f32>>,
}

/// The kernels on an open device, ready to run one at a time.
pub struct KernelRunner {
    pub ctx: GpuContext,
    pub kernels: Kernels,
    /// What computes the matmuls.
    pub variant: MatmulVariant,
    /// Times each kernel is dispatched per call (1 for tests; more to time it, see [`KernelRunner::timed`]).
    repeats: AtomicU32,
    /// Seconds (as f64 bits) the last call's dispatches took on the device, submit to completion.
    last_seconds: AtomicU64,
}

/// Result of [`KernelRunner::output_loss`].
#[derive(Clone, Debug)]
pub struct OutputLossResult {
    /// `dz` (rows × classes), NaN where the kernel did not write (everywhere when no grad).
    pub grad: Vec<f32>,
    pub loss_sum: f32,
    pub correct: u32,
}

impl KernelRunner {
    pub fn new() -> Result<KernelRunner, GpuError> {
        KernelRunner::with_matmul_variant(MatmulVariant::DEFAULT)
    }

    /// A runner whose matmuls are computed by `variant`.
    pub fn with_matmul_variant(variant: MatmulVariant) -> Result<KernelRunner, GpuError> {
        KernelRunner::with_context(GpuContext::new()?, variant)
    }

    /// A runner on an open device whose matmuls are computed by `variant`.
    pub fn with_context(ctx: GpuContext, variant: MatmulVariant) -> Result<KernelRunner, GpuError> {
        let kernels = Kernels::with_matmul_variant(&ctx, variant)?;
        Ok(KernelRunner {
            ctx,
            kernels,
            variant,
            repeats: AtomicU32::new(1),
            last_seconds: AtomicU64::new(0),
        })
    }

    /// Runs every kernel once on tiny inputs: drivers that compile shaders at first use (lavapipe
    /// does) compile them here, so start-up cost is measured once and not charged to an epoch.
    pub fn warm_up(&self) -> Result<(), GpuError> {
        let one = [0.5f32; 4];
        self.gather_batch(&[1, 2, 3, 4], 4, &[0])?;
        self.matmul_forward(&one, &one, &one[..2], 2, Some(Activation::Relu))?;
        self.matmul_backward_input(&one, &one, &one, 2, 2, Activation::Relu)?;
        self.matmul_backward_weights(&one, &one, 2, 2, 2)?;
        self.output_loss(Output::Softmax, Loss::Ce, &one, &[0, 1], 2, true)?;
        let k = Optimizer::SGD.update_constants(&Optimizer::SGD.step_constants(0.1, 1), 0.0, 2);
        for &kind in <OptimizerKind as clap::ValueEnum>::value_variants() {
            let state = vec![&one[..]; Optimizer::new(kind).state_buffers()];
            self.update(kind, &one, &one, &state, &k)?;
        }
        Ok(())
    }

    /// A storage buffer holding `data`, readable back.
    fn storage<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer, GpuError> {
        self.ctx.storage_with(label, data, U::COPY_SRC)
    }

    /// A storage buffer of `len` NaNs, readable back: an output.
    fn poisoned(&self, label: &str, len: usize) -> Result<wgpu::Buffer, GpuError> {
        self.storage(label, &vec![f32::NAN; len])
    }

    /// What a binding the kernel does not read is bound to.
    fn unused(&self) -> Result<wgpu::Buffer, GpuError> {
        self.ctx.buffer("unused", 16, U::STORAGE)
    }

    /// A buffer an update kernel updates in place: `values` padded with zeros as the backend
    /// pads them ([`update::padded_len`]), then [`GUARD`] NaNs.
    fn in_place(&self, label: &str, values: &[f32]) -> Result<wgpu::Buffer, GpuError> {
        let mut padded = update::padded(values);
        padded.extend([f32::NAN; GUARD]);
        self.storage(label, &padded)
    }

    /// Reads back an [`in_place`](KernelRunner::in_place) buffer of `len` values; an error if
    /// `kernel` left the padding anything but zeros or wrote over the guard.
    fn read_in_place(&self, kernel: &str, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, GpuError> {
        let mut values: Vec<f32> = self.ctx.read(buffer, &format!("reading what {kernel} updated"))?;
        let padded = update::padded_len(len);
        let fault = if values[len..padded].iter().any(|v| v.to_bits() != 0) {
            Some(format!("it left the padding after its {len} values non-zero"))
        } else if values[padded..].iter().any(|v| !v.is_nan()) {
            Some(format!("it wrote past the end of its {len} values and their padding"))
        } else {
            None
        };
        if let Some(fault) = fault {
            return Err(GpuError::Device {
                context: format!("running {kernel}"),
                message: format!("{fault}: {:?}", &values[len..]),
            });
        }
        values.truncate(len);
        Ok(values)
    }

    /// Records `record` (the kernel's dispatch) for `batch`, `repeats` times in one pass, submits
    /// it and waits.
    fn run(
        &self,
        kernel: &str,
        batch: OneBatch,
        record: impl Fn(&mut wgpu::ComputePass<'_>, BatchBinding),
    ) -> Result<(), GpuError> {
        let (entry, step, dropout) = match batch.training {
            Some((step, dropout)) => (BatchEntry::training(0, batch.start, batch.rows, 0), step, dropout),
            None => (
                BatchEntry::evaluation(batch.start, batch.rows, 0),
                StepConstants::default(),
                Dropout::NONE,
            ),
        };
        let table = BatchTable::new(&self.ctx, &self.kernels, &[entry], 1, &dropout)?;
        table.write_steps(&self.ctx, &[step]);
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(kernel) });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel),
                timestamp_writes: None,
            });
            for _ in 0..self.repeats.load(Ordering::Relaxed) {
                record(&mut pass, table.entry(0));
            }
        }
        // Everything above was uploaded at creation: wait for it, so the timing covers the kernel.
        self.ctx.wait(kernel)?;
        let started = std::time::Instant::now();
        self.ctx.submit(encoder.finish());
        self.ctx.wait(kernel)?;
        self.last_seconds
            .store(started.elapsed().as_secs_f64().to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Runs `call` with every kernel dispatched `repeats` times back to back, and returns the
    /// device seconds per dispatch (for benchmarks: one submit, so launch overhead is amortised
    /// as in training).
    pub fn timed<T>(&self, repeats: u32, call: impl FnOnce(&Self) -> Result<T, GpuError>) -> Result<f64, GpuError> {
        self.repeats.store(repeats.max(1), Ordering::Relaxed);
        let result = call(self);
        self.repeats.store(1, Ordering::Relaxed);
        result?;
        Ok(f64::from_bits(self.last_seconds.load(Ordering::Relaxed)) / repeats.max(1) as f64)
    }

    /// `gather_batch`: x (index.len() × features) = images[index] / 255.
    pub fn gather_batch(&self, images: &[u8], features: usize, index: &[u32]) -> Result<Vec<f32>, GpuError> {
        self.gather_batch_with(images, features, index, None, None)
    }

    /// `gather_batch` standardised with `standardize` (as `cpu::ops::gather_batch`), and with
    /// `dropout`'s input mask at step `step` applied (as `cpu::ops::dropout_forward` then does in
    /// a training step); the rows are the batch's rows 0 ...
    pub fn gather_batch_with(
        &self,
        images: &[u8],
        features: usize,
        index: &[u32],
        standardize: Option<&Standardization>,
        dropout: Option<(Dropout, u32)>,
    ) -> Result<Vec<f32>, GpuError> {
        let rows = index.len();
        let images = self.storage("images", &super::pack_bytes(images))?;
        let order = self.storage("order", index)?;
        let statistics = match standardize {
            Some(s) => [&s.mean[..], &s.inv_std[..]].concat(),
            // Never read: NaN.
            None => vec![f32::NAN; 2 * features],
        };
        let statistics = self.storage("statistics", &statistics)?;
        let x = self.poisoned("x", rows * features)?;
        let params = GatherParams::new(features, standardize.is_some());
        let params = params_buffer(&self.ctx, "gather params", &params)?;
        let gather = &self.kernels.gather;
        let bindings = GatherBindings {
            images: &images,
            order: &order,
            statistics: &statistics,
            x: &x,
            params: &params,
        };
        let group = gather.bind(&self.ctx, "gather_batch", &bindings);
        let mask = dropout.map(|(dropout, step)| MaskAt {
            dropout,
            step,
            layer: 0,
        });
        self.run("gather_batch", OneBatch::masked(rows, mask), |pass, batch| {
            gather.record(pass, &group, batch, rows, features)
        })?;
        self.ctx.read(&x, "reading x")
    }

    /// Parameters laid out as the trainer does: NaN prefix, then `weight` (k × n), then `bias`
    /// (n); and where they sit.
    fn layer_parameters(&self, weight: &[f32], bias: &[f32]) -> Result<(wgpu::Buffer, LayerShape), GpuError> {
        let mut parameters = vec![f32::NAN; WEIGHT_PREFIX];
        parameters.extend_from_slice(weight);
        parameters.extend_from_slice(bias);
        let n = bias.len();
        let shape = LayerShape {
            inputs: weight.len() / n,
            outputs: n,
            weight_offset: WEIGHT_PREFIX,
            bias_offset: WEIGHT_PREFIX + weight.len(),
        };
        Ok((self.storage("parameters", &parameters)?, shape))
    }

    /// Runs matmul `op` through a layer of `shape` on a batch of `rows`, bound by `bindings`.
    fn run_matmul(
        &self,
        op: MatmulOp,
        bindings: &MatmulBindings,
        batch: OneBatch,
        shape: &LayerShape,
    ) -> Result<(), GpuError> {
        assert!(
            self.variant.fits(op, shape),
            "matmul variant {} cannot compute {shape:?}",
            self.variant.name
        );
        let matmul = &self.kernels.matmul;
        let kernel = op.entry_point();
        let group = matmul.bind(&self.ctx, kernel, bindings);
        self.run(kernel, batch, |pass, binding| {
            matmul.record(pass, self.variant, op, &group, binding, batch.rows, shape)
        })
    }

    /// `matmul_forward` (+ `activation_forward` when `activation` is Some):
    /// out (rows × n) = f(inp (rows × k) · weight (k × n) + bias (n)).
    pub fn matmul_forward(
        &self,
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
        rows: usize,
        activation: Option<Activation>,
    ) -> Result<Vec<f32>, GpuError> {
        self.matmul_forward_with(inp, weight, bias, rows, activation, None)
    }

    /// `matmul_forward` as a training step runs it for a hidden layer whose output is dropped
    /// by `mask` (then as `cpu::ops::dropout_forward`).
    pub fn matmul_forward_with(
        &self,
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
        rows: usize,
        activation: Option<Activation>,
        mask: Option<MaskAt>,
    ) -> Result<Vec<f32>, GpuError> {
        let (weights, shape) = self.layer_parameters(weight, bias)?;
        let layer = mask.map_or(0, |m| m.layer);
        let params = MatmulParams::new(&shape, activation).with_dropout_layer(layer);
        let params = params_buffer(&self.ctx, "matmul params", &params)?;
        let inp = self.storage("inp", inp)?;
        let out = self.poisoned("out", rows * shape.outputs)?;
        let bindings = MatmulBindings {
            weights: &weights,
            left: &inp,
            right: &self.unused()?,
            out: &out,
            params: &params,
        };
        self.run_matmul(MatmulOp::Forward, &bindings, OneBatch::masked(rows, mask), &shape)?;
        self.ctx.read(&out, "reading out")
    }

    /// `matmul_backward_input` + `activation_backward`:
    /// dinp (rows × k) = (dout (rows × n) · weightᵀ) ⊙ f'(a_prev), a_prev: rows × k.
    pub fn matmul_backward_input(
        &self,
        dout: &[f32],
        weight: &[f32],
        a_prev: &[f32],
        rows: usize,
        n: usize,
        activation: Activation,
    ) -> Result<Vec<f32>, GpuError> {
        self.matmul_backward_input_with(dout, weight, a_prev, rows, n, activation, None)
    }

    /// `matmul_backward_input` through an activation that `mask` dropped (then as
    /// `cpu::ops::dropout_activation_backward`): `a_prev` holds the dropped activations ã.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_backward_input_with(
        &self,
        dout: &[f32],
        weight: &[f32],
        a_prev: &[f32],
        rows: usize,
        n: usize,
        activation: Activation,
        mask: Option<MaskAt>,
    ) -> Result<Vec<f32>, GpuError> {
        let (weights, shape) = self.layer_parameters(weight, &vec![0.0; n])?;
        let layer = mask.map_or(0, |m| m.layer);
        let params = MatmulParams::new(&shape, Some(activation)).with_dropout_layer(layer);
        let params = params_buffer(&self.ctx, "matmul params", &params)?;
        let dout = self.storage("dout", dout)?;
        let a_prev = self.storage("a_prev", a_prev)?;
        let dinp = self.poisoned("dinp", rows * shape.inputs)?;
        let bindings = MatmulBindings {
            weights: &weights,
            left: &dout,
            right: &a_prev,
            out: &dinp,
            params: &params,
        };
        self.run_matmul(MatmulOp::BackwardInput, &bindings, OneBatch::masked(rows, mask), &shape)?;
        self.ctx.read(&dinp, "reading dinp")
    }

    /// `matmul_backward_weights`: (dweight (k × n) = inpᵀ · dout, dbias (n) = Σ_rows dout),
    /// written into a NaN-filled gradient buffer at the trainer's layout.
    pub fn matmul_backward_weights(
        &self,
        dout: &[f32],
        inp: &[f32],
        rows: usize,
        k_in: usize,
        n: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
        let shape = LayerShape {
            inputs: k_in,
            outputs: n,
            weight_offset: WEIGHT_PREFIX,
            bias_offset: WEIGHT_PREFIX + k_in * n,
        };
        let gradients = self.poisoned("gradients", shape.bias_offset + n)?;
        let params = params_buffer(&self.ctx, "matmul params", &MatmulParams::new(&shape, None))?;
        let dout = self.storage("dout", dout)?;
        let inp = self.storage("inp", inp)?;
        let bindings = MatmulBindings {
            weights: &self.unused()?,
            left: &inp,
            right: &dout,
            out: &gradients,
            params: &params,
        };
        self.run_matmul(MatmulOp::BackwardWeights, &bindings, OneBatch::rows(rows), &shape)?;
        let all: Vec<f32> = self.ctx.read(&gradients, "reading the gradients")?;
        Ok((
            all[shape.weight_offset..shape.bias_offset].to_vec(),
            all[shape.bias_offset..].to_vec(),
        ))
    }

    /// `output_loss` over every row of `logits` (rows × classes), labels one per row.
    pub fn output_loss(
        &self,
        output: Output,
        loss: Loss,
        logits: &[f32],
        labels: &[u8],
        classes: usize,
        with_grad: bool,
    ) -> Result<OutputLossResult, GpuError> {
        let rows = labels.len();
        let logits = self.storage("logits", logits)?;
        let labels = self.storage("labels", &super::pack_bytes(labels))?;
        let order = self.storage("order", &(0..rows as u32).collect::<Vec<_>>())?;
        let dz = self.poisoned("dz", rows * classes)?;
        let metrics = self.poisoned("metrics", METRICS_PER_BATCH as usize)?;
        let params = OutputLossParams::new(classes, output, loss, with_grad);
        let params = params_buffer(&self.ctx, "output_loss params", &params)?;
        let output_loss = &self.kernels.output_loss;
        let bindings = OutputLossBindings {
            logits: &logits,
            labels: &labels,
            order: &order,
            dz: &dz,
            metrics: &metrics,
            params: &params,
        };
        let group = output_loss.bind(&self.ctx, "output_loss", &bindings);
        self.run("output_loss", OneBatch::rows(rows), |pass, batch| {
            output_loss.record(pass, &group, batch)
        })?;
        let metrics: Vec<f32> = self.ctx.read(&metrics, "reading metrics")?;
        Ok(OutputLossResult {
            grad: self.ctx.read(&dz, "reading dz")?,
            loss_sum: metrics[0],
            correct: metrics[1] as u32,
        })
    }

    /// `sgd_update`: params - lr·(grads + λ·params [weights only]).
    pub fn sgd_update(
        &self,
        params: &[f32],
        grads: &[f32],
        lr: f32,
        l2: f32,
        weight_count: usize,
    ) -> Result<Vec<f32>, GpuError> {
        let sgd = Optimizer::SGD;
        let k = sgd.update_constants(&sgd.step_constants(lr, 1), l2, weight_count);
        Ok(self.update(OptimizerKind::Sgd, params, grads, &[], &k)?.params)
    }

    /// `momentum_update`: (params, velocity) after one step.
    pub fn momentum_update(
        &self,
        params: &[f32],
        grads: &[f32],
        velocity: &[f32],
        k: &UpdateConstants,
    ) -> Result<Updated, GpuError> {
        self.update(OptimizerKind::Momentum, params, grads, &[velocity], k)
    }

    /// `rmsprop_update`: (params, square average) after one step.
    pub fn rmsprop_update(
        &self,
        params: &[f32],
        grads: &[f32],
        square_avg: &[f32],
        k: &UpdateConstants,
    ) -> Result<Updated, GpuError> {
        self.update(OptimizerKind::Rmsprop, params, grads, &[square_avg], k)
    }

    /// `adam_update`: (params, m, v) after one step.
    pub fn adam_update(
        &self,
        params: &[f32],
        grads: &[f32],
        m: &[f32],
        v: &[f32],
        k: &UpdateConstants,
    ) -> Result<Updated, GpuError> {
        self.update(OptimizerKind::Adam, params, grads, &[m, v], k)
    }

    /// `adamw_update`: (params, m, v) after one step.
    pub fn adamw_update(
        &self,
        params: &[f32],
        grads: &[f32],
        m: &[f32],
        v: &[f32],
        k: &UpdateConstants,
    ) -> Result<Updated, GpuError> {
        self.update(OptimizerKind::Adamw, params, grads, &[m, v], k)
    }

    /// `kind`'s update kernel, once, on the whole of `params` with `state` (one buffer per
    /// state name): the run's constants of `k` in its params, the step's (lr, bias corrections)
    /// in the step table, as in training.
    pub fn update(
        &self,
        kind: OptimizerKind,
        params: &[f32],
        grads: &[f32],
        state: &[&[f32]],
        k: &UpdateConstants,
    ) -> Result<Updated, GpuError> {
        let total = params.len();
        let names = Optimizer::new(kind).state_names();
        assert_eq!(state.len(), names.len(), "{kind} keeps {names:?}");
        let parameters = self.in_place("parameters", params)?;
        let gradients = self.storage("gradients", &update::padded(grads))?;
        let state_buffers = names
            .iter()
            .zip(state)
            .map(|(name, values)| self.in_place(name, values))
            .collect::<Result<Vec<_>, _>>()?;
        let update_params = params_buffer(&self.ctx, "update params", &UpdateParams::new(k, total))?;
        let buffers = UpdateBuffers {
            parameters: &parameters,
            gradients: &gradients,
            state: &state_buffers,
            params: &update_params,
        };
        let group = self.kernels.bind_update(&self.ctx, kind, &buffers);
        let step = StepConstants {
            lr: k.lr,
            bias1: k.bias1,
            bias2: k.bias2,
            step: 0,
        };
        let kernel = format!("{kind}_update");
        self.run(&kernel, OneBatch::step(step), |pass, batch| {
            self.kernels.record_update(kind, pass, &group, batch, total)
        })?;
        Ok(Updated {
            params: self.read_in_place(&kernel, &parameters, total)?,
            state: state_buffers
                .iter()
                .map(|buffer| self.read_in_place(&kernel, buffer, total))
                .collect::<Result<_, _>>()?,
        })
    }
}
