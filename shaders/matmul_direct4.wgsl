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
    for (var g = 0u; g < groups; g++) {
        accumulate_columns(weight_rows(w, g, n4, k), left[b0 + g], left[b1 + g], left[b2 + g], left[b3 + g], left[b4 + g], left[b5 + g], left[b6 + g], left[b7 + g], left[b8 + g], left[b9 + g], left[b10 + g], left[b11 + g], left[b12 + g], left[b13 + g], left[b14 + g], left[b15 + g]);
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
    for (var g = 0u; g < groups; g++) {
        accumulate_rows(weight_columns(w, g, groups), left[b0 + g], left[b1 + g], left[b2 + g], left[b3 + g], left[b4 + g], left[b5 + g], left[b6 + g], left[b7 + g], left[b8 + g], left[b9 + g], left[b10 + g], left[b11 + g], left[b12 + g], left[b13 + g], left[b14 + g], left[b15 + g]);
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
