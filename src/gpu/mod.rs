//! The GPU backend: the same training loop, with every op a WGSL compute dispatch.
//!
//! The dataset (as u8), the parameters, the gradients and every activation live on the GPU for
//! the whole run. An epoch is recorded into one compute pass (each batch finds its rows in the
//! batch table through a dynamic offset), submitted once, and read back once: the per-batch
//! losses and correct counts, written by the GPU into a metrics buffer, come back together at
//! the end of the epoch.

pub mod context;
pub mod kernels;
mod logits;
pub mod oneshot;

use crate::backend::{self, AfterBatch, Backend, BatchOps, EpochMetrics, GpuCounters, Split, SplitMetrics, Workload};
use crate::data::Dataset;
use crate::error::{GpuError, Result};
use crate::network::{NetworkSpec, ParamLayout};
use crate::optim::StepConstants;
use context::GpuContext;
use kernels::{
    activation_code, linear_grid, tile_grid, BatchEntry, GatherDims, Kernels, LayerDims, OutputDims, UpdateParams,
};
use wgpu::BufferUsages as U;

/// A split's data on the GPU: pixels and labels packed four bytes to a u32, and the example order.
struct SplitBuffers {
    /// Training: the epoch's permutation. Evaluation: 0, 1, 2, …
    order: wgpu::Buffer,
    gather_group: wgpu::BindGroup,
    output_group: wgpu::BindGroup,
    /// Index of its first batch in the batch table (and of its first slot in the metrics).
    first_entry: usize,
    batches: usize,
    /// Rows per batch (the last may be short).
    batch_size: usize,
    examples: usize,
}

/// Packs bytes four to a u32 (little-endian, as `byte_at` in the shaders unpacks them).
fn pack_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut word = [0u8; 4];
            word[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(word)
        })
        .collect()
}

/// The GPU trainer.
pub struct GpuBackend {
    ctx: GpuContext,
    kernels: Kernels,
    spec: NetworkSpec,
    layout: ParamLayout,
    l2: f32,
    params: wgpu::Buffer,
    metrics: wgpu::Buffer,
    metrics_staging: wgpu::Buffer,
    update_uniform: wgpu::Buffer,
    batch_group: wgpu::BindGroup,
    /// Bytes between batch-table entries (the device's storage offset alignment).
    entry_stride: u64,
    forward_groups: Vec<wgpu::BindGroup>,
    backward_weights_groups: Vec<wgpu::BindGroup>,
    /// None for layer 0: nothing flows back into the data.
    backward_input_groups: Vec<Option<wgpu::BindGroup>>,
    update_group: wgpu::BindGroup,
    train: SplitBuffers,
    validation: Option<SplitBuffers>,
    test: Option<SplitBuffers>,
    /// The last layer's activations: the logits (see `logits.rs`).
    logits: wgpu::Buffer,
    /// The epoch being recorded.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    counters: GpuCounters,
    /// The training batches recorded this epoch: `first_batch ..` and how many.
    first_batch: usize,
    recorded_batches: usize,
}

/// Rows of each batch of a split of `examples` cut into batches of `size`.
fn batch_rows(examples: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..examples.div_ceil(size)).map(move |b| (b * size, size.min(examples - b * size)))
}

impl GpuBackend {
    /// Opens the best adapter and uploads everything `work` needs, starting from `params`.
    pub fn new(work: Workload, params: &[f32]) -> Result<GpuBackend> {
        let ctx = GpuContext::new()?;
        GpuBackend::with_context(ctx, work, params)
    }

