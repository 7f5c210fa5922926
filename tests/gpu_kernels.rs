//! Every WGSL kernel against its CPU twin in `cpu::ops`, one kernel run at a time through
//! [`KernelRunner`], on random non-zero inputs and awkward shapes (1, 7, 100, 101, 784 in every
//! position: not only multiples of the 64-wide matmul tile). The runner fills every output
//! buffer with NaN before the kernel runs, so an element a kernel forgets to write fails the
//! comparison as NaN instead of passing as a stale right answer. The optimisers' updates, which
//! work in place, are checked on inputs where every element must move; the dropout masks are
//! checked to be the CPU's bit for bit.

mod common;

use clap::ValueEnum;
use common::{activations, bits, check, losses, outputs, poisoned, random_dataset, rng, signed_vec, try_check};
use gpu_mlp::cpu::ops;
use gpu_mlp::data::Standardization;
use gpu_mlp::dropout::Dropout;
use gpu_mlp::gpu::context::GpuContext;
use gpu_mlp::gpu::kernels::matmul::{MatmulOp, MatmulVariant};
use gpu_mlp::gpu::kernels::LINEAR_WORKGROUP;
use gpu_mlp::gpu::oneshot::{KernelRunner, MaskAt, Updated};
use gpu_mlp::network::{Activation, LayerShape, Loss, Output};
use gpu_mlp::optim::{Optimizer, OptimizerKind, UpdateConstants};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// One device for the whole binary; the tests take turns on it.
static RUNNER: LazyLock<Mutex<KernelRunner>> =
    LazyLock::new(|| Mutex::new(KernelRunner::new().expect("a GPU adapter (lavapipe will do) to run the kernels on")));

fn runner() -> MutexGuard<'static, KernelRunner> {
    // A failed test must not take the others down with it: the runner holds no broken state.
    RUNNER.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// (rows, k, n): the matmul shapes. Each of 1, 7, 100, 101 and 784 appears as rows, as the
/// reduction length and as the output width; most are not multiples of the 64-wide tile, and
/// several need more than one tile in each direction. The two ~8 M multiply-add products are
/// the largest; the whole set is ~19 M multiply-adds per kernel.
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (7, 784, 7),
    (1, 784, 10),
    (101, 7, 100),
    (100, 784, 101),
    (100, 101, 784),
    (784, 100, 1),
    (784, 7, 101),
    (7, 1, 784),
];

/// Random inputs are never zero nor within this of it (no product vanishes trivially, and an
/// element left at zero cannot pass by luck).
const MARGIN: f32 = 1e-3;

/// A plausible activation output `a = f(z)` to take the derivative at: relu ≥ 0 with about a
/// third exact zeros, sigmoid in (0, 1), tanh in (-1, 1) (never zero).
fn activation_output(rng: &mut ChaCha8Rng, activation: Activation, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match activation {
            Activation::Relu if rng.random_range(0..3) == 0 => 0.0,
            Activation::Relu => rng.random_range(1e-3..2.0),
            Activation::Sigmoid => rng.random_range(1e-3..0.999),
            Activation::Tanh => {
                let a: f32 = rng.random_range(1e-3..0.999);
                if rng.random_range(0..2) == 0 {
                    a
                } else {
                    -a
                }
            }
        })
        .collect()
}

/// The default tolerance: |gpu − cpu| ≤ 1e-5 + 1e-4·|cpu|.
fn default_tolerance(cpu: f32) -> f64 {
    1e-5 + 1e-4 * (cpu as f64).abs()
}

/// `common::check` with the default tolerance.
fn check_default(what: &str, gpu: &[f32], cpu: &[f32]) -> f64 {
    check(what, gpu, cpu, |i| default_tolerance(cpu[i]))
}

/// Tolerance of a sum of products. The GPU accumulates a dot product of `k` products tile by
/// tile with FMAs, gemm in its own blocked order: two f32 sums of the same terms in different
/// orders may differ by up to ~2k·ε·Σ|a·b| (ε = 2⁻²³), in practice by a few ε·Σ|a·b|. Where the
/// products cancel, |cpu| ≪ Σ|a·b| and that exceeds 1e-5 + 1e-4·|cpu|: the default tolerance
/// fails 100×784×101 at an element with cpu 0.01822 and Σ|x·w| ≈ 80 (error 1.4e-5, allowed
/// 1.2e-5). So the absolute term also scales with the magnitude of what was summed: 8ε·Σ|a·b|
/// (≈ 9.5e-7·Σ|a·b|). The worst seen is ≈ 2ε·Σ|a·b| (printed by each test, "worst … of Σ").
fn sum_tolerance(cpu: f32, abs_sum: f32) -> f64 {
    default_tolerance(cpu) + 8.0 * f32::EPSILON as f64 * abs_sum as f64
}

/// Σ_t |a(i, t)·b(t, j)| for each element (i, j) of `c (m×n) = a (m×k) · b (k×n)`.
fn abs_product_sums(
    (m, n, k): (usize, usize, usize),
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let mut sums = vec![0.0f32; m * n];
    for i in 0..m {
        for t in 0..k {
            let a_it = a(i, t).abs();
            for j in 0..n {
                sums[i * n + j] += a_it * b(t, j).abs();
            }
        }
    }
    sums
}

