// The subgroup variant of the matmul kernels (`MatmulVariant::SUBGROUP` in
// src/gpu/kernels/matmul.rs, compiled after matmul.wgsl, whose epilogues it uses), for adapters
// with `Features::SUBGROUP` and subgroups of at least SUBGROUP_CHUNK invocations (naga takes the
// subgroup built-ins without an `enable` directive once the device has the feature).
//
// As matmul_direct.wgsl, a workgroup of DIRECT_WORKGROUP invocations computes DIRECT_ROWS (16)
// rows × DIRECT_WORKGROUP columns, each invocation one column in four vec4 accumulators, with no
// workgroup memory and no barrier. The row operand is shared through the subgroup instead of
// loaded by everyone: the reduction runs in chunks of SUBGROUP_CHUNK (8) steps; at each chunk
// lane l loads the 16 rows' values at step t0 + l % 8 (consecutive lanes, consecutive
// addresses), and every lane takes step t0 + s's values from lane s with subgroupBroadcast (s a
// constant: the 8 steps are written out). So per 8 steps an invocation loads 16 + 8 values for
// 128 multiply-adds. A chunk past the end of the reduction reads 0 for the row operand (and a
// clamped, finite column value), so it adds nothing.

const_assert SUBGROUP_CHUNK == 8u;

// The 16 accumulators, accumulate, direct_sum and clear_sums: matmul_rows16.wgsl.

