//! Each kernel run once on host data, with the signature of its CPU twin in `cpu::ops`: what the
//! parity tests compare, op by op. Every output buffer is filled with NaN before the kernel
//! runs, so an element the kernel fails to write shows up as NaN, never as a stale right answer.

use super::context::GpuContext;
use super::kernels::gather::{GatherBindings, GatherParams};
use super::kernels::matmul::{MatmulBindings, MatmulOp, MatmulParams, MatmulVariant};
use super::kernels::output_loss::{OutputLossBindings, OutputLossParams, METRICS_PER_BATCH};
use super::kernels::sgd_update::{SgdUpdateBindings, SgdUpdateParams};
use super::kernels::{params_buffer, BatchBinding, BatchTable, Kernels};
use crate::error::GpuError;
use crate::network::{Activation, LayerShape, Loss, Output};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use wgpu::BufferUsages as U;

/// Floats placed before a layer's weights in the parameter buffer, so the kernels' use of
/// `weight_offset` is tested too. NaN: reading them by mistake poisons the result.
const WEIGHT_PREFIX: usize = 3;

/// The kernels on an open device, ready to run one at a time.
pub struct KernelRunner {
    pub ctx: GpuContext,
    pub kernels: Kernels,
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
        KernelRunner::with_matmul_variant(MatmulVariant::TILED_64)
    }

    /// A runner whose matmuls are computed by `variant`.
    pub fn with_matmul_variant(variant: MatmulVariant) -> Result<KernelRunner, GpuError> {
        let ctx = GpuContext::new()?;
        let kernels = Kernels::with_matmul_variant(&ctx, variant)?;
        Ok(KernelRunner {
            ctx,
            kernels,
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
        self.sgd_update(&one, &one, 0.1, 0.0, 2)?;
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

    /// Records `record` (the kernel's dispatch) for one batch of `rows` rows starting at
    /// `start`, `repeats` times in one pass, submits it and waits.
    fn run(
        &self,
        kernel: &str,
        (start, rows): (usize, usize),
        record: impl Fn(&mut wgpu::ComputePass<'_>, BatchBinding),
    ) -> Result<(), GpuError> {
        let table = BatchTable::new(&self.ctx, &self.kernels, &[(start, rows)])?;
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
        self.ctx.queue.submit([encoder.finish()]);
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
        let rows = index.len();
        let images = self.storage("images", &super::pack_bytes(images))?;
        let order = self.storage("order", index)?;
        let x = self.poisoned("x", rows * features)?;
        let params = params_buffer(&self.ctx, "gather params", &GatherParams::new(features))?;
        let gather = &self.kernels.gather;
        let bindings = GatherBindings {
            images: &images,
            order: &order,
            x: &x,
            params: &params,
        };
        let group = gather.bind(&self.ctx, "gather_batch", &bindings);
        self.run("gather_batch", (0, rows), |pass, batch| {
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
        rows: usize,
        shape: &LayerShape,
    ) -> Result<(), GpuError> {
        let matmul = &self.kernels.matmul;
        let kernel = op.entry_point();
        let group = matmul.bind(&self.ctx, kernel, bindings);
        self.run(kernel, (0, rows), |pass, batch| {
            matmul.record(pass, op, &group, batch, rows, shape)
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
        let (weights, shape) = self.layer_parameters(weight, bias)?;
        let params = params_buffer(&self.ctx, "matmul params", &MatmulParams::new(&shape, activation))?;
        let inp = self.storage("inp", inp)?;
        let out = self.poisoned("out", rows * shape.outputs)?;
        let bindings = MatmulBindings {
            weights: &weights,
            left: &inp,
            right: &self.unused()?,
            out: &out,
            params: &params,
        };
        self.run_matmul(MatmulOp::Forward, &bindings, rows, &shape)?;
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
        let (weights, shape) = self.layer_parameters(weight, &vec![0.0; n])?;
        let params = params_buffer(&self.ctx, "matmul params", &MatmulParams::new(&shape, Some(activation)))?;
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
        self.run_matmul(MatmulOp::BackwardInput, &bindings, rows, &shape)?;
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
        self.run_matmul(MatmulOp::BackwardWeights, &bindings, rows, &shape)?;
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
        self.run("output_loss", (0, rows), |pass, batch| {
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
        let total = params.len();
        let parameters = self.storage("parameters", params)?;
        let gradients = self.storage("gradients", grads)?;
        let update = SgdUpdateParams {
            lr,
            l2,
            weight_count: weight_count as u32,
            total: total as u32,
        };
        let update = params_buffer(&self.ctx, "sgd_update params", &update)?;
        let sgd_update = &self.kernels.sgd_update;
        let bindings = SgdUpdateBindings {
            parameters: &parameters,
            gradients: &gradients,
            params: &update,
        };
        let group = sgd_update.bind(&self.ctx, "sgd_update", &bindings);
        self.run("sgd_update", (0, 0), |pass, batch| {
            sgd_update.record(pass, &group, batch, total)
        })?;
        self.ctx.read(&parameters, "reading the parameters")
    }
}
