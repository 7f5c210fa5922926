//! `sgd_update` (`shaders/sgd_update.wgsl`), twin of `cpu::ops::sgd_update`: one dispatch over
//! the whole flat parameter buffer, `θ ← θ - lr·(∂θ + λ·θ)` (no decay for biases).

use super::update::UpdatePipeline;
use super::{BatchBinding, WgslFile};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;

const SOURCE: WgslFile = wgsl_file!("sgd_update.wgsl");

kernel_bindings! {
    /// Group 0 of `sgd_update`.
    pub struct SgdUpdateBindings {
        /// θ: the flat parameter buffer, updated in place.
        parameters: ReadWrite "array<vec4<f32>>",
        /// ∂θ, in the same layout.
        gradients: Read "array<vec4<f32>>",
        params: Read "UpdateParams",
    }
}

/// The `sgd_update` pipeline.
pub struct SgdUpdate(pub(super) UpdatePipeline);

impl SgdUpdate {
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout) -> Result<SgdUpdate, GpuError> {
        UpdatePipeline::new::<SgdUpdateBindings>(ctx, batch_layout, &SOURCE, "sgd_update").map(SgdUpdate)
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &SgdUpdateBindings) -> wgpu::BindGroup {
        self.0.bind(ctx, label, bindings)
    }

    /// Updates all `total` parameters at the lr of the step of the batch at `batch`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, batch: BatchBinding, total: usize) {
        self.0.record(pass, group, batch, total);
    }
}