/// Worst error as a fraction of Σ|a·b| at the same element (for the report).
fn worst_relative_to_sum(gpu: &[f32], cpu: &[f32], sums: &[f32]) -> f32 {
    gpu.iter()
        .zip(cpu)
        .zip(sums)
        .map(|((g, c), s)| (g - c).abs() / s.max(f32::MIN_POSITIVE))
        .fold(0.0, f32::max)
}

#[test]
fn the_check_fails_on_nan_and_names_the_worst_element() {
    let cpu = [1.0, 2.0, 3.0];
    let default = |i: usize| default_tolerance(cpu[i]);
    // Within tolerance: passes and reports the largest error.
    let max = try_check("ok", &[1.0, 2.0001, 3.0], &cpu, default).unwrap();
    assert!((max - 1e-4).abs() < 1e-6, "{max}");
    // A NaN (what an unwritten output element holds) fails, on either side.
    let message = try_check("nan", &[1.0, f32::NAN, 3.0], &cpu, default).unwrap_err();
    assert!(message.contains("element 1"), "{message}");
    assert!(try_check("nan", &cpu, &[1.0, 2.0, f32::NAN], |_| 1.0).is_err());
    // Out of tolerance: fails, naming the worst element and both values.
    let message = try_check("off", &[1.001, 2.0, 3.1], &cpu, default).unwrap_err();
    assert!(
        message.contains("2 of 3") && message.contains("worst at 2"),
        "{message}"
    );
    assert!(message.contains("got 3.1") && message.contains("want 3"), "{message}");
    assert!(try_check("short", &[1.0, 2.0], &cpu, default).is_err());
}

/// The poisoning the other tests rely on is real: an output the kernel does not write comes
/// back as NaN (dz when no gradient is asked for), and an output it fully covers comes back
/// with no NaN left, element by element (a forward matmul over several partial tiles).
#[test]
fn unwritten_outputs_come_back_as_nan() {
    let runner = runner();
    let mut rng = rng(1);
    let logits = signed_vec(&mut rng, 7 * 10, MARGIN, 3.0);
    let labels = [3u8, 1, 4, 1, 5, 9, 2];
    let result = runner
        .output_loss(Output::Softmax, Loss::Ce, &logits, &labels, 10, false)
        .unwrap();
    assert_eq!(result.grad.len(), 70);
    assert!(
        result.grad.iter().all(|g| g.is_nan()),
        "dz was written without with_grad"
    );
    assert!(result.loss_sum.is_finite());

    let (rows, k, n) = (130, 70, 67);
    let inp = signed_vec(&mut rng, rows * k, MARGIN, 1.0);
    let weight = signed_vec(&mut rng, k * n, MARGIN, 1.0);
    let bias = signed_vec(&mut rng, n, MARGIN, 1.0);
    let out = runner.matmul_forward(&inp, &weight, &bias, rows, None).unwrap();
    assert_eq!(out.len(), rows * n);
    for (i, v) in out.iter().enumerate() {
        assert!(
            !v.is_nan(),
            "out[{i}] (row {}, column {}) was not written",
            i / n,
            i % n
        );
    }
}

#[test]
fn gather_batch_matches_cpu() {
    let runner = runner();
    let mut rng = rng(2);
    let examples = 13;
    for features in [784usize, 7, 1] {
        let images: Vec<u8> = (0..examples * features).map(|_| rng.random_range(0..=255u8)).collect();
        let labels: Vec<u8> = (0..examples).map(|e| (e % 10) as u8).collect();
        // Out of order, with repeats, and the last example (whose bytes end the packed tail:
        // 13·7 = 91 and 13·1 = 13 bytes are not whole u32 words).
        let index: Vec<u32> = vec![12, 0, 5, 5, 11, 3, 12, 1, 7, 0, 12];
        let gpu = runner.gather_batch(&images, features, &index).unwrap();
        let mut cpu = poisoned(index.len() * features);
        let mut cpu_labels = vec![0u8; index.len()];
        ops::gather_batch(&mut cpu, &mut cpu_labels, &images, &labels, &index, None);
        let max = check_default(&format!("gather_batch features {features}"), &gpu, &cpu);
        println!("gather_batch features {features}: max error {max:e}");
        // The last example's last pixel, at the very end of the packed buffer: read, not a 0
        // from past the end. (Within an ulp, not equal: WGSL lets a GPU divide by multiplying
        // with the reciprocal, as NVIDIA's driver does, 1 ulp from the CPU's exact p / 255.)
        let last = images[examples * features - 1] as f32 / 255.0;
        let got = gpu[features - 1];
        assert!(
            (got - last).abs() <= last * f32::EPSILON,
            "features {features}: {got} vs {last}"
        );
    }
    // Batches larger than one workgroup, from a bigger set.
    gather_every_example_reversed(&runner, &mut rng, 300, 7);
}

/// `gather_batch` of a random set of `examples` images of `features` pixels, every example once
/// in reverse order, against `cpu::ops::gather_batch`.
fn gather_every_example_reversed(runner: &KernelRunner, rng: &mut ChaCha8Rng, examples: usize, features: usize) {
    let images: Vec<u8> = (0..examples * features).map(|_| rng.random_range(0..=255u8)).collect();
    let labels = vec![0u8; examples];
    let index: Vec<u32> = (0..examples as u32).rev().collect();
    let gpu = runner.gather_batch(&images, features, &index).unwrap();
    let mut cpu = poisoned(examples * features);
    ops::gather_batch(&mut cpu, &mut vec![0; examples], &images, &labels, &index, None);
    check_default(&format!("gather_batch {examples} × {features}"), &gpu, &cpu);
}

