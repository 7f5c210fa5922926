//! `gather_batch` (`shaders/gather.wgsl`), twin of `cpu::ops::gather_batch`: a batch's rows of a
//! split's packed u8 images, in the split's example order, scaled to [0, 1], standardised with
//! the training set's statistics when the run asks for it, and in a training batch dropped by
//! the input's dropout mask (`cpu::ops::dropout_forward`).

use super::{
    bind_group, bind_group_layout, compile, dispatch, linear_grid, BatchBinding, KernelBindings, ShaderSource, WgslFile,
};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;
use bytemuck::{Pod, Zeroable};

const SOURCE: WgslFile = wgsl_file!("gather.wgsl");

/// `GatherParams` in `shaders/gather.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GatherParams {
    pub features: u32,
    /// 1: `x = (p/255 − mean)·inv_std`.
    pub standardize: u32,
    pub _pad: [u32; 2],
}

impl GatherParams {
    pub fn new(features: usize, standardize: bool) -> GatherParams {
        GatherParams {
            features: features as u32,
            standardize: standardize as u32,
            _pad: [0; 2],
        }
    }
}

kernel_bindings! {
    /// Group 0 of `gather_batch`.
    pub struct GatherBindings {
        /// The split's pixels, four to a u32 (see `gpu::pack_bytes`).
        images: Read "array<u32>",
        /// The split's example order: the epoch's permutation, or 0, 1, 2, … for evaluation.
        order: Read "array<u32>",
        /// The training set's per-feature means, then their 1/σ (`data::Standardization`), one
        /// buffer (so gather stays within 8 storage buffers); read only with `standardize`.
        statistics: Read "array<f32>",
        /// X, rows × features.
        x: ReadWrite "array<f32>",
        params: Read "GatherParams",
    }
}

/// The `gather_batch` pipeline.
pub struct Gather {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

impl Gather {
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout) -> Result<Gather, GpuError> {
        let layout = bind_group_layout::<GatherBindings>(ctx, "gather_batch");
        let source = ShaderSource {
            constants: Vec::new(),
            bindings: GatherBindings::BINDINGS,
            files: &[&SOURCE],
        };
        Ok(Gather {
            pipeline: compile(ctx, &source, "gather_batch", &layout, batch_layout)?,
            layout,
            max_groups: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &GatherBindings) -> wgpu::BindGroup {
        bind_group(ctx, &self.layout, label, bindings)
    }

    /// One invocation per element of X (`rows × features`).
    pub fn grid(&self, rows: usize, features: usize) -> (u32, u32) {
        linear_grid((rows * features) as u64, self.max_groups)
    }

    /// Gathers the `rows` rows of the batch at `batch`.
    pub fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        batch: BatchBinding,
        rows: usize,
        features: usize,
    ) {
        dispatch(pass, &self.pipeline, group, batch, self.grid(rows, features));
    }
}
