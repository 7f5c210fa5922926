//! The GPU backend: the same training loop, with every op a WGSL compute dispatch.
//!
//! The dataset (as u8), the parameters, the gradients, the optimiser's state and every
//! activation live on the GPU for the whole run. An epoch uploads its permutation and its step
//! table (each step's lr, bias corrections and dropout counter), is recorded into one compute
//! pass (each batch finds its rows and its step through its batch-table entry, at a dynamic
//! offset), submitted once, and read back once: the per-batch losses and correct counts, written
//! by the GPU into a metrics buffer, come back together at the end of the epoch.

pub mod context;
pub mod kernels;
mod logits;
#[cfg(feature = "native")]
pub mod oneshot;
pub mod tune;

use crate::backend::{
    self, AfterBatch, Backend, BatchOps, EpochMetrics, GpuCounters, OptimizerState, Split, SplitMetrics, Workload,
};
use crate::data::{Dataset, Standardization};
use crate::error::{GpuError, Result};
use crate::network::{NetworkSpec, ParamLayout};
use crate::optim::{Optimizer, StepConstants};
use context::{GpuContext, SyncCounts};
use kernels::gather::{GatherBindings, GatherParams};
use kernels::matmul::{MatmulBindings, MatmulOp, MatmulParams, MatmulPlan, MatmulVariant};
use kernels::output_loss::{OutputLossBindings, OutputLossParams, METRICS_PER_BATCH};
use kernels::update::{self, UpdateBuffers, UpdateParams};
use kernels::{params_buffer, BatchBinding, BatchEntry, BatchTable, Kernels};
use wgpu::BufferUsages as U;

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

/// Natively, waits for `future`. Without `native` (the web) nothing may block: the caller is
/// told to await `twin`, the method's async counterpart, instead.
#[cfg(feature = "native")]
fn block_on<T>(future: impl std::future::Future<Output = Result<T>>, _twin: &str) -> Result<T> {
    pollster::block_on(future)
}

#[cfg(not(feature = "native"))]
fn block_on<T>(_future: impl std::future::Future<Output = Result<T>>, twin: &str) -> Result<T> {
    Err(GpuError::Device {
        context: "waiting for the GPU".into(),
        message: format!("blocking is not possible here: await {twin}"),
    }
    .into())
}

/// The GPU trainer.
pub struct GpuBackend {
    ctx: GpuContext,
    kernels: Kernels,
    /// Which variant computes each layer's matmuls, and how it was chosen.
    plan: MatmulPlan,
    plan_source: String,
    spec: NetworkSpec,
    layout: ParamLayout,
    batch_table: BatchTable,
    parameters: ParameterBuffers,
    metrics: MetricsBuffers,
    layers: Vec<LayerGroups>,
    update: UpdateStep,
    splits: Splits,
    /// The last layer's activations: the logits (see `logits.rs`).
    logits: wgpu::Buffer,
    /// The epoch being recorded.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    counters: GpuCounters,
    /// The context's submits, maps and waits when the epoch began.
    syncs_before: SyncCounts,
    /// The training batches recorded this epoch: `first_batch ..` and how many.
    first_batch: usize,
    recorded_batches: usize,
    /// The epoch's step constants (on the device in the step table), and the steps taken so far
    /// (t of the last recorded step), for a checkpoint.
    steps: Vec<StepConstants>,
    steps_taken: u64,
}

impl GpuBackend {
    /// Opens the best adapter and uploads everything `work` needs, starting from `params`.
    #[cfg(feature = "native")]
    pub fn new(work: Workload, params: &[f32]) -> Result<GpuBackend> {
        let ctx = GpuContext::new()?;
        GpuBackend::with_context(ctx, work, params)
    }

    /// Builds the backend on an open device, every matmul computed by the default variant.
    pub fn with_context(ctx: GpuContext, work: Workload, params: &[f32]) -> Result<GpuBackend> {
        let plan = MatmulPlan::uniform(MatmulVariant::DEFAULT, work.spec.layers());
        GpuBackend::with_plan(ctx, work, params, plan)
    }

    /// Builds the backend on an open device, each matmul computed by the variant `plan` names.
    /// A variant that does not fit a layer (vec4 operands on odd widths) leaves it to the default.
    pub fn with_plan(ctx: GpuContext, work: Workload, params: &[f32], plan: MatmulPlan) -> Result<GpuBackend> {
        let plan = plan.fitted(&work.spec.layout().layers);
        let kernels = Kernels::for_plan(&ctx, &plan)?;
        GpuBackend::with_kernels(ctx, kernels, work, params, plan)
    }