    /// Builds the backend on an open device.
    pub fn with_context(ctx: GpuContext, work: Workload, params: &[f32]) -> Result<GpuBackend> {
        // TODO(issue 9, GPU): the optimiser, dropout and standardisation kernels.
        if work.optimizer.kind != crate::optim::OptimizerKind::Sgd {
            return Err(GpuError::Unsupported(format!("--optimizer {}", work.optimizer.kind)).into());
        }
        if work.dropout.hidden > 0.0 || work.dropout.input > 0.0 {
            return Err(GpuError::Unsupported("dropout".into()).into());
        }
        if work.standardize.is_some() {
            return Err(GpuError::Unsupported("--normalize standardize".into()).into());
        }
        let kernels = Kernels::new(&ctx)?;
        let spec = work.spec.clone();
        let layout = spec.layout();
        assert_eq!(
            params.len(),
            layout.total,
            "parameter buffer does not match the network"
        );
        let max_rows = work.max_rows();
        let eval_rows = work.eval_rows();
        let layers = layout.layers.len();

        // The batch table: training batches, then validation chunks, then test chunks.
        let mut entries: Vec<(usize, usize)> = batch_rows(work.train.len(), work.batch_size).collect();
        let validation_first = entries.len();
        if let Some(v) = work.validation {
            entries.extend(batch_rows(v.len(), eval_rows));
        }
        let test_first = entries.len();
        if let Some(t) = work.test {
            entries.extend(batch_rows(t.len(), eval_rows));
        }
        let entry_stride = (ctx.limits.min_storage_buffer_offset_alignment as u64).max(16);
        let mut table = vec![0u8; entries.len() * entry_stride as usize];
        for (slot, &(start, rows)) in entries.iter().enumerate() {
            let entry = BatchEntry {
                start: start as u32,
                rows: rows as u32,
                slot: slot as u32,
                _pad: 0,
            };
            let at = slot * entry_stride as usize;
            table[at..at + std::mem::size_of::<BatchEntry>()].copy_from_slice(bytemuck::bytes_of(&entry));
        }
        if table.len() as u64 > ctx.limits.max_buffer_size {
            return Err(GpuError::BufferTooLarge {
                buffer: "batch table".into(),
                needed: table.len() as u64,
                limit: ctx.limits.max_buffer_size,
                adapter: ctx.info.name.clone(),
                hint: "use a larger --batch-size".into(),
            }
            .into());
        }
        let table = {
            let buffer = ctx.buffer("batch table", table.len() as u64, U::STORAGE | U::COPY_DST)?;
            ctx.queue.write_buffer(&buffer, 0, &table);
            buffer
        };
        let batch_group = kernels.bind_batch_table(&ctx, &table);

        let params_buffer = ctx.storage_with("parameters", params, U::COPY_SRC)?;
        let grads = ctx.storage_with("gradients", &vec![0.0f32; layout.total], U::COPY_SRC)?;
        // acts[0] = X, acts[l+1] = A_l; deltas[l] = dZ_{l-1} for l ≥ 1 (deltas[0] is unused).
        let mut acts = Vec::new();
        let mut deltas = Vec::new();
        for (l, &width) in spec.widths.iter().enumerate() {
            let bytes = (max_rows * width * 4) as u64;
            ctx.check_binding_size(&format!("activations of layer {l}"), bytes)?;
            acts.push(ctx.buffer(
                &format!("activations {l}"),
                bytes,
                U::STORAGE | U::COPY_SRC | U::COPY_DST,
            )?);
            deltas.push(ctx.buffer(&format!("deltas {l}"), bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST)?);
        }
        let metrics = ctx.buffer(
            "metrics",
            (entries.len() * 8) as u64,
            U::STORAGE | U::COPY_SRC | U::COPY_DST,
        )?;
        let metrics_staging = ctx.buffer("metrics readback", metrics.size(), U::MAP_READ | U::COPY_DST)?;
        let unused = ctx.buffer("unused binding", 16, U::STORAGE)?;

        let uniform = |label: &str, bytes: &[u8]| -> Result<wgpu::Buffer, GpuError> {
            let buffer = ctx.buffer(label, bytes.len() as u64, U::STORAGE | U::COPY_DST)?;
            ctx.queue.write_buffer(&buffer, 0, bytes);
            Ok(buffer)
        };
        let mut forward_groups = Vec::new();
        let mut backward_weights_groups = Vec::new();
        let mut backward_input_groups = Vec::new();
        for (l, shape) in layout.layers.iter().enumerate() {
            let hidden = (l + 1 < layers).then_some(spec.activation);
            let dims = |activation| LayerDims {
                inputs: shape.inputs as u32,
                outputs: shape.outputs as u32,
                weight_offset: shape.weight_offset as u32,
                bias_offset: shape.bias_offset as u32,
                activation,
                _pad: [0; 3],
            };
            let forward_dims = uniform(
                &format!("layer {l} forward"),
                bytemuck::bytes_of(&dims(activation_code(hidden))),
            )?;
            // Backward through layer l multiplies by the derivative of layer l-1's activation.
            let backward_dims = uniform(
                &format!("layer {l} backward"),
                bytemuck::bytes_of(&dims(activation_code(Some(spec.activation)))),
            )?;
            let bind = |label: &str, buffers: &[&wgpu::Buffer]| {
                kernels.bind(&ctx, &format!("{label} layer {l}"), &kernels.matmul_layout, buffers)
            };
            forward_groups.push(bind(
                "matmul_forward",
                &[&params_buffer, &acts[l], &unused, &acts[l + 1], &forward_dims],
            ));
            backward_weights_groups.push(bind(
                "matmul_backward_weights",
                &[&unused, &acts[l], &deltas[l + 1], &grads, &backward_dims],
            ));
            backward_input_groups.push((l > 0).then(|| {
                bind(
                    "matmul_backward_input",
                    &[&params_buffer, &deltas[l + 1], &acts[l], &deltas[l], &backward_dims],
                )
            }));
        }

        let update_uniform = ctx.buffer("update parameters", 16, U::STORAGE | U::COPY_DST)?;
        let update_group = kernels.bind(
            &ctx,
            "sgd_update",
            &kernels.update_layout,
            &[&params_buffer, &grads, &update_uniform],
        );

        let classes = spec.widths[layers];
        let gather_dims = uniform(
            "gather dims",
            bytemuck::bytes_of(&GatherDims {
                features: spec.widths[0] as u32,
                _pad: [0; 3],
            }),
        )?;
        let eval_order: Vec<u32> = (0..entries.iter().map(|e| e.0 + e.1).max().unwrap_or(1) as u32).collect();
        let make_split =
            |name: &str, data: &Dataset, order: wgpu::Buffer, first_entry: usize, batches: usize, with_grad: bool| {
                ctx.check_binding_size(&format!("{name} images"), data.images.len() as u64)?;
                let images = ctx.storage_with(&format!("{name} images"), &pack_bytes(&data.images), U::empty())?;
                let labels = ctx.storage_with(&format!("{name} labels"), &pack_bytes(&data.labels), U::empty())?;
                let output_dims = OutputDims::new(classes, spec.output, spec.loss, with_grad);
                let output_dims = uniform(&format!("{name} output dims"), bytemuck::bytes_of(&output_dims))?;
                let gather_group = kernels.bind(
                    &ctx,
                    &format!("gather {name}"),
                    &kernels.gather_layout,
                    &[&images, &order, &acts[0], &gather_dims],
                );
                let output_group = kernels.bind(
                    &ctx,
                    &format!("output_loss {name}"),
                    &kernels.output_layout,
                    &[&acts[layers], &labels, &order, &deltas[layers], &metrics, &output_dims],
                );
                Ok::<_, GpuError>(SplitBuffers {
                    order,
                    gather_group,
                    output_group,
                    first_entry,
                    batches,
                    batch_size: if with_grad { work.batch_size } else { eval_rows },
                    examples: data.len(),
                })
            };
        let train_order = ctx.storage_with(
            "training order",
            &(0..work.train.len() as u32).collect::<Vec<_>>(),
            U::empty(),
        )?;
        let train = make_split("training", work.train, train_order, 0, validation_first, true)?;
        let validation = match work.validation {
            Some(v) => Some(make_split(
                "validation",
                v,
                ctx.storage_with("validation order", &eval_order, U::empty())?,
                validation_first,
                test_first - validation_first,
                false,
            )?),
            None => None,
        };
        let test = match work.test {
            Some(t) => Some(make_split(
                "test",
                t,
                ctx.storage_with("test order", &eval_order, U::empty())?,
                test_first,
                entries.len() - test_first,
                false,
            )?),
            None => None,
        };
        ctx.wait("uploading the data and parameters")?;
        Ok(GpuBackend {
            logits: acts[layers].clone(),
            kernels,
            spec,
            layout,
            l2: work.l2,
            params: params_buffer,
            metrics,
            metrics_staging,
            update_uniform,
            batch_group,
            entry_stride,
            forward_groups,
            backward_weights_groups,
            backward_input_groups,
            update_group,
            train,
            validation,
            test,
            pass: None,
            encoder: None,
            counters: GpuCounters::default(),
            first_batch: 0,
            recorded_batches: 0,
            ctx,
        })
    }

