// sgd_update — twin of cpu::ops::sgd_update.
//   θ ← θ - lr·(∂θ + λ·θ)   for weights (i < weight_count)
//   θ ← θ - lr·∂θ           for biases
// One dispatch updates the whole flat parameter buffer.

struct UpdateParams {
    lr: f32,
    l2: f32,
    weight_count: u32,
    total: u32,
}

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read> update: UpdateParams;

@compute @workgroup_size(256)
fn sgd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if i >= update.total {
        return;
    }
    var g = grads[i];
    if i < update.weight_count {
        g += update.l2 * params[i];
    }
    params[i] -= update.lr * g;
}