    /// Builds the backend on an open device with `kernels` compiled for it (they must hold
    /// every pipeline of `plan`: a tuned run reuses the kernels it timed).
    pub fn with_kernels(
        ctx: GpuContext,
        kernels: Kernels,
        work: Workload,
        params: &[f32],
        matmul_plan: MatmulPlan,
    ) -> Result<GpuBackend> {
        let spec = work.spec.clone();
        let layout = spec.layout();
        assert_eq!(
            params.len(),
            layout.total,
            "parameter buffer does not match the network"
        );
        let plan = BatchPlan::new(&work);
        let batch_table = BatchTable::new(&ctx, &kernels, &plan.entries, plan.train.batches, &work.dropout)?;
        let parameters = ParameterBuffers::new(&ctx, params)?;
        let activations = Activations::new(&ctx, &spec, work.max_rows())?;
        let metrics = MetricsBuffers::new(&ctx, plan.entries.len())?;
        let layers = LayerGroups::every_layer(&ctx, &kernels, &spec, &parameters, &activations)?;
        let update = UpdateStep::new(&ctx, &kernels, &parameters, &layout, &work)?;
        let shared = SplitShared::new(&ctx, &spec, work.standardize, &activations, &metrics)?;
        let splits = Splits::new(&ctx, &kernels, &shared, &work, &plan)?;
        ctx.wait("uploading the data and parameters")?;
        assert_eq!(
            matmul_plan.layers.len(),
            layout.layers.len(),
            "one plan entry per layer"
        );
        Ok(GpuBackend {
            kernels,
            plan: matmul_plan,
            plan_source: "default".into(),
            spec,
            layout,
            batch_table,
            parameters,
            metrics,
            layers,
            update,
            splits,
            logits: activations.logits().clone(),
            pass: None,
            encoder: None,
            counters: GpuCounters::default(),
            syncs_before: SyncCounts::default(),
            first_batch: 0,
            recorded_batches: 0,
            steps: Vec::new(),
            steps_taken: 0,
            ctx,
        })
    }

    /// Builds the backend with the plan and kernels of `tuned` (see [`tune::tune`]).
    pub fn tuned(ctx: GpuContext, tuned: tune::Tuned, work: Workload, params: &[f32]) -> Result<GpuBackend> {
        let report = tuned.report;
        let mut backend = GpuBackend::with_kernels(ctx, tuned.kernels, work, params, tuned.plan)?;
        backend.plan_source = report.describe();
        Ok(backend)
    }

    /// Which variant computes each layer's matmuls.
    pub fn plan(&self) -> &MatmulPlan {
        &self.plan
    }

    /// Records the ops of batch `index` of `part`: forward, backward and update for training,
    /// forward only for a held-out split.
    fn record_batch(&mut self, part: Part, index: usize) {
        let split = self.splits.get(part).expect("the split was uploaded");
        let entry = split.plan.first_entry + index;
        let rows = (split.plan.examples - index * split.plan.batch_size).min(split.plan.batch_size);
        let mut ops = GpuBatch {
            pass: self.pass.as_mut().expect("an epoch is being recorded"),
            kernels: &self.kernels,
            plan: &self.plan,
            spec: &self.spec,
            layout: &self.layout,
            split,
            layers: &self.layers,
            batch: self.batch_table.entry(entry),
            rows,
            dispatches: 0,
        };
        let layers = self.layout.layers.len();
        match part {
            Part::Training => {
                backend::forward_backward(&mut ops, layers);
                ops.update(&self.update);
                self.steps_taken = self.steps[index].step as u64 + 1;
            }
            Part::HeldOut(_) => backend::forward(&mut ops, layers),
        }
        self.counters.dispatches += ops.dispatches;
    }
}

/// The data a batch is recorded for.
#[derive(Clone, Copy)]
enum Part {
    Training,
    HeldOut(Split),
}

impl Part {
    /// How buffer labels and errors name it.
    fn name(self) -> &'static str {
        match self {
            Part::Training => "training",
            Part::HeldOut(Split::Validation) => "validation",
            Part::HeldOut(Split::Test) => "test",
        }
    }
}

/// Rows of each batch of a split of `examples` cut into batches of `size`.
fn batch_rows(examples: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..examples.div_ceil(size)).map(move |b| (b * size, size.min(examples - b * size)))
}

