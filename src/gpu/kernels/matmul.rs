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
    activation_code, all, bind_group, bind_group_layout, compile, dispatch, BatchBinding, Binding, Job, KernelBindings,
    ShaderSource, WgslConst, WgslFile,
};
use crate::error::GpuError;
use crate::gpu::context::GpuContext;
use crate::network::{Activation, LayerShape};
use bytemuck::{Pod, Zeroable};

/// What every variant shares.
const SHARED: WgslFile = wgsl_file!("matmul.wgsl");
/// The variants' own files.
const TILED: WgslFile = wgsl_file!("matmul_tiled.wgsl");
const DIRECT: WgslFile = wgsl_file!("matmul_direct.wgsl");
const DIRECT_4: WgslFile = wgsl_file!("matmul_direct4.wgsl");
const SUBGROUP: WgslFile = wgsl_file!("matmul_subgroup.wgsl");
const SUBGROUP_4: WgslFile = wgsl_file!("matmul_subgroup4.wgsl");
/// The single-value readers of `shaders/matmul.wgsl` for variants whose operands are f32 arrays.
const F32: WgslFile = wgsl_file!("matmul_f32.wgsl");
/// The 16-row accumulators the direct and subgroup variants share.
const ROWS_16: WgslFile = wgsl_file!("matmul_rows16.wgsl");
/// The 16-row × 4-column accumulators, vec4 operand readers and products the direct4 and
/// subgroup4 variants share.
const ROWS_16_BY_4: WgslFile = wgsl_file!("matmul_rows16x4.wgsl");

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulOp {
    /// `A_l = f(A_{l-1}·W + b)`.
    Forward = 0,
    /// `dZ_{l-1} = (dZ_l·Wᵀ) ⊙ f'(A_{l-1})`.
    BackwardInput = 1,
    /// `[dW; db] = [A_{l-1}ᵀ·dZ_l; Σ_rows dZ_l]`.
    BackwardWeights = 2,
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

    /// "forward", "backward_input", "backward_weights": how reports and the tuning cache name it.
    pub fn short_name(self) -> &'static str {
        &self.entry_point()["matmul_".len()..]
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

/// How a variant sums, and the numbers it is compiled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulScheme {
    /// `shaders/matmul_tiled.wgsl`: a workgroup computes a `tile × tile` block of the product
    /// (`TILE`), each invocation a [`MatmulVariant::THREAD_TILE`]² block of it in registers,
    /// staging `depth` reduction steps of both operands in workgroup memory at a time (`DEPTH`).
    Staged { tile: u32, depth: u32 },
    /// `shaders/matmul_direct.wgsl` (`columns` 1) or `matmul_direct4.wgsl` (`columns` 4): no
    /// workgroup memory; a workgroup of `workgroup` invocations (`DIRECT_WORKGROUP`) computes
    /// [`MatmulVariant::DIRECT_ROWS`] rows × `workgroup · columns` columns, each invocation
    /// `columns` columns' rows in registers (`DIRECT_COLUMNS`), reading its operands straight
    /// from storage.
    Direct { workgroup: u32, columns: u32 },
    /// `shaders/matmul_subgroup.wgsl`: as `Direct` with one column per invocation, the row
    /// operand loaded [`MatmulVariant::SUBGROUP_CHUNK`] steps at a time, one step per lane, and
    /// shared with `subgroupBroadcast`. Needs `Features::SUBGROUP` and subgroups of at least
    /// `SUBGROUP_CHUNK` invocations. With `columns` 4 (`shaders/matmul_subgroup4.wgsl`) each
    /// invocation owns 4 columns and every operand is read as vec4 ([`Operands::Vec4`]).
    Subgroup { workgroup: u32, columns: u32 },
}

/// How a variant's shader declares its three read operands (`weights`, `left`, `right`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// `array<f32>`: any layer.
    F32,
    /// `array<vec4<f32>>`: one load brings 4 values; only for layers whose widths and weight
    /// offset are multiples of 4 ([`MatmulVariant::fits`]).
    Vec4,
}

/// One way of computing the matmuls: a WGSL file (compiled after `shaders/matmul.wgsl`) with the
/// entry points of every [`MatmulOp`], and the constants it is compiled with. Several variants
/// can be built side by side from the same file with other constants; the grid follows from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulVariant {
    /// How reports, the tuning cache and checkpoints name it: unique among [`MatmulVariant::ALL`].
    pub name: &'static str,
    /// Its files, in order, after `shaders/matmul.wgsl`.
    pub sources: &'static [&'static WgslFile],
    pub scheme: MatmulScheme,
    pub operands: Operands,
}

