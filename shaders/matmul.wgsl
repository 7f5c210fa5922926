// The three matmuls of a dense layer, each fused with what surrounds it:
//   matmul_forward           out = f(left · W + b)                 twin of cpu::ops::matmul_forward
//                                                                    then cpu::ops::activation_forward
//   matmul_backward_input    out = (left · Wᵀ) ⊙ f'(right)         twin of cpu::ops::matmul_backward_input
//                                                                    then cpu::ops::activation_backward
//   matmul_backward_weights  out = [leftᵀ · right ; Σ_rows right]  twin of cpu::ops::matmul_backward_weights
// with, for layer l (W: inputs × outputs, at weight_offset in the flat parameter buffer):
//   forward:          left = A_{l-1} (rows × inputs),  out = A_l (rows × outputs)
//   backward_input:   left = dZ_l (rows × outputs), right = A_{l-1}, out = dZ_{l-1} (rows × inputs)
//   backward_weights: left = A_{l-1}, right = dZ_l, out = the flat gradient buffer: dW_l, and db_l
//                     as one extra row of the product (left gets a column of ones).
//
// Tiling: a workgroup of 64 invocations computes a 64 × 64 block of the output. For each step of
// DEPTH along the reduction it stages a 64 × DEPTH block of the left operand and a DEPTH × 64
// block of the right one in workgroup memory, both k-major so that an invocation reads its 8 rows
// and its 8 columns as two vec4 each; it then accumulates its 8 × 8 outputs in registers. Each
// staged value is read by 8 invocations, and each register value feeds 8 multiply-adds.
// Elements outside the matrices load as 0 and are never stored, so any shape works.

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
const STAGED: u32 = 1024u; // TILE * DEPTH
const VEC_PER_K: u32 = 16u; // TILE / 4

