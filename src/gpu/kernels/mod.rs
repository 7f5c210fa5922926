//! The WGSL kernels, one host module per family beside the shader it compiles (`shaders/`):
//! [`gather`], [`matmul`], [`output_loss`], and the optimisers' updates [`sgd_update`],
//! [`momentum_update`], [`rmsprop_update`], [`adam_update`] (what they share: [`update`]).
//!
//! A family's module holds its whole contract with the shader: its `…Params` struct (a small
//! read-only storage buffer), its group-0 bindings as a struct with named fields, from which the
//! bind group layout, the bind group and the shader's `var<storage, …>` declarations are all
//! made, its grid, derived from the constants it compiles the shader with, and its `record`
//! function. The training backend ([`super::GpuBackend`]) and the one-shot runner
//! ([`super::oneshot::KernelRunner`]) both go through them.
//!
//! A shader is compiled from a generated prelude — the constants Rust and WGSL share
//! (`const NAME: u32 = …u;`, [`shared_constants`] and the family's own) and the kernel's binding
//! declarations — then `shaders/common.wgsl`, then the family's file(s). So no number that both
//! sides use (a workgroup size, a tile, an `ACT_`/`OUTPUT_`/`LOSS_` code, a binding index) is
//! written in both.
//!
//! Every kernel binds its tensors at group 0 and, at group 1, the batch-table entry of the batch
//! it works on (a dynamic offset into one storage buffer) and the run table (the run's dropout
//! and the epoch's steps) ([`BatchTable`]), so one batch bind group serves every pipeline.

use super::context::GpuContext;
use crate::dropout::{self, Dropout, Mask};
use crate::error::GpuError;
use crate::network::{Activation, Loss, Output};
use crate::optim::StepConstants;
use bytemuck::{Pod, Zeroable};
use clap::ValueEnum;

