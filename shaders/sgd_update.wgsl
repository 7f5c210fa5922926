// sgd_update — twin of cpu::ops::sgd_update.
//   θ ← θ - lr·(∂θ + λ·θ)   for weights (i < weight_count)
//   θ ← θ - lr·∂θ           for biases
// Bindings (declared from `SgdUpdateBindings` in src/gpu/kernels/sgd_update.rs):
// parameters (θ, read_write), gradients (∂θ), params. See update.wgsl.

@compute @workgroup_size(LINEAR_WORKGROUP)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let q = linear_index(gid, groups);
    if q >= vector_count() {
        return;
    }
    let g = gradient_with_l2(q);
    parameters[q] -= this_step().lr * g;
}
