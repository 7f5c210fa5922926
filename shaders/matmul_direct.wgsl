// The direct variant of the matmul kernels (`MatmulVariant::DIRECT` in src/gpu/kernels/matmul.rs,
// compiled after matmul.wgsl, whose epilogues it uses): no workgroup memory, no barrier.
//
// A workgroup of DIRECT_WORKGROUP invocations computes a DIRECT_ROWS × DIRECT_WORKGROUP block of
// the product: invocation i owns column col0 + i and the block's DIRECT_ROWS rows, whose sums it
// keeps in registers (four vec4 accumulators, named, never indexed). Each step along the
// reduction loads one value of the column operand — the only load whose address differs between
// invocations — and DIRECT_ROWS values of the row operand at addresses that depend only on the
// workgroup and the step, the same for every invocation: a driver loads those once for the
// whole SIMD group (lavapipe) or serves them from cache as a broadcast (GPUs), and consecutive
// invocations read consecutive columns. So DIRECT_ROWS multiply-adds per divergent load, against
// the staged tile's barriers and workgroup-memory traffic.
//
// Rows past the end of the product are read clamped to the last row and never stored; columns
// past the end likewise. Any shape works. DIRECT_WORKGROUP and DIRECT_ROWS come from the
// variant, in the prelude.

// The 16 accumulators, accumulate, direct_sum and clear_sums: matmul_rows16.wgsl (one column
// each).
const_assert DIRECT_COLUMNS == 1u;

// Where row row0 + i of left (row-major, `rows` × `cols`) starts; rows past the end are clamped
// to the last. The same for every invocation of the workgroup.
fn left_row_base(row0: u32, i: u32, rows: u32, cols: u32) -> u32 {
    return min(row0 + i, rows - 1u) * cols;
}

// out (rows × outputs) = f(left (rows × inputs) · W + b)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.inputs;
    let n = params.outputs;
    let row0 = wid.y * DIRECT_ROWS;
    let col = wid.x * DIRECT_WORKGROUP + lid;
    // W[t, col]: the column operand, along a row of W for consecutive invocations.
    var w = params.weight_offset + min(col, n - 1u);
    let b0 = left_row_base(row0, 0u, rows, k);
    let b1 = left_row_base(row0, 1u, rows, k);
    let b2 = left_row_base(row0, 2u, rows, k);
    let b3 = left_row_base(row0, 3u, rows, k);
    let b4 = left_row_base(row0, 4u, rows, k);
    let b5 = left_row_base(row0, 5u, rows, k);
    let b6 = left_row_base(row0, 6u, rows, k);
    let b7 = left_row_base(row0, 7u, rows, k);
    let b8 = left_row_base(row0, 8u, rows, k);
    let b9 = left_row_base(row0, 9u, rows, k);
    let b10 = left_row_base(row0, 10u, rows, k);
    let b11 = left_row_base(row0, 11u, rows, k);
    let b12 = left_row_base(row0, 12u, rows, k);
    let b13 = left_row_base(row0, 13u, rows, k);
    let b14 = left_row_base(row0, 14u, rows, k);
    let b15 = left_row_base(row0, 15u, rows, k);
    clear_sums();
    for (var t = 0u; t < k; t++) {
        accumulate(
            vec4<f32>(left[b0 + t], left[b1 + t], left[b2 + t], left[b3 + t]),
            vec4<f32>(left[b4 + t], left[b5 + t], left[b6 + t], left[b7 + t]),
            vec4<f32>(left[b8 + t], left[b9 + t], left[b10 + t], left[b11 + t]),
            vec4<f32>(left[b12 + t], left[b13 + t], left[b14 + t], left[b15 + t]),
            weights[w],
        );
        w += n;
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        store_forward(epi, row0 + p, col, direct_sum(p));
    }
}

// out (rows × inputs) = (left (rows × outputs) · Wᵀ) ⊙ f'(right), right = A_{l-1} (rows × inputs)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.outputs; // reduce over the layer's outputs, produce its inputs
    let m = params.inputs;
    let row0 = wid.y * DIRECT_ROWS;
    let col = wid.x * DIRECT_WORKGROUP + lid;
    // Wᵀ[t, col] = W[col, t]: the invocation walks along its own row of W.
    let w = params.weight_offset + min(col, m - 1u) * k;
    let b0 = left_row_base(row0, 0u, rows, k);
    let b1 = left_row_base(row0, 1u, rows, k);
    let b2 = left_row_base(row0, 2u, rows, k);
    let b3 = left_row_base(row0, 3u, rows, k);
    let b4 = left_row_base(row0, 4u, rows, k);
    let b5 = left_row_base(row0, 5u, rows, k);
    let b6 = left_row_base(row0, 6u, rows, k);
    let b7 = left_row_base(row0, 7u, rows, k);
    let b8 = left_row_base(row0, 8u, rows, k);
    let b9 = left_row_base(row0, 9u, rows, k);
    let b10 = left_row_base(row0, 10u, rows, k);
    let b11 = left_row_base(row0, 11u, rows, k);
    let b12 = left_row_base(row0, 12u, rows, k);
    let b13 = left_row_base(row0, 13u, rows, k);
    let b14 = left_row_base(row0, 14u, rows, k);
    let b15 = left_row_base(row0, 15u, rows, k);
    clear_sums();
    for (var t = 0u; t < k; t++) {
        accumulate(
            vec4<f32>(left[b0 + t], left[b1 + t], left[b2 + t], left[b3 + t]),
            vec4<f32>(left[b4 + t], left[b5 + t], left[b6 + t], left[b7 + t]),
            vec4<f32>(left[b8 + t], left[b9 + t], left[b10 + t], left[b11 + t]),
            vec4<f32>(left[b12 + t], left[b13 + t], left[b14 + t], left[b15 + t]),
            weights[w + t],
        );
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        store_backward_input(epi, row0 + p, col, direct_sum(p));
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
    let col = wid.x * DIRECT_WORKGROUP + lid;
    let c = min(col, n - 1u);
    clear_sums();
    for (var t = 0u; t < rows; t++) {
        accumulate(
            vec4<f32>(
                transposed_left(t, i0, m),
                transposed_left(t, i0 + 1u, m),
                transposed_left(t, i0 + 2u, m),
                transposed_left(t, i0 + 3u, m),
            ),
            vec4<f32>(
                transposed_left(t, i0 + 4u, m),
                transposed_left(t, i0 + 5u, m),
                transposed_left(t, i0 + 6u, m),
                transposed_left(t, i0 + 7u, m),
            ),
            vec4<f32>(
                transposed_left(t, i0 + 8u, m),
                transposed_left(t, i0 + 9u, m),
                transposed_left(t, i0 + 10u, m),
                transposed_left(t, i0 + 11u, m),
            ),
            vec4<f32>(
                transposed_left(t, i0 + 12u, m),
                transposed_left(t, i0 + 13u, m),
                transposed_left(t, i0 + 14u, m),
                transposed_left(t, i0 + 15u, m),
            ),
            right[t * n + c],
        );
    }
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        store_backward_weights(i0 + p, col, direct_sum(p));
    }
}