/// Declares a kernel's group-0 bindings once, in binding order, as a struct of named buffers:
/// `name: Access "WGSL type"`. The one list gives the struct, its [`KernelBindings`] (the
/// bind group layout and the bind group) and the declarations emitted into the shader, where
/// each binding is a variable of the same name.
macro_rules! kernel_bindings {
    (
        $(#[$doc:meta])*
        pub struct $name:ident {
            $($(#[$field_doc:meta])* $field:ident: $access:ident $wgsl_type:literal,)+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name<'a> {
            $($(#[$field_doc])* pub $field: &'a wgpu::Buffer,)+
        }

        impl $crate::gpu::kernels::KernelBindings for $name<'_> {
            const BINDINGS: &'static [$crate::gpu::kernels::Binding] = &[
                $($crate::gpu::kernels::Binding {
                    name: stringify!($field),
                    access: $crate::gpu::kernels::Access::$access,
                    wgsl_type: $wgsl_type,
                },)+
            ];

            fn buffers(&self) -> Vec<&wgpu::Buffer> {
                vec![$(self.$field),+]
            }
        }
    };
}

/// A file of `shaders/`, compiled into the binary.
macro_rules! wgsl_file {
    ($name:literal) => {
        $crate::gpu::kernels::WgslFile {
            path: concat!("shaders/", $name),
            text: include_str!(concat!("../../../shaders/", $name)),
        }
    };
}

pub mod adam_update;
pub mod gather;
pub mod matmul;
pub mod momentum_update;
pub mod output_loss;
pub mod rmsprop_update;
pub mod sgd_update;
pub mod update;

use adam_update::AdamUpdate;
use gather::Gather;
use matmul::{Matmul, MatmulPipelineKey, MatmulPlan, MatmulVariant};
use momentum_update::MomentumUpdate;
use output_loss::OutputLoss;
use rmsprop_update::RmspropUpdate;
use sgd_update::SgdUpdate;

const COMMON: WgslFile = wgsl_file!("common.wgsl");

// ---------------------------------------------------------------------------------------------
// Constants shared with WGSL
// ---------------------------------------------------------------------------------------------

/// Invocations per workgroup of the one-dimensional kernels (gather, update).
pub const LINEAR_WORKGROUP: u32 = 256;

/// The `ACT_*` code of a hidden activation; `None` (`ACT_NONE`) for the output layer's identity.
pub fn activation_code(activation: Option<Activation>) -> u32 {
    match activation {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Sigmoid) => 2,
        Some(Activation::Tanh) => 3,
    }
}

/// The `OUTPUT_*` code of an output non-linearity.
pub fn output_code(output: Output) -> u32 {
    match output {
        Output::Softmax => 0,
        Output::Sigmoid => 1,
    }
}

/// The `LOSS_*` code of a loss.
pub fn loss_code(loss: Loss) -> u32 {
    match loss {
        Loss::Ce => 0,
        Loss::Mse => 1,
    }
}

/// A `u32` constant that Rust and WGSL share, emitted into a shader's prelude.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgslConst {
    pub name: String,
    pub value: u32,
}

impl WgslConst {
    pub fn new(name: impl Into<String>, value: u32) -> WgslConst {
        WgslConst {
            name: name.into(),
            value,
        }
    }

    /// `const NAME: u32 = 7u;`
    pub fn declaration(&self) -> String {
        format!("const {}: u32 = {}u;", self.name, self.value)
    }
}

/// The constants every shader is compiled with: `LINEAR_WORKGROUP`, and a code for every
/// activation (`ACT_NONE`, `ACT_RELU`, …), output (`OUTPUT_SOFTMAX`, …) and loss (`LOSS_CE`, …),
/// named after the command line's values, so a new variant of those enums gets its constant.
pub fn shared_constants() -> Vec<WgslConst> {
    let mut constants = vec![
        WgslConst::new("LINEAR_WORKGROUP", LINEAR_WORKGROUP),
        WgslConst::new("ACT_NONE", activation_code(None)),
    ];
    for &activation in Activation::value_variants() {
        let name = format!("ACT_{}", wgsl_name(activation));
        constants.push(WgslConst::new(name, activation_code(Some(activation))));
    }
    for &output in Output::value_variants() {
        constants.push(WgslConst::new(
            format!("OUTPUT_{}", wgsl_name(output)),
            output_code(output),
        ));
    }
    for &loss in Loss::value_variants() {
        constants.push(WgslConst::new(format!("LOSS_{}", wgsl_name(loss)), loss_code(loss)));
    }
    constants
}

/// "relu" → "RELU": a command-line value as the suffix of a WGSL constant.
fn wgsl_name(value: impl ValueEnum) -> String {
    let value = value.to_possible_value().expect("no skipped variants");
    value.get_name().to_uppercase()
}

// ---------------------------------------------------------------------------------------------
// Bindings
// ---------------------------------------------------------------------------------------------

/// How a kernel uses one of its group-0 buffers.
///
/// Every binding is a *storage* buffer, kernel parameters (shapes, offsets, lr) included: Mesa's
/// software driver specialises a shader on the values of uniforms that steer its loops and
/// recompiles it whenever they change, which two layers of different widths, run one after the
/// other, would do at every dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

impl Access {
    /// The access mode in a WGSL `var<storage, …>` declaration.
    fn wgsl(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::ReadWrite => "read_write",
        }
    }
}

/// One group-0 binding of a kernel: the shader's variable of that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub name: &'static str,
    pub access: Access,
    /// Its type in WGSL: `array<f32>`, or a `…Params` struct.
    pub wgsl_type: &'static str,
}

/// A kernel's group-0 buffers, by name (declared with `kernel_bindings!`).
pub trait KernelBindings {
    /// In binding order.
    const BINDINGS: &'static [Binding];
    /// The buffers, in the order of [`KernelBindings::BINDINGS`].
    fn buffers(&self) -> Vec<&wgpu::Buffer>;
}

