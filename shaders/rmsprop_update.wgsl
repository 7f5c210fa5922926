// rmsprop_update — twin of cpu::ops::rmsprop_update, g with its L2 term:
//   s ← β₂·s + (1−β₂)·g²      θ ← θ − lr·g / (√s + ε)
// Bindings (declared from `RmspropUpdateBindings` in src/gpu/kernels/rmsprop_update.rs):
// parameters (read_write), gradients, square_average (read_write), params. See update.wgsl.

@compute @workgroup_size(LINEAR_WORKGROUP)
fn rmsprop_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let q = linear_index(gid, groups);
    if q >= vector_count() {
        return;
    }
    let g = gradient_with_l2(q);
    let s = params.beta2 * square_average[q] + (1.0 - params.beta2) * g * g;
    square_average[q] = s;
    parameters[q] -= this_step().lr * g / (sqrt(s) + params.eps);
}
