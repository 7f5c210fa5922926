//! `adam_update` and `adamw_update` (`shaders/adam_update.wgsl`), twins of `cpu::ops::adam_update`
//! and `cpu::ops::adamw_update`: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `θ ← θ − lr·(m̂/(√v̂ + ε) + wd·θ)` (Adam: λθ in g, wd = 0; AdamW: λ = 0, wd on the weights:
//! the constants say which, as for the CPU's shared step), one dispatch over the flat buffers.
//! Both kernels have the same bindings.

use super::update::UpdatePipeline;
use super::{BatchBinding, WgslFile};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;

const SOURCE: WgslFile = wgsl_file!("adam_update.wgsl");

kernel_bindings! {
    /// Group 0 of `adam_update` and `adamw_update`.
    pub struct AdamUpdateBindings {
        /// θ, updated in place.
        parameters: ReadWrite "array<vec4<f32>>",
        /// ∂θ.
        gradients: Read "array<vec4<f32>>",
        /// m and v, the parameters' layout, updated in place.
        first_moment: ReadWrite "array<vec4<f32>>",
        second_moment: ReadWrite "array<vec4<f32>>",
        params: Read "UpdateParams",
    }
}

/// The pipeline of `adam_update` or of `adamw_update`.
pub struct AdamUpdate(pub(super) UpdatePipeline);

impl AdamUpdate {
    /// `entry`: "adam_update" or "adamw_update".
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout, entry: &str) -> Result<AdamUpdate, GpuError> {
        UpdatePipeline::new::<AdamUpdateBindings>(ctx, batch_layout, &SOURCE, entry).map(AdamUpdate)
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &AdamUpdateBindings) -> wgpu::BindGroup {
        self.0.bind(ctx, label, bindings)
    }

    /// Updates all `total` parameters with the step of the batch at `batch`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, batch: BatchBinding, total: usize) {
        self.0.record(pass, group, batch, total);
    }
}
