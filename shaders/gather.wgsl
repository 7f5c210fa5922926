// gather_batch — twin of cpu::ops::gather_batch (then cpu::ops::dropout_forward on the input).
//   x[r, f] = images[order[start + r], f] / 255        x: rows × features
//   standardised:  x[r, f] = (x[r, f] − mean[f]) · inv_std[f]   (statistics = [mean, inv_std])
//   in a training batch with input dropout:  x[r, f] *= the mask's factor (dropout layer 0)
// images are the split's u8 pixels, packed four to a u32, uploaded once per run; `order` is the
// epoch's permutation (training) or 0, 1, 2, … (evaluation).
// This file holds what both forms share; gather_f32.wgsl computes one element of x per
// invocation (any width), gather_vec4.wgsl four (widths in fours: x and statistics declared as
// arrays of vec4<f32>, one u32 of pixels a vec4 of x). See `Gather` in src/gpu/kernels/gather.rs.
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
