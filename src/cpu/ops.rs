//! The CPU reference ops: the math of an MLP, one function per op, on plain slices.
//!
//! Row-major throughout; shapes are given at the top of each op. The three matmuls go through
//! the `gemm` crate (a packed, SIMD GEMM); everything else is a plain loop you can read as the
//! formula. Each op has a WGSL twin of the same name in `shaders/`, and tests that check both
//! against naive loops.

use crate::data::Standardization;
use crate::dropout::Mask;
use crate::network::{Activation, Loss, Output};
use crate::optim::UpdateConstants;

/// `c (m×n) = a (m×k) · b (k×n)`, each given as a slice plus its (row, column) strides, so that
/// a transposed operand is the same slice with its strides swapped.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    (m, n, k): (usize, usize, usize),
    c: &mut [f32],
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The unsafe call reads a and b and writes c through these strides: check they stay inside.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(c.len() >= m * n);
    if k > 0 {
        assert!(a.len() > last(m, k, a_rs, a_cs) && b.len() > last(k, n, b_rs, b_cs));
    }
    // SAFETY: every index the GEMM touches is inside the slices (checked above); c does not
    // alias a or b (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The ops run one GEMM per thread: the backend parallelises across a batch's rows instead.
const SERIAL: gemm::Parallelism = gemm::Parallelism::None;

/// `c = a · b` for square `n × n` matrices, the GEMM spread over `threads` threads: the CPU's
/// ceiling in the benchmarks (the same GEMM code the ops use, at its best).
#[cfg(feature = "native")]
pub fn square_matmul(c: &mut [f32], a: &[f32], b: &[f32], n: usize, threads: usize) {
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        SERIAL
    };
    sgemm((n, n, n), c, a, (n, 1), b, (n, 1), parallelism);
}

/// `x[r, :] = images[index[r], :] / 255` — copies a batch's examples out of the u8 dataset —
/// then, with `standardize`, `x[r, f] = (x[r, f] − mean[f]) · inv_std[f]`.
/// x: rows × features; `images`: examples × features; `index`: rows entries of the permutation.
pub fn gather_batch(
    x: &mut [f32],
    labels: &mut [u8],
    images: &[u8],
    all_labels: &[u8],
    index: &[u32],
    standardize: Option<&Standardization>,
) {
    let features = x.len() / index.len().max(1);
    for (r, &example) in index.iter().enumerate() {
        let example = example as usize;
        let pixels = &images[example * features..(example + 1) * features];
        let row = &mut x[r * features..(r + 1) * features];
        for (xi, &p) in row.iter_mut().zip(pixels) {
            *xi = p as f32 / 255.0;
        }
        if let Some(s) = standardize {
            for ((xi, m), k) in row.iter_mut().zip(&s.mean).zip(&s.inv_std) {
                *xi = (*xi - m) * k;
            }
        }
        labels[r] = all_labels[example];
    }
}

/// Inverted dropout, in place: `a[r, u] *= 1/(1−p)` where `mask` keeps (row0 + r, u), else 0.
/// a: rows × units; `row0` is the first row's index in the whole batch (a CPU shard's offset).
pub fn dropout_forward(a: &mut [f32], units: usize, row0: usize, mask: &Mask) {
    for (r, row) in a.chunks_exact_mut(units).enumerate() {
        for (u, v) in row.iter_mut().enumerate() {
            *v *= mask.factor(row0 + r, units, u);
        }
    }
}