/// `matmul_forward` against the CPU on `shapes`, for every activation (and none).
fn matmul_forward_parity(runner: &KernelRunner, shapes: &[(usize, usize, usize)]) {
    let mut rng = rng(3);
    for &(rows, k, n) in shapes {
        let inp = signed_vec(&mut rng, rows * k, MARGIN, 1.0);
        let weight = signed_vec(&mut rng, k * n, MARGIN, 1.0);
        let bias = signed_vec(&mut rng, n, MARGIN, 1.0);
        let mut z = poisoned(rows * n);
        ops::matmul_forward(&mut z, &inp, &weight, &bias, rows);
        // Σ|x·w| + |b|: what the sum that makes each z was made of.
        let mut sums = abs_product_sums((rows, n, k), |i, t| inp[i * k + t], |t, j| weight[t * n + j]);
        sums.iter_mut().enumerate().for_each(|(i, s)| *s += bias[i % n].abs());
        for activation in std::iter::once(None).chain(activations().iter().copied().map(Some)) {
            let mut cpu = z.clone();
            if let Some(activation) = activation {
                ops::activation_forward(activation, &mut cpu);
            }
            let gpu = runner.matmul_forward(&inp, &weight, &bias, rows, activation).unwrap();
            let what = format!("matmul_forward {rows}×{k}×{n} {activation:?}");
            // relu, sigmoid and tanh have slopes ≤ 1: z's error bound carries over to f(z).
            let max = check(&what, &gpu, &cpu, |i| sum_tolerance(cpu[i], sums[i]));
            println!(
                "{what}: max error {max:e}, worst {:.2e} of Σ|x·w|",
                worst_relative_to_sum(&gpu, &cpu, &sums)
            );
        }
    }
}

/// `matmul_backward_input` against the CPU on `shapes`, for every activation.
fn matmul_backward_input_parity(runner: &KernelRunner, shapes: &[(usize, usize, usize)]) {
    let mut rng = rng(4);
    for &(rows, k, n) in shapes {
        // dinp (rows × k) = (dout (rows × n) · Wᵀ) ⊙ f'(a_prev): the reduction runs over n.
        let dout = signed_vec(&mut rng, rows * n, MARGIN, 1.0);
        let weight = signed_vec(&mut rng, k * n, MARGIN, 1.0);
        let mut product = poisoned(rows * k);
        ops::matmul_backward_input(&mut product, &dout, &weight, rows, n);
        let sums = abs_product_sums((rows, k, n), |i, t| dout[i * n + t], |t, j| weight[j * n + t]);
        for &activation in activations() {
            let a_prev = activation_output(&mut rng, activation, rows * k);
            if activation == Activation::Relu && rows * k >= 7 {
                assert!(a_prev.contains(&0.0), "relu's mask goes untested without zeros");
            }
            let mut cpu = product.clone();
            ops::activation_backward(activation, &mut cpu, &a_prev);
            let gpu = runner
                .matmul_backward_input(&dout, &weight, &a_prev, rows, n, activation)
                .unwrap();
            let what = format!("matmul_backward_input {rows}×{k}×{n} {activation:?}");
            // The product's error bound, times the derivative it is multiplied by.
            let mut derivative = vec![1.0; rows * k];
            ops::activation_backward(activation, &mut derivative, &a_prev);
            let max = check(&what, &gpu, &cpu, |i| {
                sum_tolerance(cpu[i], sums[i] * derivative[i].abs())
            });
            println!(
                "{what}: max error {max:e}, worst {:.2e} of Σ|dz·w|",
                worst_relative_to_sum(&gpu, &cpu, &sums)
            );
        }
    }
}

/// `matmul_backward_weights` against the CPU on `shapes`.
fn matmul_backward_weights_parity(runner: &KernelRunner, shapes: &[(usize, usize, usize)]) {
    let mut rng = rng(5);
    for &(rows, k, n) in shapes {
        // dW (k × n) = inpᵀ · dout, db (n) = Σ_rows dout: the reduction runs over the rows.
        let dout = signed_vec(&mut rng, rows * n, MARGIN, 1.0);
        let inp = signed_vec(&mut rng, rows * k, MARGIN, 1.0);
        let (mut dweight, mut dbias) = (poisoned(k * n), poisoned(n));
        ops::matmul_backward_weights(&mut dweight, &mut dbias, &dout, &inp, rows);
        let (gpu_dweight, gpu_dbias) = runner.matmul_backward_weights(&dout, &inp, rows, k, n).unwrap();
        let what = format!("matmul_backward_weights {rows}×{k}×{n}");
        let sums = abs_product_sums((k, n, rows), |i, t| inp[t * k + i], |t, j| dout[t * n + j]);
        let max_w = check(&format!("{what} dW"), &gpu_dweight, &dweight, |i| {
            sum_tolerance(dweight[i], sums[i])
        });
        let bias_sums = abs_product_sums((1, n, rows), |_, _| 1.0, |t, j| dout[t * n + j]);
        let max_b = check(&format!("{what} db"), &gpu_dbias, &dbias, |i| {
            sum_tolerance(dbias[i], bias_sums[i])
        });
        println!(
            "{what}: dW max error {max_w:e} (worst {:.2e} of Σ|a·dz|), db max error {max_b:e}",
            worst_relative_to_sum(&gpu_dweight, &dweight, &sums)
        );
    }
}

