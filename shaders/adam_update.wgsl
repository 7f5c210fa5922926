// adam_update, adamw_update — twins of cpu::ops::adam_update and cpu::ops::adamw_update, which
// share one step (cpu::ops::adam_step) whose constants say which rule it is: Adam has λ (L2) in
// the gradient and no decoupled decay, AdamW the other way round. With c₁ = 1 − β₁ᵗ and
// c₂ = 1 − β₂ᵗ from the step table (computed on the host, in f64, once):
//   g with its L2 term;  m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²
//   θ ← θ − lr·((m/c₁) / (√(v/c₂) + ε) + wd·θ)     wd·θ for weights only, θ before this step
// Bindings (declared from `AdamUpdateBindings` in src/gpu/kernels/adam_update.rs):
// parameters (read_write), gradients, first_moment (m, read_write), second_moment (v,
// read_write), params. See update.wgsl.

// Vec4 q's 4 parameters.
fn adam_step(q: u32) {
    let step = this_step();
    let theta = parameters[q];
    let g = gradient_with_l2(q);
    let decay = select(vec4<f32>(), params.weight_decay * theta, weights_at(q));
    let m = params.beta1 * first_moment[q] + (1.0 - params.beta1) * g;
    let v = params.beta2 * second_moment[q] + (1.0 - params.beta2) * g * g;
    first_moment[q] = m;
    second_moment[q] = v;
    parameters[q] = theta - step.lr * ((m / step.bias1) / (sqrt(v / step.bias2) + params.eps) + decay);
}

@compute @workgroup_size(LINEAR_WORKGROUP)
fn adam_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let q = linear_index(gid, groups);
    if q >= vector_count() {
        return;
    }
    adam_step(q);
}

@compute @workgroup_size(LINEAR_WORKGROUP)
fn adamw_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let q = linear_index(gid, groups);
    if q >= vector_count() {
        return;
    }
    adam_step(q);
}
