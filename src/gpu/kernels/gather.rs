//! `gather_batch` (`shaders/gather.wgsl`), twin of `cpu::ops::gather_batch`: a batch's rows of a
//! split's packed u8 images, in the split's example order, scaled to [0, 1], standardised with
//! the training set's statistics when the run asks for it, and in a training batch dropped by
//! the input's dropout mask (`cpu::ops::dropout_forward`).
//!
//! Two forms of one kernel: one element of X per invocation (`shaders/gather_f32.wgsl`, any
//! width) and, where the width is a multiple of 4 (MNIST's 784), four (`gather_vec4.wgsl`: X
//! and the statistics declared as vec4 arrays), which moves a quarter of the loads and stores.

use super::{
    bind_group, bind_group_layout, compile, dispatch, linear_grid, BatchBinding, Binding, KernelBindings, ShaderSource,
    WgslFile,
};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;
use bytemuck::{Pod, Zeroable};

/// What both forms share, then each form's entry point.
const SHARED: WgslFile = wgsl_file!("gather.wgsl");
const F32: WgslFile = wgsl_file!("gather_f32.wgsl");
const VEC4: WgslFile = wgsl_file!("gather_vec4.wgsl");

/// Features the vec4 form gathers per invocation.
pub const VEC4_WIDTH: usize = 4;

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

/// The `gather_batch` pipelines: one element per invocation, and four where the width allows.
pub struct Gather {
    layout: wgpu::BindGroupLayout,
    one: wgpu::ComputePipeline,
    four: wgpu::ComputePipeline,
    max_groups: u32,
}

impl Gather {
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout) -> Result<Gather, GpuError> {
        let layout = bind_group_layout::<GatherBindings>(ctx, "gather_batch");
        let one = ShaderSource {
            constants: Vec::new(),
            bindings: GatherBindings::BINDINGS,
            files: &[&SHARED, &F32],
        };
        let vec4_bindings: Vec<Binding> = GatherBindings::BINDINGS
            .iter()
            .map(|binding| match binding.name {
                "x" | "statistics" => Binding {
                    wgsl_type: "array<vec4<f32>>",
                    ..*binding
                },
                _ => *binding,
            })
            .collect();
        let four = ShaderSource {
            constants: Vec::new(),
            bindings: &vec4_bindings,
            files: &[&SHARED, &VEC4],
        };
        Ok(Gather {
            one: compile(ctx, &one, "gather_batch", &layout, batch_layout)?,
            four: compile(ctx, &four, "gather_batch", &layout, batch_layout)?,
            layout,
            max_groups: ctx.limits.max_compute_workgroups_per_dimension,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &GatherBindings) -> wgpu::BindGroup {
        bind_group(ctx, &self.layout, label, bindings)
    }

    /// Whether rows of `features` are gathered four features to an invocation.
    pub fn by_fours(features: usize) -> bool {
        features % VEC4_WIDTH == 0
    }

    /// One invocation per element of X (`rows × features`), or per four.
    pub fn grid(&self, rows: usize, features: usize) -> (u32, u32) {
        let per_invocation = if Gather::by_fours(features) { VEC4_WIDTH } else { 1 };
        linear_grid((rows * features / per_invocation) as u64, self.max_groups)
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
        let pipeline = if Gather::by_fours(features) {
            &self.four
        } else {
            &self.one
        };
        dispatch(pass, pipeline, group, batch, self.grid(rows, features));
    }
}