impl MatmulVariant {
    /// 64 × 64 tiles, 8 × 8 outputs per invocation in registers, 16 reduction steps staged at a
    /// time: few, large workgroups (4 for 784-128-10's forward matmul at batch 100).
    pub const TILED_64: MatmulVariant = MatmulVariant::staged("tiled64", 64, 16);

    /// 32 × 32 tiles (16 invocations), 8 steps staged: four times the workgroups of
    /// [`MatmulVariant::TILED_64`], for batches too small to fill a GPU with 64 × 64 tiles.
    pub const TILED_32: MatmulVariant = MatmulVariant::staged("tiled32", 32, 8);

    /// Operands straight from storage, 16 rows × 64 columns per workgroup, no barrier.
    pub const DIRECT: MatmulVariant = MatmulVariant {
        name: "direct",
        sources: &[&F32, &ROWS_16, &DIRECT],
        scheme: MatmulScheme::Direct {
            workgroup: 64,
            columns: 1,
        },
        operands: Operands::F32,
    };

    /// As [`MatmulVariant::DIRECT`], each invocation 16 rows × 4 columns (64 columns per
    /// workgroup of 16), every operand loaded as vec4: 256 multiply-adds per 20 loads where the
    /// direct variant does 16 per 17, with no subgroup operation. Only for layers
    /// [`MatmulVariant::fits`] takes.
    pub const DIRECT_4: MatmulVariant = MatmulVariant {
        name: "direct4",
        sources: &[&ROWS_16_BY_4, &DIRECT_4],
        scheme: MatmulScheme::Direct {
            workgroup: 16,
            columns: 4,
        },
        operands: Operands::Vec4,
    };

    /// As [`MatmulVariant::DIRECT`], the row operand shared through the subgroup (where the
    /// adapter has subgroups of 8 or more).
    pub const SUBGROUP: MatmulVariant = MatmulVariant {
        name: "subgroup",
        sources: &[&F32, &ROWS_16, &SUBGROUP],
        scheme: MatmulScheme::Subgroup {
            workgroup: 64,
            columns: 1,
        },
        operands: Operands::F32,
    };

    /// As [`MatmulVariant::SUBGROUP`], each invocation 16 rows × 4 columns (64 columns per
    /// workgroup of 16), every operand loaded as vec4: 2,048 multiply-adds per 48 loads where
    /// the subgroup variant does 128 per 24. Only for layers [`MatmulVariant::fits`] takes.
    pub const SUBGROUP_4: MatmulVariant = MatmulVariant {
        name: "subgroup4",
        sources: &[&ROWS_16_BY_4, &SUBGROUP_4],
        scheme: MatmulScheme::Subgroup {
            workgroup: 16,
            columns: 4,
        },
        operands: Operands::Vec4,
    };

    /// Every variant, the default first.
    pub const ALL: [MatmulVariant; 6] = [
        MatmulVariant::TILED_64,
        MatmulVariant::TILED_32,
        MatmulVariant::DIRECT,
        MatmulVariant::DIRECT_4,
        MatmulVariant::SUBGROUP,
        MatmulVariant::SUBGROUP_4,
    ];

    /// The order tuning times them in: the usual winners on lavapipe first (a candidate far
    /// slower than the best so far is cut short).
    pub const TUNING_ORDER: [MatmulVariant; 6] = [
        MatmulVariant::SUBGROUP_4,
        MatmulVariant::SUBGROUP,
        MatmulVariant::DIRECT_4,
        MatmulVariant::TILED_64,
        MatmulVariant::TILED_32,
        MatmulVariant::DIRECT,
    ];

    /// Reduction steps a subgroup shares per chunk (`SUBGROUP_CHUNK`): the subgroup variant
    /// writes its chunk out for 8.
    pub const SUBGROUP_CHUNK: u32 = 8;

    /// What `--tune off` uses, and a run with no tuning.
    pub const DEFAULT: MatmulVariant = MatmulVariant::TILED_64;

    /// Outputs per invocation along each edge of a staged tile: `matmul_tiled.wgsl` writes its
    /// register tile out for 8 × 8.
    pub const THREAD_TILE: u32 = 8;