#[test]
fn matmul_forward_matches_cpu_for_every_activation() {
    matmul_forward_parity(&runner(), &SHAPES);
}

#[test]
fn matmul_backward_input_matches_cpu_for_every_activation() {
    matmul_backward_input_parity(&runner(), &SHAPES);
}

#[test]
fn matmul_backward_weights_matches_cpu() {
    matmul_backward_weights_parity(&runner(), &SHAPES);
}

/// The tiled matmuls compiled with other tiles and depths (emitted into the shader from the
/// variant, as every variant's constants are) still match the CPU: no number of the tiling is
/// written in the WGSL itself. Shapes that need several tiles and partial ones, at either size.
#[test]
fn the_tiled_matmuls_match_cpu_with_other_constants() {
    let shapes = [(1, 1, 1), (7, 784, 7), (101, 7, 100), (100, 101, 130)];
    for (tile, depth) in [(32, 8), (16, 4)] {
        let variant = MatmulVariant::staged("tiled, other constants", tile, depth);
        println!("tile {tile}, depth {depth} ({} invocations)", variant.workgroup_size());
        let runner = KernelRunner::with_matmul_variant(variant).expect("the variant compiles");
        matmul_forward_parity(&runner, &shapes);
        matmul_backward_input_parity(&runner, &shapes);
        matmul_backward_weights_parity(&runner, &shapes);
    }
}

/// Every matmul variant this device can run (the default is tested above, op by op) against the
/// CPU: the parity shapes, a real layer (100×784×128), one that fits no block evenly (37×13×5)
/// and a partial last batch (the 60,000 training images in batches of 128 end with 96 rows), each
/// with every activation, and the dropout epilogues: every variant ends in the same WGSL
/// functions, so each must give the same results within the same tolerances.
///
/// A variant that takes only some layers (vec4 operands: widths that are multiples of 4) runs
/// the shapes it fits, among them shapes of its own: a reduction that is not a whole number of
/// its chunks (12, 100, 784 steps of 32 at a time), blocks cut by the edges, and a weight
/// gradient whose bias row falls inside a block (100 inputs, blocks of 16 rows).
#[test]
fn every_matmul_variant_matches_cpu() {
    let mut shapes = SHAPES.to_vec();
    shapes.extend([(100, 784, 128), (37, 13, 5), (96, 128, 10)]);
    shapes.extend([(37, 12, 20), (101, 100, 132), (8, 784, 64), (100, 64, 512), (3, 4, 4)]);
    let ctx = gpu_mlp::gpu::context::GpuContext::new().expect("a GPU adapter (lavapipe will do)");
    let variants = MatmulVariant::available(&ctx);
    drop(ctx);
    println!("variants: {:?}", variants.iter().map(|v| v.name).collect::<Vec<_>>());
    for variant in variants.into_iter().filter(|&v| v != MatmulVariant::DEFAULT) {
        println!("variant {}", variant.name);
        let runner = KernelRunner::with_matmul_variant(variant).expect("the variant compiles");
        let fitting: Vec<(usize, usize, usize)> = shapes
            .iter()
            .copied()
            .filter(|&(_, k, n)| MatmulOp::ALL.iter().all(|&op| variant.fits(op, &layer(k, n))))
            .collect();
        assert!(fitting.len() >= 5, "{}: {fitting:?}", variant.name);
        matmul_forward_parity(&runner, &fitting);
        matmul_backward_input_parity(&runner, &fitting);
        matmul_backward_weights_parity(&runner, &fitting);
        let dropout_shapes: Vec<(usize, usize, usize)> = DROPOUT_SHAPES
            .into_iter()
            .filter(|&(_, k, n)| MatmulOp::ALL.iter().all(|&op| variant.fits(op, &layer(k, n))))
            .collect();
        assert!(!dropout_shapes.is_empty(), "{}", variant.name);
        matmul_epilogues_with_dropout_parity(&runner, &dropout_shapes);
    }
}

/// A k × n layer as `KernelRunner` lays it out (its weights after a 4-float prefix).
fn layer(k: usize, n: usize) -> LayerShape {
    LayerShape {
        inputs: k,
        outputs: n,
        weight_offset: 4,
        bias_offset: 4 + k * n,
    }
}

