// The wide direct variant of the matmul kernels (`MatmulVariant::DIRECT_4` in
// src/gpu/kernels/matmul.rs, compiled after matmul.wgsl, whose epilogues it uses): as
// matmul_direct.wgsl — no workgroup memory, no barrier, the row operand read at addresses the
// same for the whole workgroup — but each invocation owns DIRECT_COLUMNS (4) consecutive columns
// and DIRECT_ROWS (16) rows: 16 vec4 accumulators, indexed only by constants. Per reduction step
// it loads 4 column-operand values (its own) and 16 row-operand values (the workgroup's) for 64
// multiply-adds, against 1 and 16 for 16 in matmul_direct.wgsl: fewer loads per multiply-add
// where same-address loads are not free.
//
// Rows and columns past the end of the product are read clamped and never stored.

const_assert DIRECT_ROWS == 16u;
const_assert DIRECT_COLUMNS == 4u;

// acc and acc_at: matmul_rows16x4.wgsl.

// Where row row0 + i of left (row-major, `rows` × `cols`) starts, clamped to the last row.
fn row_base(row0: u32, i: u32, rows: u32, cols: u32) -> u32 {
    return min(row0 + i, rows - 1u) * cols;
}

// The invocation's first column, and its 4 columns clamped to the last one (`n` columns).
fn first_column(wid: vec3<u32>, lid: u32) -> u32 {
    return (wid.x * DIRECT_WORKGROUP + lid) * DIRECT_COLUMNS;
}

fn clamped(c: u32, n: u32) -> vec4<u32> {
    return min(vec4<u32>(c, c + 1u, c + 2u, c + 3u), vec4<u32>(n - 1u));
}

// out (rows × outputs) = f(left (rows × inputs) · W + b)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.inputs;
    let n = params.outputs;
    let row0 = wid.y * DIRECT_ROWS;
    let col = first_column(wid, lid);
    // W[t, col ..]: along a row of W.
    var w = vec4<u32>(params.weight_offset) + clamped(col, n);
    let b0 = row_base(row0, 0u, rows, k);
    let b1 = row_base(row0, 1u, rows, k);
    let b2 = row_base(row0, 2u, rows, k);
    let b3 = row_base(row0, 3u, rows, k);
    let b4 = row_base(row0, 4u, rows, k);
    let b5 = row_base(row0, 5u, rows, k);
    let b6 = row_base(row0, 6u, rows, k);
    let b7 = row_base(row0, 7u, rows, k);
    let b8 = row_base(row0, 8u, rows, k);
    let b9 = row_base(row0, 9u, rows, k);
    let b10 = row_base(row0, 10u, rows, k);
    let b11 = row_base(row0, 11u, rows, k);
    let b12 = row_base(row0, 12u, rows, k);
    let b13 = row_base(row0, 13u, rows, k);
    let b14 = row_base(row0, 14u, rows, k);
    let b15 = row_base(row0, 15u, rows, k);
    acc = array<vec4<f32>, 16>();
    for (var t = 0u; t < k; t++) {
        let column = vec4<f32>(weights[w.x], weights[w.y], weights[w.z], weights[w.w]);
        acc[0] = fma(vec4<f32>(left[b0 + t]), column, acc[0]);
        acc[1] = fma(vec4<f32>(left[b1 + t]), column, acc[1]);
        acc[2] = fma(vec4<f32>(left[b2 + t]), column, acc[2]);
        acc[3] = fma(vec4<f32>(left[b3 + t]), column, acc[3]);
        acc[4] = fma(vec4<f32>(left[b4 + t]), column, acc[4]);
        acc[5] = fma(vec4<f32>(left[b5 + t]), column, acc[5]);
        acc[6] = fma(vec4<f32>(left[b6 + t]), column, acc[6]);
        acc[7] = fma(vec4<f32>(left[b7 + t]), column, acc[7]);
        acc[8] = fma(vec4<f32>(left[b8 + t]), column, acc[8]);
        acc[9] = fma(vec4<f32>(left[b9 + t]), column, acc[9]);
        acc[10] = fma(vec4<f32>(left[b10 + t]), column, acc[10]);
        acc[11] = fma(vec4<f32>(left[b11 + t]), column, acc[11]);
        acc[12] = fma(vec4<f32>(left[b12 + t]), column, acc[12]);
        acc[13] = fma(vec4<f32>(left[b13 + t]), column, acc[13]);
        acc[14] = fma(vec4<f32>(left[b14 + t]), column, acc[14]);
        acc[15] = fma(vec4<f32>(left[b15 + t]), column, acc[15]);
        w += vec4<u32>(n);
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var q = 0u; q < DIRECT_COLUMNS; q++) {
            store_forward(epi, row0 + p, col + q, sums[q]);
        }
    }
}