struct LayerDims {
    inputs: u32,
    outputs: u32,
    weight_offset: u32,
    bias_offset: u32,
    // ACT_* code: forward applies it (ACT_NONE for the last layer); backward_input applies its derivative
    activation: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<f32>;
@group(0) @binding(1) var<storage, read> left: array<f32>;
@group(0) @binding(2) var<storage, read> right: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> dims: LayerDims;

// Staged blocks, k-major: tile_l[kk * 16 + i / 4][i % 4] = left block (i, kk); tile_r likewise by column.
var<workgroup> tile_l: array<vec4<f32>, 256>;
var<workgroup> tile_r: array<vec4<f32>, 256>;

// The invocation's 8 × 8 outputs: acc[2 * p + h][c] is row 8·ty + p, column 8·tx + 4·h + c.
// Indexed only by constants in the loop below, so every driver keeps it in registers.
var<private> acc: array<vec4<f32>, 16>;

// acc += (staged left rows 8·ty ..) · (staged right columns 8·tx ..) over the DEPTH staged k.
fn multiply_staged(ty: u32, tx: u32) {
    for (var kk = 0u; kk < DEPTH; kk++) {
        let a_lo = tile_l[kk * VEC_PER_K + 2u * ty];
        let a_hi = tile_l[kk * VEC_PER_K + 2u * ty + 1u];
        let b_lo = tile_r[kk * VEC_PER_K + 2u * tx];
        let b_hi = tile_r[kk * VEC_PER_K + 2u * tx + 1u];
        acc[0] = fma(vec4<f32>(a_lo.x), b_lo, acc[0]);
        acc[1] = fma(vec4<f32>(a_lo.x), b_hi, acc[1]);
        acc[2] = fma(vec4<f32>(a_lo.y), b_lo, acc[2]);
        acc[3] = fma(vec4<f32>(a_lo.y), b_hi, acc[3]);
        acc[4] = fma(vec4<f32>(a_lo.z), b_lo, acc[4]);
        acc[5] = fma(vec4<f32>(a_lo.z), b_hi, acc[5]);
        acc[6] = fma(vec4<f32>(a_lo.w), b_lo, acc[6]);
        acc[7] = fma(vec4<f32>(a_lo.w), b_hi, acc[7]);
        acc[8] = fma(vec4<f32>(a_hi.x), b_lo, acc[8]);
        acc[9] = fma(vec4<f32>(a_hi.x), b_hi, acc[9]);
        acc[10] = fma(vec4<f32>(a_hi.y), b_lo, acc[10]);
        acc[11] = fma(vec4<f32>(a_hi.y), b_hi, acc[11]);
        acc[12] = fma(vec4<f32>(a_hi.z), b_lo, acc[12]);
        acc[13] = fma(vec4<f32>(a_hi.z), b_hi, acc[13]);
        acc[14] = fma(vec4<f32>(a_hi.w), b_lo, acc[14]);
        acc[15] = fma(vec4<f32>(a_hi.w), b_hi, acc[15]);
    }
}

fn stage_left(i: u32, kk: u32, value: f32) {
    tile_l[kk * VEC_PER_K + i / 4u][i % 4u] = value;
}

fn stage_right(kk: u32, j: u32, value: f32) {
    tile_r[kk * VEC_PER_K + j / 4u][j % 4u] = value;
}

// Element (r, c) of a row-major rows × cols matrix in `left`, or 0 outside it.
fn left_at(r: u32, c: u32, rows: u32, cols: u32) -> f32 {
    return select(0.0, left[min(r, rows - 1u) * cols + min(c, cols - 1u)], r < rows && c < cols);
}

fn right_at(r: u32, c: u32, rows: u32, cols: u32) -> f32 {
    return select(0.0, right[min(r, rows - 1u) * cols + min(c, cols - 1u)], r < rows && c < cols);
}

// W[r, c] of this layer, or 0 outside it.
fn weight_at(r: u32, c: u32) -> f32 {
    let inside = r < dims.inputs && c < dims.outputs;
    let r_in = min(r, dims.inputs - 1u);
    let c_in = min(c, dims.outputs - 1u);
    return select(0.0, weights[dims.weight_offset + r_in * dims.outputs + c_in], inside);
}

fn activate(z: f32, code: u32) -> f32 {
    switch code {
        case ACT_RELU: { return max(z, 0.0); }
        case ACT_SIGMOID: { return sigmoid(z); }
        case ACT_TANH: { return tanh(z); }
        default: { return z; }
    }
}

// f'(z) written with a = f(z), as cpu::ops::activation_backward does.
fn derivative(a: f32, code: u32) -> f32 {
    switch code {
        case ACT_RELU: { return select(0.0, 1.0, a > 0.0); }
        case ACT_SIGMOID: { return a * (1.0 - a); }
        case ACT_TANH: { return 1.0 - a * a; }
        default: { return 1.0; }
    }
}

// acc[i] for a computed i. Indexing acc with a variable would make drivers move the whole array
// from registers to memory (lavapipe: per-invocation scratch, slow and allocated per dispatch), so
// the epilogues go through this switch, where every index is a constant.
fn acc_at(i: u32) -> vec4<f32> {
    switch i {
        case 0u: { return acc[0]; }
        case 1u: { return acc[1]; }
        case 2u: { return acc[2]; }
        case 3u: { return acc[3]; }
        case 4u: { return acc[4]; }
        case 5u: { return acc[5]; }
        case 6u: { return acc[6]; }
        case 7u: { return acc[7]; }
        case 8u: { return acc[8]; }
        case 9u: { return acc[9]; }
        case 10u: { return acc[10]; }
        case 11u: { return acc[11]; }
        case 12u: { return acc[12]; }
        case 13u: { return acc[13]; }
        case 14u: { return acc[14]; }
        default: { return acc[15]; }
    }
}

// out (rows × outputs) = f(left (rows × inputs) · W + b)
@compute @workgroup_size(64)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = dims.inputs;
    let n = dims.outputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    acc = array<vec4<f32>, 16>();
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var e = lid; e < STAGED; e += 64u) {
            // Consecutive invocations read along a row of left, and along a row of W.
            stage_left(e / DEPTH, e % DEPTH, left_at(row0 + e / DEPTH, k0 + e % DEPTH, rows, k));
            stage_right(e / TILE, e % TILE, weight_at(k0 + e / TILE, col0 + e % TILE));
        }
        workgroupBarrier();
        multiply_staged(lid / 8u, lid % 8u);
        workgroupBarrier();
    }
    for (var p = 0u; p < 8u; p++) {
        for (var q = 0u; q < 8u; q++) {
            let r = row0 + 8u * (lid / 8u) + p;
            let c = col0 + 8u * (lid % 8u) + q;
            if r < rows && c < n {
                let z = acc_at(2u * p + q / 4u)[q % 4u] + weights[dims.bias_offset + c];
                out[r * n + c] = activate(z, dims.activation);
            }
        }
    }
}

