// The wide direct variant of the matmul kernels (`MatmulVariant::DIRECT_4` in
// src/gpu/kernels/matmul.rs, compiled after matmul.wgsl, whose epilogues it uses): as
// matmul_direct.wgsl — no workgroup memory, no barrier, no subgroup operation, the row operand
// read at addresses the same for the whole workgroup — but each invocation owns 4 consecutive
// columns and DIRECT_ROWS (16) rows (16 vec4 accumulators, indexed only by constants), and its
// operands `weights`, `left` and `right` are declared as arrays of vec4<f32>
// (`MatmulVariant::operands`), so one load brings 4 values: layers whose widths and weight offset
// are multiples of 4 (`MatmulVariant::fits`). Per 4 reduction steps an invocation loads 16
// row-operand vec4s (the workgroup's) and 4 of its own column operand for 256 multiply-adds:
// matmul_subgroup4.wgsl without the sharing of the row operand, for adapters without subgroups.
//
// Rows and columns past the end of the product are read clamped and never stored.

const_assert DIRECT_ROWS == 16u;
const_assert DIRECT_COLUMNS == 4u;

// The single-value readers, acc, acc_at and the 16 × 4 products: matmul_rows16x4.wgsl.

// out (rows × outputs) = f(left (rows × inputs) · W + b)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.inputs;
    let n = params.outputs;
    let groups = k / 4u;
    let n4 = n / 4u;
    let row0 = wid.y * DIRECT_ROWS;
    let c4 = wid.x * DIRECT_WORKGROUP + lid;
    let w = params.weight_offset / 4u + min(c4, n4 - 1u);
    let b = row_bases(row0, rows, groups);
    acc = array<vec4<f32>, 16>();
    for (var g = 0u; g < groups; g++) {
        accumulate_columns(weight_rows(w, g, n4, k), left[b.q0.x + g], left[b.q0.y + g], left[b.q0.z + g], left[b.q0.w + g], left[b.q1.x + g], left[b.q1.y + g], left[b.q1.z + g], left[b.q1.w + g], left[b.q2.x + g], left[b.q2.y + g], left[b.q2.z + g], left[b.q2.w + g], left[b.q3.x + g], left[b.q3.y + g], left[b.q3.z + g], left[b.q3.w + g]);
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var j = 0u; j < DIRECT_COLUMNS; j++) {
            store_forward(epi, row0 + p, 4u * c4 + j, sums[j]);
        }
    }
}

// out (rows × inputs) = (left (rows × outputs) · Wᵀ) ⊙ f'(right), right = A_{l-1} (rows × inputs)
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let k = params.outputs; // reduce over the layer's outputs, produce its inputs
    let m = params.inputs;
    let groups = k / 4u;
    let row0 = wid.y * DIRECT_ROWS;
    let c4 = wid.x * DIRECT_WORKGROUP + lid;
    // Wᵀ[t, col] = W[col, t]: column j of the invocation walks along row 4·c4 + j of W.
    let c = 4u * c4;
    let w = vec4<u32>(params.weight_offset / 4u) + min(vec4<u32>(c, c + 1u, c + 2u, c + 3u), vec4<u32>(m - 1u)) * groups;
    let b = row_bases(row0, rows, groups);
    acc = array<vec4<f32>, 16>();
    for (var g = 0u; g < groups; g++) {
        accumulate_rows(weight_columns(w, g, groups), left[b.q0.x + g], left[b.q0.y + g], left[b.q0.z + g], left[b.q0.w + g], left[b.q1.x + g], left[b.q1.y + g], left[b.q1.z + g], left[b.q1.w + g], left[b.q2.x + g], left[b.q2.y + g], left[b.q2.z + g], left[b.q2.w + g], left[b.q3.x + g], left[b.q3.y + g], left[b.q3.z + g], left[b.q3.w + g]);
    }
    let epi = epilogue();
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var j = 0u; j < DIRECT_COLUMNS; j++) {
            store_backward_input(epi, row0 + p, c + j, sums[j]);
        }
    }
}

// out[weight_offset ..] (inputs × outputs) = leftᵀ (inputs × rows) · right (rows × outputs), and
// out[bias_offset ..] (outputs) = Σ_rows right: row `inputs` of the product, where leftᵀ's
// missing row is taken as ones. Per step, the block's 16 row values are 4 vec4s, consecutive in
// memory, and the invocation's 4 columns one.
@compute @workgroup_size(DIRECT_WORKGROUP)
fn matmul_backward_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = batch.rows;
    let m = params.inputs;
    let n4 = params.outputs / 4u;
    let i0 = wid.y * DIRECT_ROWS;
    let c4 = wid.x * DIRECT_WORKGROUP + lid;
    let c = min(c4, n4 - 1u);
    acc = array<vec4<f32>, 16>();
    for (var t = 0u; t < rows; t++) {
        accumulate_outer(transposed_left4(t, i0, m, rows), transposed_left4(t, i0 + 4u, m, rows), transposed_left4(t, i0 + 8u, m, rows), transposed_left4(t, i0 + 12u, m, rows), right[t * n4 + c]);
    }
    for (var p = 0u; p < DIRECT_ROWS; p++) {
        let sums = acc_at(p);
        for (var j = 0u; j < DIRECT_COLUMNS; j++) {
            store_backward_weights(i0 + p, 4u * c4 + j, sums[j]);
        }
    }
}