/// Where a split's batches sit in the batch table.
#[derive(Clone, Copy, Debug)]
struct SplitPlan {
    /// Index of its first batch in the batch table (and of its first slot in the metrics).
    first_entry: usize,
    batches: usize,
    /// Rows per batch (the last may be short).
    batch_size: usize,
    examples: usize,
}

/// The batch table's entries: training batches, then validation chunks, then test chunks.
struct BatchPlan {
    entries: Vec<BatchEntry>,
    train: SplitPlan,
    validation: Option<SplitPlan>,
    test: Option<SplitPlan>,
}

impl BatchPlan {
    fn new(work: &Workload) -> BatchPlan {
        let mut entries = Vec::new();
        let mut plan = |data: &Dataset, batch_size: usize, training: bool| {
            let first_entry = entries.len();
            let batches = batch_rows(data.len(), batch_size).enumerate();
            entries.extend(batches.map(|(b, (start, rows))| {
                let slot = first_entry + b;
                if training {
                    BatchEntry::training(b, start, rows, slot)
                } else {
                    BatchEntry::evaluation(start, rows, slot)
                }
            }));
            SplitPlan {
                first_entry,
                batches: entries.len() - first_entry,
                batch_size,
                examples: data.len(),
            }
        };
        let eval_rows = work.eval_rows();
        let train = plan(work.train, work.batch_size, true);
        let validation = work.validation.map(|v| plan(v, eval_rows, false));
        let test = work.test.map(|t| plan(t, eval_rows, false));
        BatchPlan {
            entries,
            train,
            validation,
            test,
        }
    }
}

/// The flat parameter buffer and the gradient buffer of the same layout.
struct ParameterBuffers {
    parameters: wgpu::Buffer,
    gradients: wgpu::Buffer,
}

impl ParameterBuffers {
    /// `initial`, and zero gradients, each padded with zeros to a whole number of vec4s for the
    /// update kernels ([`update::padded_len`]).
    fn new(ctx: &GpuContext, initial: &[f32]) -> Result<ParameterBuffers, GpuError> {
        Ok(ParameterBuffers {
            parameters: ctx.storage_with("parameters", &update::padded(initial), U::COPY_SRC)?,
            gradients: ctx.storage_with(
                "gradients",
                &vec![0.0f32; update::padded_len(initial.len())],
                U::COPY_SRC,
            )?,
        })
    }
}

/// Every layer's activations and their gradients, sized for the largest batch, numbered as in
/// [`crate::backend`]: `A_0 = X`, `A_l` the output of layer l (1-based), `dZ_l` its gradient.
struct Activations {
    /// `a[l] = A_l` (rows × widths[l]), for l in 0..=L.
    a: Vec<wgpu::Buffer>,
    /// `dz[l - 1] = dZ_l` (rows × widths[l]), for l in 1..=L: nothing flows back into X.
    dz: Vec<wgpu::Buffer>,
}

impl Activations {
    fn new(ctx: &GpuContext, spec: &NetworkSpec, max_rows: usize) -> Result<Activations, GpuError> {
        let usage = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let (mut a, mut dz) = (Vec::new(), Vec::new());
        for (l, &width) in spec.widths.iter().enumerate() {
            let bytes = (max_rows * width * 4) as u64;
            ctx.check_binding_size(&format!("activations of layer {l}"), bytes)?;
            a.push(ctx.buffer(&format!("activations {l}"), bytes, usage)?);
            if l > 0 {
                dz.push(ctx.buffer(&format!("deltas {l}"), bytes, usage)?);
            }
        }
        Ok(Activations { a, dz })
    }

    /// `dZ_l`, l ≥ 1.
    fn dz(&self, l: usize) -> &wgpu::Buffer {
        &self.dz[l - 1]
    }

    /// The logits `Z_L`: the last layer has no activation, so A_L holds them.
    fn logits(&self) -> &wgpu::Buffer {
        self.a.last().expect("at least one layer")
    }

    /// `dZ_L`, what `output_loss` writes.
    fn logits_gradient(&self) -> &wgpu::Buffer {
        self.dz.last().expect("at least one layer")
    }
}