    /// Rows per invocation of the direct variant: `matmul_direct.wgsl` writes its accumulators
    /// out for 16.
    pub const DIRECT_ROWS: u32 = 16;

    /// A staged-tile variant (`shaders/matmul_tiled.wgsl`) with `tile` and `depth`.
    pub const fn staged(name: &'static str, tile: u32, depth: u32) -> MatmulVariant {
        MatmulVariant {
            name,
            sources: &[&F32, &TILED],
            scheme: MatmulScheme::Staged { tile, depth },
            operands: Operands::F32,
        }
    }

    /// The variant of [`MatmulVariant::ALL`] named `name`.
    pub fn by_name(name: &str) -> Option<MatmulVariant> {
        MatmulVariant::ALL.into_iter().find(|v| v.name == name)
    }

    /// The device features the variant's shader needs.
    pub fn required_features(&self) -> wgpu::Features {
        match self.scheme {
            MatmulScheme::Subgroup { .. } => wgpu::Features::SUBGROUP,
            _ => wgpu::Features::empty(),
        }
    }

    /// Whether `ctx`'s device can run the variant: its features, and for the subgroup variant
    /// subgroups of at least [`MatmulVariant::SUBGROUP_CHUNK`] invocations.
    pub fn runs_on(&self, ctx: &GpuContext) -> bool {
        let subgroups_fit = match self.scheme {
            MatmulScheme::Subgroup { .. } => ctx.info.subgroup_min_size >= Self::SUBGROUP_CHUNK,
            _ => true,
        };
        ctx.device.features().contains(self.required_features()) && subgroups_fit
    }

    /// The variants of [`MatmulVariant::ALL`] that `ctx`'s device can run.
    pub fn available(ctx: &GpuContext) -> Vec<MatmulVariant> {
        MatmulVariant::ALL.into_iter().filter(|v| v.runs_on(ctx)).collect()
    }

    /// Whether the variant can compute `op` for a layer of `shape`: any layer, but for vec4
    /// operands widths and a weight offset that are multiples of 4 (a vec4 never straddles two
    /// rows).
    pub fn fits(&self, _op: MatmulOp, shape: &LayerShape) -> bool {
        match self.operands {
            Operands::F32 => true,
            Operands::Vec4 => shape.inputs % 4 == 0 && shape.outputs % 4 == 0 && shape.weight_offset % 4 == 0,
        }
    }

    /// The group-0 declarations the variant's shader is compiled with: [`MatmulBindings`], the
    /// read operands as vec4 arrays for [`Operands::Vec4`].
    pub fn bindings(&self) -> Vec<Binding> {
        MatmulBindings::BINDINGS
            .iter()
            .map(|binding| match (self.operands, binding.name) {
                (Operands::Vec4, "weights" | "left" | "right") => Binding {
                    wgsl_type: "array<vec4<f32>>",
                    ..*binding
                },
                _ => *binding,
            })
            .collect()
    }

    /// `f` of the variant's shader source: `shaders/matmul.wgsl` then its own files, compiled
    /// with its constants and bindings.
    pub fn with_source<T>(&self, f: impl FnOnce(&ShaderSource) -> T) -> T {
        let files: Vec<&WgslFile> = std::iter::once(&SHARED).chain(self.sources.iter().copied()).collect();
        let bindings = self.bindings();
        f(&ShaderSource {
            constants: self.constants(),
            bindings: &bindings,
            files: &files,
        })
    }

    /// Invocations per workgroup.
    pub fn workgroup_size(&self) -> u32 {
        match self.scheme {
            MatmulScheme::Staged { tile, .. } => (tile / Self::THREAD_TILE).pow(2),
            MatmulScheme::Direct { workgroup, .. } | MatmulScheme::Subgroup { workgroup, .. } => workgroup,
        }
    }

    /// Rows × columns of the product one workgroup computes.
    pub fn block(&self) -> (u32, u32) {
        match self.scheme {
            MatmulScheme::Staged { tile, .. } => (tile, tile),
            MatmulScheme::Direct { workgroup, columns } | MatmulScheme::Subgroup { workgroup, columns } => {
                (Self::DIRECT_ROWS, workgroup * columns)
            }
        }
    }

