// What the direct4 and subgroup4 matmul variants share (compiled before the variant's own file;
// src/gpu/kernels/matmul.rs lists it in their sources): the sums of 16 rows × 4 columns, acc[p]
// being row p of the block at the invocation's 4 columns, indexed only by constants; the readers
// of their operands, which both declare as arrays of vec4<f32> (`Operands::Vec4`: layers whose
// widths and weight offset are multiples of 4); and the products of a step of 4 that add to acc.

var<private> acc: array<vec4<f32>, 16>;

// acc[p] for a computed p: through a switch, so that acc is indexed only by constants.
fn acc_at(p: u32) -> vec4<f32> {
    switch p {
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

// Where rows row0 … row0 + 15 of `left` (row-major, `groups` vec4s a row) start, in vec4s,
// clamped to the last of `rows`: row row0 + 4q + j is component j of field q.
struct RowBases {
    q0: vec4<u32>,
    q1: vec4<u32>,
    q2: vec4<u32>,
    q3: vec4<u32>,
}

fn row_bases(row0: u32, rows: u32, groups: u32) -> RowBases {
    let first = vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u);
    let last = vec4<u32>(rows - 1u);
    return RowBases(
        min(first, last) * groups,
        min(first + 4u, last) * groups,
        min(first + 8u, last) * groups,
        min(first + 12u, last) * groups,
    );
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

// leftᵀ[i .. i + 4, t] = left[t, i .. i + 4] (i a multiple of 4, left rows × m); (1, 0, 0, 0) at
// i == m (the bias gradient's row of ones), 0 past it or past the batch's rows.
fn transposed_left4(t: u32, i: u32, m: u32, rows: u32) -> vec4<f32> {
    let inside = left[min(t, rows - 1u) * (m / 4u) + min(i, m - 4u) / 4u];
    let value = select(select(vec4<f32>(), vec4<f32>(1.0, 0.0, 0.0, 0.0), i == m), inside, i < m);
    return select(vec4<f32>(), value, t < rows);
}
