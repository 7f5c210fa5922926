// The three matmuls of a dense layer, each fused with what surrounds it:
//   matmul_forward          out  = f(left · W + b)              twin of cpu::ops::matmul_forward
//                                                                  then cpu::ops::activation_forward
//   matmul_backward_input   out  = (left · Wᵀ) ⊙ f'(right)      twin of cpu::ops::matmul_backward_input
//                                                                  then cpu::ops::activation_backward
//   matmul_backward_weights out  = [leftᵀ · right ; Σ_rows right] twin of cpu::ops::matmul_backward_weights
// with, for layer l (W: inputs × outputs, at weight_offset in the flat parameter buffer):
//   forward:          left = A_{l-1} (rows × inputs),  out = A_l (rows × outputs)
//   backward_input:   left = dZ_l (rows × outputs), right = A_{l-1}, out = dZ_{l-1} (rows × inputs)
//   backward_weights: left = A_{l-1}, right = dZ_l, out = the flat gradient buffer: dW_l, and db_l
//                     as an extra row of the product (a row of ones appended to left's columns).
//
// Tiling: a workgroup of SIDE × SIDE invocations computes a TILE × TILE block of the output. For
// each step of DEPTH along the reduction it stages a TILE × DEPTH block of the left operand and a
// DEPTH × TILE block of the right one in workgroup memory; every invocation then accumulates its
// PER × PER outputs (rows ty + SIDE·p, columns tx + SIDE·q) from there. Elements outside the
// matrices load as 0 and are never stored, so any shape works.

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
const SIDE: u32 = 16u;
const PER: u32 = 4u;
const STAGED: u32 = 1024u; // TILE * DEPTH

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
@group(0) @binding(4) var<uniform> dims: LayerDims;

// left block, stored k-major: tile_l[kk * TILE + i]; right block: tile_r[kk * TILE + j].
var<workgroup> tile_l: array<f32, STAGED>;
var<workgroup> tile_r: array<f32, STAGED>;

// acc[p * PER + q] += Σ_kk tile_l[kk, ty + SIDE·p] · tile_r[kk, tx + SIDE·q]
fn multiply_tiles(acc: ptr<function, array<f32, 16>>, tx: u32, ty: u32) {
    for (var kk = 0u; kk < DEPTH; kk++) {
        var a: array<f32, PER>;
        var b: array<f32, PER>;
        for (var p = 0u; p < PER; p++) {
            a[p] = tile_l[kk * TILE + ty + SIDE * p];
            b[p] = tile_r[kk * TILE + tx + SIDE * p];
        }
        for (var p = 0u; p < PER; p++) {
            for (var q = 0u; q < PER; q++) {
                (*acc)[p * PER + q] = fma(a[p], b[q], (*acc)[p * PER + q]);
            }
        }
    }
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

// out (rows × outputs) = f(left (rows × inputs) · W + b)
@compute @workgroup_size(16, 16)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = batch.rows;
    let k = dims.inputs;
    let n = dims.outputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let flat = lid.y * SIDE + lid.x;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var e = flat; e < STAGED; e += SIDE * SIDE) {
            // left: consecutive invocations read along a row of the input
            let i = e / DEPTH;
            let kk = e % DEPTH;
            let r = row0 + i;
            let c = k0 + kk;
            tile_l[kk * TILE + i] = select(0.0, left[r * k + c], r < rows && c < k);
            // W: consecutive invocations read along a row of W
            let kr = e / TILE;
            let j = e % TILE;
            let wr = k0 + kr;
            let wc = col0 + j;
            tile_r[kr * TILE + j] = select(0.0, weights[dims.weight_offset + wr * n + wc], wr < k && wc < n);
        }
        workgroupBarrier();
        multiply_tiles(&acc, lid.x, lid.y);
        workgroupBarrier();
    }
    for (var p = 0u; p < PER; p++) {
        for (var q = 0u; q < PER; q++) {
            let r = row0 + lid.y + SIDE * p;
            let c = col0 + lid.x + SIDE * q;
            if r < rows && c < n {
                let z = acc[p * PER + q] + weights[dims.bias_offset + c];
                out[r * n + c] = activate(z, dims.activation);
            }
        }
    }
}

// out (rows × inputs) = (left (rows × outputs) · Wᵀ) ⊙ f'(right), right = A_{l-1} (rows × inputs)
@compute @workgroup_size(16, 16)
fn matmul_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = batch.rows;
    let k = dims.outputs;
    let n = dims.inputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let flat = lid.y * SIDE + lid.x;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var e = flat; e < STAGED; e += SIDE * SIDE) {
            let i = e / DEPTH;
            let kk = e % DEPTH;
            let r = row0 + i;
            let c = k0 + kk;
            tile_l[kk * TILE + i] = select(0.0, left[r * k + c], r < rows && c < k);
            // Wᵀ[kk, j] = W[j, kk]: consecutive invocations read along a row of W
            let j = e / DEPTH;
            let wr = col0 + j;
            let wc = k0 + kk;
            tile_r[kk * TILE + j] = select(0.0, weights[dims.weight_offset + wr * k + wc], wr < n && wc < k);
        }
        workgroupBarrier();
        multiply_tiles(&acc, lid.x, lid.y);
        workgroupBarrier();
    }
    for (var p = 0u; p < PER; p++) {
        for (var q = 0u; q < PER; q++) {
            let r = row0 + lid.y + SIDE * p;
            let c = col0 + lid.x + SIDE * q;
            if r < rows && c < n {
                out[r * n + c] = acc[p * PER + q] * derivative(right[r * n + c], dims.activation);
            }
        }
    }
}

// out[weight_offset ..] (inputs × outputs) = leftᵀ (inputs × rows) · right (rows × outputs),
// out[bias_offset ..] (outputs) = Σ_rows right: row `inputs` of the product, with left's
// missing column taken as ones.
@compute @workgroup_size(16, 16)
fn matmul_backward_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = batch.rows;
    let m = dims.inputs;
    let n = dims.outputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let flat = lid.y * SIDE + lid.x;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < rows; k0 += DEPTH) {
        for (var e = flat; e < STAGED; e += SIDE * SIDE) {
            // leftᵀ[i, kk] = left[kk, i]: consecutive invocations read along a row of left
            let kk = e / TILE;
            let i = e % TILE;
            let t = k0 + kk;
            let c = row0 + i;
            var value = 0.0;
            if t < rows && c < m {
                value = left[t * m + c];
            } else if t < rows && c == m {
                value = 1.0;
            }
            tile_l[kk * TILE + i] = value;
            let j = e % TILE;
            let oc = col0 + j;
            tile_r[kk * TILE + j] = select(0.0, right[t * n + oc], t < rows && oc < n);
        }
        workgroupBarrier();
        multiply_tiles(&acc, lid.x, lid.y);
        workgroupBarrier();
    }
    for (var p = 0u; p < PER; p++) {
        for (var q = 0u; q < PER; q++) {
            let r = row0 + lid.y + SIDE * p;
            let c = col0 + lid.x + SIDE * q;
            if r < m && c < n {
                out[dims.weight_offset + r * n + c] = acc[p * PER + q];
            } else if r == m && c < n {
                out[dims.bias_offset + c] = acc[p * PER + q];
            }
        }
    }
}
