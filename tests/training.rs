//! Training through the library, on the CPU backend: runs are built from command lines exactly
//! as the binary builds them (`Cli` → `TrainArgs::resolve`), then trained by `train::train`.
//! XOR and MNIST must be learned, the same seed must give the same weights bit for bit, and every
//! batch size from 1 to the whole training set must train.

mod common;

use clap::Parser;
use common::{bits, mnist};
use gpu_mlp::backend::Backend;
use gpu_mlp::cli::{Cli, Run};
use gpu_mlp::cpu::{loss_and_gradient, CpuBackend};
use gpu_mlp::init;
use gpu_mlp::optim::StepConstants;
use gpu_mlp::train::{self, EpochReport};
use std::time::Instant;

/// The checked run that `gpu-mlp --device cpu ARGS` would train.
fn resolve(args: &[&str]) -> Run {
    let argv = ["gpu-mlp", "--device", "cpu"].iter().chain(args);
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(cli.command.is_none());
    cli.train.resolve().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// What a run ended with: its epochs, its initial and final parameters.
struct Trained {
    run: Run,
    reports: Vec<EpochReport>,
    initial: Vec<f32>,
    params: Vec<f32>,
}

/// Trains `gpu-mlp --device cpu ARGS` as the binary does: weights, then shuffles, from one rng.
fn train(args: &[&str]) -> Trained {
    let run = resolve(args);
    let work = run.workload();
    let mut rng = init::rng(run.seed);
    let initial = init::init_params(&run.spec.layout(), run.init, &mut rng);
    let mut backend = CpuBackend::new(work, initial.clone(), run.threads).unwrap();
    let reports = train::train(&mut backend, &work, &run.schedule, &mut rng, |_| Ok(()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert_eq!(reports.len(), run.schedule.epochs);
    let params = backend.parameters().unwrap();
    drop(backend);
    Trained {
        run,
        reports,
        initial,
        params,
    }
}

fn last(reports: &[EpochReport]) -> &EpochReport {
    reports.last().expect("at least one epoch")
}

fn losses(reports: &[EpochReport]) -> Vec<f64> {
    reports.iter().map(|r| r.train_loss).collect()
}

#[test]
fn xor_is_learned_with_the_defaults() {
    let trained = train(&["--dataset", "xor"]);
    let (spec, schedule) = (&trained.run.spec, &trained.run.schedule);
    assert_eq!(spec.widths, [2, 8, 2]);
    assert_eq!((schedule.epochs, schedule.lr, trained.run.batch_size), (200, 0.5, 4));
    let report = last(&trained.reports);
    assert_eq!(report.test_accuracy, Some(1.0), "{report:?}");
    assert_eq!(report.train_accuracy, 1.0, "{report:?}");
    assert!(report.train_loss < 0.1, "{report:?}");
}

#[test]
fn xor_is_learned_from_every_seed() {
    let failed: Vec<String> = (1..=20)
        .filter_map(|seed| {
            let seed = seed.to_string();
            let trained = train(&["--dataset", "xor", "--seed", &seed, "--threads", "1"]);
            let report = last(&trained.reports);
            (report.test_accuracy != Some(1.0)).then(|| format!("seed {seed}: {report:?}"))
        })
        .collect();
    assert!(failed.is_empty(), "XOR not learned:\n{}", failed.join("\n"));
}

/// The default network on the whole of MNIST: 784-128-10, relu, softmax, cross-entropy, He
/// initialisation, batch 100, lr 0.3, 10 epochs: the README promises ≥ 97.5% (98.00% measured).
#[test]
fn mnist_default_network_reaches_97_percent() {
    let started = Instant::now();
    let trained = train(&["--threads", "2"]);
    let run = &trained.run;
    assert_eq!(run.spec.name(), "784-128-10");
    assert_eq!((run.train.len(), run.test.as_ref().unwrap().len()), (60_000, 10_000));
    assert_eq!((run.schedule.epochs, run.schedule.lr, run.batch_size), (10, 0.3, 100));
    let accuracy = last(&trained.reports).test_accuracy.unwrap();
    println!(
        "MNIST 784-128-10, 10 epochs: test accuracy {:.2}% in {:.1} s",
        100.0 * accuracy,
        started.elapsed().as_secs_f64()
    );
    assert!(accuracy >= 0.975, "test accuracy {accuracy}");
    let losses = losses(&trained.reports);
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
}

#[test]
fn same_seed_same_weights_bit_for_bit() {
    for threads in ["2", "1"] {
        let args = |seed: &'static str| {
            [
                "--train-examples",
                "3000",
                "--test-examples",
                "500",
                "--epochs",
                "2",
                "--seed",
                seed,
                "--threads",
                threads,
            ]
        };
        let a = train(&args("7"));
        let b = train(&args("7"));
        let c = train(&args("8"));
        assert_eq!(a.run.threads, threads.parse::<usize>().unwrap());
        assert_ne!(
            bits(&a.params),
            bits(&a.initial),
            "threads {threads}: training changed nothing"
        );
        assert!(
            bits(&a.params) == bits(&b.params),
            "threads {threads}: the same seed gave different weights"
        );
        assert_eq!(losses(&a.reports), losses(&b.reports), "threads {threads}");
        assert_ne!(bits(&a.initial), bits(&c.initial), "threads {threads}");
        assert_ne!(
            bits(&a.params),
            bits(&c.params),
            "threads {threads}: another seed gave the same weights"
        );
    }
}

/// `--validation N` holds out the last N of the training examples (after `--train-examples`).
#[test]
fn validation_is_the_tail_of_the_training_data() {
    let trained = train(&[
        "--train-examples",
        "1000",
        "--validation",
        "200",
        "--test-examples",
        "300",
        "--epochs",
        "2",
    ]);
    let run = &trained.run;
    let first_1000 = mnist().train.truncated(1000);
    let validation = run.validation.as_ref().expect("a validation set");
    assert_eq!(run.train, first_1000.truncated(800));
    assert_eq!(validation.len(), 200);
    assert!(validation.images == first_1000.images[800 * 784..]);
    assert_eq!(validation.labels, first_1000.labels[800..]);
    assert_eq!(run.test.as_ref().unwrap().len(), 300);

    for report in &trained.reports {
        let accuracy = report.validation_accuracy.expect("validation accuracy");
        assert!((0.0..=1.0).contains(&accuracy), "{report:?}");
        assert!(report.batches == 8, "800 examples in batches of 100: {report:?}");
    }
    // The reported validation loss is that of the final weights on exactly those 200 examples.
    let index: Vec<u32> = (0..200).collect();
    let (loss, _) = loss_and_gradient(&run.spec, &trained.params, validation, &index);
    let reported = last(&trained.reports).validation_loss.unwrap();
    assert!(
        (reported - loss as f64).abs() < 1e-4 * reported,
        "reported {reported}, recomputed {loss}"
    );

    let without = train(&["--train-examples", "1000", "--test-examples", "300", "--epochs", "1"]);
    assert!(without.run.validation.is_none());
    assert_eq!(without.run.train.len(), 1000);
    assert_eq!(without.reports[0].validation_accuracy, None);
}

/// Per-example SGD, mini-batches, full-batch descent and a batch size that does not divide the
/// training set all train: no error, finite losses that fall over the epochs.
#[test]
fn every_batch_size_trains() {
    let cases: [(&str, &str, &str, &str, usize); 4] = [
        // (batch, examples, lr, epochs, batches per epoch)
        ("1", "1000", "0.01", "3", 1000),
        ("100", "1000", "0.1", "3", 10),
        ("128", "1000", "0.1", "3", 8),
        ("500", "500", "0.1", "5", 1),
    ];
    for (batch, examples, lr, epochs, batches) in cases {
        let args = [
            "--batch-size",
            batch,
            "--train-examples",
            examples,
            "--test-examples",
            "200",
            "--lr",
            lr,
            "--epochs",
            epochs,
            "--threads",
            "2",
        ];
        let trained = train(&args);
        let losses = losses(&trained.reports);
        println!("batch {batch} on {examples}: train losses {losses:?}");
        assert!(losses.iter().all(|l| l.is_finite()), "batch {batch}: {losses:?}");
        assert!(
            losses.last() < losses.first(),
            "batch {batch}: the loss did not fall: {losses:?}"
        );
        assert!(trained.reports.iter().all(|r| r.batches == batches), "batch {batch}");
        if batches == 1 {
            // Full-batch gradient descent with a small step: every step lowers the loss.
            assert!(losses.windows(2).all(|w| w[1] < w[0]), "full batch: {losses:?}");
        }
    }
}

/// With a batch size that does not divide the training set, the last batch holds the rest:
/// with lr 0 (no update) the batches' summed losses are the loss of the whole training set.
#[test]
fn the_last_batch_holds_the_remainder() {
    let run = resolve(&[
        "--batch-size",
        "128",
        "--train-examples",
        "1000",
        "--test-examples",
        "10",
    ]);
    let work = run.workload();
    assert_eq!(work.batches(), 8);
    let params = init::init_params(&run.spec.layout(), run.init, &mut init::rng(3));
    let mut backend = CpuBackend::new(work, params.clone(), 2).unwrap();
    let order: Vec<u32> = (0..1000).collect();
    backend.begin_epoch(&order, &[StepConstants::default(); 8]).unwrap();
    for batch in 0..8 {
        backend.train_batch(batch).unwrap();
    }
    let metrics = backend.end_epoch().unwrap();
    assert_eq!(metrics.batch_loss.len(), 8);
    let summed: f64 = metrics.batch_loss.iter().map(|&l| l as f64).sum();
    let (mean, _) = loss_and_gradient(&run.spec, &params, &run.train, &order);
    let whole = mean as f64 * 1000.0;
    assert!(
        (summed - whole).abs() < 1e-4 * whole,
        "batches {summed}, whole set {whole}"
    );
    // The last batch alone: examples 896..1000.
    let (tail, _) = loss_and_gradient(&run.spec, &params, &run.train, &order[896..]);
    let last = metrics.batch_loss[7] as f64;
    assert!((last - tail as f64 * 104.0).abs() < 1e-4 * last, "last batch {last}");
    assert!(
        bits(&backend.parameters().unwrap()) == bits(&params),
        "lr 0 changed the weights"
    );
}

/// The network of the classic per-example-SGD tutorial: 784-10-10, relu, softmax, squared
/// error, U(-0.5, 0.5) weights and biases, lr 0.01, batch 1, one pass over the training set.
/// (Seeds 1–5 reach 87–90% on the first 1000 test images; on a 5000-example subset only 50–70%.)
#[test]
fn per_example_sgd_tutorial_network() {
    let trained = train(&[
        "--layers",
        "784,10,10",
        "--activation",
        "relu",
        "--output",
        "softmax",
        "--loss",
        "mse",
        "--init",
        "uniform",
        "--lr",
        "0.01",
        "--batch-size",
        "1",
        "--epochs",
        "1",
        "--test-examples",
        "1000",
    ]);
    assert_eq!(trained.run.train.len(), 60_000);
    let accuracy = trained.reports[0].test_accuracy.unwrap();
    println!(
        "784-10-10 per-example SGD, 1 epoch: test accuracy {:.1}%",
        100.0 * accuracy
    );
    assert!(accuracy >= 0.87, "test accuracy {accuracy}: seeds 1–5 reach 87–90%");
}
