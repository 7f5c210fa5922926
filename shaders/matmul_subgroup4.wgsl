// The vec4 subgroup variant of the matmul kernels (`MatmulVariant::SUBGROUP_4` in
// src/gpu/kernels/matmul.rs, compiled after matmul.wgsl, whose epilogues it uses), for adapters
// with `Features::SUBGROUP` (subgroups of at least SUBGROUP_CHUNK invocations) and layers whose
// widths and weight offset are multiples of 4 (`MatmulVariant::fits`).
//
// Its operands `weights`, `left` and `right` are declared as arrays of vec4<f32>
// (`MatmulVariant::operands`), so that one load brings 4 values: on a software rasterizer
// (lavapipe) a load whose address differs between invocations costs a loop over the lanes,
// whatever it brings, and the loads, not the arithmetic, bound the matmul.
//
// A workgroup of DIRECT_WORKGROUP invocations computes DIRECT_ROWS (16) rows × 4·DIRECT_WORKGROUP
// columns; each invocation 16 rows × 4 consecutive columns, in 16 vec4 accumulators indexed only
// by constants. The row operand is shared through the subgroup as in matmul_subgroup.wgsl, a
// vec4 (4 reduction steps) per lane: per chunk of SUBGROUP_CHUNK (8) lanes × 4 = 32 steps an
// invocation loads 16 row-operand vec4s and 32 of its own column operand for 2,048 multiply-adds
// (matmul_subgroup.wgsl: 24 loads per 128). A chunk past the end of the reduction reads 0 for
// the row operand and a clamped, finite column value.
//
// The chunk's 8 steps are a loop that takes lane s's values with subgroupShuffle, not 8 written-
// out steps with subgroupBroadcast from constant lanes as in matmul_subgroup.wgsl: written out,
// this kernel took Mesa 25's lavapipe 10 s to compile (2.4 s as a loop) and ran slower there.

const_assert SUBGROUP_CHUNK == 8u;
const_assert DIRECT_ROWS == 16u;

// The single-value readers, acc, acc_at and the 16 × 4 products: matmul_rows16x4.wgsl.

// left's vec4 `base + g` (4 reduction steps of one row) for g < groups, else 0.
fn left4_in(base: u32, g: u32, groups: u32) -> vec4<f32> {
    return select(vec4<f32>(), left[base + min(g, groups - 1u)], g < groups);
}

// out (rows × outputs) = f(left (rows × inputs) · W + b)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let rows = batch.rows;
    let k = params.inputs;
    let n = params.outputs;
    let groups = k / 4u;
    let n4 = n / 4u;
    let row0 = wid.y * DIRECT_ROWS;
    let c4 = wid.x * DIRECT_WORKGROUP + lid;
    let w = params.weight_offset / 4u + min(c4, n4 - 1u);
    let mine = lane % SUBGROUP_CHUNK;
    let b = row_bases(row0, rows, groups);
    acc = array<vec4<f32>, 16>();
    for (var g0 = 0u; g0 < groups; g0 += SUBGROUP_CHUNK) {
        let g = g0 + mine;
        let a0 = left4_in(b.q0.x, g, groups);
        let a1 = left4_in(b.q0.y, g, groups);
        let a2 = left4_in(b.q0.z, g, groups);
        let a3 = left4_in(b.q0.w, g, groups);
        let a4 = left4_in(b.q1.x, g, groups);
        let a5 = left4_in(b.q1.y, g, groups);
        let a6 = left4_in(b.q1.z, g, groups);
        let a7 = left4_in(b.q1.w, g, groups);
        let a8 = left4_in(b.q2.x, g, groups);
        let a9 = left4_in(b.q2.y, g, groups);
        let a10 = left4_in(b.q2.z, g, groups);
        let a11 = left4_in(b.q2.w, g, groups);
        let a12 = left4_in(b.q3.x, g, groups);
        let a13 = left4_in(b.q3.y, g, groups);
        let a14 = left4_in(b.q3.z, g, groups);
        let a15 = left4_in(b.q3.w, g, groups);
        for (var s = 0u; s < SUBGROUP_CHUNK; s++) {
            accumulate_columns(weight_rows(w, g0 + s, n4, k), subgroupShuffle(a0, s), subgroupShuffle(a1, s), subgroupShuffle(a2, s), subgroupShuffle(a3, s), subgroupShuffle(a4, s), subgroupShuffle(a5, s), subgroupShuffle(a6, s), subgroupShuffle(a7, s), subgroupShuffle(a8, s), subgroupShuffle(a9, s), subgroupShuffle(a10, s), subgroupShuffle(a11, s), subgroupShuffle(a12, s), subgroupShuffle(a13, s), subgroupShuffle(a14, s), subgroupShuffle(a15, s));
        }
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var j = 0u; j < 4u; j++) {
            store_forward(epi, row0 + p, 4u * c4 + j, sums[j]);
        }
    }
}