// out (rows × inputs) = (left (rows × outputs) · Wᵀ) ⊙ f'(right), right = A_{l-1} (rows × inputs)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.outputs; // reduce over the layer's outputs, produce its inputs
    let m = params.inputs;
    let row0 = wid.y * DIRECT_ROWS;
    let col = first_column(wid, lid);
    // Wᵀ[t, col ..] = W[col .., t]: along 4 rows of W.
    let w = vec4<u32>(params.weight_offset) + clamped(col, m) * k;
    let b0 = row_base(row0, 0u, rows, k);
    let b1 = row_base(row0, 1u, rows, k);
    let b2 = row_base(row0, 2u, rows, k);
    let b3 = row_base(row0, 3u, rows, k);
    let b4 = row_base(row0, 4u, rows, k);
    let b5 = row_base(row0, 5u, rows, k);
    let b6 = row_base(row0, 6u, rows, k);
    let b7 = row_base(row0, 7u, rows, k);
    let b8 = row_base(row0, 8u, rows, k);
    let b9 = row_base(row0, 9u, rows, k);
    let b10 = row_base(row0, 10u, rows, k);
    let b11 = row_base(row0, 11u, rows, k);
    let b12 = row_base(row0, 12u, rows, k);
    let b13 = row_base(row0, 13u, rows, k);
    let b14 = row_base(row0, 14u, rows, k);
    let b15 = row_base(row0, 15u, rows, k);
    acc = array<vec4<f32>, 16>();
    for (var t = 0u; t < k; t++) {
        let column = vec4<f32>(weights[w.x + t], weights[w.y + t], weights[w.z + t], weights[w.w + t]);
        acc[0] = fma(vec4<f32>(left[b0 + t]), column, acc[0]);
        acc[1] = fma(vec4<f32>(left[b1 + t]), column, acc[1]);
        acc[2] = fma(vec4<f32>(left[b2 + t]), column, acc[2]);
        acc[3] = fma(vec4<f32>(left[b3 + t]), column, acc[3]);
        acc[4] = fma(vec4<f32>(left[b4 + t]), column, acc[4]);
        acc[5] = fma(vec4<f32>(left[b5 + t]), column, acc[5]);
        acc[6] = fma(vec4<f32>(left[b6 + t]), column, acc[6]);
        acc[7] = fma(vec4<f32>(left[b7 + t]), column, acc[7]);
        acc[8] = fma(vec4<f32>(left[b8 + t]), column, acc[8]);
        acc[9] = fma(vec4<f32>(left[b9 + t]), column, acc[9]);
        acc[10] = fma(vec4<f32>(left[b10 + t]), column, acc[10]);
        acc[11] = fma(vec4<f32>(left[b11 + t]), column, acc[11]);
        acc[12] = fma(vec4<f32>(left[b12 + t]), column, acc[12]);
        acc[13] = fma(vec4<f32>(left[b13 + t]), column, acc[13]);
        acc[14] = fma(vec4<f32>(left[b14 + t]), column, acc[14]);
        acc[15] = fma(vec4<f32>(left[b15 + t]), column, acc[15]);
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var q = 0u; q < DIRECT_COLUMNS; q++) {
            store_backward_input(epi, row0 + p, col + q, sums[q]);
        }
    }
}

// leftᵀ[i, t] for the block's row i: left[t, i], or 1 for row `inputs` (the bias gradient's row
// of ones). Rows past it are never stored.
fn transposed_left(t: u32, i: u32, m: u32) -> f32 {
    return select(left[t * m + min(i, m - 1u)], 1.0, i >= m);
}

// out[weight_offset ..] (inputs × outputs) = leftᵀ (inputs × rows) · right (rows × outputs), and
// out[bias_offset ..] (outputs) = Σ_rows right: row `inputs` of the product, where leftᵀ's
// missing row is taken as ones.
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let m = params.inputs;
    let n = params.outputs;
    let i0 = wid.y * DIRECT_ROWS;
    let col = first_column(wid, lid);
    let c = clamped(col, n);
    acc = array<vec4<f32>, 16>();
    for (var t = 0u; t < rows; t++) {
        let r = t * n;
        let column = vec4<f32>(right[r + c.x], right[r + c.y], right[r + c.z], right[r + c.w]);
        acc[0] = fma(vec4<f32>(transposed_left(t, i0 + 0u, m)), column, acc[0]);
        acc[1] = fma(vec4<f32>(transposed_left(t, i0 + 1u, m)), column, acc[1]);
        acc[2] = fma(vec4<f32>(transposed_left(t, i0 + 2u, m)), column, acc[2]);
        acc[3] = fma(vec4<f32>(transposed_left(t, i0 + 3u, m)), column, acc[3]);
        acc[4] = fma(vec4<f32>(transposed_left(t, i0 + 4u, m)), column, acc[4]);
        acc[5] = fma(vec4<f32>(transposed_left(t, i0 + 5u, m)), column, acc[5]);
        acc[6] = fma(vec4<f32>(transposed_left(t, i0 + 6u, m)), column, acc[6]);
        acc[7] = fma(vec4<f32>(transposed_left(t, i0 + 7u, m)), column, acc[7]);
        acc[8] = fma(vec4<f32>(transposed_left(t, i0 + 8u, m)), column, acc[8]);
        acc[9] = fma(vec4<f32>(transposed_left(t, i0 + 9u, m)), column, acc[9]);
        acc[10] = fma(vec4<f32>(transposed_left(t, i0 + 10u, m)), column, acc[10]);
        acc[11] = fma(vec4<f32>(transposed_left(t, i0 + 11u, m)), column, acc[11]);
        acc[12] = fma(vec4<f32>(transposed_left(t, i0 + 12u, m)), column, acc[12]);
        acc[13] = fma(vec4<f32>(transposed_left(t, i0 + 13u, m)), column, acc[13]);
        acc[14] = fma(vec4<f32>(transposed_left(t, i0 + 14u, m)), column, acc[14]);
        acc[15] = fma(vec4<f32>(transposed_left(t, i0 + 15u, m)), column, acc[15]);
    }
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var q = 0u; q < DIRECT_COLUMNS; q++) {
            store_backward_weights(i0 + p, col + q, sums[q]);
        }
    }
}
