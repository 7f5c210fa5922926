//! The three matmuls of a dense layer (`shaders/matmul.wgsl`), each fused with what surrounds it:
//! `matmul_forward` (+ bias and activation), `matmul_backward_input` (+ the activation's
//! derivative) and `matmul_backward_weights` (+ the bias gradient), twins of the `cpu::ops`
//! functions of the same names.
//!
//! How the sums are computed is a [`MatmulVariant`]: a WGSL file with the entry points of every
//! [`MatmulOp`], the constants it is compiled with, and the grid they imply. Every variant shares
//! `shaders/matmul.wgsl` (parameters, operand readers, the epilogues that turn a finished sum into
//! an output) and the bindings below, so a variant is only its way of summing.

use super::{
    activation_code, bind_group, bind_group_layout, compile, dispatch, BatchBinding, KernelBindings, ShaderSource,
    WgslConst, WgslFile,
};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;
use crate::network::{Activation, LayerShape};
use bytemuck::{Pod, Zeroable};

/// What every variant shares.
const SHARED: WgslFile = wgsl_file!("matmul.wgsl");
/// The variants' own files.
const TILED: WgslFile = wgsl_file!("matmul_tiled.wgsl");

/// `MatmulParams` in `shaders/matmul.wgsl`: one layer's shape and place in the flat buffers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MatmulParams {
    pub inputs: u32,
    pub outputs: u32,
    pub weight_offset: u32,
    pub bias_offset: u32,
    /// `ACT_*` code: applied by `matmul_forward`, differentiated by `matmul_backward_input`.
    pub activation: u32,
    /// The dropout layer whose mask `matmul_forward` applies to its output (hidden layer l's
    /// output is dropout layer l) and `matmul_backward_input` to its derivative; 0: none.
    pub dropout_layer: u32,
    pub _pad: [u32; 2],
}

impl MatmulParams {
    pub fn new(shape: &LayerShape, activation: Option<Activation>) -> MatmulParams {
        MatmulParams {
            inputs: shape.inputs as u32,
            outputs: shape.outputs as u32,
            weight_offset: shape.weight_offset as u32,
            bias_offset: shape.bias_offset as u32,
            activation: activation_code(activation),
            dropout_layer: 0,
            _pad: [0; 2],
        }
    }

    /// The same, with dropout layer `layer`'s mask applied (in training batches, when the run
    /// drops units there).
    pub fn with_dropout_layer(self, layer: usize) -> MatmulParams {
        MatmulParams {
            dropout_layer: layer as u32,
            ..self
        }
    }
}

kernel_bindings! {
    /// Group 0 of the matmul kernels. For layer l:
    /// - forward: left = A_{l-1}, out = A_l (right unused);
    /// - backward_input: left = dZ_l, right = A_{l-1}, out = dZ_{l-1};
    /// - backward_weights: left = A_{l-1}, right = dZ_l, out = the flat gradient buffer (weights
    ///   unused).
    pub struct MatmulBindings {
        /// The flat parameter buffer: W_l at `weight_offset`, b_l at `bias_offset`.
        weights: Read "array<f32>",
        left: Read "array<f32>",
        right: Read "array<f32>",
        out: ReadWrite "array<f32>",
        params: Read "MatmulParams",
    }
}

/// The three matmuls; each is an entry point of every variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulOp {
    /// `A_l = f(A_{l-1}·W + b)`.
    Forward,
    /// `dZ_{l-1} = (dZ_l·Wᵀ) ⊙ f'(A_{l-1})`.
    BackwardInput,
    /// `[dW; db] = [A_{l-1}ᵀ·dZ_l; Σ_rows dZ_l]`.
    BackwardWeights,
}

impl MatmulOp {
    pub const ALL: [MatmulOp; 3] = [MatmulOp::Forward, MatmulOp::BackwardInput, MatmulOp::BackwardWeights];

    pub fn entry_point(self) -> &'static str {
        match self {
            MatmulOp::Forward => "matmul_forward",
            MatmulOp::BackwardInput => "matmul_backward_input",
            MatmulOp::BackwardWeights => "matmul_backward_weights",
        }
    }

    /// The product's shape, rows × columns, for a batch of `rows` through a layer of `shape`:
    /// what the grid covers. The weight gradient has one row more: the bias gradient.
    pub fn product(self, rows: usize, shape: &LayerShape) -> (usize, usize) {
        match self {
            MatmulOp::Forward => (rows, shape.outputs),
            MatmulOp::BackwardInput => (rows, shape.inputs),
            MatmulOp::BackwardWeights => (shape.inputs + 1, shape.outputs),
        }
    }
}

/// One way of computing the matmuls: a WGSL file (compiled after `shaders/matmul.wgsl`) with the
/// entry points of every [`MatmulOp`], and the constants it is compiled with. Several variants
/// can be built side by side from the same file with other constants; the grid follows from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulVariant {
    /// How reports name it.
    pub name: &'static str,
    pub source: &'static WgslFile,
    /// A workgroup computes a `tile × tile` block of the product (`TILE`).
    pub tile: u32,
    /// Reduction steps staged in workgroup memory at a time (`DEPTH`).
    pub depth: u32,
}

impl MatmulVariant {
    /// 64 × 64 tiles, 8 × 8 outputs per invocation in registers, 16 reduction steps staged at a
    /// time (`shaders/matmul_tiled.wgsl`).
    pub const TILED_64: MatmulVariant = MatmulVariant {
        name: "tiled 64x64, depth 16",
        source: &TILED,
        tile: 64,
        depth: 16,
    };

