//! The WGSL kernels: compiled into the binary, built into pipelines once per device.
//!
//! Every kernel binds its tensors at group 0 and the batch-table entry of the batch it works on
//! at group 1 (a dynamic offset into one storage buffer; see `shaders/common.wgsl`). The layouts
//! are explicit so that the one batch bind group serves every pipeline.

use super::context::GpuContext;
use crate::error::GpuError;
use crate::network::{Activation, Loss, Output};
use bytemuck::{Pod, Zeroable};

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const GATHER: &str = include_str!("../../shaders/gather.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const OUTPUT_LOSS: &str = include_str!("../../shaders/output_loss.wgsl");
const SGD_UPDATE: &str = include_str!("../../shaders/sgd_update.wgsl");

/// Invocations per workgroup of the one-dimensional kernels (gather, update).
pub const LINEAR_WORKGROUP: u32 = 256;
/// Output tile of the matmul kernels (`TILE` in `shaders/matmul.wgsl`).
pub const MATMUL_TILE: u32 = 64;

/// One entry of the batch table (`Batch` in `shaders/common.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BatchEntry {
    pub start: u32,
    pub rows: u32,
    pub slot: u32,
    pub _pad: u32,
}

/// `GatherDims` in `shaders/gather.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GatherDims {
    pub features: u32,
    pub _pad: [u32; 3],
}

/// `LayerDims` in `shaders/matmul.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct LayerDims {
    pub inputs: u32,
    pub outputs: u32,
    pub weight_offset: u32,
    pub bias_offset: u32,
    pub activation: u32,
    pub _pad: [u32; 3],
}

/// `OutputDims` in `shaders/output_loss.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct OutputDims {
    pub classes: u32,
    pub output: u32,
    pub loss: u32,
    pub with_grad: u32,
}

impl OutputDims {
    pub fn new(classes: usize, output: Output, loss: Loss, with_grad: bool) -> OutputDims {
        OutputDims {
            classes: classes as u32,
            output: match output {
                Output::Softmax => 0,
                Output::Sigmoid => 1,
            },
            loss: match loss {
                Loss::Ce => 0,
                Loss::Mse => 1,
            },
            with_grad: with_grad as u32,
        }
    }
}

/// `UpdateParams` in `shaders/sgd_update.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct UpdateParams {
    pub lr: f32,
    pub l2: f32,
    pub weight_count: u32,
    pub total: u32,
}

/// The `ACT_*` code of an activation; `None` for the output layer's identity.
pub fn activation_code(activation: Option<Activation>) -> u32 {
    match activation {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Sigmoid) => 2,
        Some(Activation::Tanh) => 3,
    }
}

/// A binding of a kernel's group 0, in binding order.
///
/// Kernel parameters (shapes, offsets, lr) are small read-only *storage* buffers, not uniform
/// buffers: Mesa's software driver specialises a shader on the values of uniforms that steer its
/// loops and recompiles it whenever they change, which two layers of different widths, run one
/// after the other, would do at every dispatch.
#[derive(Clone, Copy)]
enum Slot {
    Read,
    ReadWrite,
}

/// The pipelines and their bind group layouts.
pub struct Kernels {
    /// Group 1 of every kernel: one batch-table entry, at a dynamic offset.
    pub batch_layout: wgpu::BindGroupLayout,
    pub gather_layout: wgpu::BindGroupLayout,
    pub matmul_layout: wgpu::BindGroupLayout,
    pub output_layout: wgpu::BindGroupLayout,
    pub update_layout: wgpu::BindGroupLayout,
    pub gather_batch: wgpu::ComputePipeline,
    pub matmul_forward: wgpu::ComputePipeline,
    pub matmul_backward_input: wgpu::ComputePipeline,
    pub matmul_backward_weights: wgpu::ComputePipeline,
    pub output_loss: wgpu::ComputePipeline,
    pub sgd_update: wgpu::ComputePipeline,
}

