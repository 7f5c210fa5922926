// gather_batch, four consecutive features of one row per invocation (after gather.wgsl), for
// widths in fours: one u32 of the packed pixels (little-endian: feature 4k + j in bits 8j) makes
// one vec4 of x. On lavapipe a load or a store costs a loop over the lanes whatever it moves, so
// this form costs a quarter of gather_f32.wgsl's.

@compute @workgroup_size(LINEAR_WORKGROUP)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let q = linear_index(gid, groups);
    let features = params.features;
    let per_row = features / 4u;
    if q >= batch.rows * per_row {
        return;
    }
    let r = q / per_row;
    let f4 = q % per_row;
    let word = images[order[batch.start + r] * per_row + f4];
    let bytes = (vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
    var value = vec4<f32>(bytes) / 255.0;
    if params.standardize != 0u {
        value = (value - statistics[f4]) * statistics[per_row + f4];
    }
    let dropout = dropout_here(0u);
    if dropout.drops {
        let f = 4u * f4;
        value *= vec4<f32>(
            dropout_factor(dropout, r, features, f),
            dropout_factor(dropout, r, features, f + 1u),
            dropout_factor(dropout, r, features, f + 2u),
            dropout_factor(dropout, r, features, f + 3u),
        );
    }
    x[q] = value;
}
