//! Whole training runs on the GPU against the CPU reference: the same workload, the same initial
//! parameters and the same example order on both devices, then the parameters (step parity),
//! the test accuracy, the GPU's determinism, its work counters (one submit, one readback per
//! epoch), batch sizes from 1 to the whole set, a validation split, and the binary's `--device
//! gpu` output.

mod common;

use common::{assert_close, bits, mnist, spec, BIN};
use gpu_mlp::backend::{Backend, EpochMetrics, GpuCounters, Split, Workload};
use gpu_mlp::cpu::{loss_and_gradient, CpuBackend};
use gpu_mlp::data::Dataset;
use gpu_mlp::gpu::context::{list_adapters, AdapterKind};
use gpu_mlp::gpu::GpuBackend;
use gpu_mlp::init;
use gpu_mlp::network::{Activation, Init, Loss, NetworkSpec, Output};
use gpu_mlp::optim::Optimizer;
use gpu_mlp::train::{self, EpochReport, Schedule};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::process::Command;
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
    let spec = spec(config.widths, config.activation, config.output, config.loss);
    let train = train_set(config.examples);
    let work = workload(&spec, &train, config.batch_size, config.l2);
    let mut rng = init::rng(seed);
    let initial = init::init_params(&spec.layout(), config.init, &mut rng);
    let mut permutation: Vec<u32> = (0..train.len() as u32).collect();
    permutation.shuffle(&mut rng);
    let name = format!(
        "{} {} {} {} {} lr {} l2 {} batch {} × {} steps",
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
    let mut gpu = gpu_backend(work, &initial);
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

/// 100 steps of batch 100 on 10,000 examples. With the batch-1 configuration below, every
/// activation, output, loss and initialisation appears; two configurations have two hidden
/// layers (so dense_backward_input runs), one decays the weights (l2).
#[test]
fn hundred_steps_of_batch_100_match_the_cpu() {
    let configs = [
        Config {
            widths: &[784, 32, 10],
            activation: Activation::Relu,
            output: Output::Softmax,
            loss: Loss::Ce,
            init: Init::He,
            lr: 0.1,
            l2: 0.0,
            batch_size: 100,
            examples: 10_000,
        },
        Config {
            widths: &[784, 16, 16, 10],
            activation: Activation::Tanh,
            output: Output::Softmax,
            loss: Loss::Mse,
            init: Init::Xavier,
            lr: 0.1,
            l2: 1e-3,
            batch_size: 100,
            examples: 10_000,
        },
        Config {
            widths: &[784, 16, 16, 10],
            activation: Activation::Sigmoid,
            output: Output::Sigmoid,
            loss: Loss::Mse,
            init: Init::Normal,
            lr: 0.1,
            l2: 0.0,
            batch_size: 100,
            examples: 10_000,
        },
    ];
    for (seed, config) in configs.iter().enumerate() {
        step_parity(config, seed as u64 + 1);
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
    let accuracy = gpu.last().unwrap().test_accuracy.unwrap();
    assert!(accuracy > 0.8, "GPU test accuracy {accuracy} after 2 epochs");
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

/// Each epoch is one submit and one readback, and records exactly the dispatches its batches
/// and evaluation chunks need — counted afresh each epoch.
#[test]
fn an_epoch_is_one_submit_and_one_readback() {
    let spec = spec(&[784, 16, 16, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let mut train = train_set(1000);
    let validation = train.split_off_validation(300).unwrap();
    let test = test_set(2500);
    let work = Workload {
        validation: Some(&validation),
        test: Some(&test),
        ..workload(&spec, &train, 128, 0.0)
    };
    // 700 examples in batches of 128: 6 batches (the last of 60). Evaluation in chunks of 1000:
    // 1 for the validation set, 3 for the test set.
    assert_eq!((work.batches(), work.eval_rows()), (6, 1000));
    let layers = spec.layers();
    let expected = 6 * train_dispatches(layers) + (1 + 3) * eval_dispatches(layers);
    assert_eq!(expected, 6 * 11 + 4 * 5);
    let counters = GpuCounters {
        dispatches: expected,
        submits: 1,
        readbacks: 1,
    };

    let mut rng = init::rng(3);
    let initial = init::init_params(&spec.layout(), Init::He, &mut rng);
    let mut gpu = gpu_backend(work, &initial);
    let permutation: Vec<u32> = (0..700).rev().collect();
    let metrics = epoch(&mut gpu, &work, &permutation, 0.05);
    assert_eq!(metrics.counters, Some(counters));
    assert_eq!(metrics.batch_loss.len(), 6);
    assert_eq!(
        (metrics.validation.unwrap().examples, metrics.test.unwrap().examples),
        (300, 2500)
    );
    // Reading the parameters is not part of the epoch: the next epoch counts from zero.
    gpu.parameters().unwrap();
    let reports = train::train(&mut gpu, &work, &schedule(2, 0.05), &mut rng, |_| Ok(())).unwrap();
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

#[test]
fn the_cli_trains_on_the_gpu_with_one_submit_and_one_readback() {
    let args = [
        "--device",
        "gpu",
        "--json",
        "--train-examples",
        "1000",
        "--test-examples",
        "200",
        "--epochs",
        "1",
    ];
    let out = Command::new(BIN).args(args).output().expect("gpu-mlp runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "gpu-mlp {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per epoch: {stdout}");
    let report: Value = serde_json::from_str(lines[0]).unwrap();
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
    let accuracy = report["test_accuracy"].as_f64().expect("test accuracy");
    assert!(accuracy > 0.5, "{report}");
}

#[test]
fn the_cli_lists_the_devices() {
    let out = Command::new(BIN).arg("--list-devices").output().expect("gpu-mlp runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    if expect_llvmpipe() {
        let line = stdout.lines().find(|l| l.contains("llvmpipe"));
        let line = line.unwrap_or_else(|| panic!("llvmpipe is not listed: {stdout}"));
        assert!(line.contains("software"), "{line}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("cpu  [")), "{stdout}");
}
