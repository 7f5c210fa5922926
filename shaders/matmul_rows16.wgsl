// What the direct and subgroup matmul variants share (compiled after matmul.wgsl, before the
// variant's own file; src/gpu/kernels/matmul.rs lists it in their sources): the sums of 16 rows
// of one column, kept in four named vec4 registers, never indexed by a variable.

// The accumulators below are written out for 16 rows of one column.
const_assert DIRECT_ROWS == 16u;

var<private> acc0: vec4<f32>;
var<private> acc1: vec4<f32>;
var<private> acc2: vec4<f32>;
var<private> acc3: vec4<f32>;

// acc += rows (the block's 16 row-operand values at this step) × column (the invocation's
// column-operand value at this step).
fn accumulate(r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>, column: f32) {
    let c = vec4<f32>(column);
    acc0 = fma(r0, c, acc0);
    acc1 = fma(r1, c, acc1);
    acc2 = fma(r2, c, acc2);
    acc3 = fma(r3, c, acc3);
}

// The finished sum of the block's row p (p < 16) for this invocation's column.
fn direct_sum(p: u32) -> f32 {
    switch p / 4u {
        case 0u: { return acc0[p % 4u]; }
        case 1u: { return acc1[p % 4u]; }
        case 2u: { return acc2[p % 4u]; }
        default: { return acc3[p % 4u]; }
    }
}

fn clear_sums() {
    acc0 = vec4<f32>();
    acc1 = vec4<f32>();
    acc2 = vec4<f32>();
    acc3 = vec4<f32>();
}