    /// What the shader is compiled with, besides the shared constants.
    pub fn constants(&self) -> Vec<WgslConst> {
        match self.scheme {
            MatmulScheme::Staged { tile, depth } => vec![
                WgslConst::new("TILE", tile),
                WgslConst::new("DEPTH", depth),
                WgslConst::new("THREAD_TILE", Self::THREAD_TILE),
                WgslConst::new("MATMUL_WORKGROUP", self.workgroup_size()),
            ],
            MatmulScheme::Direct { workgroup, columns } => vec![
                WgslConst::new("DIRECT_WORKGROUP", workgroup),
                WgslConst::new("DIRECT_ROWS", Self::DIRECT_ROWS),
                WgslConst::new("DIRECT_COLUMNS", columns),
            ],
            MatmulScheme::Subgroup { workgroup, .. } => vec![
                WgslConst::new("DIRECT_WORKGROUP", workgroup),
                WgslConst::new("DIRECT_ROWS", Self::DIRECT_ROWS),
                WgslConst::new("SUBGROUP_CHUNK", Self::SUBGROUP_CHUNK),
            ],
        }
    }

    /// Workgroups (x over columns, y over rows) covering a `rows × cols` product in blocks.
    pub fn grid(&self, (rows, cols): (usize, usize)) -> (u32, u32) {
        let (block_rows, block_cols) = self.block();
        ((cols as u32).div_ceil(block_cols), (rows as u32).div_ceil(block_rows))
    }
}

/// Which variant computes each matmul of each layer: `layers[l][op as usize]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    pub layers: Vec<[MatmulVariant; 3]>,
}

impl MatmulPlan {
    /// `variant` for every matmul of `layers` layers.
    pub fn uniform(variant: MatmulVariant, layers: usize) -> MatmulPlan {
        MatmulPlan {
            layers: vec![[variant; 3]; layers],
        }
    }

    /// The plan with [`MatmulVariant::DEFAULT`] wherever its variant does not
    /// [`fit`](MatmulVariant::fits) the layer (`shapes`, one per layer).
    pub fn fitted(mut self, shapes: &[LayerShape]) -> MatmulPlan {
        for (ops, shape) in self.layers.iter_mut().zip(shapes) {
            for op in MatmulOp::ALL {
                if !ops[op as usize].fits(op, shape) {
                    ops[op as usize] = MatmulVariant::DEFAULT;
                }
            }
        }
        self
    }

    pub fn get(&self, layer: usize, op: MatmulOp) -> MatmulVariant {
        self.layers[layer][op as usize]
    }

    /// The distinct pipelines a training step by the plan dispatches (layer 0 has no
    /// backward_input), in step order.
    pub fn pipelines(&self) -> Vec<MatmulPipelineKey> {
        let mut used: Vec<MatmulPipelineKey> = Vec::new();
        for (layer, variants) in self.layers.iter().enumerate() {
            for op in MatmulOp::ALL {
                let dispatched = layer > 0 || op != MatmulOp::BackwardInput;
                let key = (variants[op as usize], op);
                if dispatched && !used.contains(&key) {
                    used.push(key);
                }
            }
        }
        used
    }

    /// "layer 0: forward direct, backward_weights tiled64; layer 1: …" (layer 0 has no
    /// backward_input).
    pub fn describe(&self) -> String {
        let layers: Vec<String> = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, ops)| {
                let parts: Vec<String> = MatmulOp::ALL
                    .iter()
                    .filter(|&&op| !(l == 0 && op == MatmulOp::BackwardInput))
                    .map(|&op| format!("{} {}", op.short_name(), ops[op as usize].name))
                    .collect();
                format!("layer {l}: {}", parts.join(", "))
            })
            .collect();
        layers.join("; ")
    }

    /// The plan as names, `[[forward, backward_input, backward_weights], …]` per layer: what a
    /// checkpoint stores.
    pub fn names(&self) -> Vec<[String; 3]> {
        self.layers.iter().map(|ops| ops.map(|v| v.name.to_string())).collect()
    }

    /// The plan [`MatmulPlan::names`] wrote; None if a name is not a variant of this build.
    pub fn from_names(names: &[[String; 3]]) -> Option<MatmulPlan> {
        let layers = names
            .iter()
            .map(|ops| {
                let [f, i, w] = ops;
                Some([
                    MatmulVariant::by_name(f)?,
                    MatmulVariant::by_name(i)?,
                    MatmulVariant::by_name(w)?,
                ])
            })
            .collect::<Option<Vec<_>>>()?;
        Some(MatmulPlan { layers })
    }
}

