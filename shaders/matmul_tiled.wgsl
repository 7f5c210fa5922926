// The tiled variant of the matmul kernels (`MatmulVariant::TILED_64` in src/gpu/kernels/matmul.rs,
// compiled after matmul.wgsl, whose operand readers and epilogues it uses).
//
// Tiling: a workgroup of MATMUL_WORKGROUP invocations computes a TILE × TILE block of the
// output, each invocation a THREAD_TILE × THREAD_TILE block of it. For each step of DEPTH along
// the reduction the workgroup stages a TILE × DEPTH block of the left operand and a DEPTH × TILE
// block of the right one in workgroup memory, both k-major so that an invocation reads its rows
// and its columns as vec4s; it then accumulates its outputs in registers. Each staged value is
// read by TILE / THREAD_TILE invocations, and each register value feeds THREAD_TILE multiply-adds.
// Elements outside the matrices load as 0 and are never stored, so any shape works.
// TILE, DEPTH, THREAD_TILE and MATMUL_WORKGROUP come from the variant, in the prelude.

// The register tile below is written out for 8 × 8 outputs (16 vec4 accumulators).
const_assert THREAD_TILE == 8u;
const_assert TILE % THREAD_TILE == 0u;
// Invocations along one edge of the tile.
const INVOCATIONS_PER_EDGE: u32 = TILE / THREAD_TILE;
const_assert MATMUL_WORKGROUP == INVOCATIONS_PER_EDGE * INVOCATIONS_PER_EDGE;
// vec4s per staged k step of a TILE-wide block, and per invocation's rows (or columns).
const VEC_PER_K: u32 = TILE / 4u;
const VEC_PER_INVOCATION: u32 = THREAD_TILE / 4u;
// Values staged per operand per step.
const STAGED: u32 = TILE * DEPTH;

// Staged blocks, k-major: tile_l[kk * VEC_PER_K + i / 4][i % 4] = left block (i, kk); tile_r
// likewise by column.
var<workgroup> tile_l: array<vec4<f32>, STAGED / 4u>;
var<workgroup> tile_r: array<vec4<f32>, STAGED / 4u>;

// The invocation's 8 × 8 outputs: acc[2 * p + h][c] is row 8·ty + p, column 8·tx + 4·h + c.
// Indexed only by constants in the loop below, so every driver keeps it in registers.
var<private> acc: array<vec4<f32>, 16>;

// acc += (staged left rows 8·ty ..) · (staged right columns 8·tx ..) over the DEPTH staged k.
fn multiply_staged(ty: u32, tx: u32) {
    for (var kk = 0u; kk < DEPTH; kk++) {
        let a_lo = tile_l[kk * VEC_PER_K + VEC_PER_INVOCATION * ty];
        let a_hi = tile_l[kk * VEC_PER_K + VEC_PER_INVOCATION * ty + 1u];
        let b_lo = tile_r[kk * VEC_PER_K + VEC_PER_INVOCATION * tx];
        let b_hi = tile_r[kk * VEC_PER_K + VEC_PER_INVOCATION * tx + 1u];
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

// The invocation's outputs: the sum for row row0 + THREAD_TILE·ty + p, column
// col0 + THREAD_TILE·tx + q is acc_at(VEC_PER_INVOCATION·p + q / 4)[q % 4].
fn tile_sum(p: u32, q: u32) -> f32 {
    return acc_at(VEC_PER_INVOCATION * p + q / 4u)[q % 4u];
}

// out (rows × outputs) = f(left (rows × inputs) · W + b)
@compute @workgroup_size(MATMUL_WORKGROUP)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.inputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let ty = lid / INVOCATIONS_PER_EDGE;
    let tx = lid % INVOCATIONS_PER_EDGE;
    acc = array<vec4<f32>, 16>();
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var e = lid; e < STAGED; e += MATMUL_WORKGROUP) {
            // Consecutive invocations read along a row of left, and along a row of W.
            stage_left(e / DEPTH, e % DEPTH, left_at(row0 + e / DEPTH, k0 + e % DEPTH, rows, k));
            stage_right(e / TILE, e % TILE, weight_at(k0 + e / TILE, col0 + e % TILE));
        }
        workgroupBarrier();
        multiply_staged(ty, tx);
        workgroupBarrier();
    }
    let epi = epilogue();
    for (var p = 0u; p < THREAD_TILE; p++) {
        for (var q = 0u; q < THREAD_TILE; q++) {
            store_forward(epi, row0 + THREAD_TILE * ty + p, col0 + THREAD_TILE * tx + q, tile_sum(p, q));
        }
    }
}

// out (rows × inputs) = (left (rows × outputs) · Wᵀ) ⊙ f'(right), right = A_{l-1} (rows × inputs)
@compute @workgroup_size(MATMUL_WORKGROUP)
fn matmul_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.outputs; // reduce over the layer's outputs, produce its inputs
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let ty = lid / INVOCATIONS_PER_EDGE;
    let tx = lid % INVOCATIONS_PER_EDGE;
    acc = array<vec4<f32>, 16>();
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var e = lid; e < STAGED; e += MATMUL_WORKGROUP) {
            stage_left(e / DEPTH, e % DEPTH, left_at(row0 + e / DEPTH, k0 + e % DEPTH, rows, k));
            // Wᵀ[kk, j] = W[j, kk]: consecutive invocations read along a row of W.
            stage_right(e % DEPTH, e / DEPTH, weight_at(col0 + e / DEPTH, k0 + e % DEPTH));
        }
        workgroupBarrier();
        multiply_staged(ty, tx);
        workgroupBarrier();
    }
    let epi = epilogue();
    for (var p = 0u; p < THREAD_TILE; p++) {
        for (var q = 0u; q < THREAD_TILE; q++) {
            store_backward_input(epi, row0 + THREAD_TILE * ty + p, col0 + THREAD_TILE * tx + q, tile_sum(p, q));
        }
    }
}

// out[weight_offset ..] (inputs × outputs) = leftᵀ (inputs × rows) · right (rows × outputs), and
// out[bias_offset ..] (outputs) = Σ_rows right: row `inputs` of the product, where leftᵀ's
// missing row is taken as ones.
@compute @workgroup_size(MATMUL_WORKGROUP)
fn matmul_backward_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let m = params.inputs;
    let n = params.outputs;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let ty = lid / INVOCATIONS_PER_EDGE;
    let tx = lid % INVOCATIONS_PER_EDGE;
    acc = array<vec4<f32>, 16>();
    for (var k0 = 0u; k0 < rows; k0 += DEPTH) {
        for (var e = lid; e < STAGED; e += MATMUL_WORKGROUP) {
            // leftᵀ[i, kk] = left[kk, i]: consecutive invocations read along a row of left.
            let i = e % TILE;
            let t = k0 + e / TILE;
            let one = select(0.0, 1.0, row0 + i == m && t < rows);
            stage_left(i, e / TILE, left_at(t, row0 + i, rows, m) + one);
            stage_right(e / TILE, e % TILE, right_at(t, col0 + e % TILE, rows, n));
        }
        workgroupBarrier();
        multiply_staged(ty, tx);
        workgroupBarrier();
    }
    for (var p = 0u; p < THREAD_TILE; p++) {
        for (var q = 0u; q < THREAD_TILE; q++) {
            store_backward_weights(row0 + THREAD_TILE * ty + p, col0 + THREAD_TILE * tx + q, tile_sum(p, q));
        }
    }
}