/// The backward pass through a dropped activation, in place: `d ⊙ f'(a)` as
/// [`activation_backward`] computes it, times the mask's factor. `dropped` holds ã = a·m/(1−p),
/// what the forward pass left; a kept unit's a is ã·(1−p), a dropped unit passes no gradient.
/// d, dropped: rows × units.
pub fn dropout_activation_backward(
    activation: Activation,
    d: &mut [f32],
    dropped: &[f32],
    units: usize,
    row0: usize,
    mask: &Mask,
) {
    let keep = 1.0 / mask.scale;
    for (r, (d_row, a_row)) in d.chunks_exact_mut(units).zip(dropped.chunks_exact(units)).enumerate() {
        for (u, (d, &a)) in d_row.iter_mut().zip(a_row).enumerate() {
            let factor = mask.factor(row0 + r, units, u);
            let a = a * keep;
            let derivative = match activation {
                Activation::Relu => {
                    if a > 0.0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                Activation::Sigmoid => a * (1.0 - a),
                Activation::Tanh => 1.0 - a * a,
            };
            *d = if factor == 0.0 { 0.0 } else { *d * derivative * factor };
        }
    }
}

/// `out = inp · weight + bias` (bias broadcast over rows).
/// out: rows × n; inp: rows × k; weight: k × n; bias: n.
pub fn matmul_forward(out: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], rows: usize) {
    let n = bias.len();
    let k = weight.len() / n;
    sgemm((rows, n, k), out, inp, (k, 1), weight, (n, 1), SERIAL);
    for row in out[..rows * n].chunks_exact_mut(n) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

/// `a = f(z)`, in place: the hidden layers' non-linearity.
pub fn activation_forward(activation: Activation, z: &mut [f32]) {
    match activation {
        Activation::Relu => z.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Sigmoid => z.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::Tanh => z.iter_mut().for_each(|v| *v = v.tanh()),
    }
}

/// `d = d ⊙ f'(z)`, in place, with `f'` written in terms of the activation's output `a = f(z)`
/// (so the forward pass need not keep `z`): relu' = [a > 0], σ' = a(1-a), tanh' = 1 - a².
pub fn activation_backward(activation: Activation, d: &mut [f32], a: &[f32]) {
    let d_and_a = d.iter_mut().zip(a);
    match activation {
        Activation::Relu => d_and_a.for_each(|(d, &a)| *d = if a > 0.0 { *d } else { 0.0 }),
        Activation::Sigmoid => d_and_a.for_each(|(d, &a)| *d *= a * (1.0 - a)),
        Activation::Tanh => d_and_a.for_each(|(d, &a)| *d *= 1.0 - a * a),
    }
}

/// `dweight = inpᵀ · dout`, `dbias = Σ_rows dout`.
/// dweight: k × n; dbias: n; dout: rows × n; inp: rows × k.
pub fn matmul_backward_weights(dweight: &mut [f32], dbias: &mut [f32], dout: &[f32], inp: &[f32], rows: usize) {
    let n = dbias.len();
    let k = dweight.len() / n;
    sgemm((k, n, rows), dweight, inp, (1, k), dout, (n, 1), SERIAL);
    dbias.fill(0.0);
    for row in dout[..rows * n].chunks_exact(n) {
        for (db, d) in dbias.iter_mut().zip(row) {
            *db += d;
        }
    }
}

/// `dinp = dout · weightᵀ`.
/// dinp: rows × k; dout: rows × n; weight: k × n.
pub fn matmul_backward_input(dinp: &mut [f32], dout: &[f32], weight: &[f32], rows: usize, n: usize) {
    let k = weight.len() / n;
    sgemm((rows, k, n), dinp, dout, (n, 1), weight, (1, n), SERIAL);
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// log(1 + e^z), without overflow for large |z|.
fn softplus(z: f32) -> f32 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// The loss of one example and, into `grad`, `scale · ∂loss/∂z` (scale = 1/batch rows, so the
/// batch's gradient is that of its mean loss). Returns (loss, predicted class = argmax z).
/// z, grad: classes; `label` < classes.
pub fn output_loss(
    output: Output,
    loss: Loss,
    z: &[f32],
    label: usize,
    scale: f32,
    mut grad: Option<&mut [f32]>,
) -> (f32, usize) {
    let target = |k: usize| if k == label { 1.0 } else { 0.0 };
    let predicted = argmax(z);
    let mut value = 0.0;
    match output {
        Output::Softmax => {
            // Subtracting the max keeps e^z finite; it cancels in p = e^z / Σe^z.
            let max = z[predicted];
            let sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
            let p = |k: usize| (z[k] - max).exp() / sum;
            match loss {
                // -log p_label = log Σe^z - z_label; ∂/∂z_k = p_k - y_k.
                Loss::Ce => {
                    value = sum.ln() + max - z[label];
                    if let Some(grad) = grad {
                        grad.iter_mut()
                            .enumerate()
                            .for_each(|(k, g)| *g = scale * (p(k) - target(k)));
                    }
                }
                // Σ(p - y)²; ∂/∂z_k = p_k (g_k - Σ_j p_j g_j) with g = 2(p - y) (softmax Jacobian).
                Loss::Mse => {
                    let g = |k: usize| 2.0 * (p(k) - target(k));
                    value = (0..z.len()).map(|k| (p(k) - target(k)).powi(2)).sum();
                    let dot: f32 = (0..z.len()).map(|k| p(k) * g(k)).sum();
                    if let Some(grad) = grad {
                        grad.iter_mut()
                            .enumerate()
                            .for_each(|(k, gk)| *gk = scale * p(k) * (g(k) - dot));
                    }
                }
            }
        }
        Output::Sigmoid => {
            for k in 0..z.len() {
                let (p, y) = (sigmoid(z[k]), target(k));
                let dz = match loss {
                    // -[y log p + (1-y) log(1-p)] = softplus(z) - y·z; ∂/∂z = p - y.
                    Loss::Ce => {
                        value += softplus(z[k]) - y * z[k];
                        p - y
                    }
                    // (p - y)²; ∂/∂z = 2(p - y)·p(1 - p).
                    Loss::Mse => {
                        value += (p - y) * (p - y);
                        2.0 * (p - y) * p * (1.0 - p)
                    }
                };
                if let Some(grad) = grad.as_deref_mut() {
                    grad[k] = scale * dz;
                }
            }
        }
    }
    (value, predicted)
}

/// Index of the largest value; the first one on ties (the GPU breaks ties the same way).
pub fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = k;
        }
    }
    best
}

