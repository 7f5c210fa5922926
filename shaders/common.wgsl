// Shared by every kernel (prepended to each shader file by src/gpu/kernels.rs).
//
// Row-major matrices, one example per row. A batch's rows come from the batch table: the
// dispatch binds the entry for its batch at a dynamic offset (group 1), so one recorded
// command sequence serves every batch without a host round trip. The table is a storage buffer,
// not a uniform one: software drivers (lavapipe) specialise and recompile a shader for each new
// value of a uniform that steers its control flow, which here would mean once per batch.

struct Batch {
    // First position of the batch in the split's example order.
    start: u32,
    // Rows in this batch (the last batch of an epoch may be short).
    rows: u32,
    // Where this batch's loss and correct count go in the metrics buffer.
    slot: u32,
    _pad: u32,
}

@group(1) @binding(0) var<storage, read> batch: Batch;

// Activation codes, as in LayerDims.activation.
const ACT_NONE: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_SIGMOID: u32 = 2u;
const ACT_TANH: u32 = 3u;

// One byte of a u8 array stored packed, four to a u32 (little-endian).
fn byte_at(words: u32, index: u32) -> u32 {
    return (words >> ((index & 3u) * 8u)) & 0xffu;
}

fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-z));
}

// A linear invocation index over a 2-D grid of 256-wide workgroups (the grid is 2-D only
// when one dimension would exceed the device's limit of workgroups per dimension).
fn linear_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}