/// A pipeline of the matmul kernels: `op` as `variant` computes it.
pub type MatmulPipelineKey = (MatmulVariant, MatmulOp);

/// Every op of every variant of `variants`, in that order.
pub fn every_op_of(variants: &[MatmulVariant]) -> Vec<MatmulPipelineKey> {
    variants
        .iter()
        .flat_map(|&variant| MatmulOp::ALL.map(|op| (variant, op)))
        .collect()
}

/// One compiled pipeline.
struct MatmulPipeline {
    key: MatmulPipelineKey,
    pipeline: wgpu::ComputePipeline,
}

/// Compiles `op`'s entry point of `variant` for group-0 layout `layout`.
fn compile_pipeline(
    ctx: &GpuContext,
    layout: &wgpu::BindGroupLayout,
    batch_layout: &wgpu::BindGroupLayout,
    (variant, op): MatmulPipelineKey,
) -> Result<MatmulPipeline, GpuError> {
    let pipeline = variant.with_source(|source| compile(ctx, source, op.entry_point(), layout, batch_layout))?;
    Ok(MatmulPipeline {
        key: (variant, op),
        pipeline,
    })
}

/// The matmul kernels: one group-0 layout, shared by every variant, and the pipelines compiled so
/// far, one per (variant, op): those a run's plan uses, or while tuning the candidates timed so
/// far (a driver may take a tenth of a second or more to compile one, so none is compiled that
/// is not run).
pub struct Matmul {
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<MatmulPipeline>,
}

impl Matmul {
    /// Compiles the pipelines `wanted` names.
    pub fn new(
        ctx: &GpuContext,
        batch_layout: &wgpu::BindGroupLayout,
        wanted: &[MatmulPipelineKey],
    ) -> Result<Matmul, GpuError> {
        let mut matmul = Matmul {
            layout: bind_group_layout::<MatmulBindings>(ctx, "matmul"),
            pipelines: Vec::new(),
        };
        matmul.compile(ctx, batch_layout, wanted)?;
        Ok(matmul)
    }

    /// Compiles the pipelines of `wanted` not compiled yet, each on a thread of its own
    /// (natively), and returns them.
    pub fn compile(
        &mut self,
        ctx: &GpuContext,
        batch_layout: &wgpu::BindGroupLayout,
        wanted: &[MatmulPipelineKey],
    ) -> Result<Vec<MatmulPipelineKey>, GpuError> {
        let mut missing: Vec<MatmulPipelineKey> = Vec::new();
        for &key in wanted {
            if !self.has(key) && !missing.contains(&key) {
                missing.push(key);
            }
        }
        let layout = &self.layout;
        let jobs: Vec<Job<'_, _>> = missing
            .iter()
            .map(|&key| Box::new(move || compile_pipeline(ctx, layout, batch_layout, key)) as Job<'_, _>)
            .collect();
        for pipeline in all(jobs) {
            self.pipelines.push(pipeline?);
        }
        Ok(missing)
    }

    /// Whether the pipeline of `key` is compiled.
    pub fn has(&self, key: MatmulPipelineKey) -> bool {
        self.pipelines.iter().any(|p| p.key == key)
    }

    /// The pipelines compiled, in the order they were.
    pub fn compiled(&self) -> Vec<MatmulPipelineKey> {
        self.pipelines.iter().map(|p| p.key).collect()
    }

    pub fn bind(&self, ctx: &GpuContext, label: &str, bindings: &MatmulBindings) -> wgpu::BindGroup {
        bind_group(ctx, &self.layout, label, bindings)
    }

    /// Records `op` computed by `variant` (compiled for it) for a batch of `rows` through a
    /// layer of `shape`, bound by `group`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        variant: MatmulVariant,
        op: MatmulOp,
        group: &wgpu::BindGroup,
        batch: BatchBinding,
        rows: usize,
        shape: &LayerShape,
    ) {
        let pipeline = self
            .pipelines
            .iter()
            .find(|p| p.key == (variant, op))
            .unwrap_or_else(|| {
                panic!(
                    "matmul variant {} was not compiled for {}",
                    variant.name,
                    op.entry_point()
                )
            });
        let grid = variant.grid(op.product(rows, shape));
        dispatch(pass, &pipeline.pipeline, group, batch, grid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grid covers every element of the product, with no workgroup wholly outside it, for
    /// every op and the awkward shapes of the parity tests.
    #[test]
    fn grids_cover_every_product() {
        for variant in MatmulVariant::ALL {
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
                    let (block_rows, block_cols) = variant.block();
                    let (block_rows, block_cols) = (block_rows as usize, block_cols as usize);
                    let what = format!("{} {op:?} {m}×{n}: {x}×{y}", variant.name);
                    assert!(x as usize * block_cols >= n && y as usize * block_rows >= m, "{what}");
                    assert!(
                        (x as usize - 1) * block_cols < n && (y as usize - 1) * block_rows < m,
                        "{what}"
                    );
                }
            }
        }
    }