/// Splits a chunk of the flat buffers (starting at global index `first_index`) at the boundary
/// between weights (global index `< weight_count`) and biases: (weights, biases) of it.
fn weights_then_biases(len: usize, weight_count: usize, first_index: usize) -> usize {
    weight_count.saturating_sub(first_index).min(len)
}

/// `θ ← θ - lr·(∂θ + λ·θ)` for weights (global index `< weight_count`), `θ ← θ - lr·∂θ` for
/// biases. `params` and `grads` may be a chunk of the flat buffers starting at `first_index`.
pub fn sgd_update(params: &mut [f32], grads: &[f32], lr: f32, l2: f32, weight_count: usize, first_index: usize) {
    // Split at the weights/biases boundary so both loops are branch-free (and vectorise).
    let weights = weights_then_biases(params.len(), weight_count, first_index);
    let (p_weights, p_biases) = params.split_at_mut(weights);
    let (g_weights, g_biases) = grads.split_at(weights);
    for (p, &g) in p_weights.iter_mut().zip(g_weights) {
        *p -= lr * (g + l2 * *p);
    }
    for (p, &g) in p_biases.iter_mut().zip(g_biases) {
        *p -= lr * g;
    }
}

/// The gradient of parameter `p` with its L2 term: g + λ·p for weights, g for biases.
#[inline]
fn with_l2(g: f32, p: f32, l2: f32, is_weight: bool) -> f32 {
    if is_weight {
        g + l2 * p
    } else {
        g
    }
}

/// Momentum as the exponentially weighted average of the gradients:
/// `v ← β·v + (1−β)·g`, `θ ← θ − lr·v` (β is `k.beta1`). Chunks as [`sgd_update`].
pub fn momentum_update(
    params: &mut [f32],
    grads: &[f32],
    velocity: &mut [f32],
    k: &UpdateConstants,
    first_index: usize,
) {
    let weights = weights_then_biases(params.len(), k.weight_count as usize, first_index);
    for (i, ((p, &g), v)) in params.iter_mut().zip(grads).zip(velocity.iter_mut()).enumerate() {
        let g = with_l2(g, *p, k.l2, i < weights);
        *v = k.beta1 * *v + (1.0 - k.beta1) * g;
        *p -= k.lr * *v;
    }
}

/// RMSprop: `s ← β₂·s + (1−β₂)·g²`, `θ ← θ − lr·g/(√s + ε)`. Chunks as [`sgd_update`].
pub fn rmsprop_update(
    params: &mut [f32],
    grads: &[f32],
    square_avg: &mut [f32],
    k: &UpdateConstants,
    first_index: usize,
) {
    let weights = weights_then_biases(params.len(), k.weight_count as usize, first_index);
    for (i, ((p, &g), s)) in params.iter_mut().zip(grads).zip(square_avg.iter_mut()).enumerate() {
        let g = with_l2(g, *p, k.l2, i < weights);
        *s = k.beta2 * *s + (1.0 - k.beta2) * g * g;
        *p -= k.lr * g / (s.sqrt() + k.eps);
    }
}

/// Adam with bias correction: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − lr·(m/c₁) / (√(v/c₂) + ε)` with c = `k.bias1`, `k.bias2`; g includes `k.l2`·θ for
/// weights. Chunks as [`sgd_update`].
pub fn adam_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &UpdateConstants,
    first_index: usize,
) {
    adam_step(params, grads, m, v, k, first_index);
}

/// AdamW: the Adam step on the plain gradient (`k.l2` is 0), and the weights (not the biases)
/// decayed apart from it: `θ ← θ − lr·(m̂/(√v̂ + ε) + wd·θ)`, the decay taken on θ before this
/// step. Chunks as [`sgd_update`].
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &UpdateConstants,
    first_index: usize,
) {
    adam_step(params, grads, m, v, k, first_index);
}

/// One step of Adam or AdamW: the constants say which (Adam: `l2` in the gradient and no
/// `weight_decay`; AdamW: the other way round).
fn adam_step(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], k: &UpdateConstants, first_index: usize) {
    let weights = weights_then_biases(params.len(), k.weight_count as usize, first_index);
    let moments = m.iter_mut().zip(v.iter_mut());
    for (i, ((p, &g), (m, v))) in params.iter_mut().zip(grads).zip(moments).enumerate() {
        let is_weight = i < weights;
        let g = with_l2(g, *p, k.l2, is_weight);
        let decay = if is_weight { k.weight_decay * *p } else { 0.0 };
        *m = k.beta1 * *m + (1.0 - k.beta1) * g;
        *v = k.beta2 * *v + (1.0 - k.beta2) * g * g;
        *p -= k.lr * ((*m / k.bias1) / ((*v / k.bias2).sqrt() + k.eps) + decay);
    }
}

/// `total += part`: sums one shard's partial gradient into the batch's gradient.
pub fn add_assign(total: &mut [f32], part: &[f32]) {
    for (t, &p) in total.iter_mut().zip(part) {
        *t += p;
    }
}
