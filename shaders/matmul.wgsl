// The three matmuls of a dense layer, each fused with what surrounds it:
//   matmul_forward           out = f(left · W + b)                 twin of cpu::ops::matmul_forward
//                                                                    then cpu::ops::activation_forward
//                                                                    (and cpu::ops::dropout_forward)
//   matmul_backward_input    out = (left · Wᵀ) ⊙ f'(right)         twin of cpu::ops::matmul_backward_input
//                                                                    then cpu::ops::activation_backward
//                                                                    (or dropout_activation_backward)
//   matmul_backward_weights  out = [leftᵀ · right ; Σ_rows right]  twin of cpu::ops::matmul_backward_weights
// with, for layer l (W: inputs × outputs, at weight_offset in the flat parameter buffer):
//   forward:          left = A_{l-1} (rows × inputs),  out = A_l (rows × outputs)
//   backward_input:   left = dZ_l (rows × outputs), right = A_{l-1}, out = dZ_{l-1} (rows × inputs)
//   backward_weights: left = A_{l-1}, right = dZ_l, out = the flat gradient buffer: dW_l, and db_l
//                     as one extra row of the product (left gets a column of ones).
//
// This file holds what every variant of the matmul kernels shares: the parameters, the operand
// readers and the epilogues (what happens to a finished sum). A variant (matmul_tiled.wgsl, …)
// computes the sums its own way and hands each one to store_forward, store_backward_input or
// store_backward_weights. See `MatmulVariant` in src/gpu/kernels/matmul.rs.
// Bindings (declared from `MatmulBindings` in src/gpu/kernels/matmul.rs):
// weights (the flat parameter buffer), left, right, out (read_write), params. The three read
// operands are arrays of f32 or, for a variant that loads them as vec4, of vec4<f32>
// (`MatmulVariant::operands`); this file reads single values through weight_value, left_value
// and right_value, which matmul_f32.wgsl or the vec4 variant's own file define.

// `MatmulParams` in src/gpu/kernels/matmul.rs.
struct MatmulParams {
    inputs: u32,
    outputs: u32,
    weight_offset: u32,
    bias_offset: u32,
    // ACT_* code: forward applies it (ACT_NONE for the last layer); backward_input applies its derivative
    activation: u32,
    // The dropout layer whose mask applies to forward's output (hidden layer l's output is
    // dropout layer l) or to backward_input's `right`; 0 for none (layer 0, the input, is
    // gather's).
    dropout_layer: u32,
    _p1: u32,
    _p2: u32,
}

// Element (r, c) of a row-major rows × cols matrix in `left`, or 0 outside it.
fn left_at(r: u32, c: u32, rows: u32, cols: u32) -> f32 {
    return select(0.0, left_value(min(r, rows - 1u) * cols + min(c, cols - 1u)), r < rows && c < cols);
}

fn right_at(r: u32, c: u32, rows: u32, cols: u32) -> f32 {
    return select(0.0, right_value(min(r, rows - 1u) * cols + min(c, cols - 1u)), r < rows && c < cols);
}

// W[r, c] of this layer, or 0 outside it.
fn weight_at(r: u32, c: u32) -> f32 {
    let inside = r < params.inputs && c < params.outputs;
    let r_in = min(r, params.inputs - 1u);
    let c_in = min(c, params.outputs - 1u);
    return select(0.0, weight_value(params.weight_offset + r_in * params.outputs + c_in), inside);
}

fn activate(z: f32, code: u32) -> f32 {
    switch code {
        case ACT_RELU: { return max(z, 0.0); }
        case ACT_SIGMOID: { return sigmoid(z); }
        case ACT_TANH: { return tanh(z); }
        default: { return z; }
    }
}

// f'(z) written with a = f(z), as cpu::ops::activation_backward does.
fn derivative(a: f32, code: u32) -> f32 {
    switch code {
        case ACT_RELU: { return select(0.0, 1.0, a > 0.0); }
        case ACT_SIGMOID: { return a * (1.0 - a); }
        case ACT_TANH: { return 1.0 - a * a; }
        default: { return 1.0; }
    }
}

// The epilogues. Each takes the finished sum for element (r, c) of the product and writes what
// the kernel outputs there; elements outside the output (a variant's tiles overhang its edges)
// are not written. forward's and backward_input's take an `Epilogue`, read once per invocation
// before the stores: a variant stores up to 64 sums, each epilogue is inlined at every store,
// and reads of the storage buffers between two stores cannot be shared by the compiler (it does
// not know that `out` is not `params`). Reading them once made the subgroup4 kernels' forward
// compile in two thirds of the time on lavapipe.

// What forward's and backward_input's epilogues read besides the element itself.
struct Epilogue {
    rows: u32,
    activation: u32,
    // The mask of params.dropout_layer (none for 0, which is gather's).
    dropout: DropoutHere,
}

fn epilogue() -> Epilogue {
    let layer = params.dropout_layer;
    var dropout = no_dropout();
    if layer != 0u {
        dropout = dropout_here(layer);
    }
    return Epilogue(batch.rows, params.activation, dropout);
}

// matmul_forward: out[r, c] = f(sum + b[c]), out: rows × outputs; then, in a training batch of a
// run with dropout, a hidden layer's output times its mask's factor (cpu::ops::dropout_forward).
fn store_forward(e: Epilogue, r: u32, c: u32, sum: f32) {
    let n = params.outputs;
    if r < e.rows && c < n {
        let z = sum + weight_value(params.bias_offset + c);
        var a = activate(z, e.activation);
        if e.dropout.drops {
            a *= dropout_factor(e.dropout, r, n, c);
        }
        out[r * n + c] = a;
    }
}

// matmul_backward_input: out[r, c] = sum · f'(A_{l-1}[r, c]), out and right: rows × inputs. Where
// A_{l-1} was dropped (cpu::ops::dropout_activation_backward), right holds ã = a·mask/(1−p): the
// derivative is taken at ã·(1−p) and times the factor for a kept unit, and a dropped unit passes
// no gradient.
fn store_backward_input(e: Epilogue, r: u32, c: u32, sum: f32) {
    let n = params.inputs;
    if r < e.rows && c < n {
        let a = right_value(r * n + c);
        if e.dropout.drops {
            let factor = dropout_factor(e.dropout, r, n, c);
            let kept = sum * derivative(a * e.dropout.keep, e.activation) * factor;
            out[r * n + c] = select(0.0, kept, factor != 0.0);
        } else {
            out[r * n + c] = sum * derivative(a, e.activation);
        }
    }
}

// matmul_backward_weights: row r < inputs of the product is dW's row r; row `inputs` is db.
fn store_backward_weights(r: u32, c: u32, sum: f32) {
    let m = params.inputs;
    let n = params.outputs;
    if r < m && c < n {
        out[params.weight_offset + r * n + c] = sum;
    } else if r == m && c < n {
        out[params.bias_offset + c] = sum;
    }
}
