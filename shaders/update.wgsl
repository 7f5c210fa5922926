// What every update kernel shares; each rule's file (sgd_update.wgsl, momentum_update.wgsl,
// rmsprop_update.wgsl, adam_update.wgsl) is compiled after it. One dispatch updates the whole
// flat parameter buffer, one invocation per parameter i: the weights first (i < weight_count),
// then the biases; the state buffers (v, s, m) have the same layout. The run's constants are the
// kernel's params; the step's (lr, Adam's bias corrections) are this batch's row of the step
// table (`this_step()` in common.wgsl), so a schedule may change them at every step.
// Every update family binds at least: parameters (θ, read_write), gradients (∂θ), params.

// `UpdateParams` in src/gpu/kernels/update.rs (`UpdateConstants` in src/optim.rs without the
// step's values).
struct UpdateParams {
    // L2 decay λ, added to the weights' gradient (0 for AdamW).
    l2: f32,
    // Momentum's β, or Adam's β₁.
    beta1: f32,
    beta2: f32,
    eps: f32,
    // AdamW's decoupled decay (0 for the others).
    weight_decay: f32,
    weight_count: u32,
    // Parameters in the buffer.
    total: u32,
    _p0: u32,
}

// The gradient of parameter i with its L2 term (cpu::ops::with_l2): g + λ·θ for weights, g for
// biases.
fn gradient_with_l2(i: u32) -> f32 {
    let g = gradients[i];
    if i < params.weight_count {
        return g + params.l2 * parameters[i];
    }
    return g;
}