/// The metrics buffer (per batch-table entry, [`METRICS_PER_BATCH`] floats: loss sum, correct
/// count) and its readback copy.
struct MetricsBuffers {
    buffer: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl MetricsBuffers {
    fn new(ctx: &GpuContext, entries: usize) -> Result<MetricsBuffers, GpuError> {
        let bytes = (entries * METRICS_PER_BATCH as usize * 4) as u64;
        let buffer = ctx.buffer("metrics", bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST)?;
        let staging = ctx.buffer("metrics readback", buffer.size(), U::MAP_READ | U::COPY_DST)?;
        Ok(MetricsBuffers { buffer, staging })
    }
}

/// The bind groups of one layer's three matmuls, made once: every batch binds the same buffers.
struct LayerGroups {
    forward: wgpu::BindGroup,
    backward_weights: wgpu::BindGroup,
    /// None for layer 0: nothing flows back into the data.
    backward_input: Option<wgpu::BindGroup>,
}

impl LayerGroups {
    fn every_layer(
        ctx: &GpuContext,
        kernels: &Kernels,
        spec: &NetworkSpec,
        parameters: &ParameterBuffers,
        activations: &Activations,
    ) -> Result<Vec<LayerGroups>, GpuError> {
        let layout = spec.layout();
        let unused = ctx.buffer("unused binding", 16, U::STORAGE)?;
        let matmul = &kernels.matmul;
        let mut groups = Vec::new();
        for (l, shape) in layout.layers.iter().enumerate() {
            let (a_in, a_out) = (&activations.a[l], &activations.a[l + 1]);
            let dz_out = activations.dz(l + 1);
            let hidden = (l + 1 < layout.layers.len()).then_some(spec.activation);
            // A hidden layer's output A_{l+1} (1-based) is dropout layer l + 1.
            let forward = MatmulParams::new(shape, hidden).with_dropout_layer(if hidden.is_some() { l + 1 } else { 0 });
            let forward_params = params_buffer(ctx, &format!("layer {l} forward params"), &forward)?;
            // Backward through layer l multiplies by the derivative of layer l-1's activation,
            // A_l (1-based), dropout layer l (for l = 0 there is no backward_input).
            let backward = MatmulParams::new(shape, Some(spec.activation)).with_dropout_layer(l);
            let backward_params = params_buffer(ctx, &format!("layer {l} backward params"), &backward)?;
            let forward = MatmulBindings {
                weights: &parameters.parameters,
                left: a_in,
                right: &unused,
                out: a_out,
                params: &forward_params,
            };
            let backward_weights = MatmulBindings {
                weights: &unused,
                left: a_in,
                right: dz_out,
                out: &parameters.gradients,
                params: &backward_params,
            };
            let backward_input = |dz_in| MatmulBindings {
                weights: &parameters.parameters,
                left: dz_out,
                right: a_in,
                out: dz_in,
                params: &backward_params,
            };
            groups.push(LayerGroups {
                forward: matmul.bind(ctx, &format!("matmul_forward layer {l}"), &forward),
                backward_weights: matmul.bind(ctx, &format!("matmul_backward_weights layer {l}"), &backward_weights),
                backward_input: (l > 0).then(|| {
                    let bindings = backward_input(activations.dz(l));
                    matmul.bind(ctx, &format!("matmul_backward_input layer {l}"), &bindings)
                }),
            });
        }
        Ok(groups)
    }
}

/// The optimiser's update: its rule, its state buffers (flat, the parameters' layout, named by
/// [`Optimizer::state_names`]), its parameters and its bind group. The step's lr and bias
/// corrections come from the step table.
struct UpdateStep {
    optimizer: Optimizer,
    state: Vec<wgpu::Buffer>,
    group: wgpu::BindGroup,
}

impl UpdateStep {
    fn new(
        ctx: &GpuContext,
        kernels: &Kernels,
        parameters: &ParameterBuffers,
        layout: &ParamLayout,
        work: &Workload,
    ) -> Result<UpdateStep, GpuError> {
        let optimizer = work.optimizer;
        let zeros = vec![0.0f32; update::padded_len(layout.total)];
        let state = optimizer
            .state_names()
            .iter()
            .map(|name| ctx.storage_with(&format!("optimiser state {name}"), &zeros, U::COPY_SRC))
            .collect::<Result<Vec<_>, _>>()?;
        // The run's constants; the step's own (lr, bias corrections) are read from the step table.
        let constants = optimizer.update_constants(&StepConstants::default(), work.l2, layout.weight_count);
        let params = params_buffer(ctx, "update params", &UpdateParams::new(&constants, layout.total))?;
        let buffers = UpdateBuffers {
            parameters: &parameters.parameters,
            gradients: &parameters.gradients,
            state: &state,
            params: &params,
        };
        let group = kernels.bind_update(ctx, optimizer.kind, &buffers);
        Ok(UpdateStep {
            optimizer,
            state,
            group,
        })
    }
}

/// What every split's first and last kernels (gather, output_loss) bind besides the split's own
/// data: X, the logits, dZ_L, the metrics, and the network's output and loss.
struct SplitShared<'a> {
    spec: &'a NetworkSpec,
    gather_params: wgpu::Buffer,
    /// The training set's statistics, means then 1/σ (with `--normalize standardize`; else
    /// unread zeros).
    statistics: wgpu::Buffer,
    activations: &'a Activations,
    metrics: &'a MetricsBuffers,
}

