//! Every CPU op of `gpu_mlp::cpu::ops` against its textbook formula, written here as naive loops
//! computed in f64.
//!
//! - Inputs are random, seeded (ChaCha8) and never zero (|v| ≥ `MARGIN`), so that no term of a
//!   sum, and no ReLU input, can hide a wrong index or a wrong branch.
//! - Shapes are awkward: every dimension is drawn from {1, 7, 100, 101, 784}, never only
//!   multiples of 8, with rows = 1 and n = 1 among them.
//! - Every output is filled with NaN before the op runs, so an element the op fails to write
//!   fails the comparison.
//! - Results are compared with one helper, `common::assert_close`: |got − want| ≤ abs + rel·|want|,
//!   by default abs = 1e-5 and rel = 1e-4 (f32 results against an f64 reference).

// The references are the formulas as index loops, on purpose: `for i in 0..n { a[i] … b[i] }`.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{activations, assert_close, losses, max_violation, nonzero_vec, outputs, poisoned, rng};
use gpu_mlp::cpu::ops;
use gpu_mlp::network::{Activation, Loss, Output};
use rand::RngExt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The default tolerance of an f32 result against its f64 reference.
const ABS: f64 = 1e-5;
const REL: f64 = 1e-4;
/// No random input is closer to 0 than this (so none is zero, and ReLU's kink is far away).
const MARGIN: f32 = 1e-3;
/// The awkward sizes every dimension is drawn from.
const SIZES: [usize; 5] = [1, 7, 100, 101, 784];

/// (rows, k, n) shapes of the matmul tests: all from `SIZES`, with rows = 1, k = 1, n = 1, each
/// size in every position, and the largest products (784 along every axis, one at a time).
const MATMUL_SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (1, 784, 1),
    (1, 7, 101),
    (7, 1, 7),
    (7, 101, 100),
    (100, 784, 101),
    (101, 100, 7),
    (101, 7, 1),
    (784, 1, 100),
    (784, 101, 7),
    (100, 101, 784),
    (7, 784, 784),
];

// ---------------------------------------------------------------------------------------------
// The helper itself catches errors
// ---------------------------------------------------------------------------------------------

#[test]
fn comparison_catches_one_element_off_by_1e_3() {
    let want: Vec<f64> = (0..101).map(|i| (i as f64 - 50.0) * 0.37).collect();
    let exact: Vec<f32> = want.iter().map(|&w| w as f32).collect();
    assert!(max_violation(&exact, &want, ABS, REL).is_none());

    // Off by 1e-3 at an element whose tolerance is 1e-5 + 1e-4·|want| (want ≈ 0.37, tol ≈ 4.7e-5).
    let mut off = exact.clone();
    off[51] += 1e-3;
    let v = max_violation(&off, &want, ABS, REL).expect("an error of 1e-3 must be caught");
    assert_eq!((v.worst, v.failed), (51, 1));
    assert!((v.max_error - 1e-3).abs() < 1e-6, "{v:?}");

    // Also at the largest element (|want| = 18.5, tol ≈ 1.9e-3): 1e-2 is caught there, while the
    // same element off by 1e-3 is inside its relative tolerance.
    let mut off = exact.clone();
    off[0] -= 1e-2;
    assert_eq!(max_violation(&off, &want, ABS, REL).map(|v| v.worst), Some(0));
    off[0] = exact[0] - 1e-3;
    assert!(max_violation(&off, &want, ABS, REL).is_none());

    // An element left unwritten (still NaN) is caught, and named as the worst.
    let mut unwritten = exact.clone();
    unwritten[100] = f32::NAN;
    let v = max_violation(&unwritten, &want, ABS, REL).expect("NaN must be caught");
    assert_eq!(v.worst, 100);
    assert!(v.max_error.is_nan());

    // And assert_close panics on both.
    let mut off = exact.clone();
    off[50] += 1e-3; // want 0: tolerance 1e-5
    for bad in [&off, &unwritten] {
        let result = catch_unwind(AssertUnwindSafe(|| assert_close("bad", bad, &want, ABS, REL)));
        assert!(result.is_err(), "assert_close accepted a wrong result");
    }
    assert_close("exact", &exact, &want, ABS, REL);
}

// ---------------------------------------------------------------------------------------------
// gather_batch
// ---------------------------------------------------------------------------------------------