#[test]
fn output_loss_matches_cpu_for_every_output_and_loss() {
    let runner = runner();
    let mut rng = rng(6);
    for rows in [1usize, 7, 100, 300] {
        for classes in [10usize, 2] {
            let mut logits = signed_vec(&mut rng, rows * classes, MARGIN, 4.0);
            let mut labels: Vec<u8> = (0..rows).map(|_| rng.random_range(0..classes as u8)).collect();
            // Ties for the top logit, labelled with the FIRST of the tied classes: first-index
            // tie-breaking counts them correct, any other rule does not.
            let ties: Vec<(usize, usize, usize)> = if classes == 2 {
                vec![(0, 0, 1), (rows - 1, 0, 1)]
            } else {
                vec![(0, 2, 7), (rows / 2, 0, 9), (rows - 1, 4, 5)]
            };
            for &(row, first, second) in &ties {
                let z = &mut logits[row * classes..(row + 1) * classes];
                let top = z.iter().cloned().fold(f32::MIN, f32::max) + 0.5;
                z[first] = top;
                z[second] = top;
                labels[row] = first as u8;
                assert_eq!(ops::argmax(z), first);
            }
            for &output in outputs() {
                for &loss in losses() {
                    let scale = 1.0 / rows as f32;
                    let mut grad = poisoned(rows * classes);
                    let (mut loss_sum, mut correct) = (0.0f32, 0u32);
                    for (r, (z, g)) in logits.chunks(classes).zip(grad.chunks_mut(classes)).enumerate() {
                        let label = labels[r] as usize;
                        let (value, predicted) = ops::output_loss(output, loss, z, label, scale, Some(g));
                        loss_sum += value;
                        correct += (predicted == label) as u32;
                    }
                    for with_grad in [true, false] {
                        let what =
                            format!("output_loss {output:?} {loss:?} rows {rows} classes {classes} grad {with_grad}");
                        let gpu = runner
                            .output_loss(output, loss, &logits, &labels, classes, with_grad)
                            .unwrap();
                        assert_eq!(gpu.correct, correct, "{what}: correct count");
                        // A sum of `rows` positive losses: reordering it costs ~rows·ε relative.
                        let loss_error = check(&format!("{what}: loss sum"), &[gpu.loss_sum], &[loss_sum], |_| {
                            default_tolerance(loss_sum)
                        });
                        if with_grad {
                            let max = check_default(&format!("{what}: dz"), &gpu.grad, &grad);
                            if rows == 300 {
                                println!("{what}: dz max error {max:e}, loss error {loss_error:e}");
                            }
                        } else {
                            let written = gpu.grad.iter().position(|g| !g.is_nan());
                            assert_eq!(written, None, "{what}: dz was written");
                        }
                    }
                }
            }
        }
    }
}

/// A batch of nothing but ties: every row must pick the first of its tied classes.
#[test]
fn output_loss_breaks_ties_towards_the_first_class() {
    let runner = runner();
    for classes in [10usize, 2] {
        let rows = 300;
        let mut logits = vec![0.25f32; rows * classes];
        let mut labels = vec![0u8; rows];
        for r in 0..rows {
            let first = r % (classes - 1);
            let second = first + 1 + (r / 3) % (classes - 1 - first);
            logits[r * classes + first] = 1.5;
            logits[r * classes + second] = 1.5;
            labels[r] = first as u8;
        }
        for &output in outputs() {
            let gpu = runner
                .output_loss(output, Loss::Ce, &logits, &labels, classes, false)
                .unwrap();
            assert_eq!(gpu.correct, rows as u32, "{output:?}, {classes} classes");
        }
    }
}

#[test]
fn sgd_update_matches_cpu() {
    let runner = runner();
    let mut rng = rng(7);
    // (length, weight_count): lengths that are not multiples of the 256-wide workgroup, with
    // the weights/biases boundary inside a workgroup, and at the ends.
    for (len, weight_count) in [(1000usize, 537usize), (257, 256), (1, 1), (3, 0), (100_001, 99_000)] {
        // l2 = 0.5 decays a weight by lr·l2·|θ| = 0.05·|θ|: far outside the tolerance, so decay
        // applied to the first bias (or missing on the last weight) fails the comparison.
        for l2 in [0.0f32, 0.5] {
            let params = signed_vec(&mut rng, len, MARGIN, 1.0);
            let grads = signed_vec(&mut rng, len, MARGIN, 1.0);
            let lr = 0.1;
            let mut cpu = params.clone();
            ops::sgd_update(&mut cpu, &grads, lr, l2, weight_count, 0);
            let gpu = runner.sgd_update(&params, &grads, lr, l2, weight_count).unwrap();
            let what = format!("sgd_update len {len} weights {weight_count} l2 {l2}");
            let max = check_default(&what, &gpu, &cpu);
            println!("{what}: max error {max:e}");
        }
    }
}

/// Outputs of more workgroups than a dimension takes are dispatched as a 2-D grid and the kernels
/// rebuild the linear index: the path a full-batch gather over all of MNIST takes. On a device
/// opened with 256 workgroups per dimension (so that the buffers stay small), one element past
/// the first row of workgroups and the very last must be right, for the update (4 parameters an
/// invocation) and for gather four features an invocation (784) and one (13).
#[test]
fn linear_kernels_cover_a_two_dimensional_grid() {
    const PER_DIMENSION: u32 = 256;
    let ctx = GpuContext::with_limits(|limits| limits.max_compute_workgroups_per_dimension = PER_DIMENSION)
        .expect("a GPU adapter (lavapipe will do)");
    let runner = KernelRunner::with_context(ctx, MatmulVariant::DEFAULT).expect("the kernels compile");
    // Invocations past PER_DIMENSION workgroups of the widest linear workgroup, at 4 per invocation.
    let len = (PER_DIMENSION * LINEAR_WORKGROUP) as usize * 4 + 300;
    let mut rng = rng(8);
    let params = signed_vec(&mut rng, len, MARGIN, 1.0);
    let grads = signed_vec(&mut rng, len, MARGIN, 1.0);
    let weight_count = len - 1001;
    let mut cpu = params.clone();
    ops::sgd_update(&mut cpu, &grads, 0.1, 0.5, weight_count, 0);
    let gpu = runner.sgd_update(&params, &grads, 0.1, 0.5, weight_count).unwrap();
    let max = check_default(&format!("sgd_update len {len}"), &gpu, &cpu);
    println!("sgd_update over {len} parameters (2-D grid): max error {max:e}");

    for features in [784, 13] {
        gather_every_example_reversed(&runner, &mut rng, len.div_ceil(features), features);
    }
}

