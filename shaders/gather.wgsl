// gather_batch — twin of cpu::ops::gather_batch.
//   x[r, f] = images[order[start + r], f] / 255        x: rows × features
// images are the split's u8 pixels, packed four to a u32, uploaded once per run; `order` is the
// epoch's permutation (training) or 0, 1, 2, … (evaluation).

struct GatherDims {
    features: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<storage, read> images: array<u32>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> dims: GatherDims;

@compute @workgroup_size(256)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if i >= batch.rows * dims.features {
        return;
    }
    let r = i / dims.features;
    let f = i % dims.features;
    let pixel = order[batch.start + r] * dims.features + f;
    x[i] = f32(byte_at(images[pixel / 4u], pixel)) / 255.0;
}
