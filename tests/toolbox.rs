//! The classic toolbox on the CPU reference: the optimisers against steps worked out by hand,
//! momentum's two conventions, dropout (its gradient with the mask fixed, its masks, evaluation
//! without it), standardised inputs, and the flags' errors.

mod common;

use common::{random_dataset, rng};
use gpu_mlp::backend::{Backend, Split, Workload};
use gpu_mlp::cpu::ops;
use gpu_mlp::cpu::{loss_and_gradient, loss_and_gradient_with, CpuBackend};
use gpu_mlp::data::Standardization;
use gpu_mlp::dropout::Dropout;
use gpu_mlp::network::{Activation, Loss, NetworkSpec, Output};
use gpu_mlp::optim::{Optimizer, OptimizerKind, StepConstants};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

// --- Optimisers, step by step ----------------------------------------------------------------

/// Two parameters, a weight w (global index 0) and a bias b, from θ₀ = (1, 0), with the
/// gradients g₁ = (0.5, −1) then g₂ = (0.25, 2), at lr 0.1. Returns θ after each step.
fn two_steps(optimizer: Optimizer, l2: f32) -> [[f32; 2]; 2] {
    let grads = [[0.5f32, -1.0], [0.25, 2.0]];
    let mut params = [1.0f32, 0.0];
    let (mut s0, mut s1) = ([0.0f32; 2], [0.0f32; 2]);
    let mut after = [[0.0; 2]; 2];
    for (t, g) in grads.iter().enumerate() {
        let step = optimizer.step_constants(0.1, t as u64 + 1);
        let k = optimizer.update_constants(&step, l2, 1);
        match optimizer.kind {
            OptimizerKind::Sgd => ops::sgd_update(&mut params, g, k.lr, k.l2, 1, 0),
            OptimizerKind::Momentum => ops::momentum_update(&mut params, g, &mut s0, &k, 0),
            OptimizerKind::Rmsprop => ops::rmsprop_update(&mut params, g, &mut s0, &k, 0),
            OptimizerKind::Adam => ops::adam_update(&mut params, g, &mut s0, &mut s1, &k, 0),
            OptimizerKind::Adamw => ops::adamw_update(&mut params, g, &mut s0, &mut s1, &k, 0),
        }
        after[t] = params;
    }
    after
}

fn assert_steps(name: &str, got: [[f32; 2]; 2], want: [[f64; 2]; 2]) {
    for t in 0..2 {
        for i in 0..2 {
            let (g, w) = (got[t][i] as f64, want[t][i]);
            assert!(
                (g - w).abs() <= 2e-7 + 1e-6 * w.abs(),
                "{name} step {} θ{i}: {g} ≠ {w}",
                t + 1
            );
        }
    }
}

#[test]
fn sgd_with_l2_decays_the_weight_only() {
    // w₁ = 1 − 0.1·(0.5 + 0.1·1) = 0.94          b₁ = 0 − 0.1·(−1) = 0.1
    // w₂ = 0.94 − 0.1·(0.25 + 0.1·0.94) = 0.9056  b₂ = 0.1 − 0.1·2 = −0.1
    assert_steps("sgd", two_steps(Optimizer::SGD, 0.1), [[0.94, 0.1], [0.9056, -0.1]]);
}

#[test]
fn momentum_is_the_average_of_the_gradients() {
    // v₁ = 0.1·g₁ = (0.05, −0.1)                     θ₁ = (1 − 0.005, 0 + 0.01)
    // v₂ = 0.9·v₁ + 0.1·g₂ = (0.045 + 0.025, −0.09 + 0.2) = (0.07, 0.11)
    // θ₂ = (0.995 − 0.007, 0.01 − 0.011)
    let momentum = Optimizer::new(OptimizerKind::Momentum);
    assert_steps("momentum", two_steps(momentum, 0.0), [[0.995, 0.01], [0.988, -0.001]]);
}