// --- The optimisers' updates -------------------------------------------------------------------

/// `kind`'s CPU op on a chunk of the flat buffers starting at global index `first`.
fn cpu_update(
    kind: OptimizerKind,
    k: &UpdateConstants,
    p: &mut [f32],
    g: &[f32],
    state: &mut [Vec<f32>],
    first: usize,
) {
    let chunk = first..first + p.len();
    let p = &mut p[..];
    match (kind, state) {
        (OptimizerKind::Sgd, []) => ops::sgd_update(p, g, k.lr, k.l2, k.weight_count as usize, first),
        (OptimizerKind::Momentum, [v]) => ops::momentum_update(p, g, &mut v[chunk], k, first),
        (OptimizerKind::Rmsprop, [s]) => ops::rmsprop_update(p, g, &mut s[chunk], k, first),
        (OptimizerKind::Adam, [m, v]) => ops::adam_update(p, g, &mut m[chunk.clone()], &mut v[chunk], k, first),
        (OptimizerKind::Adamw, [m, v]) => ops::adamw_update(p, g, &mut m[chunk.clone()], &mut v[chunk], k, first),
        (kind, state) => panic!("{kind} with {} state buffers", state.len()),
    }
}

/// Each update kernel against its CPU op, one step from random state: on lengths that are not
/// multiples of the 256-wide workgroup, with the weights/biases boundary inside a workgroup and
/// at either end; the CPU op run in three chunks, the middle one starting mid-buffer and crossing
/// that boundary (as the CPU backend's parallel update cuts the buffers). The hyper-parameters
/// are not the defaults (the kernel must read them), the step is t = 3 (the bias corrections are
/// not 1), L2 is on for the weights. The updates work in place, so NaN poison cannot show an
/// unwritten element; instead the inputs are drawn so that every parameter and every state value
/// moves by more than its tolerance (|g| ≥ 0.1, state in [2, 3], so neither β·s + (1−β)·g nor the
/// step can vanish), which the test checks on the CPU first: an element the kernel skips keeps
/// its old value and fails. The runner's NaN guards after each buffer catch writes past its end.
#[test]
fn every_update_kernel_matches_its_cpu_op() {
    let runner = runner();
    let mut rng = rng(9);
    for &kind in OptimizerKind::value_variants() {
        let optimizer = Optimizer {
            momentum: 0.5,
            beta1: 0.5,
            beta2: 0.5,
            eps: 1e-3,
            weight_decay: 0.5,
            ..Optimizer::new(kind)
        };
        for (len, weight_count) in [(1000usize, 537usize), (257, 256), (1, 1), (3, 0), (100_001, 99_000)] {
            let k = optimizer.update_constants(&optimizer.step_constants(0.1, 3), 0.05, weight_count);
            let params = signed_vec(&mut rng, len, 0.5, 1.0);
            let grads = signed_vec(&mut rng, len, 0.1, 1.0);
            let state: Vec<Vec<f32>> = (0..optimizer.state_buffers())
                .map(|_| (0..len).map(|_| rng.random_range(2.0..3.0)).collect())
                .collect();
            // The CPU in three chunks: [0, a), [a, b), [b, len) with a < weight_count < b.
            let a = (weight_count / 3).min(len);
            let b = (weight_count + (len - weight_count) / 2 + 1).min(len);
            let (mut cpu, mut cpu_state) = (params.clone(), state.clone());
            for (start, end) in [(0, a), (a, b), (b, len)] {
                cpu_update(
                    kind,
                    &k,
                    &mut cpu[start..end],
                    &grads[start..end],
                    &mut cpu_state,
                    start,
                );
            }
            let views: Vec<&[f32]> = state.iter().map(|s| &s[..]).collect();
            let gpu: Updated = runner.update(kind, &params, &grads, &views, &k).unwrap();
            let what = format!("{kind}_update len {len} weights {weight_count}");
            let moved = |before: &[f32], after: &[f32]| {
                before
                    .iter()
                    .zip(after)
                    .all(|(&b, &a)| ((a - b).abs() as f64) > default_tolerance(a))
            };
            assert!(moved(&params, &cpu), "{what}: a parameter did not move");
            let mut max = check_default(&format!("{what}: parameters"), &gpu.params, &cpu);
            for (name, (got, (want, before))) in optimizer
                .state_names()
                .iter()
                .zip(gpu.state.iter().zip(cpu_state.iter().zip(&state)))
            {
                assert!(moved(before, want), "{what}: a value of {name} did not move");
                max = max.max(check_default(&format!("{what}: {name}"), got, want));
            }
            if len > 1000 {
                println!("{what}: max error {max:e}");
            }
        }
    }
}