/// The group-0 layout of kernels bound with `B`.
fn bind_group_layout<B: KernelBindings>(ctx: &GpuContext, label: &str) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = B::BINDINGS
        .iter()
        .enumerate()
        .map(|(index, binding)| wgpu::BindGroupLayoutEntry {
            binding: index as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: binding.access == Access::Read,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    ctx.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

/// The group-0 bind group of `bindings`, for pipelines of `layout`.
fn bind_group<B: KernelBindings>(
    ctx: &GpuContext,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    bindings: &B,
) -> wgpu::BindGroup {
    let buffers = bindings.buffers();
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(index, buffer)| wgpu::BindGroupEntry {
            binding: index as u32,
            resource: buffer.as_entire_binding(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &entries,
    })
}

/// A kernel's parameters (a `…Params` struct) in a small read-only storage buffer (see
/// [`Access`]), which can be rewritten between submits (`COPY_DST`).
pub fn params_buffer<T: Pod>(ctx: &GpuContext, label: &str, params: &T) -> Result<wgpu::Buffer, GpuError> {
    let buffer = ctx.buffer(
        label,
        std::mem::size_of::<T>() as u64,
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
    )?;
    ctx.queue.write_buffer(&buffer, 0, bytemuck::bytes_of(params));
    Ok(buffer)
}

// ---------------------------------------------------------------------------------------------
// Shader sources and pipelines
// ---------------------------------------------------------------------------------------------

/// A file of `shaders/`, compiled into the binary.
#[derive(Debug, PartialEq, Eq)]
pub struct WgslFile {
    /// "shaders/matmul.wgsl": how errors name it.
    pub path: &'static str,
    pub text: &'static str,
}

/// What one shader is compiled from: the prelude (the shared constants, `constants`, and the
/// declarations of `bindings`), then `shaders/common.wgsl`, then `files`.
pub struct ShaderSource<'a> {
    /// The family's (or variant's) constants, besides [`shared_constants`].
    pub constants: Vec<WgslConst>,
    pub bindings: &'a [Binding],
    pub files: &'a [&'a WgslFile],
}

impl ShaderSource<'_> {
    /// The generated part: constants, then group-0 binding declarations.
    pub fn prelude(&self) -> String {
        let mut prelude =
            String::from("// Generated by src/gpu/kernels: the constants Rust and WGSL share, and group 0.\n");
        for constant in shared_constants().iter().chain(&self.constants) {
            prelude += &constant.declaration();
            prelude.push('\n');
        }
        for (index, binding) in self.bindings.iter().enumerate() {
            prelude += &format!(
                "@group(0) @binding({index}) var<storage, {}> {}: {};\n",
                binding.access.wgsl(),
                binding.name,
                binding.wgsl_type
            );
        }
        prelude
    }

    /// The whole source handed to the compiler.
    pub fn text(&self) -> String {
        let mut text = self.prelude();
        for file in std::iter::once(&&COMMON).chain(self.files) {
            text += &format!("\n// ---- {}\n{}", file.path, file.text);
        }
        text
    }

    /// "shaders/matmul.wgsl, shaders/matmul_tiled.wgsl": how errors name the source.
    fn paths(&self) -> String {
        let paths: Vec<&str> = self.files.iter().map(|file| file.path).collect();
        paths.join(", ")
    }
}

/// Compiles `source` and builds the pipeline of its entry point `entry`, with `group0` and the
/// batch table's layout; a compile or validation error names the kernel and its files.
fn compile(
    ctx: &GpuContext,
    source: &ShaderSource,
    entry: &str,
    group0: &wgpu::BindGroupLayout,
    batch_layout: &wgpu::BindGroupLayout,
) -> Result<wgpu::ComputePipeline, GpuError> {
    let files = source.paths();
    let code = source.text();
    ctx.scoped(
        || {
            let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&files),
                source: wgpu::ShaderSource::Wgsl(code.into()),
            });
            let layout = ctx.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(group0), Some(batch_layout)],
                immediate_size: 0,
            });
            ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        },
        |error| GpuError::Kernel {
            kernel: format!("{entry} ({files})"),
            message: error.to_string(),
        },
    )
}