impl<'a> SplitShared<'a> {
    fn new(
        ctx: &GpuContext,
        spec: &'a NetworkSpec,
        standardize: Option<&Standardization>,
        activations: &'a Activations,
        metrics: &'a MetricsBuffers,
    ) -> Result<SplitShared<'a>, GpuError> {
        let features = spec.widths[0];
        let gather_params = GatherParams::new(features, standardize.is_some());
        let gather_params = params_buffer(ctx, "gather params", &gather_params)?;
        let statistics = match standardize {
            Some(s) => [&s.mean[..], &s.inv_std[..]].concat(),
            None => vec![0.0; 2 * features],
        };
        Ok(SplitShared {
            spec,
            gather_params,
            statistics: ctx.storage_with("input statistics", &statistics, U::empty())?,
            activations,
            metrics,
        })
    }
}

/// A split's data on the GPU: pixels and labels packed four bytes to a u32, the example order,
/// and the bind groups of its batches' first and last kernels.
struct SplitBuffers {
    /// Training: the epoch's permutation. Evaluation: 0, 1, 2, …
    order: wgpu::Buffer,
    gather_group: wgpu::BindGroup,
    output_group: wgpu::BindGroup,
    plan: SplitPlan,
}

impl SplitBuffers {
    /// Uploads `data` (in order 0, 1, 2, …) and binds it; the training split also writes dZ_L.
    fn new(
        ctx: &GpuContext,
        kernels: &Kernels,
        shared: &SplitShared,
        part: Part,
        data: &Dataset,
        plan: SplitPlan,
    ) -> Result<SplitBuffers, GpuError> {
        let name = part.name();
        let with_grad = matches!(part, Part::Training);
        ctx.check_binding_size(&format!("{name} images"), data.images.len() as u64)?;
        let images = ctx.storage_with(&format!("{name} images"), &pack_bytes(&data.images), U::empty())?;
        let labels = ctx.storage_with(&format!("{name} labels"), &pack_bytes(&data.labels), U::empty())?;
        let identity: Vec<u32> = (0..data.len() as u32).collect();
        let order = ctx.storage_with(&format!("{name} order"), &identity, U::empty())?;
        let classes = *shared.spec.widths.last().expect("at least two widths");
        let output_params = OutputLossParams::new(classes, shared.spec.output, shared.spec.loss, with_grad);
        let output_params = params_buffer(ctx, &format!("{name} output_loss params"), &output_params)?;
        let gather = GatherBindings {
            images: &images,
            order: &order,
            statistics: &shared.statistics,
            x: &shared.activations.a[0],
            params: &shared.gather_params,
        };
        let output = OutputLossBindings {
            logits: shared.activations.logits(),
            labels: &labels,
            order: &order,
            dz: shared.activations.logits_gradient(),
            metrics: &shared.metrics.buffer,
            params: &output_params,
        };
        Ok(SplitBuffers {
            gather_group: kernels.gather.bind(ctx, &format!("gather {name}"), &gather),
            output_group: kernels.output_loss.bind(ctx, &format!("output_loss {name}"), &output),
            order,
            plan,
        })
    }
}

/// The training split, and the held-out splits the run has.
struct Splits {
    train: SplitBuffers,
    validation: Option<SplitBuffers>,
    test: Option<SplitBuffers>,
}