#[test]
fn rmsprop_divides_by_the_root_mean_square() {
    // β₂ = 0.9. s₁ = 0.1·g₁² = (0.025, 0.1): θ₁ = θ₀ − 0.1·g₁/√s₁ = (1 − 0.1·√10, 0.1·√10)
    // s₂ = 0.9·s₁ + 0.1·g₂² = (0.02875, 0.49): θ₂ = θ₁ − 0.1·(0.25/√0.02875, 2/0.7)
    let rmsprop = Optimizer {
        beta2: 0.9,
        ..Optimizer::new(OptimizerKind::Rmsprop)
    };
    let root10 = 10f64.sqrt();
    let w1 = 1.0 - 0.1 * root10;
    let b1 = 0.1 * root10;
    let want = [[w1, b1], [w1 - 0.1 * 0.25 / 0.02875f64.sqrt(), b1 - 0.1 * 2.0 / 0.7]];
    assert_steps("rmsprop", two_steps(rmsprop, 0.0), want);
}

/// Adam's two steps, written out (β₁ 0.9, β₂ 0.999, ε 1e-8): step 1's bias correction makes
/// m̂ = g and v̂ = g², so each parameter moves by lr·g/(|g| + ε) ≈ lr against the gradient's
/// sign. Step 2: m = (0.07, 0.11), v = (0.00031225, 0.004999), c₁ = 0.19, c₂ = 0.001999.
fn adam_want(decay: f64) -> [[f64; 2]; 2] {
    let eps = 1e-8;
    let first = |g: f64, p: f64, decayed: bool| p - 0.1 * (g / (g.abs() + eps) + if decayed { decay * p } else { 0.0 });
    let w1 = first(0.5, 1.0, true);
    let b1 = first(-1.0, 0.0, false);
    let second = |m: f64, v: f64, p: f64, decayed: bool| {
        p - 0.1 * ((m / 0.19) / ((v / 0.001999).sqrt() + eps) + if decayed { decay * p } else { 0.0 })
    };
    [
        [w1, b1],
        [second(0.07, 0.00031225, w1, true), second(0.11, 0.004999, b1, false)],
    ]
}

#[test]
fn adam_corrects_the_bias_of_its_averages() {
    assert_steps(
        "adam",
        two_steps(Optimizer::new(OptimizerKind::Adam), 0.0),
        adam_want(0.0),
    );
}

#[test]
fn adamw_decays_weights_apart_from_the_gradient() {
    let adamw = Optimizer {
        weight_decay: 0.5,
        ..Optimizer::new(OptimizerKind::Adamw)
    };
    // w₁ = 1 − 0.1·(1 + 0.5·1) = 0.85; the bias is never decayed.
    assert_steps("adamw", two_steps(adamw, 0.0), adam_want(0.5));
    // --l2 does not reach AdamW's gradient: its decay is the decoupled one alone.
    assert_eq!(two_steps(adamw, 0.3), two_steps(adamw, 0.0));
}

// --- Momentum's two conventions ----------------------------------------------------------------

/// A softmax, cross-entropy network.
fn spec(widths: &[usize], activation: Activation) -> NetworkSpec {
    common::spec(widths, activation, Output::Softmax, Loss::Ce)
}

fn random_params(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-0.5..0.5)).collect()
}

/// PyTorch keeps v ← βv + g and steps θ ← θ − lr·v. Ours, the average v ← βv + (1−β)g, is that
/// v times (1−β): so our lr L takes PyTorch's steps at lr L·(1−β). Thirty steps of a real
/// network's gradients (which depend on θ, so any difference would compound) agree.
#[test]
fn momentum_lr_maps_to_pytorchs_convention() {
    let mut r = rng(3);
    let data = random_dataset(&mut r, 40, 6, 3);
    let spec = spec(&[6, 8, 3], Activation::Tanh);
    let initial = random_params(&mut r, spec.layout().total);
    let (beta, lr) = (0.9f32, 0.5f32);
    let momentum = Optimizer {
        momentum: beta,
        ..Optimizer::new(OptimizerKind::Momentum)
    };
    let index: Vec<u32> = (0..40).collect();

    let mut ours = initial.clone();
    let mut velocity = vec![0.0f32; ours.len()];
    // PyTorch's convention, in f64 from the same gradients of its own θ.
    let mut theirs: Vec<f64> = initial.iter().map(|&p| p as f64).collect();
    let mut their_velocity = vec![0.0f64; theirs.len()];
    let their_lr = lr as f64 * (1.0 - beta as f64);
    for t in 1..=30 {
        let batch = &index[(t % 4) * 10..(t % 4) * 10 + 10];
        let (_, g) = loss_and_gradient(&spec, &ours, &data, batch);
        let k = momentum.update_constants(&momentum.step_constants(lr, t as u64), 0.0, spec.layout().weight_count);
        ops::momentum_update(&mut ours, &g, &mut velocity, &k, 0);

        let theirs_f32: Vec<f32> = theirs.iter().map(|&p| p as f32).collect();
        let (_, g) = loss_and_gradient(&spec, &theirs_f32, &data, batch);
        for ((p, v), &g) in theirs.iter_mut().zip(their_velocity.iter_mut()).zip(&g) {
            *v = beta as f64 * *v + g as f64;
            *p -= their_lr * *v;
        }
    }
    let moved: f64 = initial
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    let diff: f64 = ours
        .iter()
        .zip(&theirs)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 0.05,
        "the parameters hardly moved ({moved}): the test would prove nothing"
    );
    assert!(
        diff < 1e-4,
        "our momentum at lr {lr} and PyTorch's at {their_lr} differ by {diff}"
    );
}