/// Records one dispatch of `pipeline` over `x × y` workgroups, with `group` at group 0 and the
/// batch's entry at group 1.
fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    batch: BatchBinding,
    (x, y): (u32, u32),
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    pass.set_bind_group(1, batch.group, &[batch.offset]);
    pass.dispatch_workgroups(x, y, 1);
}

/// Workgroups of [`LINEAR_WORKGROUP`] invocations covering `items`, as a 2-D grid when one
/// dimension would exceed the device's limit (the kernels rebuild the linear index).
pub fn linear_grid(items: u64, max_per_dimension: u32) -> (u32, u32) {
    let groups = items.div_ceil(LINEAR_WORKGROUP as u64).max(1);
    if groups <= max_per_dimension as u64 {
        (groups as u32, 1)
    } else {
        (max_per_dimension, groups.div_ceil(max_per_dimension as u64) as u32)
    }
}

// ---------------------------------------------------------------------------------------------
// Group 1 of every kernel: the batch table, and the run table (dropout, steps)
// ---------------------------------------------------------------------------------------------

/// One entry of the batch table (`Batch` in `shaders/common.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BatchEntry {
    /// First position of the batch in its split's example order.
    pub start: u32,
    pub rows: u32,
    /// Where `output_loss` writes the batch's loss and correct count in the metrics buffer.
    pub metrics_slot: u32,
    /// A training batch's row of the step table: its lr, bias corrections and dropout step.
    pub step: u32,
    /// 1 for a training batch (its dropout masks apply); 0 for an evaluation chunk.
    pub training: u32,
    pub _pad: [u32; 3],
}

impl BatchEntry {
    /// Training batch `batch` of an epoch: `rows` examples from `start` of the permutation, the
    /// step table's row `batch`.
    pub fn training(batch: usize, start: usize, rows: usize, metrics_slot: usize) -> BatchEntry {
        BatchEntry {
            start: start as u32,
            rows: rows as u32,
            metrics_slot: metrics_slot as u32,
            step: batch as u32,
            training: 1,
            _pad: [0; 3],
        }
    }

    /// An evaluation chunk: `rows` examples from `start`; never drops, reads no step.
    pub fn evaluation(start: usize, rows: usize, metrics_slot: usize) -> BatchEntry {
        BatchEntry {
            training: 0,
            step: 0,
            ..BatchEntry::training(0, start, rows, metrics_slot)
        }
    }
}

/// One dropout layer's mask parameters (`LayerDropout` in `shaders/common.wgsl`): those of
/// [`Mask`], which do not change from step to step.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct LayerDropout {
    pub threshold: u32,
    pub scale: f32,
    /// 1/scale, computed here as `cpu::ops::dropout_activation_backward` computes it.
    pub keep: f32,
    /// 1 when the layer drops anything (p > 0).
    pub drops: u32,
}

impl LayerDropout {
    fn new(seed: u64, p: f32) -> LayerDropout {
        // The threshold and scale do not depend on the step or layer, only the key does.
        let mask = Mask::new(seed, 0, 0, p);
        LayerDropout {
            threshold: mask.threshold,
            scale: mask.scale,
            keep: 1.0 / mask.scale,
            drops: (p > 0.0) as u32,
        }
    }
}

/// The run's dropout (`DropoutParams` in `shaders/common.wgsl`): the seed's part of every mask's
/// key, and the input's and the hidden layers' mask parameters. The step's part of the key comes
/// from the step table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct DropoutParams {
    pub seed_key: u32,
    pub _pad: [u32; 3],
    pub input: LayerDropout,
    pub hidden: LayerDropout,
}

impl DropoutParams {
    pub fn new(dropout: &Dropout) -> DropoutParams {
        DropoutParams {
            seed_key: dropout::seed_key(dropout.seed),
            _pad: [0; 3],
            input: LayerDropout::new(dropout.seed, dropout.input),
            hidden: LayerDropout::new(dropout.seed, dropout.hidden),
        }
    }
}

