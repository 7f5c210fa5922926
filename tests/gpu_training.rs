//! Whole training runs on the GPU against the CPU reference: the same workload, the same initial
//! parameters and the same example order on both devices, then the parameters (step parity for
//! every activation × output × loss, and for every optimiser with dropout, standardised inputs
//! and a per-step schedule), the test accuracy, the GPU's determinism, its syncs (one submit,
//! one readback per epoch, counted where the host meets wgpu), the short last batch's scaling,
//! evaluation over several chunks against an independent computation, batch sizes from 1 to the
//! whole set, a validation split, and the binary's `--device gpu` output.

mod common;

use clap::ValueEnum;
use common::{activations, assert_close, bits, inits, losses, mnist, outputs, spec};
use gpu_mlp::backend::{Backend, EpochMetrics, GpuCounters, Split, Workload};
use gpu_mlp::cpu::{loss_and_gradient, CpuBackend};
use gpu_mlp::data::{Dataset, Standardization};
use gpu_mlp::dropout::Dropout;
use gpu_mlp::gpu::context::{list_adapters, AdapterKind, GpuContext, SyncCounts};
use gpu_mlp::gpu::kernels::matmul::{MatmulPlan, MatmulVariant};
use gpu_mlp::gpu::tune::{self, TuneCache, TuneMode};
use gpu_mlp::gpu::GpuBackend;
use gpu_mlp::init;
use gpu_mlp::network::{Activation, Init, Loss, NetworkSpec, Output};
use gpu_mlp::optim::{Optimizer, OptimizerKind};
use gpu_mlp::train::{self, EpochReport, LrSchedule, Schedule};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::time::Instant;

/// The first `n` MNIST training examples.
fn train_set(n: usize) -> Dataset {
    mnist().train.truncated(n)
}

/// The first `n` MNIST test examples.
fn test_set(n: usize) -> Dataset {
    mnist().test.truncated(n)
}

fn gpu_backend(work: Workload, params: &[f32]) -> GpuBackend {
    GpuBackend::new(work, params).expect("a GPU adapter (lavapipe will do)")
}

fn workload<'a>(spec: &'a NetworkSpec, train: &'a Dataset, batch_size: usize, l2: f32) -> Workload<'a> {
    Workload {
        l2,
        ..Workload::training(spec, train, batch_size)
    }
}

/// Every training batch of one epoch in `permutation`'s order, then the held-out splits the
/// workload has, as `train::train` drives a backend.
fn epoch(backend: &mut dyn Backend, work: &Workload, permutation: &[u32], lr: f32) -> EpochMetrics {
    let steps = vec![Optimizer::SGD.step_constants(lr, 1); work.batches()];
    backend.begin_epoch(permutation, &steps).unwrap();
    for batch in 0..work.batches() {
        backend.train_batch(batch).unwrap();
    }
    if work.validation.is_some() {
        backend.evaluate(Split::Validation).unwrap();
    }
    if work.test.is_some() {
        backend.evaluate(Split::Test).unwrap();
    }
    backend.end_epoch().unwrap()
}

/// One step-parity configuration.
struct Config {
    widths: &'static [usize],
    activation: Activation,
    output: Output,
    loss: Loss,
    init: Init,
    lr: f32,
    l2: f32,
    batch_size: usize,
    /// Training examples: steps = examples / batch_size.
    examples: usize,
}

/// Trains `config` for one epoch (examples / batch_size steps) on both devices from the same
/// weights in the same order; the parameters must agree within 1e-4 + 1e-3·|cpu|, the
/// per-batch losses within 1e-3 relative.
fn step_parity(config: &Config, seed: u64) {
    step_parity_on(config, seed, "", &|work, initial| gpu_backend(work, initial));
}