// --- Dropout -----------------------------------------------------------------------------------

/// Backprop through dropout, against central differences, with the masks of one step fixed
/// (which makes the loss a smooth function of θ). Smooth activations only, so no ReLU kink can
/// spoil the difference quotient; the tolerance is gradient_check.rs's (2 %, floor 1e-2).
#[test]
fn dropout_gradient_matches_central_differences() {
    let dropout = Dropout {
        hidden: 0.4,
        input: 0.25,
        seed: 11,
    };
    for activation in [Activation::Sigmoid, Activation::Tanh] {
        let mut r = rng(5);
        let data = random_dataset(&mut r, 8, 5, 3);
        let spec = spec(&[5, 6, 4, 3], activation);
        let params: Vec<f32> = (0..spec.layout().total).map(|_| r.random_range(-1.0..1.0)).collect();
        let index: Vec<u32> = (0..8).collect();
        let fixed = Some((dropout, 7));
        let (_, analytic) = loss_and_gradient_with(&spec, &params, &data, &index, fixed);
        let (_, undropped) = loss_and_gradient(&spec, &params, &data, &index);
        let mut worst = 0.0f64;
        for i in 0..params.len() {
            let eps = 1e-2f32;
            let mut plus = params.clone();
            plus[i] += eps;
            let mut minus = params.clone();
            minus[i] -= eps;
            let (lp, _) = loss_and_gradient_with(&spec, &plus, &data, &index, fixed);
            let (lm, _) = loss_and_gradient_with(&spec, &minus, &data, &index, fixed);
            let numeric = (lp as f64 - lm as f64) / (plus[i] as f64 - minus[i] as f64);
            let a = analytic[i] as f64;
            let scale = numeric.abs().max(a.abs()).max(1e-2);
            let error = (numeric - a).abs() / scale;
            worst = worst.max(error);
            assert!(
                error <= 2e-2,
                "{activation} parameter {i}: numeric {numeric} vs analytic {a}"
            );
        }
        // The masks matter: the gradient with dropout is not the one without it.
        let differs = analytic
            .iter()
            .zip(&undropped)
            .filter(|(a, b)| (*a - *b).abs() > 1e-3)
            .count();
        assert!(
            differs > params.len() / 2,
            "{activation}: dropout changed only {differs} gradients"
        );
        println!("{activation}: worst relative error {worst:.2e}");

        // On a batch of one row, the hidden units the mask drops, and only they, get no bias
        // gradient at all.
        let (_, one_row) = loss_and_gradient_with(&spec, &params, &data, &index[..1], fixed);
        let first = spec.layout().layers[0];
        let mask = dropout.mask(1, 7).expect("hidden dropout");
        let dropped: Vec<bool> = (0..first.outputs).map(|j| !mask.keeps(0, first.outputs, j)).collect();
        let no_gradient: Vec<bool> = (0..first.outputs)
            .map(|j| one_row[first.bias_offset + j] == 0.0)
            .collect();
        assert!(dropped.iter().any(|&d| d) && dropped.iter().any(|&d| !d), "{dropped:?}");
        assert_eq!(
            no_gradient, dropped,
            "{activation}: zero bias gradients vs dropped units"
        );
    }
}