    /// The device this backend runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Records the ops of batch `entry` of `split` (forward only unless `train`).
    fn record_batch(&mut self, split: Split3, index: usize, train: bool) {
        let pass = self.pass.as_mut().expect("an epoch is being recorded");
        let data = match split {
            Split3::Train => &self.train,
            Split3::Validation => self.validation.as_ref().expect("validation data"),
            Split3::Test => self.test.as_ref().expect("test data"),
        };
        let entry = data.first_entry + index;
        let rows = (data.examples - index * data.batch_size).min(data.batch_size);
        let mut ops = GpuBatch {
            pass,
            kernels: &self.kernels,
            spec: &self.spec,
            layout: &self.layout,
            split: data,
            forward_groups: &self.forward_groups,
            backward_weights_groups: &self.backward_weights_groups,
            backward_input_groups: &self.backward_input_groups,
            batch_group: &self.batch_group,
            offset: (entry as u64 * self.entry_stride) as u32,
            rows,
            max_groups: self.ctx.limits.max_compute_workgroups_per_dimension,
            dispatches: 0,
        };
        let layers = self.layout.layers.len();
        if train {
            backend::forward_backward(&mut ops, layers);
            ops.update(&self.update_group);
        } else {
            backend::forward(&mut ops, layers);
        }
        self.counters.dispatches += ops.dispatches;
    }
}