impl Kernels {
    /// Compiles every shader and builds its pipeline; a compile or validation error names the
    /// kernel.
    pub fn new(ctx: &GpuContext) -> Result<Kernels, GpuError> {
        let device = &ctx.device;
        let layout = |label: &str, slots: &[Slot]| {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
                .iter()
                .enumerate()
                .map(|(binding, slot)| wgpu::BindGroupLayoutEntry {
                    binding: binding as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: match slot {
                        Slot::Read => storage(true),
                        Slot::ReadWrite => storage(false),
                    },
                    count: None,
                })
                .collect();
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(label),
                entries: &entries,
            })
        };
        use Slot::*;
        let batch_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("batch"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: true },
                    has_dynamic_offset: true,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let gather_layout = layout("gather_batch", &[Read, Read, ReadWrite, Read]);
        let matmul_layout = layout("matmul", &[Read, Read, Read, ReadWrite, Read]);
        let output_layout = layout("output_loss", &[Read, Read, Read, ReadWrite, ReadWrite, Read]);
        let update_layout = layout("sgd_update", &[ReadWrite, Read, Read]);

        let pipeline = |file: &str, source: &str, entry: &str, group0: &wgpu::BindGroupLayout| {
            let kernel = format!("{entry} (shaders/{file})");
            let code = format!("{COMMON}\n{source}");
            ctx.scoped(
                || {
                    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(file),
                        source: wgpu::ShaderSource::Wgsl(code.into()),
                    });
                    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(entry),
                        bind_group_layouts: &[Some(group0), Some(&batch_layout)],
                        immediate_size: 0,
                    });
                    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: Some(&layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    })
                },
                |error| GpuError::Kernel {
                    kernel,
                    message: error.to_string(),
                },
            )
        };
        Ok(Kernels {
            gather_batch: pipeline("gather.wgsl", GATHER, "gather_batch", &gather_layout)?,
            matmul_forward: pipeline("matmul.wgsl", MATMUL, "matmul_forward", &matmul_layout)?,
            matmul_backward_input: pipeline("matmul.wgsl", MATMUL, "matmul_backward_input", &matmul_layout)?,
            matmul_backward_weights: pipeline("matmul.wgsl", MATMUL, "matmul_backward_weights", &matmul_layout)?,
            output_loss: pipeline("output_loss.wgsl", OUTPUT_LOSS, "output_loss", &output_layout)?,
            sgd_update: pipeline("sgd_update.wgsl", SGD_UPDATE, "sgd_update", &update_layout)?,
            batch_layout,
            gather_layout,
            matmul_layout,
            output_layout,
            update_layout,
        })
    }

    /// A group-0 bind group binding `buffers` in order.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        label: &str,
        layout: &wgpu::BindGroupLayout,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding: binding as u32,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout,
            entries: &entries,
        })
    }

    /// The group-1 bind group over a batch table whose entries are `stride` bytes apart.
    pub fn bind_batch_table(&self, ctx: &GpuContext, table: &wgpu::Buffer) -> wgpu::BindGroup {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("batch table"),
            layout: &self.batch_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: table,
                    offset: 0,
                    size: wgpu::BufferSize::new(std::mem::size_of::<BatchEntry>() as u64),
                }),
            }],
        })
    }
}

fn storage(read_only: bool) -> wgpu::BindingType {
    wgpu::BindingType::Buffer {
        ty: wgpu::BufferBindingType::Storage { read_only },
        has_dynamic_offset: false,
        min_binding_size: None,
    }
}

/// Workgroups for a one-dimensional kernel over `items`, as a 2-D grid when one dimension
/// would exceed the device's limit (the kernels rebuild the linear index).
pub fn linear_grid(items: u64, max_per_dimension: u32) -> (u32, u32) {
    let groups = items.div_ceil(LINEAR_WORKGROUP as u64).max(1);
    if groups <= max_per_dimension as u64 {
        (groups as u32, 1)
    } else {
        (max_per_dimension, groups.div_ceil(max_per_dimension as u64) as u32)
    }
}

/// Workgroups covering a `rows × cols` output in matmul tiles.
pub fn tile_grid(rows: usize, cols: usize) -> (u32, u32) {
    ((cols as u32).div_ceil(MATMUL_TILE), (rows as u32).div_ceil(MATMUL_TILE))
}