// out (rows × inputs) = (left (rows × outputs) · Wᵀ) ⊙ f'(right), right = A_{l-1} (rows × inputs)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_input(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let rows = batch.rows;
    let k = params.outputs; // reduce over the layer's outputs, produce its inputs
    let m = params.inputs;
    let groups = k / 4u;
    let row0 = wid.y * DIRECT_ROWS;
    let c4 = wid.x * DIRECT_WORKGROUP + lid;
    // Wᵀ[t, col] = W[col, t]: column j of the invocation walks along row 4·c4 + j of W.
    let c = 4u * c4;
    let w = vec4<u32>(params.weight_offset / 4u) + min(vec4<u32>(c, c + 1u, c + 2u, c + 3u), vec4<u32>(m - 1u)) * groups;
    let mine = lane % SUBGROUP_CHUNK;
    let b = row_bases(row0, rows, groups);
    acc = array<vec4<f32>, 16>();
    for (var g0 = 0u; g0 < groups; g0 += SUBGROUP_CHUNK) {
        let g = g0 + mine;
        let a0 = left4_in(b.q0.x, g, groups);
        let a1 = left4_in(b.q0.y, g, groups);
        let a2 = left4_in(b.q0.z, g, groups);
        let a3 = left4_in(b.q0.w, g, groups);
        let a4 = left4_in(b.q1.x, g, groups);
        let a5 = left4_in(b.q1.y, g, groups);
        let a6 = left4_in(b.q1.z, g, groups);
        let a7 = left4_in(b.q1.w, g, groups);
        let a8 = left4_in(b.q2.x, g, groups);
        let a9 = left4_in(b.q2.y, g, groups);
        let a10 = left4_in(b.q2.z, g, groups);
        let a11 = left4_in(b.q2.w, g, groups);
        let a12 = left4_in(b.q3.x, g, groups);
        let a13 = left4_in(b.q3.y, g, groups);
        let a14 = left4_in(b.q3.z, g, groups);
        let a15 = left4_in(b.q3.w, g, groups);
        for (var s = 0u; s < SUBGROUP_CHUNK; s++) {
            accumulate_rows(weight_columns(w, g0 + s, groups), subgroupShuffle(a0, s), subgroupShuffle(a1, s), subgroupShuffle(a2, s), subgroupShuffle(a3, s), subgroupShuffle(a4, s), subgroupShuffle(a5, s), subgroupShuffle(a6, s), subgroupShuffle(a7, s), subgroupShuffle(a8, s), subgroupShuffle(a9, s), subgroupShuffle(a10, s), subgroupShuffle(a11, s), subgroupShuffle(a12, s), subgroupShuffle(a13, s), subgroupShuffle(a14, s), subgroupShuffle(a15, s));
        }
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var j = 0u; j < 4u; j++) {
            store_backward_input(epi, row0 + p, c + j, sums[j]);
        }
    }
}

// out[weight_offset ..] (inputs × outputs) = leftᵀ (inputs × rows) · right (rows × outputs), and
// out[bias_offset ..] (outputs) = Σ_rows right: row `inputs` of the product, where leftᵀ's
// missing row is taken as ones. Per chunk of 8 reduction steps lane l loads its step's 16 row
// values (4 vec4s, consecutive in memory) and every invocation its own 4 columns at each step.
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_weights(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let rows = batch.rows;
    let m = params.inputs;
    let n = params.outputs;
    let n4 = n / 4u;
    let i0 = wid.y * DIRECT_ROWS;
    let c4 = wid.x * DIRECT_WORKGROUP + lid;
    let c = min(c4, n4 - 1u);
    let mine = lane % SUBGROUP_CHUNK;
    acc = array<vec4<f32>, 16>();
    for (var t0 = 0u; t0 < rows; t0 += SUBGROUP_CHUNK) {
        let t = t0 + mine;
        let x0 = transposed_left4(t, i0, m, rows);
        let x1 = transposed_left4(t, i0 + 4u, m, rows);
        let x2 = transposed_left4(t, i0 + 8u, m, rows);
        let x3 = transposed_left4(t, i0 + 12u, m, rows);
        for (var s = 0u; s < SUBGROUP_CHUNK; s++) {
            accumulate_outer(subgroupShuffle(x0, s), subgroupShuffle(x1, s), subgroupShuffle(x2, s), subgroupShuffle(x3, s), right[min(t0 + s, rows - 1u) * n4 + c]);
        }
    }
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var j = 0u; j < 4u; j++) {
            store_backward_weights(i0 + p, 4u * c4 + j, sums[j]);
        }
    }
}