/// Where the run table's steps begin (`RunTable` in `shaders/common.wgsl`: the run's
/// [`DropoutParams`], then one [`StepConstants`] per training batch).
const STEPS_OFFSET: usize = std::mem::size_of::<DropoutParams>();

/// Group 1 of every kernel: one batch-table entry at a dynamic offset, and the run table.
fn batch_layout(ctx: &GpuContext) -> wgpu::BindGroupLayout {
    let storage = |binding: u32, has_dynamic_offset: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: true },
            has_dynamic_offset,
            min_binding_size: None,
        },
        count: None,
    };
    ctx.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("batch"),
        entries: &[storage(0, true), storage(1, false)],
    })
}

/// Group 1 on the device. The batch table: entry `i` describes batch `i` of a run; entries sit
/// `stride` bytes apart (a multiple of the device's storage offset alignment), so a dispatch
/// selects its batch with a dynamic offset. The run table: the run's [`DropoutParams`], then the
/// step table, one [`StepConstants`] per training batch of the epoch, rewritten at the start of
/// each epoch ([`BatchTable::write_steps`]), which a training batch reads at its entry's `step`.
pub struct BatchTable {
    group: wgpu::BindGroup,
    stride: u64,
    run: wgpu::Buffer,
    step_rows: usize,
}

/// Group 1 of a dispatch: the batch table, at one batch's entry.
#[derive(Clone, Copy)]
pub struct BatchBinding<'a> {
    group: &'a wgpu::BindGroup,
    /// Bytes from the start of the table.
    offset: u32,
}