/// [`step_parity`] with the GPU backend `make` builds (`what` names it).
fn step_parity_on(config: &Config, seed: u64, what: &str, make: &dyn Fn(Workload, &[f32]) -> GpuBackend) {
    let spec = spec(config.widths, config.activation, config.output, config.loss);
    let train = train_set(config.examples);
    let work = workload(&spec, &train, config.batch_size, config.l2);
    let mut rng = init::rng(seed);
    let initial = init::init_params(&spec.layout(), config.init, &mut rng);
    let mut permutation: Vec<u32> = (0..train.len() as u32).collect();
    permutation.shuffle(&mut rng);
    let name = format!(
        "{what}{} {} {} {} {} lr {} l2 {} batch {} × {} steps",
        spec.name(),
        config.activation,
        config.output,
        config.loss,
        config.init,
        config.lr,
        config.l2,
        config.batch_size,
        work.batches()
    );

    let mut cpu = CpuBackend::new(work, initial.clone(), 1).unwrap();
    let cpu_metrics = epoch(&mut cpu, &work, &permutation, config.lr);
    let started = Instant::now();
    let mut gpu = make(work, &initial);
    let gpu_metrics = epoch(&mut gpu, &work, &permutation, config.lr);
    let gpu_params = gpu.parameters().unwrap();
    let gpu_seconds = started.elapsed().as_secs_f64();
    let cpu_params = cpu.parameters().unwrap();

    // Training moved the weights, by far more than the tolerance: the comparison means something.
    let moved = cpu_params
        .iter()
        .zip(&initial)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(moved > 1e-2, "{name}: the CPU weights moved by {moved} only");
    let max_error = assert_close(&name, &gpu_params, &cpu_params, 1e-4, 1e-3);
    let (cpu_loss, gpu_loss) = (&cpu_metrics.batch_loss, &gpu_metrics.batch_loss);
    assert_eq!(gpu_loss.len(), work.batches());
    let loss_error = assert_close(&format!("{name}: batch losses"), gpu_loss, cpu_loss, 1e-5, 1e-3);
    let first: f32 = cpu_loss[..10.min(cpu_loss.len())].iter().sum();
    let last: f32 = cpu_loss[cpu_loss.len().saturating_sub(10)..].iter().sum();
    assert!(last < first, "{name}: the loss did not fall: {first} → {last}");
    println!(
        "{name}: max parameter error {max_error:.2e} (weights moved up to {moved:.2}), max batch-loss error \
         {loss_error:.2e}, GPU {gpu_seconds:.1} s"
    );
}

/// 100 steps of batch 100 on 10,000 examples for every one of the 12 activation × output × loss
/// combinations, each initialisation in turn; half have two hidden layers (so
/// dense_backward_input runs), a third decay the weights (l2).
#[test]
fn hundred_steps_of_batch_100_match_the_cpu_for_every_activation_output_and_loss() {
    let mut seed = 0;
    for &activation in activations() {
        for &output in outputs() {
            for &loss in losses() {
                seed += 1;
                let config = Config {
                    widths: if seed % 2 == 0 {
                        &[784, 16, 16, 10]
                    } else {
                        &[784, 32, 10]
                    },
                    activation,
                    output,
                    loss,
                    init: inits()[seed as usize % inits().len()],
                    lr: 0.1,
                    l2: if seed % 3 == 0 { 1e-3 } else { 0.0 },
                    batch_size: 100,
                    examples: 10_000,
                };
                step_parity(&config, seed);
            }
        }
    }
}

/// Step parity with every matmul variant forced for every layer, and with the plan tuning
/// chooses (timed afresh, into a temporary cache): 784-32-16-10 (every matmul of every layer
/// runs: two hidden layers, so backward_input too), 21 steps of batch 100 ending in a partial
/// batch of 50, and 784-32-10 at batch 37 (no block divides it).
#[test]
fn every_matmul_variant_and_the_tuned_plan_train_like_the_cpu() {
    let configs = [
        Config {
            widths: &[784, 32, 16, 10],
            activation: Activation::Tanh,
            output: Output::Softmax,
            loss: Loss::Ce,
            init: Init::He,
            lr: 0.1,
            l2: 1e-3,
            batch_size: 100,
            examples: 2_050,
        },
        Config {
            widths: &[784, 32, 10],
            activation: Activation::Relu,
            output: Output::Sigmoid,
            loss: Loss::Mse,
            init: Init::Uniform,
            lr: 0.5,
            l2: 0.0,
            batch_size: 37,
            examples: 3_700,
        },
    ];
    let variants = MatmulVariant::available(&GpuContext::new().expect("a GPU adapter (lavapipe will do)"));
    for (seed, config) in configs.iter().enumerate() {
        for &variant in &variants {
            let make = |work: Workload, initial: &[f32]| {
                let ctx = GpuContext::new().unwrap();
                let plan = MatmulPlan::uniform(variant, work.spec.layers());
                GpuBackend::with_plan(ctx, work, initial, plan).unwrap()
            };
            step_parity_on(config, seed as u64, &format!("{}: ", variant.name), &make);
        }
        let cache = tempfile::tempdir().unwrap();
        let make = |work: Workload, initial: &[f32]| {
            let ctx = GpuContext::new().unwrap();
            let tuned = tune::tune(&ctx, &work, TuneMode::Fresh, &TuneCache::at(cache.path())).unwrap();
            println!("tuned: {}", tuned.plan.describe());
            GpuBackend::tuned(ctx, tuned, work, initial).unwrap()
        };
        step_parity_on(config, seed as u64, "tuned: ", &make);
    }
}

/// Per-example SGD: 100 steps of batch 1 (the batch table's offset moves every step), with the
/// sigmoid output under cross-entropy and the uniform initialisation.
#[test]
fn hundred_steps_of_batch_1_match_the_cpu() {
    let config = Config {
        widths: &[784, 32, 10],
        activation: Activation::Relu,
        output: Output::Sigmoid,
        loss: Loss::Ce,
        init: Init::Uniform,
        lr: 0.05,
        l2: 0.0,
        batch_size: 1,
        examples: 100,
    };
    step_parity(&config, 11);
}