/// The same (seed, step, layer, row, unit) always gives the same mask; the run's seed changes it.
#[test]
fn dropout_is_a_function_of_the_seed_and_step() {
    let mut r = rng(9);
    let data = random_dataset(&mut r, 16, 10, 4);
    let spec = spec(&[10, 32, 4], Activation::Relu);
    let params = random_params(&mut r, spec.layout().total);
    let index: Vec<u32> = (0..16).collect();
    let with = |seed, step| {
        let dropout = Dropout {
            hidden: 0.5,
            input: 0.0,
            seed,
        };
        loss_and_gradient_with(&spec, &params, &data, &index, Some((dropout, step))).1
    };
    assert_eq!(with(1, 0), with(1, 0));
    assert_ne!(with(1, 0), with(2, 0));
    assert_ne!(with(1, 0), with(1, 1));
}

/// Evaluation uses the whole network: a backend trained with dropout evaluates exactly as one
/// without it, from the same parameters.
#[test]
fn evaluation_keeps_every_unit() {
    let mut r = rng(4);
    let train = random_dataset(&mut r, 50, 12, 5);
    let test = random_dataset(&mut r, 30, 12, 5);
    let spec = spec(&[12, 20, 5], Activation::Relu);
    let params = random_params(&mut r, spec.layout().total);
    let evaluate = |dropout: Dropout| {
        let work = Workload {
            test: Some(&test),
            dropout,
            ..Workload::training(&spec, &train, 10)
        };
        let mut backend = CpuBackend::new(work, params.clone(), 2).unwrap();
        backend
            .begin_epoch(&(0..50).collect::<Vec<u32>>(), &[StepConstants::default(); 5])
            .unwrap();
        backend.evaluate(Split::Test).unwrap();
        backend.end_epoch().unwrap().test.unwrap()
    };
    let heavy = Dropout {
        hidden: 0.9,
        input: 0.5,
        seed: 1,
    };
    assert_eq!(evaluate(heavy), evaluate(Dropout::NONE));
}

/// The masks are per row of the whole batch, whichever thread computes that row: one thread and
/// two threads drop the same units (their sums differ only in rounding).
#[test]
fn threads_drop_the_same_units() {
    let mut r = rng(8);
    let train = random_dataset(&mut r, 128, 16, 4);
    let spec = spec(&[16, 24, 24, 4], Activation::Relu);
    let params = random_params(&mut r, spec.layout().total);
    let work = Workload {
        dropout: Dropout {
            hidden: 0.5,
            input: 0.2,
            seed: 3,
        },
        ..Workload::training(&spec, &train, 64)
    };
    let trained = |threads| {
        let mut backend = CpuBackend::new(work, params.clone(), threads).unwrap();
        let steps: Vec<StepConstants> = (1..=2).map(|t| Optimizer::SGD.step_constants(0.5, t)).collect();
        backend.begin_epoch(&(0..128).collect::<Vec<u32>>(), &steps).unwrap();
        backend.train_batch(0).unwrap();
        backend.train_batch(1).unwrap();
        backend.parameters().unwrap()
    };
    let (one, two) = (trained(1), trained(2));
    let moved = params.iter().zip(&one).filter(|(a, b)| a != b).count();
    assert!(moved > params.len() / 2, "training moved only {moved} parameters");
    let diff = one.iter().zip(&two).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(
        diff < 1e-5,
        "1 and 2 threads differ by {diff}: different units were dropped"
    );
}

// --- Standardised inputs -----------------------------------------------------------------------