    /// The vec4 variant takes only layers whose widths and weight offset are multiples of 4,
    /// reads them as vec4 arrays, and a plan leaves the others to the default.
    #[test]
    fn vec4_operands_fit_only_layers_in_fours() {
        let layer = |inputs, outputs, weight_offset| LayerShape {
            inputs,
            outputs,
            weight_offset,
            bias_offset: weight_offset + inputs * outputs,
        };
        let v = MatmulVariant::SUBGROUP_4;
        for op in MatmulOp::ALL {
            assert!(v.fits(op, &layer(784, 128, 0)));
            assert!(!v.fits(op, &layer(128, 10, 100_480)), "10 outputs");
            assert!(!v.fits(op, &layer(13, 8, 0)), "13 inputs");
            assert!(!v.fits(op, &layer(8, 8, 2)), "offset 2");
            assert!(MatmulVariant::TILED_64.fits(op, &layer(13, 7, 3)));
        }
        let types: Vec<&str> = v.bindings().iter().map(|b| b.wgsl_type).collect();
        assert_eq!(types[..3], ["array<vec4<f32>>"; 3]);
        assert_eq!(types[3], "array<f32>", "out is written one value at a time");
        let shapes = [layer(784, 128, 0), layer(128, 10, 100_480)];
        let plan = MatmulPlan::uniform(v, 2).fitted(&shapes);
        assert_eq!(plan.layers, vec![[v; 3], [MatmulVariant::DEFAULT; 3]]);
    }

    #[test]
    fn the_tiled_variant_emits_its_tile_depth_and_workgroup() {
        let constants = MatmulVariant::TILED_64.constants();
        let value = |name: &str| constants.iter().find(|c| c.name == name).map(|c| c.value);
        assert_eq!(value("TILE"), Some(64));
        assert_eq!(value("DEPTH"), Some(16));
        assert_eq!(value("MATMUL_WORKGROUP"), Some(64));
        let constants = MatmulVariant::DIRECT.constants();
        let value = |name: &str| constants.iter().find(|c| c.name == name).map(|c| c.value);
        assert_eq!(value("DIRECT_WORKGROUP"), Some(64));
        assert_eq!(value("DIRECT_ROWS"), Some(16));
    }

    #[test]
    fn variants_have_distinct_names_and_plans_round_trip_through_them() {
        for (i, a) in MatmulVariant::ALL.iter().enumerate() {
            assert_eq!(MatmulVariant::by_name(a.name), Some(*a));
            assert!(MatmulVariant::ALL[i + 1..].iter().all(|b| b.name != a.name));
        }
        let plan = MatmulPlan {
            layers: vec![
                [MatmulVariant::DIRECT, MatmulVariant::TILED_32, MatmulVariant::TILED_64],
                [MatmulVariant::TILED_64, MatmulVariant::DIRECT, MatmulVariant::DIRECT],
            ],
        };
        assert_eq!(MatmulPlan::from_names(&plan.names()), Some(plan.clone()));
        // Layer 0 has no backward_input: tiled32 is named there, never compiled.
        use MatmulOp::*;
        assert_eq!(
            plan.pipelines(),
            [
                (MatmulVariant::DIRECT, Forward),
                (MatmulVariant::TILED_64, BackwardWeights),
                (MatmulVariant::TILED_64, Forward),
                (MatmulVariant::DIRECT, BackwardInput),
                (MatmulVariant::DIRECT, BackwardWeights),
            ]
        );
        assert_eq!(
            plan.describe(),
            "layer 0: forward direct, backward_weights tiled64; \
             layer 1: forward tiled64, backward_input direct, backward_weights direct"
        );
        assert_eq!(
            MatmulPlan::from_names(&[["direct".into(), "nope".into(), "direct".into()]]),
            None
        );
    }
}