/// The kernels read the step's lr and bias corrections from the step table, not from anything
/// fixed: two steps of Adam at other lrs and step counts give other parameters, each the CPU's.
#[test]
fn update_kernels_take_the_steps_lr_and_bias_corrections() {
    let runner = runner();
    let mut rng = rng(10);
    let adam = Optimizer::new(OptimizerKind::Adam);
    let params = signed_vec(&mut rng, 300, 0.5, 1.0);
    let grads = signed_vec(&mut rng, 300, 0.1, 1.0);
    let zeros = vec![0.0f32; 300];
    let mut results = Vec::new();
    for (lr, t) in [(0.01f32, 1u64), (0.01, 50), (0.2, 1)] {
        let k = adam.update_constants(&adam.step_constants(lr, t), 0.0, 200);
        let (mut cpu, mut m, mut v) = (params.clone(), zeros.clone(), zeros.clone());
        ops::adam_update(&mut cpu, &grads, &mut m, &mut v, &k, 0);
        let gpu = runner.adam_update(&params, &grads, &zeros, &zeros, &k).unwrap();
        check_default(&format!("adam_update lr {lr} t {t}"), &gpu.params, &cpu);
        results.push(bits(&gpu.params));
    }
    assert!(results[0] != results[1] && results[0] != results[2] && results[1] != results[2]);
}

// --- Dropout and standardised inputs -------------------------------------------------------------

/// The WGSL hash is the CPU's, bit for bit: every (row, unit) of 1000 × 1000 is kept or dropped
/// exactly as `Mask::keeps` says, for several seeds (with high bits set), steps (0 to u32::MAX),
/// layers and drop probabilities; and a kept unit's factor is the CPU's 1/(1−p) to the bit. Read
/// through the real kernels: the forward epilogue (hidden layers: a k = 1 product with zero
/// weights and bias 1, so the output is relu(1)·factor = the factor), and gather (the input
/// layer: pixels all 255, so a kept pixel is non-zero).
#[test]
fn the_gpus_dropout_masks_are_the_cpus_bit_for_bit() {
    let runner = runner();
    let (rows, units) = (1000usize, 1000usize);
    let ones = vec![1.0f32; rows];
    let (zero_weights, unit_bias) = (vec![0.0f32; units], vec![1.0f32; units]);
    let cases = [
        (0u64, 0u32, 1usize, 0.5f32),
        (1, 1, 2, 0.1),
        (u64::MAX, u32::MAX, 1, 0.9),
        (0x1234_5678_9abc_def0, 12_345, 7, 0.3),
        (7 << 40, 2_000_000_000, 3, 0.5),
    ];
    for (seed, step, layer, p) in cases {
        let dropout = Dropout {
            hidden: p,
            input: 0.0,
            seed,
        };
        let mask = dropout.mask(layer, step).unwrap();
        let mask_at = MaskAt { dropout, step, layer };
        let gpu = runner
            .matmul_forward_with(
                &ones,
                &zero_weights,
                &unit_bias,
                rows,
                Some(Activation::Relu),
                Some(mask_at),
            )
            .unwrap();
        let cpu: Vec<f32> = (0..rows * units)
            .map(|i| mask.factor(i / units, units, i % units))
            .collect();
        let differ = bits(&gpu).iter().zip(bits(&cpu)).filter(|(g, c)| **g != *c).count();
        assert_eq!(
            differ, 0,
            "seed {seed} step {step} layer {layer} p {p}: {differ} units differ"
        );
        let kept = cpu.iter().filter(|&&f| f != 0.0).count() as f64 / cpu.len() as f64;
        assert!((kept - (1.0 - p as f64)).abs() < 0.01, "p {p}: kept {kept}");
    }
    // The input layer (0), through gather_batch.
    let features = 784;
    let images = vec![255u8; 1000 * features];
    let index: Vec<u32> = (0..1000).collect();
    for (seed, step, p) in [(3u64, 0u32, 0.2f32), (u64::MAX - 1, u32::MAX, 0.7)] {
        let dropout = Dropout {
            hidden: 0.0,
            input: p,
            seed,
        };
        let mask = dropout.mask(0, step).unwrap();
        let gpu = runner
            .gather_batch_with(&images, features, &index, None, Some((dropout, step)))
            .unwrap();
        for (i, &x) in gpu.iter().enumerate() {
            let (r, f) = (i / features, i % features);
            assert_eq!(
                x != 0.0,
                mask.keeps(r, features, f),
                "seed {seed} step {step}: row {r} pixel {f}"
            );
        }
    }
}

/// `gather_batch` with standardised inputs and input dropout against `cpu::ops::gather_batch` with
/// the same statistics, then `cpu::ops::dropout_forward`: real statistics of a random set, one
/// pixel constant (its deviation floored: 1/σ = 10), dropout from none to heavy; 784 features
/// (gathered four to an invocation) and 13 (one).
#[test]
fn gather_batch_with_standardisation_and_input_dropout_matches_cpu() {
    let runner = runner();
    let mut rng = rng(11);
    for features in [784, 13] {
        let mut data = random_dataset(&mut rng, 40, features, 10);
        for image in data.images.chunks_exact_mut(features) {
            image[5] = 17;
        }
        let statistics = Standardization::of(&data);
        assert_eq!(statistics.inv_std[5], 10.0);
        let index: Vec<u32> = vec![39, 0, 7, 7, 12, 38, 1, 20, 3, 3, 30];
        for p in [0.0f32, 0.25, 0.8] {
            for standardize in [Some(&statistics), None] {
                let dropout = Dropout {
                    hidden: 0.0,
                    input: p,
                    seed: 21,
                };
                let step = 9;
                let gpu = runner
                    .gather_batch_with(&data.images, features, &index, standardize, Some((dropout, step)))
                    .unwrap();
                let mut cpu = poisoned(index.len() * features);
                let mut labels = vec![0u8; index.len()];
                ops::gather_batch(&mut cpu, &mut labels, &data.images, &data.labels, &index, standardize);
                if let Some(mask) = dropout.mask(0, step) {
                    ops::dropout_forward(&mut cpu, features, 0, &mask);
                }
                let what = format!(
                    "gather_batch {features} features, standardised {} input dropout {p}",
                    standardize.is_some()
                );
                let max = check_default(&what, &gpu, &cpu);
                println!("{what}: max error {max:e}");
            }
        }
    }
}