#[derive(Clone, Copy)]
enum Split3 {
    Train,
    Validation,
    Test,
}

/// Records one batch's dispatches into the epoch's compute pass.
struct GpuBatch<'a> {
    pass: &'a mut wgpu::ComputePass<'static>,
    kernels: &'a Kernels,
    spec: &'a NetworkSpec,
    layout: &'a ParamLayout,
    split: &'a SplitBuffers,
    forward_groups: &'a [wgpu::BindGroup],
    backward_weights_groups: &'a [wgpu::BindGroup],
    backward_input_groups: &'a [Option<wgpu::BindGroup>],
    batch_group: &'a wgpu::BindGroup,
    /// This batch's entry in the batch table, in bytes.
    offset: u32,
    rows: usize,
    max_groups: u32,
    dispatches: u64,
}

impl GpuBatch<'_> {
    fn dispatch(&mut self, pipeline: &wgpu::ComputePipeline, group: &wgpu::BindGroup, (x, y): (u32, u32)) {
        self.pass.set_pipeline(pipeline);
        self.pass.set_bind_group(0, group, &[]);
        self.pass.set_bind_group(1, self.batch_group, &[self.offset]);
        self.pass.dispatch_workgroups(x, y, 1);
        self.dispatches += 1;
    }

    fn update(&mut self, group: &wgpu::BindGroup) {
        let grid = linear_grid(self.layout.total as u64, self.max_groups);
        let pipeline = &self.kernels.sgd_update;
        self.dispatch(pipeline, group, grid);
    }
}

impl BatchOps for GpuBatch<'_> {
    fn gather_batch(&mut self) {
        let grid = linear_grid((self.rows * self.spec.widths[0]) as u64, self.max_groups);
        self.dispatch(&self.kernels.gather_batch, &self.split.gather_group, grid);
    }

    fn dense_forward(&mut self, layer: usize) {
        let grid = tile_grid(self.rows, self.layout.layers[layer].outputs);
        self.dispatch(&self.kernels.matmul_forward, &self.forward_groups[layer], grid);
    }

    fn output_loss(&mut self, _with_grad: bool) {
        // Whether dz is written is part of the split's bind group (training splits write it).
        self.dispatch(&self.kernels.output_loss, &self.split.output_group, (1, 1));
    }

    fn dense_backward_weights(&mut self, layer: usize) {
        let shape = self.layout.layers[layer];
        let grid = tile_grid(shape.inputs + 1, shape.outputs);
        self.dispatch(
            &self.kernels.matmul_backward_weights,
            &self.backward_weights_groups[layer],
            grid,
        );
    }

    fn dense_backward_input(&mut self, layer: usize) {
        let grid = tile_grid(self.rows, self.layout.layers[layer].inputs);
        let group = self.backward_input_groups[layer].as_ref().expect("layer ≥ 1");
        self.dispatch(&self.kernels.matmul_backward_input, group, grid);
    }
}

