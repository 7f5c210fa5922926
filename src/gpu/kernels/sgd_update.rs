//! `sgd_update` (`shaders/sgd_update.wgsl`), twin of `cpu::ops::sgd_update`: one dispatch over
//! the whole flat parameter buffer, `θ ← θ - lr·(∂θ + λ·θ)` (no decay for biases).

use super::{
    bind_group, bind_group_layout, compile, dispatch, linear_grid, BatchBinding, KernelBindings, ShaderSource, WgslFile,
};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;
use bytemuck::{Pod, Zeroable};

const SOURCE: WgslFile = wgsl_file!("sgd_update.wgsl");

/// `SgdUpdateParams` in `shaders/sgd_update.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SgdUpdateParams {
    pub lr: f32,
    /// λ, applied to the first `weight_count` parameters (the weights).
    pub l2: f32,
    pub weight_count: u32,
    /// Parameters in the buffer.
    pub total: u32,
}

kernel_bindings! {
    /// Group 0 of `sgd_update`.
    pub struct SgdUpdateBindings {
        /// θ: the flat parameter buffer, updated in place.
        parameters: ReadWrite "array<f32>",
        /// ∂θ, in the same layout.
        gradients: Read "array<f32>",
        params: Read "SgdUpdateParams",
    }
}

/// The `sgd_update` pipeline.
pub struct SgdUpdate {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

impl SgdUpdate {
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout) -> Result<SgdUpdate, GpuError> {
        let layout = bind_group_layout::<SgdUpdateBindings>(ctx, "sgd_update");
        let source = ShaderSource {
            constants: Vec::new(),
            bindings: SgdUpdateBindings::BINDINGS,
            files: &[&SOURCE],
        };
        Ok(SgdUpdate {
            pipeline: compile(ctx, &source, "sgd_update", &layout, batch_layout)?,
            layout,
            max_groups: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &SgdUpdateBindings) -> wgpu::BindGroup {
        bind_group(ctx, &self.layout, label, bindings)
    }

    /// One invocation per parameter.
    pub fn grid(&self, total: usize) -> (u32, u32) {
        linear_grid(total as u64, self.max_groups)
    }

    /// Updates all `total` parameters. The kernel does not read the batch; group 1 is bound
    /// because every pipeline has it.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, batch: BatchBinding, total: usize) {
        dispatch(pass, &self.pipeline, group, batch, self.grid(total));
    }
}