// out (rows × inputs) = (left (rows × outputs) · Wᵀ) ⊙ f'(right), right = A_{l-1} (rows × inputs)
@compute @workgroup_size(64)
fn matmul_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = dims.outputs; // reduce over the layer's outputs, produce its inputs
    let n = dims.inputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    acc = array<vec4<f32>, 16>();
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var e = lid; e < STAGED; e += 64u) {
            stage_left(e / DEPTH, e % DEPTH, left_at(row0 + e / DEPTH, k0 + e % DEPTH, rows, k));
            // Wᵀ[kk, j] = W[j, kk]: consecutive invocations read along a row of W.
            stage_right(e % DEPTH, e / DEPTH, weight_at(col0 + e / DEPTH, k0 + e % DEPTH));
        }
        workgroupBarrier();
        multiply_staged(lid / 8u, lid % 8u);
        workgroupBarrier();
    }
    for (var p = 0u; p < 8u; p++) {
        for (var q = 0u; q < 8u; q++) {
            let r = row0 + 8u * (lid / 8u) + p;
            let c = col0 + 8u * (lid % 8u) + q;
            if r < rows && c < n {
                out[r * n + c] = acc_at(2u * p + q / 4u)[q % 4u] * derivative(right[r * n + c], dims.activation);
            }
        }
    }
}

// out[weight_offset ..] (inputs × outputs) = leftᵀ (inputs × rows) · right (rows × outputs), and
// out[bias_offset ..] (outputs) = Σ_rows right: row `inputs` of the product, where leftᵀ's
// missing row is taken as ones.
@compute @workgroup_size(64)
fn matmul_backward_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let m = dims.inputs;
    let n = dims.outputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    acc = array<vec4<f32>, 16>();
    for (var k0 = 0u; k0 < rows; k0 += DEPTH) {
        for (var e = lid; e < STAGED; e += 64u) {
            // leftᵀ[i, kk] = left[kk, i]: consecutive invocations read along a row of left.
            let i = e % TILE;
            let t = k0 + e / TILE;
            let one = select(0.0, 1.0, row0 + i == m && t < rows);
            stage_left(i, e / TILE, left_at(t, row0 + i, rows, m) + one);
            stage_right(e / TILE, e % TILE, right_at(t, col0 + e % TILE, rows, n));
        }
        workgroupBarrier();
        multiply_staged(lid / 8u, lid % 8u);
        workgroupBarrier();
    }
    for (var p = 0u; p < 8u; p++) {
        for (var q = 0u; q < 8u; q++) {
            let r = row0 + 8u * (lid / 8u) + p;
            let c = col0 + 8u * (lid % 8u) + q;
            let value = acc_at(2u * p + q / 4u)[q % 4u];
            if r < m && c < n {
                out[dims.weight_offset + r * n + c] = value;
            } else if r == m && c < n {
                out[dims.bias_offset + c] = value;
            }
        }
    }
}