impl Splits {
    fn new(
        ctx: &GpuContext,
        kernels: &Kernels,
        shared: &SplitShared,
        work: &Workload,
        plan: &BatchPlan,
    ) -> Result<Splits, GpuError> {
        let held_out = |split: Split, data: Option<&Dataset>, plan: Option<SplitPlan>| match (data, plan) {
            (Some(data), Some(plan)) => {
                SplitBuffers::new(ctx, kernels, shared, Part::HeldOut(split), data, plan).map(Some)
            }
            _ => Ok(None),
        };
        Ok(Splits {
            train: SplitBuffers::new(ctx, kernels, shared, Part::Training, work.train, plan.train)?,
            validation: held_out(Split::Validation, work.validation, plan.validation)?,
            test: held_out(Split::Test, work.test, plan.test)?,
        })
    }

    fn get(&self, part: Part) -> Option<&SplitBuffers> {
        match part {
            Part::Training => Some(&self.train),
            Part::HeldOut(Split::Validation) => self.validation.as_ref(),
            Part::HeldOut(Split::Test) => self.test.as_ref(),
        }
    }
}

/// Records one batch's dispatches into the epoch's compute pass.
struct GpuBatch<'a> {
    pass: &'a mut wgpu::ComputePass<'static>,
    kernels: &'a Kernels,
    plan: &'a MatmulPlan,
    spec: &'a NetworkSpec,
    layout: &'a ParamLayout,
    split: &'a SplitBuffers,
    layers: &'a [LayerGroups],
    /// This batch's entry in the batch table.
    batch: BatchBinding<'a>,
    rows: usize,
    dispatches: u64,
}

impl GpuBatch<'_> {
    fn update(&mut self, update: &UpdateStep) {
        let kind = update.optimizer.kind;
        let total = self.layout.total;
        self.kernels
            .record_update(kind, self.pass, &update.group, self.batch, total);
        self.dispatches += 1;
    }

    fn matmul(&mut self, op: MatmulOp, layer: usize, group: &wgpu::BindGroup) {
        let shape = &self.layout.layers[layer];
        let variant = self.plan.get(layer, op);
        self.kernels
            .matmul
            .record(self.pass, variant, op, group, self.batch, self.rows, shape);
        self.dispatches += 1;
    }
}

impl BatchOps for GpuBatch<'_> {
    fn gather_batch(&mut self) {
        let features = self.spec.widths[0];
        let group = &self.split.gather_group;
        self.kernels
            .gather
            .record(self.pass, group, self.batch, self.rows, features);
        self.dispatches += 1;
    }

    fn dense_forward(&mut self, layer: usize) {
        self.matmul(MatmulOp::Forward, layer, &self.layers[layer].forward);
    }

    fn output_loss(&mut self, _with_grad: bool) {
        // Whether dz is written is part of the split's bind group (training splits write it).
        self.kernels
            .output_loss
            .record(self.pass, &self.split.output_group, self.batch);
        self.dispatches += 1;
    }

    fn dense_backward_weights(&mut self, layer: usize) {
        self.matmul(MatmulOp::BackwardWeights, layer, &self.layers[layer].backward_weights);
    }

    fn dense_backward_input(&mut self, layer: usize) {
        let group = self.layers[layer].backward_input.as_ref().expect("layer ≥ 1");
        self.matmul(MatmulOp::BackwardInput, layer, group);
    }
}

impl GpuBackend {
    /// `Backend::end_epoch`: submits the recorded epoch and reads its metrics (one submit, one
    /// readback), without blocking.
    async fn finish_epoch(&mut self) -> Result<EpochMetrics> {
        drop(self.pass.take());
        let mut encoder = self.encoder.take().expect("an epoch is being recorded");
        let metrics = &self.metrics;
        encoder.copy_buffer_to_buffer(&metrics.buffer, 0, &metrics.staging, 0, metrics.buffer.size());
        self.ctx.submit(encoder.finish());
        let values: Vec<f32> = self
            .ctx
            .map_read_async(&metrics.staging, "reading the epoch's metrics")
            .await?;
        // As the context counted them: every submit and map since begin_epoch.
        let syncs = self.ctx.sync_counter().counts().since(self.syncs_before);
        self.counters.submits = syncs.submits;
        self.counters.readbacks = syncs.maps;
        // (loss sum, correct count) of batch-table entry `entry`.
        let batch_metrics = |entry: usize| {
            let at = entry * METRICS_PER_BATCH as usize;
            (values[at], values[at + 1])
        };
        let trained = self.first_batch..self.first_batch + self.recorded_batches;
        let entry = |b: usize| self.splits.train.plan.first_entry + b;
        let mut epoch = EpochMetrics {
            batch_loss: trained.clone().map(|b| batch_metrics(entry(b)).0).collect(),
            batch_correct: trained.map(|b| batch_metrics(entry(b)).1 as u32).collect(),
            counters: Some(self.counters),
            ..EpochMetrics::default()
        };
        let split_metrics = |data: &SplitBuffers| {
            let mut m = SplitMetrics {
                examples: data.plan.examples as u64,
                ..SplitMetrics::default()
            };
            for c in 0..data.plan.batches {
                let (loss, correct) = batch_metrics(data.plan.first_entry + c);
                m.loss_sum += loss as f64;
                m.correct += correct as u64;
            }
            m
        };
        epoch.validation = self.splits.validation.as_ref().map(split_metrics);
        epoch.test = self.splits.test.as_ref().map(split_metrics);
        Ok(epoch)
    }