/// `matmul_forward` of a hidden layer with its output dropped (a training step's epilogue) against
/// `cpu::ops::matmul_forward`, `activation_forward` then `dropout_forward`; and
/// `matmul_backward_input` through that dropped activation against `matmul_backward_input` then
/// `dropout_activation_backward`. Every activation, shapes with partial tiles, the mask of a
/// layer other than 1 at a large step. Dropped elements are exactly 0 on both.
#[test]
fn matmul_epilogues_with_dropout_match_cpu() {
    matmul_epilogues_with_dropout_parity(&runner(), &DROPOUT_SHAPES);
}

/// Partial tiles at either size; the last three for variants that need widths in fours.
const DROPOUT_SHAPES: [(usize, usize, usize); 6] = [
    (7, 784, 7),
    (101, 7, 100),
    (100, 101, 130),
    (7, 784, 8),
    (101, 8, 100),
    (100, 100, 132),
];

fn matmul_epilogues_with_dropout_parity(runner: &KernelRunner, shapes: &[(usize, usize, usize)]) {
    let mut rng = rng(12);
    let dropout = Dropout {
        hidden: 0.4,
        input: 0.0,
        seed: 99,
    };
    let (step, layer) = (70_001u32, 2usize);
    let mask = dropout.mask(layer, step).unwrap();
    let mask_at = Some(MaskAt { dropout, step, layer });
    for &(rows, k, n) in shapes {
        // Forward: out (rows × n) = dropout(f(inp · W + b)).
        let inp = signed_vec(&mut rng, rows * k, MARGIN, 1.0);
        let weight = signed_vec(&mut rng, k * n, MARGIN, 1.0);
        let bias = signed_vec(&mut rng, n, MARGIN, 1.0);
        let mut z = poisoned(rows * n);
        ops::matmul_forward(&mut z, &inp, &weight, &bias, rows);
        let mut sums = abs_product_sums((rows, n, k), |i, t| inp[i * k + t], |t, j| weight[t * n + j]);
        sums.iter_mut().enumerate().for_each(|(i, s)| *s += bias[i % n].abs());
        for &activation in activations() {
            let mut cpu = z.clone();
            ops::activation_forward(activation, &mut cpu);
            ops::dropout_forward(&mut cpu, n, 0, &mask);
            let gpu = runner
                .matmul_forward_with(&inp, &weight, &bias, rows, Some(activation), mask_at)
                .unwrap();
            let what = format!("matmul_forward + dropout {rows}×{k}×{n} {activation:?}");
            let max = check(&what, &gpu, &cpu, |i| {
                sum_tolerance(cpu[i], sums[i] * mask.factor(i / n, n, i % n))
            });
            for (i, g) in gpu.iter().enumerate() {
                if !mask.keeps(i / n, n, i % n) {
                    assert_eq!(*g, 0.0, "{what}: dropped element {i} is {g}");
                }
            }
            println!("{what}: max error {max:e}");
        }
        // Backward through layer `layer` + 1: dinp (rows × k) = (dout · Wᵀ) ⊙ f'(ã) · mask, where
        // A_layer (rows × k) = ã was dropped by the same mask.
        let dout = signed_vec(&mut rng, rows * n, MARGIN, 1.0);
        let mut product = poisoned(rows * k);
        ops::matmul_backward_input(&mut product, &dout, &weight, rows, n);
        let sums = abs_product_sums((rows, k, n), |i, t| dout[i * n + t], |t, j| weight[j * n + t]);
        for &activation in activations() {
            let mut dropped = activation_output(&mut rng, activation, rows * k);
            ops::dropout_forward(&mut dropped, k, 0, &mask);
            let mut cpu = product.clone();
            ops::dropout_activation_backward(activation, &mut cpu, &dropped, k, 0, &mask);
            let gpu = runner
                .matmul_backward_input_with(&dout, &weight, &dropped, rows, n, activation, mask_at)
                .unwrap();
            let what = format!("matmul_backward_input + dropout {rows}×{k}×{n} {activation:?}");
            // The product's error bound, times what it is multiplied by.
            let mut factor = vec![1.0; rows * k];
            ops::dropout_activation_backward(activation, &mut factor, &dropped, k, 0, &mask);
            let max = check(&what, &gpu, &cpu, |i| sum_tolerance(cpu[i], sums[i] * factor[i].abs()));
            for (i, g) in gpu.iter().enumerate() {
                if !mask.keeps(i / k, k, i % k) {
                    assert_eq!(g.to_bits(), 0, "{what}: dropped element {i} passed a gradient");
                }
            }
            println!("{what}: max error {max:e}");
        }
    }
}