impl BatchTable {
    /// Uploads `entries`, and a run table with `dropout` and `step_rows` steps (zero until
    /// written).
    pub fn new(
        ctx: &GpuContext,
        kernels: &Kernels,
        entries: &[BatchEntry],
        step_rows: usize,
        dropout: &Dropout,
    ) -> Result<BatchTable, GpuError> {
        let entry_size = std::mem::size_of::<BatchEntry>();
        let alignment = ctx.limits.min_storage_buffer_offset_alignment as usize;
        let stride = entry_size.next_multiple_of(alignment);
        let mut bytes = vec![0u8; entries.len() * stride];
        for (index, entry) in entries.iter().enumerate() {
            let at = index * stride;
            bytes[at..at + entry_size].copy_from_slice(bytemuck::bytes_of(entry));
        }
        if bytes.len() as u64 > ctx.limits.max_buffer_size {
            return Err(GpuError::BufferTooLarge {
                buffer: "batch table".into(),
                needed: bytes.len() as u64,
                limit: ctx.limits.max_buffer_size,
                adapter: ctx.info.name.clone(),
                hint: "use a larger --batch-size".into(),
            });
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let buffer = ctx.buffer("batch table", bytes.len() as u64, usage)?;
        ctx.queue.write_buffer(&buffer, 0, &bytes);
        let run_bytes = (STEPS_OFFSET + step_rows.max(1) * std::mem::size_of::<StepConstants>()) as u64;
        ctx.check_binding_size("run table", run_bytes)?;
        let run = ctx.buffer("run table", run_bytes, usage)?;
        ctx.queue
            .write_buffer(&run, 0, bytemuck::bytes_of(&DropoutParams::new(dropout)));
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("batch table"),
            layout: &kernels.batch_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(entry_size as u64),
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: run.as_entire_binding(),
                },
            ],
        });
        Ok(BatchTable {
            group,
            stride: stride as u64,
            run,
            step_rows,
        })
    }

    /// Writes the step table: `steps[b]` for training batch b. Ordered before the next submit.
    pub fn write_steps(&self, ctx: &GpuContext, steps: &[StepConstants]) {
        assert!(
            steps.len() <= self.step_rows,
            "{} steps for a step table of {}",
            steps.len(),
            self.step_rows
        );
        ctx.queue
            .write_buffer(&self.run, STEPS_OFFSET as u64, bytemuck::cast_slice(steps));
    }

    /// Group 1 for batch `index`.
    pub fn entry(&self, index: usize) -> BatchBinding<'_> {
        BatchBinding {
            group: &self.group,
            offset: (index as u64 * self.stride) as u32,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every kernel
// ---------------------------------------------------------------------------------------------

/// Every kernel family, compiled for one device.
pub struct Kernels {
    /// Group 1 of every pipeline.
    batch_layout: wgpu::BindGroupLayout,
    pub gather: Gather,
    pub matmul: Matmul,
    pub output_loss: OutputLoss,
    pub sgd_update: SgdUpdate,
    pub momentum_update: MomentumUpdate,
    pub rmsprop_update: RmspropUpdate,
    pub adam_update: AdamUpdate,
    pub adamw_update: AdamUpdate,
}

impl Kernels {
    /// Compiles every shader and builds its pipelines; a compile or validation error names the
    /// kernel.
    pub fn new(ctx: &GpuContext) -> Result<Kernels, GpuError> {
        Kernels::with_matmul_variants(ctx, &[MatmulVariant::DEFAULT])
    }

    /// [`Kernels::new`] with the matmuls computed by `variant`.
    pub fn with_matmul_variant(ctx: &GpuContext, variant: MatmulVariant) -> Result<Kernels, GpuError> {
        Kernels::with_matmul_variants(ctx, &[variant])
    }

    /// [`Kernels::new`] with every op of every variant of `variants` (at least one).
    pub fn with_matmul_variants(ctx: &GpuContext, variants: &[MatmulVariant]) -> Result<Kernels, GpuError> {
        assert!(!variants.is_empty(), "at least one matmul variant");
        Kernels::with_matmul_pipelines(ctx, &matmul::every_op_of(variants))
    }

    /// [`Kernels::new`] with the matmul pipelines a training step by `plan` dispatches.
    pub fn for_plan(ctx: &GpuContext, plan: &MatmulPlan) -> Result<Kernels, GpuError> {
        Kernels::with_matmul_pipelines(ctx, &plan.pipelines())
    }

    /// The kernels with the matmul pipelines of `wanted` (more can be added with
    /// [`Kernels::compile_matmuls`]).
    /// The matmul pipelines compile on threads of their own beside the rest (natively): a
    /// driver that compiles at creation (most hardware drivers) then uses every core.
    pub fn with_matmul_pipelines(ctx: &GpuContext, wanted: &[MatmulPipelineKey]) -> Result<Kernels, GpuError> {
        let batch_layout = batch_layout(ctx);
        let (matmul, gather) = both(
            || Matmul::new(ctx, &batch_layout, wanted),
            || Gather::new(ctx, &batch_layout),
        );
        Ok(Kernels {
            gather: gather?,
            matmul: matmul?,
            output_loss: OutputLoss::new(ctx, &batch_layout)?,
            sgd_update: SgdUpdate::new(ctx, &batch_layout)?,
            momentum_update: MomentumUpdate::new(ctx, &batch_layout)?,
            rmsprop_update: RmspropUpdate::new(ctx, &batch_layout)?,
            adam_update: AdamUpdate::new(ctx, &batch_layout, "adam_update")?,
            adamw_update: AdamUpdate::new(ctx, &batch_layout, "adamw_update")?,
            batch_layout,
        })
    }

    /// Compiles the matmul pipelines of `wanted` not compiled yet, and returns them.
    pub fn compile_matmuls(
        &mut self,
        ctx: &GpuContext,
        wanted: &[MatmulPipelineKey],
    ) -> Result<Vec<MatmulPipelineKey>, GpuError> {
        self.matmul.compile(ctx, &self.batch_layout, wanted)
    }
}

/// `a()` and `b()`, natively on two threads (wgpu's error scopes are per thread, so each
/// compile still catches its own errors); on the web one after the other.
#[cfg(feature = "native")]
pub fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let a = scope.spawn(a);
        let b = b();
        (a.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), b)
    })
}

#[cfg(not(feature = "native"))]
pub fn both<A, B>(a: impl FnOnce() -> A, b: impl FnOnce() -> B) -> (A, B) {
    (a(), b())
}

