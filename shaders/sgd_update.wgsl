// sgd_update — twin of cpu::ops::sgd_update.
//   θ ← θ - lr·(∂θ + λ·θ)   for weights (i < weight_count)
//   θ ← θ - lr·∂θ           for biases
// One dispatch updates the whole flat parameter buffer.
// Bindings (declared from `SgdUpdateBindings` in src/gpu/kernels/sgd_update.rs):
// parameters (θ, read_write), gradients (∂θ), params.

// `SgdUpdateParams` in src/gpu/kernels/sgd_update.rs.
struct SgdUpdateParams {
    lr: f32,
    l2: f32,
    weight_count: u32,
    total: u32,
}

@compute @workgroup_size(LINEAR_WORKGROUP)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if i >= params.total {
        return;
    }
    var g = gradients[i];
    if i < params.weight_count {
        g += params.l2 * parameters[i];
    }
    parameters[i] -= params.lr * g;
}