    /// Outputs per invocation along each edge: `matmul_tiled.wgsl` writes its register tile out
    /// for 8 × 8.
    pub const THREAD_TILE: u32 = 8;

    /// Invocations per workgroup: one per `THREAD_TILE × THREAD_TILE` block of the tile.
    pub fn workgroup_size(&self) -> u32 {
        (self.tile / Self::THREAD_TILE).pow(2)
    }

    /// What the shader is compiled with, besides the shared constants.
    pub fn constants(&self) -> Vec<WgslConst> {
        vec![
            WgslConst::new("TILE", self.tile),
            WgslConst::new("DEPTH", self.depth),
            WgslConst::new("THREAD_TILE", Self::THREAD_TILE),
            WgslConst::new("MATMUL_WORKGROUP", self.workgroup_size()),
        ]
    }

    /// Workgroups (x over columns, y over rows) covering a `rows × cols` product in tiles.
    pub fn grid(&self, (rows, cols): (usize, usize)) -> (u32, u32) {
        ((cols as u32).div_ceil(self.tile), (rows as u32).div_ceil(self.tile))
    }
}

/// The pipelines of one variant.
pub struct MatmulPipelines {
    pub variant: MatmulVariant,
    forward: wgpu::ComputePipeline,
    backward_input: wgpu::ComputePipeline,
    backward_weights: wgpu::ComputePipeline,
}

impl MatmulPipelines {
    /// Compiles `variant` for group-0 layout `layout`.
    pub fn new(
        ctx: &GpuContext,
        layout: &wgpu::BindGroupLayout,
        batch_layout: &wgpu::BindGroupLayout,
        variant: MatmulVariant,
    ) -> Result<MatmulPipelines, GpuError> {
        let source = ShaderSource {
            constants: variant.constants(),
            bindings: MatmulBindings::BINDINGS,
            files: &[&SHARED, variant.source],
        };
        let build = |op: MatmulOp| compile(ctx, &source, op.entry_point(), layout, batch_layout);
        Ok(MatmulPipelines {
            variant,
            forward: build(MatmulOp::Forward)?,
            backward_input: build(MatmulOp::BackwardInput)?,
            backward_weights: build(MatmulOp::BackwardWeights)?,
        })
    }

    fn pipeline(&self, op: MatmulOp) -> &wgpu::ComputePipeline {
        match op {
            MatmulOp::Forward => &self.forward,
            MatmulOp::BackwardInput => &self.backward_input,
            MatmulOp::BackwardWeights => &self.backward_weights,
        }
    }

    /// Records `op` for a batch of `rows` through a layer of `shape`, bound by `group`.
    pub fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        op: MatmulOp,
        group: &wgpu::BindGroup,
        batch: BatchBinding,
        rows: usize,
        shape: &LayerShape,
    ) {
        let grid = self.variant.grid(op.product(rows, shape));
        dispatch(pass, self.pipeline(op), group, batch, grid);
    }
}

/// The matmul kernels: one group-0 layout, shared by every variant, and the pipelines of the
/// variant in use.
pub struct Matmul {
    layout: wgpu::BindGroupLayout,
    pipelines: MatmulPipelines,
}

impl Matmul {
    pub fn new(
        ctx: &GpuContext,
        batch_layout: &wgpu::BindGroupLayout,
        variant: MatmulVariant,
    ) -> Result<Matmul, GpuError> {
        let layout = bind_group_layout::<MatmulBindings>(ctx, "matmul");
        Ok(Matmul {
            pipelines: MatmulPipelines::new(ctx, &layout, batch_layout, variant)?,
            layout,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &MatmulBindings) -> wgpu::BindGroup {
        bind_group(ctx, &self.layout, label, bindings)
    }

    /// Records `op` for a batch of `rows` through a layer of `shape`, bound by `group`.
    pub fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        op: MatmulOp,
        group: &wgpu::BindGroup,
        batch: BatchBinding,
        rows: usize,
        shape: &LayerShape,
    ) {
        self.pipelines.record(pass, op, group, batch, rows, shape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grid covers every element of the product, with no workgroup wholly outside it, for
    /// every op and the awkward shapes of the parity tests.
    #[test]
    fn grids_cover_every_product() {
        let variant = MatmulVariant::TILED_64;
        for (rows, inputs, outputs) in [(1, 1, 1), (7, 784, 7), (100, 101, 784), (784, 7, 101), (64, 64, 64)] {
            let shape = LayerShape {
                inputs,
                outputs,
                weight_offset: 0,
                bias_offset: inputs * outputs,
            };
            for op in MatmulOp::ALL {
                let (m, n) = op.product(rows, &shape);
                let (x, y) = variant.grid((m, n));
                let tile = variant.tile as usize;
                assert!(
                    x as usize * tile >= n && y as usize * tile >= m,
                    "{op:?} {m}×{n}: {x}×{y}"
                );
                assert!(
                    (x as usize - 1) * tile < n && (y as usize - 1) * tile < m,
                    "{op:?} {m}×{n}: {x}×{y}"
                );
            }
        }
    }

    #[test]
    fn the_tiled_variant_emits_its_tile_depth_and_workgroup() {
        let constants = MatmulVariant::TILED_64.constants();
        let value = |name: &str| constants.iter().find(|c| c.name == name).map(|c| c.value);
        assert_eq!(value("TILE"), Some(64));
        assert_eq!(value("DEPTH"), Some(16));
        assert_eq!(value("MATMUL_WORKGROUP"), Some(64));
    }
}