// left[base + t] for t < k, else 0 (a chunk past the end of the reduction).
fn left_in(base: u32, t: u32, k: u32) -> f32 {
    return select(0.0, left[base + min(t, k - 1u)], t < k);
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
    let row0 = wid.y * DIRECT_ROWS;
    let col = wid.x * DIRECT_WORKGROUP + lid;
    let w = params.weight_offset + min(col, n - 1u);
    let mine = lane % SUBGROUP_CHUNK;
    let b0 = min(row0 + 0u, rows - 1u) * k;
    let b1 = min(row0 + 1u, rows - 1u) * k;
    let b2 = min(row0 + 2u, rows - 1u) * k;
    let b3 = min(row0 + 3u, rows - 1u) * k;
    let b4 = min(row0 + 4u, rows - 1u) * k;
    let b5 = min(row0 + 5u, rows - 1u) * k;
    let b6 = min(row0 + 6u, rows - 1u) * k;
    let b7 = min(row0 + 7u, rows - 1u) * k;
    let b8 = min(row0 + 8u, rows - 1u) * k;
    let b9 = min(row0 + 9u, rows - 1u) * k;
    let b10 = min(row0 + 10u, rows - 1u) * k;
    let b11 = min(row0 + 11u, rows - 1u) * k;
    let b12 = min(row0 + 12u, rows - 1u) * k;
    let b13 = min(row0 + 13u, rows - 1u) * k;
    let b14 = min(row0 + 14u, rows - 1u) * k;
    let b15 = min(row0 + 15u, rows - 1u) * k;
    clear_sums();
    for (var t0 = 0u; t0 < k; t0 += SUBGROUP_CHUNK) {
        let t = t0 + mine;
        let r0 = vec4<f32>(left_in(b0, t, k), left_in(b1, t, k), left_in(b2, t, k), left_in(b3, t, k));
        let r1 = vec4<f32>(left_in(b4, t, k), left_in(b5, t, k), left_in(b6, t, k), left_in(b7, t, k));
        let r2 = vec4<f32>(left_in(b8, t, k), left_in(b9, t, k), left_in(b10, t, k), left_in(b11, t, k));
        let r3 = vec4<f32>(left_in(b12, t, k), left_in(b13, t, k), left_in(b14, t, k), left_in(b15, t, k));
        accumulate(subgroupBroadcast(r0, 0u), subgroupBroadcast(r1, 0u), subgroupBroadcast(r2, 0u), subgroupBroadcast(r3, 0u), weights[w + min(t0 + 0u, k - 1u) * n]);
        accumulate(subgroupBroadcast(r0, 1u), subgroupBroadcast(r1, 1u), subgroupBroadcast(r2, 1u), subgroupBroadcast(r3, 1u), weights[w + min(t0 + 1u, k - 1u) * n]);
        accumulate(subgroupBroadcast(r0, 2u), subgroupBroadcast(r1, 2u), subgroupBroadcast(r2, 2u), subgroupBroadcast(r3, 2u), weights[w + min(t0 + 2u, k - 1u) * n]);
        accumulate(subgroupBroadcast(r0, 3u), subgroupBroadcast(r1, 3u), subgroupBroadcast(r2, 3u), subgroupBroadcast(r3, 3u), weights[w + min(t0 + 3u, k - 1u) * n]);
        accumulate(subgroupBroadcast(r0, 4u), subgroupBroadcast(r1, 4u), subgroupBroadcast(r2, 4u), subgroupBroadcast(r3, 4u), weights[w + min(t0 + 4u, k - 1u) * n]);
        accumulate(subgroupBroadcast(r0, 5u), subgroupBroadcast(r1, 5u), subgroupBroadcast(r2, 5u), subgroupBroadcast(r3, 5u), weights[w + min(t0 + 5u, k - 1u) * n]);
        accumulate(subgroupBroadcast(r0, 6u), subgroupBroadcast(r1, 6u), subgroupBroadcast(r2, 6u), subgroupBroadcast(r3, 6u), weights[w + min(t0 + 6u, k - 1u) * n]);
        accumulate(subgroupBroadcast(r0, 7u), subgroupBroadcast(r1, 7u), subgroupBroadcast(r2, 7u), subgroupBroadcast(r3, 7u), weights[w + min(t0 + 7u, k - 1u) * n]);
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        store_forward(epi, row0 + p, col, direct_sum(p));
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
    let row0 = wid.y * DIRECT_ROWS;
    let col = wid.x * DIRECT_WORKGROUP + lid;
    // Wᵀ[t, col] = W[col, t]: the invocation walks along its own row of W.
    let w = params.weight_offset + min(col, m - 1u) * k;
    let mine = lane % SUBGROUP_CHUNK;
    let b0 = min(row0 + 0u, rows - 1u) * k;
    let b1 = min(row0 + 1u, rows - 1u) * k;
    let b2 = min(row0 + 2u, rows - 1u) * k;
    let b3 = min(row0 + 3u, rows - 1u) * k;
    let b4 = min(row0 + 4u, rows - 1u) * k;
    let b5 = min(row0 + 5u, rows - 1u) * k;
    let b6 = min(row0 + 6u, rows - 1u) * k;
    let b7 = min(row0 + 7u, rows - 1u) * k;
    let b8 = min(row0 + 8u, rows - 1u) * k;
    let b9 = min(row0 + 9u, rows - 1u) * k;
    let b10 = min(row0 + 10u, rows - 1u) * k;
    let b11 = min(row0 + 11u, rows - 1u) * k;
    let b12 = min(row0 + 12u, rows - 1u) * k;
    let b13 = min(row0 + 13u, rows - 1u) * k;
    let b14 = min(row0 + 14u, rows - 1u) * k;
    let b15 = min(row0 + 15u, rows - 1u) * k;
    clear_sums();
    for (var t0 = 0u; t0 < k; t0 += SUBGROUP_CHUNK) {
        let t = t0 + mine;
        let r0 = vec4<f32>(left_in(b0, t, k), left_in(b1, t, k), left_in(b2, t, k), left_in(b3, t, k));
        let r1 = vec4<f32>(left_in(b4, t, k), left_in(b5, t, k), left_in(b6, t, k), left_in(b7, t, k));
        let r2 = vec4<f32>(left_in(b8, t, k), left_in(b9, t, k), left_in(b10, t, k), left_in(b11, t, k));
        let r3 = vec4<f32>(left_in(b12, t, k), left_in(b13, t, k), left_in(b14, t, k), left_in(b15, t, k));
        accumulate(subgroupBroadcast(r0, 0u), subgroupBroadcast(r1, 0u), subgroupBroadcast(r2, 0u), subgroupBroadcast(r3, 0u), weights[w + min(t0 + 0u, k - 1u)]);
        accumulate(subgroupBroadcast(r0, 1u), subgroupBroadcast(r1, 1u), subgroupBroadcast(r2, 1u), subgroupBroadcast(r3, 1u), weights[w + min(t0 + 1u, k - 1u)]);
        accumulate(subgroupBroadcast(r0, 2u), subgroupBroadcast(r1, 2u), subgroupBroadcast(r2, 2u), subgroupBroadcast(r3, 2u), weights[w + min(t0 + 2u, k - 1u)]);
        accumulate(subgroupBroadcast(r0, 3u), subgroupBroadcast(r1, 3u), subgroupBroadcast(r2, 3u), subgroupBroadcast(r3, 3u), weights[w + min(t0 + 3u, k - 1u)]);
        accumulate(subgroupBroadcast(r0, 4u), subgroupBroadcast(r1, 4u), subgroupBroadcast(r2, 4u), subgroupBroadcast(r3, 4u), weights[w + min(t0 + 4u, k - 1u)]);
        accumulate(subgroupBroadcast(r0, 5u), subgroupBroadcast(r1, 5u), subgroupBroadcast(r2, 5u), subgroupBroadcast(r3, 5u), weights[w + min(t0 + 5u, k - 1u)]);
        accumulate(subgroupBroadcast(r0, 6u), subgroupBroadcast(r1, 6u), subgroupBroadcast(r2, 6u), subgroupBroadcast(r3, 6u), weights[w + min(t0 + 6u, k - 1u)]);
        accumulate(subgroupBroadcast(r0, 7u), subgroupBroadcast(r1, 7u), subgroupBroadcast(r2, 7u), subgroupBroadcast(r3, 7u), weights[w + min(t0 + 7u, k - 1u)]);
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        store_backward_input(epi, row0 + p, col, direct_sum(p));
    }
}

// leftᵀ[i, t] = left[t, i] for the block's row i, 1 for row `inputs` (the bias gradient's row of
// ones), 0 past the batch's rows (a chunk past the end of the reduction).
fn transposed_left(t: u32, i: u32, m: u32, rows: u32) -> f32 {
    let value = select(left[min(t, rows - 1u) * m + min(i, m - 1u)], 1.0, i >= m);
    return select(0.0, value, t < rows);
}

// out[weight_offset ..] (inputs × outputs) = leftᵀ (inputs × rows) · right (rows × outputs), and
// out[bias_offset ..] (outputs) = Σ_rows right: row `inputs` of the product, where leftᵀ's
// missing row is taken as ones.
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_weights(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let rows = batch.rows;
    let m = params.inputs;
    let n = params.outputs;
    let i0 = wid.y * DIRECT_ROWS;
    let col = wid.x * DIRECT_WORKGROUP + lid;
    let c = min(col, n - 1u);
    let mine = lane % SUBGROUP_CHUNK;
    clear_sums();
    for (var t0 = 0u; t0 < rows; t0 += SUBGROUP_CHUNK) {
        let t = t0 + mine;
        let r0 = vec4<f32>(transposed_left(t, i0 + 0u, m, rows), transposed_left(t, i0 + 1u, m, rows), transposed_left(t, i0 + 2u, m, rows), transposed_left(t, i0 + 3u, m, rows));
        let r1 = vec4<f32>(transposed_left(t, i0 + 4u, m, rows), transposed_left(t, i0 + 5u, m, rows), transposed_left(t, i0 + 6u, m, rows), transposed_left(t, i0 + 7u, m, rows));
        let r2 = vec4<f32>(transposed_left(t, i0 + 8u, m, rows), transposed_left(t, i0 + 9u, m, rows), transposed_left(t, i0 + 10u, m, rows), transposed_left(t, i0 + 11u, m, rows));
        let r3 = vec4<f32>(transposed_left(t, i0 + 12u, m, rows), transposed_left(t, i0 + 13u, m, rows), transposed_left(t, i0 + 14u, m, rows), transposed_left(t, i0 + 15u, m, rows));
        accumulate(subgroupBroadcast(r0, 0u), subgroupBroadcast(r1, 0u), subgroupBroadcast(r2, 0u), subgroupBroadcast(r3, 0u), right[min(t0 + 0u, rows - 1u) * n + c]);
        accumulate(subgroupBroadcast(r0, 1u), subgroupBroadcast(r1, 1u), subgroupBroadcast(r2, 1u), subgroupBroadcast(r3, 1u), right[min(t0 + 1u, rows - 1u) * n + c]);
        accumulate(subgroupBroadcast(r0, 2u), subgroupBroadcast(r1, 2u), subgroupBroadcast(r2, 2u), subgroupBroadcast(r3, 2u), right[min(t0 + 2u, rows - 1u) * n + c]);
        accumulate(subgroupBroadcast(r0, 3u), subgroupBroadcast(r1, 3u), subgroupBroadcast(r2, 3u), subgroupBroadcast(r3, 3u), right[min(t0 + 3u, rows - 1u) * n + c]);
        accumulate(subgroupBroadcast(r0, 4u), subgroupBroadcast(r1, 4u), subgroupBroadcast(r2, 4u), subgroupBroadcast(r3, 4u), right[min(t0 + 4u, rows - 1u) * n + c]);
        accumulate(subgroupBroadcast(r0, 5u), subgroupBroadcast(r1, 5u), subgroupBroadcast(r2, 5u), subgroupBroadcast(r3, 5u), right[min(t0 + 5u, rows - 1u) * n + c]);
        accumulate(subgroupBroadcast(r0, 6u), subgroupBroadcast(r1, 6u), subgroupBroadcast(r2, 6u), subgroupBroadcast(r3, 6u), right[min(t0 + 6u, rows - 1u) * n + c]);
        accumulate(subgroupBroadcast(r0, 7u), subgroupBroadcast(r1, 7u), subgroupBroadcast(r2, 7u), subgroupBroadcast(r3, 7u), right[min(t0 + 7u, rows - 1u) * n + c]);
    }
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        store_backward_weights(i0 + p, col, direct_sum(p));
    }
}