    /// `Backend::optimizer_state`, without blocking.
    pub async fn optimizer_state_async(&mut self) -> Result<OptimizerState> {
        let optimizer = &self.update.optimizer;
        let names = optimizer.state_names();
        let mut buffers = Vec::with_capacity(names.len());
        for (name, buffer) in names.iter().zip(&self.update.state) {
            let what = format!("reading the optimiser's {name}");
            let mut values: Vec<f32> = self.ctx.read_async(buffer, &what).await?;
            values.truncate(self.layout.total);
            buffers.push((name.to_string(), values));
        }
        Ok(OptimizerState {
            name: optimizer.kind.to_string(),
            step: if names.is_empty() { 0 } else { self.steps_taken },
            buffers,
        })
    }

    /// `Backend::parameters`, without blocking.
    pub async fn parameters_async(&mut self) -> Result<Vec<f32>> {
        let mut values: Vec<f32> = self
            .ctx
            .read_async(&self.parameters.parameters, "reading the parameters back")
            .await?;
        values.truncate(self.layout.total);
        Ok(values)
    }
}

impl Backend for GpuBackend {
    fn device(&self) -> &'static str {
        "gpu"
    }

    fn adapter(&self) -> String {
        self.ctx.adapter_name()
    }

    fn matmul_variants(&self) -> Option<Vec<[String; 3]>> {
        Some(self.plan.names())
    }

    fn kernel_choice(&self) -> Option<String> {
        Some(format!("{}: {}", self.plan_source, self.plan.describe()))
    }

    fn begin_epoch(&mut self, permutation: &[u32], steps: &[StepConstants]) -> Result<()> {
        assert_eq!(
            steps.len(),
            self.splits.train.plan.batches,
            "one step per training batch"
        );
        self.ctx
            .queue
            .write_buffer(&self.splits.train.order, 0, bytemuck::cast_slice(permutation));
        self.batch_table.write_steps(&self.ctx, steps);
        self.steps.clear();
        self.steps.extend_from_slice(steps);
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
        self.syncs_before = self.ctx.sync_counter().counts();
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
        self.record_batch(Part::Training, batch);
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
        let part = Part::HeldOut(split);
        let Some(chunks) = self.splits.get(part).map(|data| data.plan.batches) else {
            return Ok(());
        };
        for chunk in 0..chunks {
            self.record_batch(part, chunk);
        }
        Ok(())
    }

    fn end_epoch(&mut self) -> Result<EpochMetrics> {
        block_on(self.finish_epoch(), "end_epoch_async")
    }

    fn end_epoch_async(&mut self) -> backend::LocalFuture<'_, Result<EpochMetrics>> {
        Box::pin(self.finish_epoch())
    }

    fn parameters(&mut self) -> Result<Vec<f32>> {
        block_on(self.parameters_async(), "parameters_async")
    }

    fn logits(&mut self, split: Split) -> Result<Vec<f32>> {
        block_on(self.logits_async(split), "logits_async")
    }

    /// Reads every state buffer back (one readback each), for a checkpoint.
    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        block_on(self.optimizer_state_async(), "optimizer_state_async")
    }

    /// Uploads a checkpoint's state buffers, once they are checked to be this optimiser's.
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.check_fits(&self.update.optimizer, self.layout.total)?;
        for ((_, values), buffer) in state.buffers.iter().zip(&self.update.state) {
            self.ctx.queue.write_buffer(buffer, 0, bytemuck::cast_slice(values));
        }
        self.steps_taken = state.step;
        Ok(())
    }
}