/// A job for [`all`]: natively it runs on a thread of its own, so it must be `Send`.
#[cfg(feature = "native")]
pub type Job<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;
#[cfg(not(feature = "native"))]
pub type Job<'a, T> = Box<dyn FnOnce() -> T + 'a>;

/// Every job's result, in order: natively each on a thread of its own, on the web in turn.
#[cfg(feature = "native")]
pub fn all<T: Send>(jobs: Vec<Job<'_, T>>) -> Vec<T> {
    std::thread::scope(|scope| {
        let running: Vec<_> = jobs.into_iter().map(|job| scope.spawn(job)).collect();
        running
            .into_iter()
            .map(|job| job.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

#[cfg(not(feature = "native"))]
pub fn all<T>(jobs: Vec<Job<'_, T>>) -> Vec<T> {
    jobs.into_iter().map(|job| job()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prelude_declares_every_code_and_the_bindings() {
        let source = ShaderSource {
            constants: vec![WgslConst::new("TILE", 64)],
            bindings: matmul::MatmulBindings::BINDINGS,
            files: &[],
        };
        let prelude = source.prelude();
        for line in [
            "const LINEAR_WORKGROUP: u32 = 256u;",
            "const ACT_NONE: u32 = 0u;",
            "const ACT_RELU: u32 = 1u;",
            "const ACT_SIGMOID: u32 = 2u;",
            "const ACT_TANH: u32 = 3u;",
            "const OUTPUT_SOFTMAX: u32 = 0u;",
            "const OUTPUT_SIGMOID: u32 = 1u;",
            "const LOSS_CE: u32 = 0u;",
            "const LOSS_MSE: u32 = 1u;",
            "const TILE: u32 = 64u;",
            "@group(0) @binding(0) var<storage, read> weights: array<f32>;",
            "@group(0) @binding(3) var<storage, read_write> out: array<f32>;",
            "@group(0) @binding(4) var<storage, read> params: MatmulParams;",
        ] {
            assert!(prelude.lines().any(|l| l == line), "{line} is not in\n{prelude}");
        }
    }

    #[test]
    fn every_code_is_distinct_within_its_kind() {
        let constants = shared_constants();
        for kind in ["ACT_", "OUTPUT_", "LOSS_"] {
            let codes: Vec<u32> = constants
                .iter()
                .filter(|c| c.name.starts_with(kind))
                .map(|c| c.value)
                .collect();
            let mut distinct = codes.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(codes.len(), distinct.len(), "{kind}: {codes:?}");
        }
        let names: Vec<&str> = constants.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), 1 + 4 + 2 + 2, "{names:?}");
    }

    #[test]
    fn linear_grids_cover_every_item_and_fold_into_two_dimensions() {
        let max = 65_535;
        for items in [
            0u64,
            1,
            255,
            256,
            257,
            1_000_000,
            65_535 * 256,
            65_535 * 256 + 1,
            200_000_000,
        ] {
            let (x, y) = linear_grid(items, max);
            let covered = x as u64 * y as u64 * LINEAR_WORKGROUP as u64;
            // At least one workgroup, even for nothing.
            let items = items.max(1);
            assert!(covered >= items, "{items}: {x} × {y}");
            assert!(x <= max && y <= max, "{items}: {x} × {y}");
            // Not a whole row of workgroups more than needed.
            assert!(
                covered - items < x as u64 * LINEAR_WORKGROUP as u64,
                "{items}: {x} × {y}"
            );
        }
    }

    /// The generated source of every kernel compiles and builds its pipelines on this device
    /// (lavapipe will do).
    #[test]
    fn every_shader_compiles_with_its_prelude() {
        let ctx = GpuContext::new().expect("a GPU adapter (lavapipe will do)");
        Kernels::with_matmul_variants(&ctx, &matmul::MatmulVariant::available(&ctx)).unwrap_or_else(|e| panic!("{e}"));
        ctx.check("compiling every kernel").unwrap();
    }
}
