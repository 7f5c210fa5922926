// gather_batch — twin of cpu::ops::gather_batch.
//   x[r, f] = images[order[start + r], f] / 255        x: rows × features
// images are the split's u8 pixels, packed four to a u32, uploaded once per run; `order` is the
// epoch's permutation (training) or 0, 1, 2, … (evaluation).
// Bindings (declared from `GatherBindings` in src/gpu/kernels/gather.rs): images, order, x, params.

// `GatherParams` in src/gpu/kernels/gather.rs.
struct GatherParams {
    features: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@compute @workgroup_size(LINEAR_WORKGROUP)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if i >= batch.rows * params.features {
        return;
    }
    let r = i / params.features;
    let f = i % params.features;
    let pixel = order[batch.start + r] * params.features + f;
    x[i] = f32(byte_at(images[pixel / 4u], pixel)) / 255.0;
}