#[test]
fn standardization_uses_each_pixels_mean_and_deviation_with_a_floor() {
    let mut r = rng(2);
    let mut data = random_dataset(&mut r, 200, 6, 2);
    // Pixel 5 constant: its deviation is 0, floored.
    for image in data.images.chunks_exact_mut(6) {
        image[5] = 40;
    }
    let s = Standardization::of(&data);
    for f in 0..6 {
        let xs: Vec<f64> = data.images.chunks_exact(6).map(|im| im[f] as f64 / 255.0).collect();
        let mean = xs.iter().sum::<f64>() / 200.0;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 200.0).sqrt();
        assert!((s.mean[f] as f64 - mean).abs() < 1e-6, "pixel {f} mean");
        let want = 1.0 / sd.max(Standardization::STD_FLOOR);
        assert!(
            (s.inv_std[f] as f64 - want).abs() < 1e-4 * want,
            "pixel {f}: {} vs {want}",
            s.inv_std[f]
        );
    }
    assert_eq!(s.inv_std[5], 10.0);

    // gather_batch applies them: x = (p/255 − μ)·(1/σ).
    let index = [3u32, 0, 7];
    let mut x = vec![f32::NAN; 18];
    let mut labels = [0u8; 3];
    ops::gather_batch(&mut x, &mut labels, &data.images, &data.labels, &index, Some(&s));
    for (r, &e) in index.iter().enumerate() {
        for f in 0..6 {
            let p = data.images[e as usize * 6 + f] as f64 / 255.0;
            let want = (p - s.mean[f] as f64) * s.inv_std[f] as f64;
            assert!((x[r * 6 + f] as f64 - want).abs() < 1e-5, "row {r} pixel {f}");
        }
    }
}

// --- Flags -------------------------------------------------------------------------------------

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = common::gpu_mlp()
        .args(["--device", "cpu", "--train-examples", "200", "--test-examples", "50"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{args:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{args:?}: no '{needle}' in {stderr}");
    }
}

#[test]
fn impossible_toolbox_settings_are_one_sentence_errors() {
    fails_with(&["--dropout", "1"], &["--dropout must be in [0, 1)", "got 1"]);
    fails_with(&["--dropout", "-0.1"], &["--dropout must be in [0, 1)"]);
    fails_with(&["--input-dropout", "NaN"], &["--input-dropout must be in [0, 1)"]);
    fails_with(
        &["--optimizer", "momentum", "--momentum", "1"],
        &["--momentum must be in [0, 1)"],
    );
    fails_with(
        &["--optimizer", "adam", "--beta1", "-0.5"],
        &["--beta1 must be in [0, 1)"],
    );
    fails_with(
        &["--optimizer", "adam", "--beta2", "1.5"],
        &["--beta2 must be in [0, 1)"],
    );
    fails_with(
        &["--optimizer", "rmsprop", "--eps", "0"],
        &["--eps must be a positive number"],
    );
    fails_with(
        &["--optimizer", "adamw", "--weight-decay", "-1"],
        &["--weight-decay must be zero or positive"],
    );
    fails_with(
        &["--momentum", "0.9"],
        &["--momentum applies to --optimizer momentum, not to --optimizer sgd"],
    );
    fails_with(
        &["--optimizer", "momentum", "--beta1", "0.9"],
        &["--beta1 applies to --optimizer adam or adamw"],
    );
    fails_with(
        &["--optimizer", "adam", "--weight-decay", "0.1"],
        &["--weight-decay applies to --optimizer adamw"],
    );
    fails_with(
        &["--epochs", "3", "--warmup-epochs", "3"],
        &["--warmup-epochs 3 is not shorter than the run"],
    );
    fails_with(
        &["--lr-schedule", "cosine", "--lr-decay", "0.5"],
        &["--lr-schedule cosine"],
    );
}

/// The schedule reaches the report: a warm-up then a cosine, per epoch's first step.
#[test]
fn schedules_show_in_the_reported_lr() {
    let out = common::gpu_mlp()
        .args([
            "--device",
            "cpu",
            "--train-examples",
            "400",
            "--test-examples",
            "0",
            "--json",
        ])
        .args([
            "--batch-size",
            "100",
            "--epochs",
            "5",
            "--lr",
            "0.2",
            "--lr-schedule",
            "cosine",
            "--warmup-epochs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lrs: Vec<f64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"]
                .as_f64()
                .unwrap()
        })
        .collect();
    // Epoch 1 starts the warm-up at lr/4; epoch 2 the cosine at lr; then it falls over 16 steps.
    let cosine = |k: f64| 0.2 * 0.5 * (1.0 + (std::f64::consts::PI * k / 16.0).cos());
    let want = [0.05, cosine(0.0), cosine(4.0), cosine(8.0), cosine(12.0)];
    for (epoch, (got, want)) in lrs.iter().zip(want).enumerate() {
        assert!((got - want).abs() < 1e-6, "epoch {}: lr {got}, want {want}", epoch + 1);
    }
}
