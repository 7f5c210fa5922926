// gather_batch — twin of cpu::ops::gather_batch (then cpu::ops::dropout_forward on the input).
//   x[r, f] = images[order[start + r], f] / 255        x: rows × features
//   standardised:  x[r, f] = (x[r, f] − mean[f]) · inv_std[f]   (statistics = [mean, inv_std])
//   in a training batch with input dropout:  x[r, f] *= the mask's factor (dropout layer 0)
// images are the split's u8 pixels, packed four to a u32, uploaded once per run; `order` is the
// epoch's permutation (training) or 0, 1, 2, … (evaluation).
// Bindings (declared from `GatherBindings` in src/gpu/kernels/gather.rs): images, order,
// statistics, x, params.

// `GatherParams` in src/gpu/kernels/gather.rs.
struct GatherParams {
    features: u32,
    // 1: standardise with the statistics (else they are not read).
    standardize: u32,
    _p0: u32,
    _p1: u32,
}

@compute @workgroup_size(LINEAR_WORKGROUP)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let features = params.features;
    if i >= batch.rows * features {
        return;
    }
    let r = i / features;
    let f = i % features;
    let pixel = order[batch.start + r] * features + f;
    var value = f32(byte_at(images[pixel / 4u], pixel)) / 255.0;
    if params.standardize != 0u {
        value = (value - statistics[f]) * statistics[features + f];
    }
    if drops_units(0u) {
        value *= dropout_factor(0u, r, features, f);
    }
    x[i] = value;
}
