//! `momentum_update` (`shaders/momentum_update.wgsl`), twin of `cpu::ops::momentum_update`:
//! `v ← β·v + (1−β)·g`, `θ ← θ − lr·v`, one dispatch over the flat buffers.

use super::update::UpdatePipeline;
use super::{BatchBinding, WgslFile};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;

const SOURCE: WgslFile = wgsl_file!("momentum_update.wgsl");

kernel_bindings! {
    /// Group 0 of `momentum_update`.
    pub struct MomentumUpdateBindings {
        /// θ, updated in place.
        parameters: ReadWrite "array<vec4<f32>>",
        /// ∂θ.
        gradients: Read "array<vec4<f32>>",
        /// v, the parameters' layout, updated in place.
        velocity: ReadWrite "array<vec4<f32>>",
        params: Read "UpdateParams",
    }
}

/// The `momentum_update` pipeline.
pub struct MomentumUpdate(pub(super) UpdatePipeline);

impl MomentumUpdate {
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout) -> Result<MomentumUpdate, GpuError> {
        UpdatePipeline::new::<MomentumUpdateBindings>(ctx, batch_layout, &SOURCE, "momentum_update").map(MomentumUpdate)
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &MomentumUpdateBindings) -> wgpu::BindGroup {
        self.0.bind(ctx, label, bindings)
    }

    /// Updates all `total` parameters with the step of the batch at `batch`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, batch: BatchBinding, total: usize) {
        self.0.record(pass, group, batch, total);
    }
}
