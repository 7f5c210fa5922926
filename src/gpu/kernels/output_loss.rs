//! `output_loss` (`shaders/output_loss.wgsl`), twin of `cpu::ops::output_loss`: from a batch's
//! logits, the output non-linearity, the batch's loss sum and correct count (into its slot of
//! the metrics buffer) and, when training, `dZ_L`.

use super::{
    bind_group, bind_group_layout, compile, dispatch, loss_code, output_code, BatchBinding, KernelBindings,
    ShaderSource, WgslConst, WgslFile,
};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;
use crate::network::{Loss, Output};
use bytemuck::{Pod, Zeroable};

const SOURCE: WgslFile = wgsl_file!("output_loss.wgsl");

/// Invocations of the one workgroup that handles a batch (a power of two: the sums are a tree).
pub const OUTPUT_LOSS_WORKGROUP: u32 = 256;

/// Floats per batch in the metrics buffer: the loss sum, then the correct count.
pub const METRICS_PER_BATCH: u32 = 2;

/// `OutputLossParams` in `shaders/output_loss.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct OutputLossParams {
    pub classes: u32,
    /// `OUTPUT_*` code.
    pub output: u32,
    /// `LOSS_*` code.
    pub loss: u32,
    /// 1: write dz (training).
    pub with_grad: u32,
}

impl OutputLossParams {
    pub fn new(classes: usize, output: Output, loss: Loss, with_grad: bool) -> OutputLossParams {
        OutputLossParams {
            classes: classes as u32,
            output: output_code(output),
            loss: loss_code(loss),
            with_grad: with_grad as u32,
        }
    }
}

kernel_bindings! {
    /// Group 0 of `output_loss`.
    pub struct OutputLossBindings {
        /// Z_L, rows × classes.
        logits: Read "array<f32>",
        /// The split's labels, four to a u32.
        labels: Read "array<u32>",
        /// The split's example order (as gathered).
        order: Read "array<u32>",
        /// dZ_L, rows × classes: written only with `with_grad`.
        dz: ReadWrite "array<f32>",
        /// METRICS_PER_BATCH floats per batch-table entry.
        metrics: ReadWrite "array<f32>",
        params: Read "OutputLossParams",
    }
}

/// The `output_loss` pipeline.
pub struct OutputLoss {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl OutputLoss {
    pub fn new(ctx: &GpuContext, batch_layout: &wgpu::BindGroupLayout) -> Result<OutputLoss, GpuError> {
        let layout = bind_group_layout::<OutputLossBindings>(ctx, "output_loss");
        let source = ShaderSource {
            constants: vec![
                WgslConst::new("OUTPUT_LOSS_WORKGROUP", OUTPUT_LOSS_WORKGROUP),
                WgslConst::new("METRICS_PER_BATCH", METRICS_PER_BATCH),
            ],
            bindings: OutputLossBindings::BINDINGS,
            files: &[&SOURCE],
        };
        Ok(OutputLoss {
            pipeline: compile(ctx, &source, "output_loss", &layout, batch_layout)?,
            layout,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &OutputLossBindings) -> wgpu::BindGroup {
        bind_group(ctx, &self.layout, label, bindings)
    }

    /// One workgroup per batch, whatever its rows: its invocations stride over them.
    pub fn grid(&self) -> (u32, u32) {
        (1, 1)
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, batch: BatchBinding) {
        dispatch(pass, &self.pipeline, group, batch, self.grid());
    }
}
