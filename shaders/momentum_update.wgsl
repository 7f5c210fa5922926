// momentum_update — twin of cpu::ops::momentum_update: momentum as the exponentially weighted
// average of the gradients (β is params.beta1), g with its L2 term.
//   v ← β·v + (1−β)·g        θ ← θ − lr·v
// Bindings (declared from `MomentumUpdateBindings` in src/gpu/kernels/momentum_update.rs):
// parameters (read_write), gradients, velocity (read_write), params. See update.wgsl.

@compute @workgroup_size(LINEAR_WORKGROUP)
fn momentum_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let q = linear_index(gid, groups);
    if q >= vector_count() {
        return;
    }
    let g = gradient_with_l2(q);
    let v = params.beta1 * velocity[q] + (1.0 - params.beta1) * g;
    velocity[q] = v;
    parameters[q] -= this_step().lr * v;
}
