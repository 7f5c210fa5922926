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

// matmul.wgsl's single-value readers (matmul_f32.wgsl for the other variants).
fn weight_value(i: u32) -> f32 {
    return weights[i / 4u][i % 4u];
}

fn left_value(i: u32) -> f32 {
    return left[i / 4u][i % 4u];
}

fn right_value(i: u32) -> f32 {
    return right[i / 4u][i % 4u];
}

// acc and acc_at: matmul_rows16x4.wgsl.

// left's vec4 `base + g` (4 reduction steps of one row) for g < groups, else 0.
fn left4_in(base: u32, g: u32, groups: u32) -> vec4<f32> {
    return select(vec4<f32>(), left[base + min(g, groups - 1u)], g < groups);
}

// acc[p] += W · x_p, W's columns being 4 rows of the weights at the invocation's 4 columns and
// x_p row p's values at those 4 steps: Σ_q x_p[q] · W[q].
fn accumulate_columns(w: mat4x4<f32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>, x8: vec4<f32>, x9: vec4<f32>, x10: vec4<f32>, x11: vec4<f32>, x12: vec4<f32>, x13: vec4<f32>, x14: vec4<f32>, x15: vec4<f32>) {
    acc[0] += w * x0;
    acc[1] += w * x1;
    acc[2] += w * x2;
    acc[3] += w * x3;
    acc[4] += w * x4;
    acc[5] += w * x5;
    acc[6] += w * x6;
    acc[7] += w * x7;
    acc[8] += w * x8;
    acc[9] += w * x9;
    acc[10] += w * x10;
    acc[11] += w * x11;
    acc[12] += w * x12;
    acc[13] += w * x13;
    acc[14] += w * x14;
    acc[15] += w * x15;
}

// acc[p] += x_p · W: component j is dot(x_p, W[j]), W[j] being column j's 4 steps.
fn accumulate_rows(w: mat4x4<f32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>, x8: vec4<f32>, x9: vec4<f32>, x10: vec4<f32>, x11: vec4<f32>, x12: vec4<f32>, x13: vec4<f32>, x14: vec4<f32>, x15: vec4<f32>) {
    acc[0] += x0 * w;
    acc[1] += x1 * w;
    acc[2] += x2 * w;
    acc[3] += x3 * w;
    acc[4] += x4 * w;
    acc[5] += x5 * w;
    acc[6] += x6 * w;
    acc[7] += x7 * w;
    acc[8] += x8 * w;
    acc[9] += x9 * w;
    acc[10] += x10 * w;
    acc[11] += x11 * w;
    acc[12] += x12 * w;
    acc[13] += x13 * w;
    acc[14] += x14 * w;
    acc[15] += x15 * w;
}

// acc[4q + j] += x_q[j] · column: 16 rows' values at one step (x0 … x3) times the invocation's 4
// columns there.
fn accumulate_outer(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, column: vec4<f32>) {
    acc[0] = fma(vec4<f32>(x0.x), column, acc[0]);
    acc[1] = fma(vec4<f32>(x0.y), column, acc[1]);
    acc[2] = fma(vec4<f32>(x0.z), column, acc[2]);
    acc[3] = fma(vec4<f32>(x0.w), column, acc[3]);
    acc[4] = fma(vec4<f32>(x1.x), column, acc[4]);
    acc[5] = fma(vec4<f32>(x1.y), column, acc[5]);
    acc[6] = fma(vec4<f32>(x1.z), column, acc[6]);
    acc[7] = fma(vec4<f32>(x1.w), column, acc[7]);
    acc[8] = fma(vec4<f32>(x2.x), column, acc[8]);
    acc[9] = fma(vec4<f32>(x2.y), column, acc[9]);
    acc[10] = fma(vec4<f32>(x2.z), column, acc[10]);
    acc[11] = fma(vec4<f32>(x2.w), column, acc[11]);
    acc[12] = fma(vec4<f32>(x3.x), column, acc[12]);
    acc[13] = fma(vec4<f32>(x3.y), column, acc[13]);
    acc[14] = fma(vec4<f32>(x3.z), column, acc[14]);
    acc[15] = fma(vec4<f32>(x3.w), column, acc[15]);
}

// W[4g + q, the invocation's 4 columns] for q < 4 as a matrix's columns; `w` is the vec4 index of
// W[0, those columns], a row of W n4 vec4s long. Steps past the reduction (k) are clamped.
fn weight_rows(w: u32, g: u32, n4: u32, k: u32) -> mat4x4<f32> {
    let t = 4u * g;
    return mat4x4<f32>(
        weights[w + min(t, k - 1u) * n4],
        weights[w + min(t + 1u, k - 1u) * n4],
        weights[w + min(t + 2u, k - 1u) * n4],
        weights[w + min(t + 3u, k - 1u) * n4],
    );
}

