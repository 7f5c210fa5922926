//! Each kernel run once on host data, with the signature of its CPU twin in `cpu::ops`: what the
//! parity tests compare, op by op. Every output buffer is filled with NaN before the kernel
//! runs, so an element the kernel fails to write shows up as NaN, never as a stale right answer.

use super::context::GpuContext;
use super::kernels::{
    activation_code, linear_grid, tile_grid, BatchEntry, GatherDims, Kernels, LayerDims, OutputDims, UpdateParams,
};
use crate::error::GpuError;
use crate::network::{Activation, Loss, Output};
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
        let ctx = GpuContext::new()?;
        let kernels = Kernels::new(&ctx)?;
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

    fn storage<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer, GpuError> {
        self.ctx.storage_with(label, data, U::COPY_SRC)
    }

    fn poisoned(&self, label: &str, len: usize) -> Result<wgpu::Buffer, GpuError> {
        self.storage(label, &vec![f32::NAN; len])
    }

    fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> Result<wgpu::Buffer, GpuError> {
        let buffer = self
            .ctx
            .buffer(label, std::mem::size_of::<T>() as u64, U::STORAGE | U::COPY_DST)?;
        self.ctx.queue.write_buffer(&buffer, 0, bytemuck::bytes_of(value));
        Ok(buffer)
    }

    /// Binds `buffers`, dispatches `grid` workgroups of `pipeline` for a batch of `rows` rows
    /// starting at `start`, and waits.
    fn run(
        &self,
        kernel: &str,
        pipeline: &wgpu::ComputePipeline,
        layout: &wgpu::BindGroupLayout,
        buffers: &[&wgpu::Buffer],
        (start, rows): (usize, usize),
        (x, y): (u32, u32),
    ) -> Result<(), GpuError> {
        let entry = BatchEntry {
            start: start as u32,
            rows: rows as u32,
            slot: 0,
            _pad: 0,
        };
        let table = self.storage("batch table", &[entry])?;
        let batch_group = self.kernels.bind_batch_table(&self.ctx, &table);
        let group = self.kernels.bind(&self.ctx, kernel, layout, buffers);
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(kernel) });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.set_bind_group(1, &batch_group, &[0]);
            for _ in 0..self.repeats.load(Ordering::Relaxed) {
                pass.dispatch_workgroups(x, y, 1);
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

    fn max_groups(&self) -> u32 {
        self.ctx.limits.max_compute_workgroups_per_dimension
    }

    /// `gather_batch`: x (index.len() × features) = images[index] / 255.
    pub fn gather_batch(&self, images: &[u8], features: usize, index: &[u32]) -> Result<Vec<f32>, GpuError> {
        let rows = index.len();
        let images = self.storage("images", &super::pack_bytes(images))?;
        let order = self.storage("order", index)?;
        let x = self.poisoned("x", rows * features)?;
        let dims = self.uniform(
            "dims",
            &GatherDims {
                features: features as u32,
                _pad: [0; 3],
            },
        )?;
        let grid = linear_grid((rows * features) as u64, self.max_groups());
        let k = &self.kernels;
        self.run(
            "gather_batch",
            &k.gather_batch,
            &k.gather_layout,
            &[&images, &order, &x, &dims],
            (0, rows),
            grid,
        )?;
        self.ctx.read(&x, "reading x")
    }

    /// Parameters laid out as the trainer does: NaN prefix, then `weight`, then `bias`.
    fn layer_params(&self, weight: &[f32], bias: &[f32]) -> Result<(wgpu::Buffer, LayerDims), GpuError> {
        let mut params = vec![f32::NAN; WEIGHT_PREFIX];
        params.extend_from_slice(weight);
        params.extend_from_slice(bias);
        let n = bias.len();
        let dims = LayerDims {
            inputs: (weight.len() / n) as u32,
            outputs: n as u32,
            weight_offset: WEIGHT_PREFIX as u32,
            bias_offset: (WEIGHT_PREFIX + weight.len()) as u32,
            activation: 0,
            _pad: [0; 3],
        };
        Ok((self.storage("parameters", &params)?, dims))
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
        let (params, mut dims) = self.layer_params(weight, bias)?;
        dims.activation = activation_code(activation);
        let n = bias.len();
        let inp = self.storage("inp", inp)?;
        let out = self.poisoned("out", rows * n)?;
        let unused = self.ctx.buffer("unused", 16, U::STORAGE)?;
        let dims = self.uniform("dims", &dims)?;
        let k = &self.kernels;
        let buffers = [&params, &inp, &unused, &out, &dims];
        self.run(
            "matmul_forward",
            &k.matmul_forward,
            &k.matmul_layout,
            &buffers,
            (0, rows),
            tile_grid(rows, n),
        )?;
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
        let (params, mut dims) = self.layer_params(weight, &vec![0.0; n])?;
        dims.activation = activation_code(Some(activation));
        let k_in = weight.len() / n;
        let dout = self.storage("dout", dout)?;
        let a_prev = self.storage("a_prev", a_prev)?;
        let dinp = self.poisoned("dinp", rows * k_in)?;
        let dims = self.uniform("dims", &dims)?;
        let k = &self.kernels;
        let buffers = [&params, &dout, &a_prev, &dinp, &dims];
        let grid = tile_grid(rows, k_in);
        self.run(
            "matmul_backward_input",
            &k.matmul_backward_input,
            &k.matmul_layout,
            &buffers,
            (0, rows),
            grid,
        )?;
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
        let total = WEIGHT_PREFIX + k_in * n + n;
        let grads = self.poisoned("grads", total)?;
        let dims = LayerDims {
            inputs: k_in as u32,
            outputs: n as u32,
            weight_offset: WEIGHT_PREFIX as u32,
            bias_offset: (WEIGHT_PREFIX + k_in * n) as u32,
            activation: 0,
            _pad: [0; 3],
        };
        let dout = self.storage("dout", dout)?;
        let inp = self.storage("inp", inp)?;
        let unused = self.ctx.buffer("unused", 16, U::STORAGE)?;
        let dims = self.uniform("dims", &dims)?;
        let k = &self.kernels;
        let buffers = [&unused, &inp, &dout, &grads, &dims];
        let grid = tile_grid(k_in + 1, n);
        self.run(
            "matmul_backward_weights",
            &k.matmul_backward_weights,
            &k.matmul_layout,
            &buffers,
            (0, rows),
            grid,
        )?;
        let all: Vec<f32> = self.ctx.read(&grads, "reading grads")?;
        let weights = all[WEIGHT_PREFIX..WEIGHT_PREFIX + k_in * n].to_vec();
        Ok((weights, all[WEIGHT_PREFIX + k_in * n..].to_vec()))
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
        let metrics = self.poisoned("metrics", 2)?;
        let dims = self.uniform("dims", &OutputDims::new(classes, output, loss, with_grad))?;
        let k = &self.kernels;
        let buffers = [&logits, &labels, &order, &dz, &metrics, &dims];
        self.run(
            "output_loss",
            &k.output_loss,
            &k.output_layout,
            &buffers,
            (0, rows),
            (1, 1),
        )?;
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
        let p = self.storage("params", params)?;
        let g = self.storage("grads", grads)?;
        let update = UpdateParams {
            lr,
            l2,
            weight_count: weight_count as u32,
            total: params.len() as u32,
        };
        let update = self.uniform("update", &update)?;
        let grid = linear_grid(params.len() as u64, self.max_groups());
        let k = &self.kernels;
        self.run(
            "sgd_update",
            &k.sgd_update,
            &k.update_layout,
            &[&p, &g, &update],
            (0, 0),
            grid,
        )?;
        self.ctx.read(&p, "reading params")
    }
}
