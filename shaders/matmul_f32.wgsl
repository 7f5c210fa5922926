// The single-value readers of matmul.wgsl for variants whose operands are arrays of f32 (every
// variant but matmul_subgroup4.wgsl, which reads its operands as vec4 and defines its own).

fn weight_value(i: u32) -> f32 {
    return weights[i];
}

fn left_value(i: u32) -> f32 {
    return left[i];
}

fn right_value(i: u32) -> f32 {
    return right[i];
}