impl Backend for GpuBackend {
    fn device(&self) -> &'static str {
        "gpu"
    }

    fn adapter(&self) -> String {
        self.ctx.adapter_name()
    }

    fn begin_epoch(&mut self, permutation: &[u32], steps: &[StepConstants]) -> Result<()> {
        // TODO(issue 9, GPU): a per-step table; until then one lr per epoch.
        let lr = steps[0].lr;
        if steps.iter().any(|s| s.lr != lr) {
            return Err(
                GpuError::Unsupported("a learning rate that changes within an epoch (warm-up, cosine)".into()).into(),
            );
        }
        self.ctx
            .queue
            .write_buffer(&self.train.order, 0, bytemuck::cast_slice(permutation));
        let update = UpdateParams {
            lr,
            l2: self.l2,
            weight_count: self.layout.weight_count as u32,
            total: self.layout.total as u32,
        };
        self.ctx
            .queue
            .write_buffer(&self.update_uniform, 0, bytemuck::bytes_of(&update));
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("epoch") });
        let pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("epoch"),
                timestamp_writes: None,
            })
            .forget_lifetime();
        self.encoder = Some(encoder);
        self.pass = Some(pass);
        self.counters = GpuCounters::default();
        self.recorded_batches = 0;
        Ok(())
    }

    fn train_batch(&mut self, batch: usize) -> Result<()> {
        if self.recorded_batches == 0 {
            self.first_batch = batch;
        }
        assert_eq!(
            batch,
            self.first_batch + self.recorded_batches,
            "batches are recorded in order"
        );
        self.record_batch(Split3::Train, batch, true);
        self.recorded_batches += 1;
        Ok(())
    }

    /// Records every batch: they run when the epoch is submitted, at `end_epoch`, so there is
    /// no point between them to report or stop at (`after_batch` is never called).
    fn train_batches(&mut self, batches: std::ops::Range<usize>, _after_batch: &mut AfterBatch) -> Result<usize> {
        let count = batches.len();
        batches.into_iter().try_for_each(|batch| self.train_batch(batch))?;
        Ok(count)
    }

    fn steps_each_batch(&self) -> bool {
        false
    }

    fn evaluate(&mut self, split: Split) -> Result<()> {
        let (which, data) = match split {
            Split::Validation => (Split3::Validation, &self.validation),
            Split::Test => (Split3::Test, &self.test),
        };
        let Some(data) = data else { return Ok(()) };
        for chunk in 0..data.batches {
            self.record_batch(which, chunk, false);
        }
        Ok(())
    }

    fn end_epoch(&mut self) -> Result<EpochMetrics> {
        drop(self.pass.take());
        let mut encoder = self.encoder.take().expect("an epoch is being recorded");
        encoder.copy_buffer_to_buffer(&self.metrics, 0, &self.metrics_staging, 0, self.metrics.size());
        self.ctx.queue.submit([encoder.finish()]);
        self.counters.submits += 1;
        let values: Vec<f32> = self
            .ctx
            .map_read(&self.metrics_staging, "reading the epoch's metrics")?;
        self.counters.readbacks += 1;
        let slot = |i: usize| (values[2 * i], values[2 * i + 1]);
        let trained = self.first_batch..self.first_batch + self.recorded_batches;
        let entry = |b: usize| self.train.first_entry + b;
        let mut metrics = EpochMetrics {
            batch_loss: trained.clone().map(|b| slot(entry(b)).0).collect(),
            batch_correct: trained.map(|b| slot(entry(b)).1 as u32).collect(),
            counters: Some(self.counters),
            ..EpochMetrics::default()
        };
        let split_metrics = |data: &SplitBuffers| {
            let mut m = SplitMetrics {
                examples: data.examples as u64,
                ..SplitMetrics::default()
            };
            for c in 0..data.batches {
                let (loss, correct) = slot(data.first_entry + c);
                m.loss_sum += loss as f64;
                m.correct += correct as u64;
            }
            m
        };
        metrics.validation = self.validation.as_ref().map(split_metrics);
        metrics.test = self.test.as_ref().map(split_metrics);
        Ok(metrics)
    }

    fn parameters(&mut self) -> Result<Vec<f32>> {
        Ok(self.ctx.read(&self.params, "reading the parameters back")?)
    }

    fn logits(&mut self, split: Split) -> Result<Vec<f32>> {
        self.split_logits(split)
    }
}
