// gather_batch, one element of x per invocation (after gather.wgsl).

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
    let dropout = dropout_here(0u);
    if dropout.drops {
        value *= dropout_factor(dropout, r, features, f);
    }
    x[i] = value;
}