#[test]
fn gather_batch_copies_the_indexed_examples_scaled_to_unit() {
    let mut rng = rng(1);
    for features in SIZES {
        for rows in [1, 7, 100, 101] {
            let examples = 103;
            let images: Vec<u8> = (0..examples * features).map(|_| rng.random_range(1..=255u8)).collect();
            let all_labels: Vec<u8> = (0..examples).map(|_| rng.random_range(0..10u8)).collect();
            // Any order, with repeats: a permutation slice need not be sorted.
            let index: Vec<u32> = (0..rows).map(|_| rng.random_range(0..examples as u32)).collect();

            let mut x = poisoned(rows * features);
            let mut labels = vec![u8::MAX; rows];
            ops::gather_batch(&mut x, &mut labels, &images, &all_labels, &index, None);

            let mut want = vec![0.0f64; rows * features];
            let mut want_labels = vec![0u8; rows];
            for r in 0..rows {
                let e = index[r] as usize;
                for f in 0..features {
                    want[r * features + f] = images[e * features + f] as f64 / 255.0;
                }
                want_labels[r] = all_labels[e];
            }
            // /255 is one correctly rounded f32 division: within 1 ulp of the f64 value.
            assert_close(&format!("gather {rows}x{features}"), &x, &want, 0.0, 1.2e-7);
            assert_eq!(labels, want_labels, "gather labels {rows}x{features}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Matmuls
// ---------------------------------------------------------------------------------------------

/// The tolerance of a sum of `k` products of values in [-1, 1]. f32 rounding of such a sum grows
/// with its length, not with the (possibly cancelled, near-zero) result: the absolute part is
/// 1e-5 for k ≤ 100 and grows as √k beyond (2.8e-5 at k = 784): the random-walk growth of k
/// roundings of ≈ 6e-8·Σ|terms| each. The relative part stays 1e-4.
fn sum_abs_tolerance(k: usize) -> f64 {
    ABS * (k as f64 / 100.0).sqrt().max(1.0)
}

#[test]
fn matmul_forward_is_inp_times_weight_plus_bias() {
    let mut rng = rng(2);
    for (rows, k, n) in MATMUL_SHAPES {
        let inp = nonzero_vec(&mut rng, rows * k, -1.0, 1.0, MARGIN);
        let weight = nonzero_vec(&mut rng, k * n, -1.0, 1.0, MARGIN);
        let bias = nonzero_vec(&mut rng, n, -1.0, 1.0, MARGIN);
        let mut out = poisoned(rows * n);
        ops::matmul_forward(&mut out, &inp, &weight, &bias, rows);

        let mut want = vec![0.0f64; rows * n];
        for r in 0..rows {
            for j in 0..n {
                let mut sum = bias[j] as f64;
                for i in 0..k {
                    sum += inp[r * k + i] as f64 * weight[i * n + j] as f64;
                }
                want[r * n + j] = sum;
            }
        }
        let name = format!("matmul_forward rows={rows} k={k} n={n}");
        assert_close(&name, &out, &want, sum_abs_tolerance(k), REL);
    }
}

#[test]
fn matmul_backward_weights_is_inp_transposed_times_dout_and_column_sums() {
    let mut rng = rng(3);
    for (rows, k, n) in MATMUL_SHAPES {
        let inp = nonzero_vec(&mut rng, rows * k, -1.0, 1.0, MARGIN);
        let dout = nonzero_vec(&mut rng, rows * n, -1.0, 1.0, MARGIN);
        let mut dweight = poisoned(k * n);
        let mut dbias = poisoned(n);
        ops::matmul_backward_weights(&mut dweight, &mut dbias, &dout, &inp, rows);

        let mut want_w = vec![0.0f64; k * n];
        let mut want_b = vec![0.0f64; n];
        for i in 0..k {
            for j in 0..n {
                for r in 0..rows {
                    want_w[i * n + j] += inp[r * k + i] as f64 * dout[r * n + j] as f64;
                }
            }
        }
        for j in 0..n {
            for r in 0..rows {
                want_b[j] += dout[r * n + j] as f64;
            }
        }
        // Both are sums over the rows.
        let tol = sum_abs_tolerance(rows);
        assert_close(&format!("dweight rows={rows} k={k} n={n}"), &dweight, &want_w, tol, REL);
        assert_close(&format!("dbias rows={rows} k={k} n={n}"), &dbias, &want_b, tol, REL);
    }
}

#[test]
fn matmul_backward_input_is_dout_times_weight_transposed() {
    let mut rng = rng(4);
    for (rows, k, n) in MATMUL_SHAPES {
        let dout = nonzero_vec(&mut rng, rows * n, -1.0, 1.0, MARGIN);
        let weight = nonzero_vec(&mut rng, k * n, -1.0, 1.0, MARGIN);
        let mut dinp = poisoned(rows * k);
        ops::matmul_backward_input(&mut dinp, &dout, &weight, rows, n);

        let mut want = vec![0.0f64; rows * k];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..n {
                    want[r * k + i] += dout[r * n + j] as f64 * weight[i * n + j] as f64;
                }
            }
        }
        // A sum over n.
        let name = format!("dinp rows={rows} k={k} n={n}");
        assert_close(&name, &dinp, &want, sum_abs_tolerance(n), REL);
    }
}

// ---------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------

fn f64_activation(activation: Activation, z: f64) -> f64 {
    match activation {
        Activation::Relu => {
            if z > 0.0 {
                z
            } else {
                0.0
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        Activation::Tanh => (z.exp() - (-z).exp()) / (z.exp() + (-z).exp()),
    }
}

/// f'(z), differentiated by hand from the definitions above (in terms of z, not of f(z)).
fn f64_activation_derivative(activation: Activation, z: f64) -> f64 {
    match activation {
        Activation::Relu => {
            if z > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        // d/dz (1 + e^-z)^-1 = e^-z / (1 + e^-z)²
        Activation::Sigmoid => (-z).exp() / (1.0 + (-z).exp()).powi(2),
        // d/dz tanh z = 1 / cosh² z = 4 / (e^z + e^-z)²
        Activation::Tanh => 4.0 / (z.exp() + (-z).exp()).powi(2),
    }
}

#[test]
fn activation_forward_applies_f_elementwise() {
    let mut rng = rng(5);
    for &activation in activations() {
        for len in SIZES {
            // ±6 reaches into the saturated tails of σ and tanh.
            let z = nonzero_vec(&mut rng, len, -6.0, 6.0, MARGIN);
            let mut a = z.clone();
            ops::activation_forward(activation, &mut a);
            let want: Vec<f64> = z.iter().map(|&v| f64_activation(activation, v as f64)).collect();
            assert_close(&format!("{activation} forward len={len}"), &a, &want, ABS, REL);
        }
    }
}

#[test]
fn activation_backward_multiplies_by_f_prime() {
    let mut rng = rng(6);
    for &activation in activations() {
        for len in SIZES {
            let z = nonzero_vec(&mut rng, len, -6.0, 6.0, MARGIN);
            let d = nonzero_vec(&mut rng, len, -1.0, 1.0, MARGIN);
            // The op takes f(z), as the forward pass leaves it: computed here, not by the op.
            let a: Vec<f32> = z.iter().map(|&v| f64_activation(activation, v as f64) as f32).collect();
            let mut got = d.clone();
            ops::activation_backward(activation, &mut got, &a);
            let want: Vec<f64> = (0..len)
                .map(|i| d[i] as f64 * f64_activation_derivative(activation, z[i] as f64))
                .collect();
            assert_close(&format!("{activation} backward len={len}"), &got, &want, ABS, REL);
        }
    }
}

#[test]
fn relu_backward_passes_exactly_where_the_input_was_positive() {
    // Values just past the ReLU's margin on both sides: the mask must follow the sign exactly.
    let z = [2e-6f32, -2e-6, 5.0, -5.0, 1e-3, -1e-3, 3.0];
    let mut a = z;
    ops::activation_forward(Activation::Relu, &mut a);
    assert_eq!(a, [2e-6, 0.0, 5.0, 0.0, 1e-3, 0.0, 3.0]);
    let mut d = [0.5f32, 0.25, -1.5, 2.0, -0.75, 3.0, 1.0];
    ops::activation_backward(Activation::Relu, &mut d, &a);
    assert_eq!(d, [0.5, 0.0, -1.5, 0.0, -0.75, 0.0, 1.0]);
}

// ---------------------------------------------------------------------------------------------
// Output non-linearity and loss
// ---------------------------------------------------------------------------------------------

/// Index of the first largest value, as a plain loop.
fn naive_argmax(z: &[f32]) -> usize {
    let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    z.iter().position(|&v| v == max).unwrap()
}

/// The textbook loss of one example, in f64, and `scale·∂loss/∂z` by the chain rule through the
/// full Jacobian of the output non-linearity: ∂loss/∂z_k = Σ_j ∂loss/∂p_j · ∂p_j/∂z_k.
fn reference_output_loss(output: Output, loss: Loss, z: &[f32], label: usize, scale: f64) -> (f64, Vec<f64>) {
    let c = z.len();
    let z: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = (0..c).map(|k| if k == label { 1.0 } else { 0.0 }).collect();
    let p: Vec<f64> = match output {
        Output::Softmax => {
            let total: f64 = z.iter().map(|v| v.exp()).sum();
            z.iter().map(|v| v.exp() / total).collect()
        }
        Output::Sigmoid => z.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
    };
    let value = match (output, loss) {
        (Output::Softmax, Loss::Ce) => -p[label].ln(),
        (Output::Sigmoid, Loss::Ce) => -(0..c)
            .map(|k| y[k] * p[k].ln() + (1.0 - y[k]) * (1.0 - p[k]).ln())
            .sum::<f64>(),
        (_, Loss::Mse) => (0..c).map(|k| (p[k] - y[k]).powi(2)).sum(),
    };
    // ∂loss/∂p_j.
    let dp: Vec<f64> = (0..c)
        .map(|j| match (output, loss) {
            // Only the label's term: d/dp (−ln p) = −1/p.
            (Output::Softmax, Loss::Ce) => -y[j] / p[j],
            (Output::Sigmoid, Loss::Ce) => -y[j] / p[j] + (1.0 - y[j]) / (1.0 - p[j]),
            (_, Loss::Mse) => 2.0 * (p[j] - y[j]),
        })
        .collect();
    // ∂p_j/∂z_k.
    let jacobian = |j: usize, k: usize| -> f64 {
        let delta = if j == k { 1.0 } else { 0.0 };
        match output {
            Output::Softmax => p[j] * (delta - p[k]),
            Output::Sigmoid => delta * p[j] * (1.0 - p[j]),
        }
    };
    let mut grad = vec![0.0; c];
    for (k, g) in grad.iter_mut().enumerate() {
        for j in 0..c {
            *g += dp[j] * jacobian(j, k);
        }
        *g *= scale;
    }
    (value, grad)
}

#[test]
fn output_loss_matches_the_textbook_formulas_for_every_output_and_loss() {
    let mut rng = rng(7);
    for &output in outputs() {
        for &loss in losses() {
            for classes in [1, 2, 3, 7, 10, 101] {
                // Moderate logits, and wide ones reaching into the saturated tails (where the
                // sigmoid's 1 − p is 3e-7 and a naive f32 log would blow up).
                for spread in [3.0f32, 15.0] {
                    for rows in [1, 7, 100] {
                        let z = nonzero_vec(&mut rng, classes, -spread, spread, MARGIN);
                        let label = rng.random_range(0..classes);
                        let scale = 1.0 / rows as f32;
                        let name = format!("{output}-{loss} classes={classes} spread={spread} scale=1/{rows}");

                        let mut grad = poisoned(classes);
                        let (value, predicted) = ops::output_loss(output, loss, &z, label, scale, Some(&mut grad));
                        let (want_value, want_grad) = reference_output_loss(output, loss, &z, label, scale as f64);
                        assert_close(&format!("{name} loss"), &[value], &[want_value], ABS, REL);
                        assert_close(&format!("{name} grad"), &grad, &want_grad, ABS, REL);
                        assert_eq!(predicted, naive_argmax(&z), "{name} predicted class");

                        // Without a gradient: the same loss and class.
                        let (value2, predicted2) = ops::output_loss(output, loss, &z, label, scale, None);
                        assert_eq!((value2, predicted2), (value, predicted), "{name} without gradient");
                    }
                }
            }
        }
    }
}

#[test]
fn output_loss_reports_the_predicted_class_with_ties_to_the_first() {
    for &output in outputs() {
        for &loss in losses() {
            let (_, predicted) = ops::output_loss(output, loss, &[0.5, 2.0, 2.0, -1.0], 3, 1.0, None);
            assert_eq!(predicted, 1, "{output}-{loss}");
            let (_, predicted) = ops::output_loss(output, loss, &[-0.5, -2.0, -0.25], 0, 1.0, None);
            assert_eq!(predicted, 2, "{output}-{loss}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// argmax
// ---------------------------------------------------------------------------------------------

#[test]
fn argmax_finds_the_first_largest() {
    assert_eq!(ops::argmax(&[4.0]), 0);
    assert_eq!(ops::argmax(&[1.0, 3.0, 2.0]), 1);
    assert_eq!(ops::argmax(&[1.0, 2.0, 3.0]), 2);
    assert_eq!(ops::argmax(&[3.0, 2.0, 1.0]), 0);
    assert_eq!(ops::argmax(&[-3.0, -1.0, -2.0]), 1);
    // Ties: the first.
    assert_eq!(ops::argmax(&[7.0, 7.0, 7.0]), 0);
    assert_eq!(ops::argmax(&[1.0, 5.0, 2.0, 5.0]), 1);
    assert_eq!(ops::argmax(&[-1.0, -1.0]), 0);
    assert_eq!(ops::argmax(&[f32::NEG_INFINITY, -1e30, -1e30]), 1);

    // Random vectors of few distinct values, so that ties are frequent.
    let mut rng = rng(8);
    for len in SIZES {
        for _ in 0..20 {
            let z: Vec<f32> = (0..len).map(|_| rng.random_range(-3..=3) as f32).collect();
            assert_eq!(ops::argmax(&z), naive_argmax(&z), "{z:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sgd_update
// ---------------------------------------------------------------------------------------------

/// `θ_i − lr·(Σ_s g_s[i] + λ·θ_i·[first_index + i < weight_count])`, in f64.
fn reference_sgd(params: &[f32], grads: &[&[f32]], lr: f64, l2: f64, weight_count: usize, first: usize) -> Vec<f64> {
    (0..params.len())
        .map(|i| {
            let p = params[i] as f64;
            let mut g: f64 = grads.iter().map(|shard| shard[i] as f64).sum();
            if first + i < weight_count {
                g += l2 * p;
            }
            p - lr * g
        })
        .collect()
}

/// How the backend updates after a sharded batch: shard gradients summed in order with
/// `add_assign`, then one `sgd_update`.
fn update_with_shards(params: &mut [f32], shards: &[&[f32]], lr: f32, l2: f32, weight_count: usize, first: usize) {
    let mut total = shards[0].to_vec();
    for shard in &shards[1..] {
        ops::add_assign(&mut total, shard);
    }
    ops::sgd_update(params, &total, lr, l2, weight_count, first);
}

#[test]
fn sgd_update_decays_weights_only_and_sums_the_shards() {
    let mut rng = rng(9);
    // A buffer of 101 parameters whose first 60 are weights. A large λ (0.5, lr 0.1) moves every
    // weight by 0.05·θ more than a bias, far beyond the tolerance.
    let (total, weight_count, lr, l2) = (101, 60, 0.1f32, 0.5f32);
    // (first_index, len): the whole buffer; all weights; all biases; chunks straddling the
    // weight/bias boundary, including one starting on the last weight; one parameter.
    let chunks = [(0, 101), (0, 60), (60, 41), (40, 30), (59, 3), (7, 1), (100, 1)];
    for shards in [1, 2] {
        for (first, len) in chunks {
            let params = nonzero_vec(&mut rng, total, -1.0, 1.0, MARGIN);
            let grads: Vec<Vec<f32>> = (0..shards)
                .map(|_| nonzero_vec(&mut rng, total, -1.0, 1.0, MARGIN))
                .collect();
            let shard_slices: Vec<&[f32]> = grads.iter().map(|g| &g[first..first + len]).collect();

            let mut got = params[first..first + len].to_vec();
            update_with_shards(&mut got, &shard_slices, lr, l2, weight_count, first);
            let want = reference_sgd(
                &params[first..first + len],
                &shard_slices,
                lr as f64,
                l2 as f64,
                weight_count,
                first,
            );
            let name = format!("sgd shards={shards} first_index={first} len={len}");
            assert_close(&name, &got, &want, ABS, REL);
        }
    }
}

#[test]
fn sgd_update_in_chunks_equals_one_update() {
    // How the backend calls it: the buffer cut in chunks, each told its first index.
    let mut rng = rng(10);
    let (total, weight_count) = (784, 500);
    let params = nonzero_vec(&mut rng, total, -1.0, 1.0, MARGIN);
    let grads: Vec<Vec<f32>> = (0..2)
        .map(|_| nonzero_vec(&mut rng, total, -1.0, 1.0, MARGIN))
        .collect();
    let whole_grads: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    let mut whole = params.clone();
    update_with_shards(&mut whole, &whole_grads, 0.05, 0.01, weight_count, 0);
    let want = reference_sgd(&params, &whole_grads, 0.05, 0.01, weight_count, 0);
    assert_close("sgd whole", &whole, &want, ABS, REL);

    let mut chunked = params.clone();
    for (c, chunk) in chunked.chunks_mut(101).enumerate() {
        let start = c * 101;
        let shards: Vec<&[f32]> = grads.iter().map(|g| &g[start..start + chunk.len()]).collect();
        update_with_shards(chunk, &shards, 0.05, 0.01, weight_count, start);
    }
    assert_eq!(chunked, whole, "chunked update differs from the whole-buffer update");
}