// W[the invocation's column j, 4g .. 4g + 4] for j < 4 as a matrix's columns; w[j] is the vec4
// index of W[column j, 0]. Groups past the reduction are clamped.
fn weight_columns(w: vec4<u32>, g: u32, groups: u32) -> mat4x4<f32> {
    let gc = min(g, groups - 1u);
    return mat4x4<f32>(weights[w.x + gc], weights[w.y + gc], weights[w.z + gc], weights[w.w + gc]);
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
    let b0 = min(row0 + 0u, rows - 1u) * groups;
    let b1 = min(row0 + 1u, rows - 1u) * groups;
    let b2 = min(row0 + 2u, rows - 1u) * groups;
    let b3 = min(row0 + 3u, rows - 1u) * groups;
    let b4 = min(row0 + 4u, rows - 1u) * groups;
    let b5 = min(row0 + 5u, rows - 1u) * groups;
    let b6 = min(row0 + 6u, rows - 1u) * groups;
    let b7 = min(row0 + 7u, rows - 1u) * groups;
    let b8 = min(row0 + 8u, rows - 1u) * groups;
    let b9 = min(row0 + 9u, rows - 1u) * groups;
    let b10 = min(row0 + 10u, rows - 1u) * groups;
    let b11 = min(row0 + 11u, rows - 1u) * groups;
    let b12 = min(row0 + 12u, rows - 1u) * groups;
    let b13 = min(row0 + 13u, rows - 1u) * groups;
    let b14 = min(row0 + 14u, rows - 1u) * groups;
    let b15 = min(row0 + 15u, rows - 1u) * groups;
    acc = array<vec4<f32>, 16>();
    for (var g0 = 0u; g0 < groups; g0 += SUBGROUP_CHUNK) {
        let g = g0 + mine;
        let a0 = left4_in(b0, g, groups);
        let a1 = left4_in(b1, g, groups);
        let a2 = left4_in(b2, g, groups);
        let a3 = left4_in(b3, g, groups);
        let a4 = left4_in(b4, g, groups);
        let a5 = left4_in(b5, g, groups);
        let a6 = left4_in(b6, g, groups);
        let a7 = left4_in(b7, g, groups);
        let a8 = left4_in(b8, g, groups);
        let a9 = left4_in(b9, g, groups);
        let a10 = left4_in(b10, g, groups);
        let a11 = left4_in(b11, g, groups);
        let a12 = left4_in(b12, g, groups);
        let a13 = left4_in(b13, g, groups);
        let a14 = left4_in(b14, g, groups);
        let a15 = left4_in(b15, g, groups);
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
    let b0 = min(row0 + 0u, rows - 1u) * groups;
    let b1 = min(row0 + 1u, rows - 1u) * groups;
    let b2 = min(row0 + 2u, rows - 1u) * groups;
    let b3 = min(row0 + 3u, rows - 1u) * groups;
    let b4 = min(row0 + 4u, rows - 1u) * groups;
    let b5 = min(row0 + 5u, rows - 1u) * groups;
    let b6 = min(row0 + 6u, rows - 1u) * groups;
    let b7 = min(row0 + 7u, rows - 1u) * groups;
    let b8 = min(row0 + 8u, rows - 1u) * groups;
    let b9 = min(row0 + 9u, rows - 1u) * groups;
    let b10 = min(row0 + 10u, rows - 1u) * groups;
    let b11 = min(row0 + 11u, rows - 1u) * groups;
    let b12 = min(row0 + 12u, rows - 1u) * groups;
    let b13 = min(row0 + 13u, rows - 1u) * groups;
    let b14 = min(row0 + 14u, rows - 1u) * groups;
    let b15 = min(row0 + 15u, rows - 1u) * groups;
    acc = array<vec4<f32>, 16>();
    for (var g0 = 0u; g0 < groups; g0 += SUBGROUP_CHUNK) {
        let g = g0 + mine;
        let a0 = left4_in(b0, g, groups);
        let a1 = left4_in(b1, g, groups);
        let a2 = left4_in(b2, g, groups);
        let a3 = left4_in(b3, g, groups);
        let a4 = left4_in(b4, g, groups);
        let a5 = left4_in(b5, g, groups);
        let a6 = left4_in(b6, g, groups);
        let a7 = left4_in(b7, g, groups);
        let a8 = left4_in(b8, g, groups);
        let a9 = left4_in(b9, g, groups);
        let a10 = left4_in(b10, g, groups);
        let a11 = left4_in(b11, g, groups);
        let a12 = left4_in(b12, g, groups);
        let a13 = left4_in(b13, g, groups);
        let a14 = left4_in(b14, g, groups);
        let a15 = left4_in(b15, g, groups);
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

// leftᵀ[i .. i + 4, t] = left[t, i .. i + 4] (i a multiple of 4, left rows × m); (1, 0, 0, 0) at
// i == m (the bias gradient's row of ones), 0 past it or past the batch's rows.
fn transposed_left4(t: u32, i: u32, m: u32, rows: u32) -> vec4<f32> {
    let inside = left[min(t, rows - 1u) * (m / 4u) + min(i, m - 4u) / 4u];
    let value = select(select(vec4<f32>(), vec4<f32>(1.0, 0.0, 0.0, 0.0), i == m), inside, i < m);
    return select(vec4<f32>(), value, t < rows);
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