/// The toolbox on the GPU, against the CPU: for every optimiser, 100 steps (two epochs of 50 on
/// 5,000 examples, batch 100) of 784-32-16-10 with dropout on the input (0.1) and on both hidden
/// layers (0.3), standardised inputs, L2 (AdamW: its decoupled decay instead), and a warm-up
/// epoch then a cosine, so that the lr changes at every step and the step table is rewritten for
/// the second epoch. The CPU runs on 2 threads (its masks are per row of the whole batch, as
/// the GPU's). The parameters agree within the step-parity tolerance; so do the optimiser's
/// state buffers, within the same tolerance scaled to each buffer's magnitude (Adam's second
/// moments are ~1e-6); the steps taken and each epoch's training loss agree.
#[test]
fn hundred_steps_of_every_optimiser_with_dropout_standardisation_and_a_schedule_match_the_cpu() {
    let spec = spec(&[784, 32, 16, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let train = train_set(5000);
    let statistics = Standardization::of(&train);
    for (seed, &kind) in OptimizerKind::value_variants().iter().enumerate() {
        let lr = match kind {
            OptimizerKind::Sgd | OptimizerKind::Momentum => 0.1,
            OptimizerKind::Rmsprop => 1e-3,
            OptimizerKind::Adam | OptimizerKind::Adamw => 2e-3,
        };
        let work = Workload {
            optimizer: Optimizer::new(kind),
            dropout: Dropout {
                hidden: 0.3,
                input: 0.1,
                seed: 40 + seed as u64,
            },
            standardize: Some(&statistics),
            ..workload(&spec, &train, 100, 1e-4)
        };
        let schedule = Schedule {
            shape: LrSchedule::Cosine,
            warmup_epochs: 1,
            ..Schedule::constant(2, lr)
        };
        let mut rng = init::rng(seed as u64);
        let initial = init::init_params(&spec.layout(), Init::He, &mut rng);
        let mut gpu_rng = rng.clone();
        let mut cpu = CpuBackend::new(work, initial.clone(), 2).unwrap();
        let cpu_reports = train::train(&mut cpu, &work, &schedule, &mut rng, |_| Ok(())).unwrap();
        let started = Instant::now();
        let mut gpu = gpu_backend(work, &initial);
        let gpu_reports = train::train(&mut gpu, &work, &schedule, &mut gpu_rng, |_| Ok(())).unwrap();
        let gpu_seconds = started.elapsed().as_secs_f64();
        let name = format!("{kind} lr {lr}, dropout, standardised, warm-up + cosine, 100 steps");

        let (cpu_params, gpu_params) = (cpu.parameters().unwrap(), gpu.parameters().unwrap());
        let moved = cpu_params
            .iter()
            .zip(&initial)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(moved > 1e-2, "{name}: the CPU weights moved by {moved} only");
        let max_error = assert_close(&name, &gpu_params, &cpu_params, 1e-4, 1e-3);
        let (cpu_state, gpu_state) = (cpu.optimizer_state().unwrap(), gpu.optimizer_state().unwrap());
        assert_eq!(
            (&gpu_state.name, gpu_state.step),
            (&cpu_state.name, cpu_state.step),
            "{name}"
        );
        // The bias-corrected rules count their steps; SGD keeps nothing.
        let steps = if kind == OptimizerKind::Sgd { 0 } else { 100 };
        assert_eq!(gpu_state.step, steps, "{name}");
        let mut state_errors = Vec::new();
        for ((gpu_name, got), (cpu_name, want)) in gpu_state.buffers.iter().zip(&cpu_state.buffers) {
            assert_eq!(gpu_name, cpu_name);
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            assert!(scale > 0.0, "{name}: {cpu_name} is all zeros");
            let error = assert_close(&format!("{name}: {cpu_name}"), got, want, 1e-4 * scale, 1e-3);
            state_errors.push(format!("{cpu_name} {:.1e} (of max {scale:.1e})", error));
        }
        for (c, g) in cpu_reports.iter().zip(&gpu_reports) {
            assert!(
                (c.train_loss - g.train_loss).abs() <= 1e-3 * c.train_loss,
                "{name}: epoch {} train loss cpu {} gpu {}",
                c.epoch,
                c.train_loss,
                g.train_loss
            );
        }
        assert!(
            gpu_reports[1].train_loss < gpu_reports[0].train_loss,
            "{name}: {gpu_reports:?}"
        );
        println!(
            "{name}: max parameter error {max_error:.2e} (weights moved up to {moved:.2}); state: {}; GPU {gpu_seconds:.1} s",
            state_errors.join(", ")
        );
    }
}

/// Evaluation never drops: a GPU backend trained with heavy dropout evaluates exactly (bit for
/// bit) as one without dropout from the same parameters, on a split of several chunks.
#[test]
fn gpu_evaluation_keeps_every_unit() {
    let spec = spec(&[784, 32, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let train = train_set(200);
    let test = test_set(2100);
    let mut rng = init::rng(8);
    let initial = init::init_params(&spec.layout(), Init::He, &mut rng);
    let evaluate = |dropout: Dropout| {
        let work = Workload {
            test: Some(&test),
            dropout,
            ..workload(&spec, &train, 100, 0.0)
        };
        let mut gpu = gpu_backend(work, &initial);
        let steps = vec![Optimizer::SGD.step_constants(0.0, 1); work.batches()];
        gpu.begin_epoch(&(0..200).collect::<Vec<u32>>(), &steps).unwrap();
        gpu.evaluate(Split::Test).unwrap();
        let test = gpu.end_epoch().unwrap().test.unwrap();
        (test, bits(&gpu.logits(Split::Test).unwrap()))
    };
    let heavy = Dropout {
        hidden: 0.9,
        input: 0.5,
        seed: 1,
    };
    let (dropped, none) = (evaluate(heavy), evaluate(Dropout::NONE));
    assert_eq!(dropped.0, none.0);
    assert!(dropped.1 == none.1, "the logits differ");
}

/// The short last batch's gradient is the mean over its own rows: 130 examples in batches of
/// 100, the step table giving batch 0 an lr of 0 and batch 1 (30 rows) an lr of 0.5, so one epoch
/// moves the parameters by exactly 0.5 × the gradient of the mean loss over those 30 rows
/// (`cpu::loss_and_gradient`, itself checked against central differences in gradient_check.rs)
/// on both devices; a 1/100 scaling would move them by 0.3 of that. The batch's reported loss is
/// the sum of its 30 rows' losses.
#[test]
fn the_short_last_batch_is_scaled_by_its_own_rows() {
    let spec = spec(&[784, 16, 16, 10], Activation::Tanh, Output::Softmax, Loss::Ce);
    let train = train_set(130);
    let work = workload(&spec, &train, 100, 0.0);
    assert_eq!(work.batches(), 2);
    let mut rng = init::rng(12);
    let initial = init::init_params(&spec.layout(), Init::Xavier, &mut rng);
    let mut permutation: Vec<u32> = (0..130).collect();
    permutation.shuffle(&mut rng);
    let (mean_loss, gradient) = loss_and_gradient(&spec, &initial, &train, &permutation[100..]);
    let step = |lr| Optimizer::SGD.step_constants(lr, 1);
    let steps = [step(0.0), step(0.5)];
    let cpu: Box<dyn Backend> = Box::new(CpuBackend::new(work, initial.clone(), 2).unwrap());
    for mut backend in [cpu, Box::new(gpu_backend(work, &initial)) as Box<dyn Backend>] {
        let device = backend.device();
        backend.begin_epoch(&permutation, &steps).unwrap();
        backend.train_batch(0).unwrap();
        backend.train_batch(1).unwrap();
        let metrics = backend.end_epoch().unwrap();
        let params = backend.parameters().unwrap();
        let moved: Vec<f32> = initial.iter().zip(&params).map(|(a, b)| a - b).collect();
        let want: Vec<f32> = gradient.iter().map(|g| 0.5 * g).collect();
        let max = assert_close(&format!("{device}: the last batch's step"), &moved, &want, 1e-7, 1e-3);
        let ratio = moved.iter().map(|m| m.abs()).sum::<f32>() / want.iter().map(|w| w.abs()).sum::<f32>();
        assert!(
            (ratio - 1.0).abs() < 1e-3,
            "{device}: moved {ratio} of 0.5·∇(mean loss)"
        );
        let loss = metrics.batch_loss[1];
        assert!(
            (loss - 30.0 * mean_loss).abs() <= 1e-4 * loss,
            "{device}: last batch loss {loss}, 30 × its mean {mean_loss}"
        );
        println!("{device}: max error {max:.2e}, moved {ratio} of the expected step");
    }
}

/// A network's logits, mean cross-entropy and correct count over `data`, in f64 from plain loops:
/// what evaluation must give, computed without either backend's code. Also, per example, the gap
/// between its two largest logits (where f32 rounding could flip the predicted class).
fn independent_evaluation(spec: &NetworkSpec, params: &[f32], data: &Dataset) -> (Vec<f64>, f64, u64, Vec<f64>) {
    let layout = spec.layout();
    let classes = *spec.widths.last().unwrap();
    let (mut logits, mut loss, mut correct, mut gaps) = (Vec::new(), 0.0, 0, Vec::new());
    for (e, image) in data.images.chunks_exact(data.features).enumerate() {
        let mut a: Vec<f64> = image.iter().map(|&p| p as f64 / 255.0).collect();
        for (l, shape) in layout.layers.iter().enumerate() {
            let (w, b) = (shape.weights(params), shape.bias(params));
            let mut z: Vec<f64> = b.iter().map(|&b| b as f64).collect();
            for (i, &x) in a.iter().enumerate() {
                for (j, zj) in z.iter_mut().enumerate() {
                    *zj += x * w[i * shape.outputs + j] as f64;
                }
            }
            if l + 1 < layout.layers.len() {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            a = z;
        }
        let max = a.iter().cloned().fold(f64::MIN, f64::max);
        let log_sum = a.iter().map(|z| (z - max).exp()).sum::<f64>().ln() + max;
        let label = data.labels[e] as usize;
        loss += log_sum - a[label];
        let best = (0..classes).fold(0, |b, k| if a[k] > a[b] { k } else { b });
        correct += (best == label) as u64;
        let second = (0..classes)
            .filter(|&k| k != best)
            .map(|k| a[k])
            .fold(f64::MIN, f64::max);
        gaps.push(a[best] - second);
        logits.extend_from_slice(&a);
    }
    (logits, loss / data.len() as f64, correct, gaps)
}

/// Evaluation over several chunks ending in a partial one (2,500 test examples in chunks of
/// 1,000: 1,000, 1,000, 500), on both devices, against the independent f64 computation above:
/// the mean loss within 1e-5 relative, the correct count exactly (up to the examples whose two
/// best logits are within 1e-4, none in practice), every logit within 1e-4 + 1e-4·|z| through
/// `Backend::logits`. The weights are trained first, so the accuracy is not chance.
#[test]
fn evaluation_over_chunks_ending_in_a_partial_one_matches_an_independent_computation() {
    let spec = spec(&[784, 32, 16, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let (train, test) = (train_set(2000), test_set(2500));
    let work = Workload {
        test: Some(&test),
        ..workload(&spec, &train, 100, 0.0)
    };
    assert_eq!(work.eval_rows(), 1000);
    let mut rng = init::rng(13);
    let initial = init::init_params(&spec.layout(), Init::He, &mut rng);
    let mut trainer = CpuBackend::new(work, initial, 2).unwrap();
    train::train(&mut trainer, &work, &schedule(3, 0.2), &mut rng, |_| Ok(())).unwrap();
    let params = trainer.parameters().unwrap();
    let (logits, mean_loss, correct, gaps) = independent_evaluation(&spec, &params, &test);
    let close_calls = gaps.iter().filter(|&&g| g < 1e-4).count() as u64;
    assert!(correct > 1500, "{correct} of 2500 right: train longer");
    let cpu: Box<dyn Backend> = Box::new(CpuBackend::new(work, params.clone(), 2).unwrap());
    for mut backend in [cpu, Box::new(gpu_backend(work, &params)) as Box<dyn Backend>] {
        let device = backend.device();
        let steps = vec![Optimizer::SGD.step_constants(0.1, 1); work.batches()];
        backend.begin_epoch(&(0..2000).collect::<Vec<u32>>(), &steps).unwrap();
        backend.evaluate(Split::Test).unwrap();
        let got = backend.end_epoch().unwrap().test.unwrap();
        assert_eq!(got.examples, 2500);
        assert!(
            (got.mean_loss() - mean_loss).abs() <= 1e-5 * mean_loss,
            "{device}: mean loss {} vs {mean_loss}",
            got.mean_loss()
        );
        assert!(
            got.correct.abs_diff(correct) <= close_calls,
            "{device}: {} right, {correct} independently ({close_calls} close calls)",
            got.correct
        );
        let got_logits = backend.logits(Split::Test).unwrap();
        let max = assert_close(&format!("{device}: test logits"), &got_logits, &logits, 1e-4, 1e-4);
        println!(
            "{device}: loss {} vs {mean_loss}, {} vs {correct} right, max logit error {max:.1e}",
            got.mean_loss(),
            got.correct
        );
    }
}

/// Trains `work` with `train::train` on the CPU and on the GPU from the same seed (weights, then
/// shuffles, from one rng, as the binary does). Returns (CPU, GPU) reports and parameters.
#[allow(clippy::type_complexity)]
fn train_both(
    work: &Workload,
    init: Init,
    schedule: &Schedule,
    seed: u64,
) -> ((Vec<EpochReport>, Vec<f32>), (Vec<EpochReport>, Vec<f32>)) {
    let mut rng = init::rng(seed);
    let initial = init::init_params(&work.spec.layout(), init, &mut rng);
    let mut gpu_rng: ChaCha8Rng = rng.clone();
    let mut cpu = CpuBackend::new(*work, initial.clone(), 2).unwrap();
    let cpu_reports = train::train(&mut cpu, work, schedule, &mut rng, |_| Ok(())).unwrap();
    let mut gpu = gpu_backend(*work, &initial);
    let gpu_reports = train::train(&mut gpu, work, schedule, &mut gpu_rng, |_| Ok(())).unwrap();
    (
        (cpu_reports, cpu.parameters().unwrap()),
        (gpu_reports, gpu.parameters().unwrap()),
    )
}

fn schedule(epochs: usize, lr: f32) -> Schedule {
    Schedule::constant(epochs, lr)
}

/// Two epochs of 784-64-10 on 5000 examples: the GPU reaches the CPU's test accuracy (within
/// 0.5%, absolute) and a useful one.
#[test]
fn two_epochs_reach_the_same_test_accuracy() {
    let spec = spec(&[784, 64, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let (train, test) = (train_set(5000), test_set(1000));
    let work = Workload {
        test: Some(&test),
        ..workload(&spec, &train, 100, 0.0)
    };
    let started = Instant::now();
    let ((cpu, cpu_params), (gpu, gpu_params)) = train_both(&work, Init::He, &schedule(2, 0.1), 5);
    for (c, g) in cpu.iter().zip(&gpu) {
        let (c_acc, g_acc) = (c.test_accuracy.unwrap(), g.test_accuracy.unwrap());
        println!(
            "epoch {}: test accuracy cpu {:.2}%, gpu {:.2}%; test loss cpu {:.5}, gpu {:.5}",
            c.epoch,
            100.0 * c_acc,
            100.0 * g_acc,
            c.test_loss.unwrap(),
            g.test_loss.unwrap()
        );
        assert!(
            (c_acc - g_acc).abs() <= 0.005,
            "epoch {}: cpu {c_acc}, gpu {g_acc}",
            c.epoch
        );
        let (c_loss, g_loss) = (c.test_loss.unwrap(), g.test_loss.unwrap());
        assert!(
            (c_loss - g_loss).abs() <= 1e-3 * c_loss,
            "epoch {}: test loss {c_loss} vs {g_loss}",
            c.epoch
        );
        assert!((c.train_loss - g.train_loss).abs() <= 1e-3 * c.train_loss);
        assert_eq!((g.device, c.device), ("gpu", "cpu"));
    }
    // What this run measures (seed 5: 84.40% of the 1000 test images on both devices), to within
    // 5 images: the CPU comparison above is the sharp check, this one catches both drifting.
    let accuracy = gpu.last().unwrap().test_accuracy.unwrap();
    assert!(
        (accuracy - 0.844).abs() <= 0.005,
        "GPU test accuracy {accuracy} after 2 epochs"
    );
    let max_error = assert_close("784-64-10 after 2 epochs", &gpu_params, &cpu_params, 1e-4, 1e-3);
    println!(
        "784-64-10, 2 epochs on 5000: max parameter error {max_error:.2e} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// The same seed on two fresh GPU backends gives the same parameters and losses, bit for bit.
#[test]
fn the_gpu_is_deterministic() {
    let spec = spec(&[784, 32, 16, 10], Activation::Tanh, Output::Softmax, Loss::Ce);
    let (train, test) = (train_set(1000), test_set(500));
    let work = Workload {
        test: Some(&test),
        ..workload(&spec, &train, 100, 1e-4)
    };
    let run = || {
        let mut rng = init::rng(9);
        let initial = init::init_params(&spec.layout(), Init::Xavier, &mut rng);
        let mut gpu = gpu_backend(work, &initial);
        let reports = train::train(&mut gpu, &work, &schedule(1, 0.1), &mut rng, |_| Ok(())).unwrap();
        let metrics = (reports[0].train_loss, reports[0].test_loss, reports[0].test_accuracy);
        (initial, gpu.parameters().unwrap(), metrics)
    };
    let (initial, a, a_metrics) = run();
    let (_, b, b_metrics) = run();
    assert_ne!(bits(&a), bits(&initial), "training changed nothing");
    assert!(bits(&a) == bits(&b), "the same seed gave different GPU weights");
    assert_eq!(a_metrics, b_metrics);
}

/// Dispatches a training batch records: gather, a forward and a weight gradient per layer, an
/// input gradient for every layer but the first, the output loss, the update.
fn train_dispatches(layers: usize) -> u64 {
    (3 * layers + 2) as u64
}

/// Dispatches an evaluation chunk records: gather, a forward per layer, the output loss.
fn eval_dispatches(layers: usize) -> u64 {
    (layers + 2) as u64
}

/// Each epoch is one submit, one readback and one wait, counted where the host meets wgpu
/// (`GpuContext::submit`, `map_read` and `wait`, the only code that submits, maps or polls: see
/// the next test), so an extra sync anywhere in an epoch fails this; the epoch reports those
/// counts, and records exactly the dispatches its batches and evaluation chunks need, counted
/// afresh each epoch.
#[test]
fn an_epoch_is_one_submit_and_one_readback() {
    let spec = spec(&[784, 16, 16, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let mut train = train_set(1000);
    let validation = train.split_off_validation(300).unwrap();
    let test = test_set(2500);
    let work = Workload {
        validation: Some(&validation),
        test: Some(&test),
        // The whole toolbox: the optimiser's state and the step table add no sync.
        optimizer: Optimizer::new(OptimizerKind::Adam),
        dropout: Dropout {
            hidden: 0.2,
            input: 0.1,
            seed: 3,
        },
        ..workload(&spec, &train, 128, 0.0)
    };
    // 700 examples in batches of 128: 6 batches (the last of 60). Evaluation in chunks of 1000:
    // 1 for the validation set, 3 for the test set.
    assert_eq!((work.batches(), work.eval_rows()), (6, 1000));
    let layers = spec.layers();
    let expected = 6 * train_dispatches(layers) + (1 + 3) * eval_dispatches(layers);
    assert_eq!(expected, 6 * 11 + 4 * 5);
    let one_of_each = SyncCounts {
        submits: 1,
        maps: 1,
        waits: 1,
    };

    let mut rng = init::rng(3);
    let initial = init::init_params(&spec.layout(), Init::He, &mut rng);
    let ctx = GpuContext::new().expect("a GPU adapter (lavapipe will do)");
    let syncs = ctx.sync_counter();
    let mut gpu = GpuBackend::with_context(ctx, work, &initial).unwrap();
    let permutation: Vec<u32> = (0..700).rev().collect();
    let before = syncs.counts();
    let metrics = epoch(&mut gpu, &work, &permutation, 0.05);
    assert_eq!(syncs.counts().since(before), one_of_each);
    let counters = GpuCounters {
        dispatches: expected,
        submits: 1,
        readbacks: 1,
    };
    assert_eq!(metrics.counters, Some(counters));
    assert_eq!(metrics.batch_loss.len(), 6);
    assert_eq!(
        (metrics.validation.unwrap().examples, metrics.test.unwrap().examples),
        (300, 2500)
    );
    // The counter sees syncs outside epochs too: reading the parameters is one of each.
    let before = syncs.counts();
    gpu.parameters().unwrap();
    assert_eq!(syncs.counts().since(before), one_of_each);
    // Two epochs through the training loop: two of each, and each epoch reports its own.
    let before = syncs.counts();
    let reports = train::train(&mut gpu, &work, &schedule(2, 0.05), &mut rng, |_| Ok(())).unwrap();
    let two = SyncCounts {
        submits: 2,
        maps: 2,
        waits: 2,
    };
    assert_eq!(syncs.counts().since(before), two);
    for report in &reports {
        let seen = (report.dispatches, report.submits, report.readbacks);
        assert_eq!(seen, (Some(expected), Some(1), Some(1)), "epoch {}", report.epoch);
    }
    // Training only: no evaluation dispatches.
    let bare = workload(&spec, &train, 128, 0.0);
    let mut gpu = gpu_backend(bare, &initial);
    let metrics = epoch(&mut gpu, &bare, &permutation, 0.05);
    let counters = metrics.counters.unwrap();
    assert_eq!(counters.dispatches, 6 * train_dispatches(layers));
    assert_eq!((counters.submits, counters.readbacks), (1, 1));
}

/// What makes the counts above complete: nothing in `src/` but `GpuContext` (src/gpu/context.rs)
/// submits to a wgpu queue, maps a buffer or polls the device.
#[test]
fn only_the_context_submits_maps_or_polls() {
    fn sources(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 20, "{files:?}");
    let mut offenders = Vec::new();
    for file in &files {
        // Without whitespace, so a call split over lines is found too.
        let text: String = std::fs::read_to_string(file)
            .unwrap()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for call in ["queue.submit(", ".map_async(", ".poll("] {
            if text.contains(call) && !file.ends_with("src/gpu/context.rs") {
                offenders.push(format!("{} calls {call}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// Per-example SGD, a batch size that leaves a short last batch, and full-batch descent all
/// train on the GPU, to the CPU's parameters.
#[test]
fn every_batch_size_trains_on_the_gpu() {
    let spec = spec(&[784, 32, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    // (batch, examples, epochs, lr, batches per epoch)
    for (batch, examples, epochs, lr, batches) in
        [(1, 40, 2, 0.02, 40), (128, 1000, 1, 0.1, 8), (1000, 1000, 4, 0.2, 1)]
    {
        let train = train_set(examples);
        let work = workload(&spec, &train, batch, 0.0);
        let what = format!("batch {batch} on {examples}");
        let ((cpu, cpu_params), (gpu, gpu_params)) = train_both(&work, Init::He, &schedule(epochs, lr), 4);
        let losses: Vec<f64> = gpu.iter().map(|r| r.train_loss).collect();
        assert!(gpu.iter().all(|r| r.batches == batches), "{what}");
        assert!(losses.iter().all(|l| l.is_finite()), "{what}: {losses:?}");
        for (c, g) in cpu.iter().zip(&gpu) {
            assert!(
                (c.train_loss - g.train_loss).abs() <= 1e-3 * c.train_loss,
                "{what}: {c:?} {g:?}"
            );
        }
        if batches == 1 {
            // Full-batch descent with a modest step: every epoch lowers the loss.
            assert!(losses.windows(2).all(|w| w[1] < w[0]), "{what}: {losses:?}");
        }
        let max_error = assert_close(&what, &gpu_params, &cpu_params, 1e-4, 1e-3);
        println!("{what}, {epochs} epochs: train losses {losses:?}, max parameter error {max_error:.2e}");
    }
}

/// A validation split is evaluated on the GPU: its loss is that of the final weights on exactly
/// those examples, and it matches the CPU's.
#[test]
fn a_validation_split_works_on_the_gpu() {
    let spec = spec(&[784, 32, 10], Activation::Sigmoid, Output::Softmax, Loss::Ce);
    let mut train = train_set(1000);
    let validation = train.split_off_validation(200).unwrap();
    let test = test_set(300);
    let work = Workload {
        validation: Some(&validation),
        test: Some(&test),
        ..workload(&spec, &train, 100, 0.0)
    };
    let ((cpu, _), (gpu, gpu_params)) = train_both(&work, Init::Xavier, &schedule(1, 0.5), 6);
    let (c, g) = (&cpu[0], &gpu[0]);
    let (c_loss, g_loss) = (c.validation_loss.unwrap(), g.validation_loss.unwrap());
    assert!(
        (c_loss - g_loss).abs() <= 1e-3 * c_loss,
        "validation loss cpu {c_loss}, gpu {g_loss}"
    );
    let (c_acc, g_acc) = (c.validation_accuracy.unwrap(), g.validation_accuracy.unwrap());
    assert!(
        (c_acc - g_acc).abs() <= 0.01,
        "validation accuracy cpu {c_acc}, gpu {g_acc}"
    );
    assert!(g.test_accuracy.is_some());
    let index: Vec<u32> = (0..200).collect();
    let (recomputed, _) = loss_and_gradient(&spec, &gpu_params, &validation, &index);
    assert!(
        (g_loss - recomputed as f64).abs() <= 1e-4 * g_loss,
        "GPU validation loss {g_loss}, its weights' loss on the validation set {recomputed}"
    );
}

/// The name a software adapter must have here: Mesa's lavapipe.
fn expect_llvmpipe() -> bool {
    !list_adapters().iter().any(|a| a.kind == AdapterKind::Hardware)
}

/// The binary on the GPU: one JSON object, the software adapter named and noted, the counters,
/// and the test accuracy and loss of the same command on the CPU (1 thread), to 1 of the 200
/// test images and 1e-5 relative: the GPU trains what the CPU trains, not merely something.
#[test]
fn the_cli_trains_on_the_gpu_with_one_submit_and_one_readback() {
    let args = [
        "--json",
        "--train-examples",
        "1000",
        "--test-examples",
        "200",
        "--epochs",
        "1",
    ];
    let run = |device: &str| {
        let all = [&["--device", device, "--threads", "1"], &args[..]].concat();
        let out = common::run(&all);
        assert!(out.status.success(), "{}", common::describe(&all, &out));
        let (stdout, stderr) = (common::text(&out.stdout), common::text(&out.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one JSON object per epoch: {stdout}");
        let report: Value = serde_json::from_str(lines[0]).unwrap();
        (report, stderr)
    };
    let (report, stderr) = run("gpu");
    assert_eq!(report["device"], "gpu", "{report}");
    let adapter = report["adapter"].as_str().expect("adapter");
    if expect_llvmpipe() {
        assert!(adapter.contains("llvmpipe"), "{report}");
        assert!(
            stderr.contains("software adapter"),
            "no note about the software adapter: {stderr}"
        );
    }
    // The default network, 784-128-10 (2 layers): 10 batches of 100, then the 200 test
    // examples in one chunk.
    let dispatches = 10 * train_dispatches(2) + eval_dispatches(2);
    assert_eq!(report["dispatches"], dispatches, "{report}");
    assert_eq!(report["submits"], 1, "{report}");
    assert_eq!(report["readbacks"], 1, "{report}");
    assert_eq!(report["batches"], 10, "{report}");
    let (cpu, _) = run("cpu");
    let value = |r: &Value, key: &str| r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
    let (accuracy, cpu_accuracy) = (value(&report, "test_accuracy"), value(&cpu, "test_accuracy"));
    assert!((accuracy - cpu_accuracy).abs() <= 0.005, "GPU {report}\nCPU {cpu}");
    let (loss, cpu_loss) = (value(&report, "test_loss"), value(&cpu, "test_loss"));
    assert!((loss - cpu_loss).abs() <= 1e-5 * cpu_loss, "GPU {report}\nCPU {cpu}");
}

#[test]
fn the_cli_lists_the_devices() {
    let out = common::gpu_mlp().arg("--list-devices").output().expect("gpu-mlp runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    if expect_llvmpipe() {
        let line = stdout.lines().find(|l| l.contains("llvmpipe"));
        let line = line.unwrap_or_else(|| panic!("llvmpipe is not listed: {stdout}"));
        assert!(line.contains("software"), "{line}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("cpu  [")), "{stdout}");
}
