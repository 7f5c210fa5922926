// What every update kernel shares; each rule's file (sgd_update.wgsl, momentum_update.wgsl,
// rmsprop_update.wgsl, adam_update.wgsl) is compiled after it. One dispatch updates the whole
// flat parameter buffer, the weights first (i < weight_count), then the biases; the state
// buffers (v, s, m) have the same layout. Each invocation updates the 4 parameters of one vec4:
// the buffers are arrays of vec4<f32>, their length padded to a multiple of 4 with zeros
// (`update::padded_len` in src/gpu/kernels/update.rs), which every rule keeps at 0 (a zero
// gradient moves nothing). One load brings 4 values: on lavapipe a load costs a loop over the
// lanes whatever it brings, and these kernels only load and store. The run's constants are the
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

// The vec4s of the padded buffers.
fn vector_count() -> u32 {
    return (params.total + 3u) / 4u;
}

// Which of vec4 q's 4 parameters are weights.
fn weights_at(q: u32) -> vec4<bool> {
    return vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.weight_count);
}

// The gradients of vec4 q's parameters with their L2 term (cpu::ops::with_l2): g + λ·θ for
// weights, g for biases.
fn gradient_with_l2(q: u32) -> vec4<f32> {
    let g = gradients[q];
    return select(g, g + params.l2 * parameters[q], weights_at(q));
}
