//! `rmsprop_update` (`shaders/rmsprop_update.wgsl`), twin of `cpu::ops::rmsprop_update`:
//! `s ← β₂·s + (1−β₂)·g²`, `θ ← θ − lr·g/(√s + ε)`, one dispatch over the flat buffers.

use super::update::UpdatePipeline;
use super::{BatchBinding, WgslFile};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;

const SOURCE: WgslFile = wgsl_file!("rmsprop_update.wgsl");

kernel_bindings! {
    /// Group 0 of `rmsprop_update`.
    pub struct RmspropUpdateBindings {
        /// θ, updated in place.
        parameters: ReadWrite "array<vec4<f32>>",
        /// ∂θ.
        gradients: Read "array<vec4<f32>>",
        /// s, the parameters' layout, updated in place.
        square_average: ReadWrite "array<vec4<f32>>",
        params: Read "UpdateParams",
    }
}

/// The `rmsprop_update` pipeline.
pub struct RmspropUpdate(pub(super) UpdatePipeline);

impl RmspropUpdate {
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout) -> Result<RmspropUpdate, GpuError> {
        UpdatePipeline::new::<RmspropUpdateBindings>(ctx, batch_layout, &SOURCE, "rmsprop_update").map(RmspropUpdate)
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &RmspropUpdateBindings) -> wgpu::BindGroup {
        self.0.bind(ctx, label, bindings)
    }

    /// Updates all `total` parameters with the step of the batch at `batch`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, batch: BatchBinding, total: usize) {
        self.0.record(pass, group, batch, total);
    }
}
