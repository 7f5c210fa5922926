//! What the optimisers' update kernels share: their parameters ([`UpdateParams`]), the WGSL they
//! are all compiled after (`shaders/update.wgsl`), their pipeline, grid and dispatch, and the
//! choice of kernel by [`OptimizerKind`]. Each rule's own module ([`super::sgd_update`],
//! [`super::momentum_update`], [`super::rmsprop_update`], [`super::adam_update`]) names its
//! bindings: θ, ∂θ and its state buffers, each flat in the parameters' layout.
//!
//! One dispatch updates every parameter, 4 to an invocation: the kernels declare their buffers as
//! arrays of vec4<f32>, so the buffers hold [`padded_len`] floats, zeros past the parameters
//! (every rule keeps them at 0). The run's constants are in `UpdateParams`; the step's
//! (lr, Adam's bias corrections) are read from the batch's row of the step table, so a schedule
//! changes them at every step with no host round trip.

use super::{
    bind_group, bind_group_layout, compile, dispatch, linear_grid, BatchBinding, KernelBindings, Kernels, ShaderSource,
    WgslFile,
};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;
use crate::optim::{OptimizerKind, UpdateConstants};
use bytemuck::{Pod, Zeroable};

/// Parameters each invocation updates: one vec4.
pub const PER_INVOCATION: usize = 4;

/// Floats in a buffer the update kernels bind for `total` parameters: `total` rounded up to a
/// whole number of vec4s.
pub fn padded_len(total: usize) -> usize {
    total.div_ceil(PER_INVOCATION) * PER_INVOCATION
}

/// `values` with zeros up to [`padded_len`].
pub fn padded(values: &[f32]) -> Vec<f32> {
    let mut padded = values.to_vec();
    padded.resize(padded_len(values.len()), 0.0);
    padded
}

/// Compiled before each rule's own file.
pub(super) const SHARED: WgslFile = wgsl_file!("update.wgsl");

/// `UpdateParams` in `shaders/update.wgsl`: [`UpdateConstants`] without the step's values (lr,
/// bias corrections), which the kernels read from the step table, and with the buffer's length.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct UpdateParams {
    pub l2: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub weight_count: u32,
    /// Parameters in the buffer.
    pub total: u32,
    pub _pad: u32,
}

impl UpdateParams {
    /// The run's part of `k`, for a buffer of `total` parameters.
    pub fn new(k: &UpdateConstants, total: usize) -> UpdateParams {
        UpdateParams {
            l2: k.l2,
            beta1: k.beta1,
            beta2: k.beta2,
            eps: k.eps,
            weight_decay: k.weight_decay,
            weight_count: k.weight_count,
            total: total as u32,
            _pad: 0,
        }
    }
}

/// One update kernel's pipeline and the layout of its bindings.
pub struct UpdatePipeline {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

impl UpdatePipeline {
    /// Compiles entry point `entry` of `file` (after `update.wgsl`) for bindings `B`.
    pub(super) fn new<B: KernelBindings>(
        ctx: &GpuContext,
        batch_layout: &wgpu::BindGroupLayout,
        file: &WgslFile,
        entry: &str,
    ) -> Result<UpdatePipeline, GpuError> {
        let layout = bind_group_layout::<B>(ctx, entry);
        let source = ShaderSource {
            constants: Vec::new(),
            bindings: B::BINDINGS,
            files: &[&SHARED, file],
        };
        Ok(UpdatePipeline {
            pipeline: compile(ctx, &source, entry, &layout, batch_layout)?,
            layout,
            max_groups: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    pub(super) fn bind<B: KernelBindings>(&self, ctx: &GpuContext, label: &str, bindings: &B) -> wgpu::BindGroup {
        bind_group(ctx, &self.layout, label, bindings)
    }

    /// One invocation per vec4 of `total` parameters.
    pub fn grid(&self, total: usize) -> (u32, u32) {
        linear_grid(total.div_ceil(PER_INVOCATION) as u64, self.max_groups)
    }

    /// Updates all `total` parameters with the step of the batch at `batch`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, batch: BatchBinding, total: usize) {
        dispatch(pass, &self.pipeline, group, batch, self.grid(total));
    }
}

/// What an update binds: θ, ∂θ, the rule's state buffers in the order of
/// [`Optimizer::state_names`](crate::optim::Optimizer::state_names), and its params.
pub struct UpdateBuffers<'a> {
    pub parameters: &'a wgpu::Buffer,
    pub gradients: &'a wgpu::Buffer,
    pub state: &'a [wgpu::Buffer],
    pub params: &'a wgpu::Buffer,
}

impl Kernels {
    /// The bind group of `kind`'s update kernel over `buffers`.
    pub fn bind_update(&self, ctx: &GpuContext, kind: OptimizerKind, buffers: &UpdateBuffers) -> wgpu::BindGroup {
        let (parameters, gradients, params) = (buffers.parameters, buffers.gradients, buffers.params);
        let state = |i: usize| &buffers.state[i];
        let label = format!("{kind} update");
        match kind {
            OptimizerKind::Sgd => {
                let bindings = super::sgd_update::SgdUpdateBindings {
                    parameters,
                    gradients,
                    params,
                };
                self.sgd_update.bind(ctx, &label, &bindings)
            }
            OptimizerKind::Momentum => {
                let bindings = super::momentum_update::MomentumUpdateBindings {
                    parameters,
                    gradients,
                    velocity: state(0),
                    params,
                };
                self.momentum_update.bind(ctx, &label, &bindings)
            }
            OptimizerKind::Rmsprop => {
                let bindings = super::rmsprop_update::RmspropUpdateBindings {
                    parameters,
                    gradients,
                    square_average: state(0),
                    params,
                };
                self.rmsprop_update.bind(ctx, &label, &bindings)
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let bindings = super::adam_update::AdamUpdateBindings {
                    parameters,
                    gradients,
                    first_moment: state(0),
                    second_moment: state(1),
                    params,
                };
                self.adam(kind).bind(ctx, &label, &bindings)
            }
        }
    }

    /// Records `kind`'s update of all `total` parameters, bound by `group` (from
    /// [`Kernels::bind_update`]).
    pub fn record_update(
        &self,
        kind: OptimizerKind,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        batch: BatchBinding,
        total: usize,
    ) {
        let pipeline = match kind {
            OptimizerKind::Sgd => &self.sgd_update.0,
            OptimizerKind::Momentum => &self.momentum_update.0,
            OptimizerKind::Rmsprop => &self.rmsprop_update.0,
            OptimizerKind::Adam | OptimizerKind::Adamw => &self.adam(kind).0,
        };
        pipeline.record(pass, group, batch, total);
    }

    fn adam(&self, kind: OptimizerKind) -> &super::adam_update::AdamUpdate {
        if kind == OptimizerKind::Adamw {
            &self.adamw_update
        } else {
            &self.adam_update
        }
    }
}
