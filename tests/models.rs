//! Model files end to end: what `--save` writes, `eval` and `predict` read, and `--resume`
//! continues. Resuming is exact on the CPU and on the GPU (lavapipe here); eval agrees with the
//! run that trained the model; predict reads back the test images as eval sees them; a large
//! off-centre digit on white is recognised; every bad file is one sentence naming it.

mod common;

use gpu_mlp::backend::{Backend, Workload};
use gpu_mlp::cpu::CpuBackend;
use gpu_mlp::data::Mnist;
use gpu_mlp::data::{Normalize, Standardization};
use gpu_mlp::dropout::Dropout;
use gpu_mlp::gpu::GpuBackend;
use gpu_mlp::init;
use gpu_mlp::model::{Checkpoint, Model, ModelInfo, RunSettings, SpecHints, TrainingState};
use gpu_mlp::network::{Activation, Init, Loss, NetworkSpec, Output};
use gpu_mlp::optim::{Optimizer, OptimizerKind};
use gpu_mlp::train::LrSchedule;
use gpu_mlp::train::{self, EpochReport, Observer, Position, Schedule};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use tempfile::TempDir;

use common::{arg, command, fails, ok, run as gpu_mlp, text};

static MNIST: LazyLock<&'static Mnist> = LazyLock::new(common::mnist);

fn load(path: &Path) -> Checkpoint {
    Checkpoint::load(path, &SpecHints::default()).expect("a model file")
}

/// The weights of two model files, compared bit for bit.
fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (load(a).model.params, load(b).model.params);
    assert_eq!(a.len(), b.len());
    let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    assert_eq!(differ, 0, "{differ} of {} parameters differ", a.len());
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

/// The small CPU run most tests share: 784-64-10 on 10,000 examples, 2 epochs, the whole test
/// set; and its `--json` output.
struct Trained {
    _dir: TempDir,
    path: PathBuf,
    epochs: Vec<Value>,
}

/// The network and device of the shared run (the data and epochs are added by each caller).
const SMALL: [&str; 6] = ["--layers", "784,64,10", "--device", "cpu", "--threads", "2"];

static TRAINED: LazyLock<Trained> = LazyLock::new(|| {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut args = SMALL.to_vec();
    args.extend([
        "--train-examples",
        "10000",
        "--epochs",
        "2",
        "--json",
        "--save",
        arg(&path),
    ]);
    let epochs = json_lines(&ok(&args));
    Trained {
        _dir: dir,
        path,
        epochs,
    }
});

fn trained() -> &'static Path {
    &TRAINED.path
}

#[test]
fn saved_model_has_nn_linear_tensors_and_its_metadata() {
    let checkpoint = load(trained());
    let model = &checkpoint.model;
    assert_eq!(model.spec.widths, vec![784, 64, 10]);
    assert_eq!(model.info.epochs_trained, Some(2));
    assert_eq!(model.info.device.as_deref(), Some("cpu"));
    let last = TRAINED.epochs.last().unwrap();
    assert_eq!(model.info.test_accuracy, last["test_accuracy"].as_f64());
    let state = checkpoint.training.expect("every saved model is a checkpoint");
    assert_eq!(state.position.epochs_done, 2);
    assert_eq!(state.position.order.len(), 10_000);
    // The raw file, as numpy or torch sees it.
    let bytes = std::fs::read(trained()).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let weight = file.tensor("layers.0.weight").unwrap();
    assert_eq!((weight.dtype(), weight.shape()), (Dtype::F32, &[64usize, 784][..]));
    assert_eq!(file.tensor("layers.1.bias").unwrap().shape(), &[10]);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    for (key, value) in [
        ("format_version", "1"),
        ("widths", "784,64,10"),
        ("activation", "relu"),
        ("output", "softmax"),
        ("loss", "ce"),
        ("input_divisor", "255"),
        ("seed", "1"),
    ] {
        assert_eq!(meta.get(key).map(String::as_str), Some(value), "{key}");
    }
}

#[test]
fn eval_gives_the_training_runs_last_test_accuracy() {
    let last = TRAINED.epochs.last().unwrap();
    let out = ok(&[
        "eval",
        "--model",
        arg(trained()),
        "--device",
        "cpu",
        "--threads",
        "2",
        "--json",
    ]);
    let eval = &json_lines(&out)[0];
    assert_eq!(eval["examples"], 10_000);
    assert_eq!(eval["accuracy"].as_f64(), last["test_accuracy"].as_f64(), "{eval}");
    let loss = eval["loss"].as_f64().unwrap();
    let trained_loss = last["test_loss"].as_f64().unwrap();
    assert!((loss - trained_loss).abs() < 1e-6, "loss {loss} vs {trained_loss}");
    // The confusion matrix adds up, its diagonal is the correct count.
    let confusion: Vec<Vec<u64>> = serde_json::from_value(eval["confusion"].clone()).unwrap();
    let total: u64 = confusion.iter().flatten().sum();
    let diagonal: u64 = (0..10).map(|k| confusion[k][k]).sum();
    assert_eq!((total, diagonal), (10_000, eval["correct"].as_u64().unwrap()));
    let per_class = eval["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    // The table shows the same.
    let table = ok(&["eval", "--model", arg(trained()), "--device", "cpu", "--threads", "2"]);
    let accuracy = format!("accuracy {:.2}%", 100.0 * eval["accuracy"].as_f64().unwrap());
    assert!(table.contains(&accuracy), "{table}");
    assert!(
        table.contains("confusion matrix (rows: true class, columns: predicted class)"),
        "{table}"
    );
}

#[test]
fn eval_on_the_gpu_agrees_with_the_cpu() {
    let cpu = &json_lines(&ok(&["eval", "--model", arg(trained()), "--device", "cpu", "--json"]))[0];
    let gpu = &json_lines(&ok(&["eval", "--model", arg(trained()), "--device", "gpu", "--json"]))[0];
    assert_eq!(gpu["device"], "gpu");
    let (c, g) = (cpu["correct"].as_i64().unwrap(), gpu["correct"].as_i64().unwrap());
    // Float sums in another order may move an example that sits on a decision boundary.
    assert!((c - g).abs() <= 2, "cpu {c} correct, gpu {g}");
    let (cl, gl) = (cpu["loss"].as_f64().unwrap(), gpu["loss"].as_f64().unwrap());
    assert!((cl - gl).abs() < 1e-4, "loss cpu {cl} gpu {gl}");
}

#[test]
fn eval_split_train_reads_the_training_file() {
    let out = ok(&[
        "eval",
        "--model",
        arg(trained()),
        "--device",
        "cpu",
        "--split",
        "train",
        "--json",
    ]);
    let eval = &json_lines(&out)[0];
    assert_eq!(eval["examples"], 60_000);
    assert_eq!(eval["split"], "train");
}

/// Trains `extra` for 4 epochs, and for 2 then resumed to 4; the weights must be equal.
fn two_plus_two_equals_four(extra: &[&str]) {
    let dir = TempDir::new().unwrap();
    let (four, two, resumed) = (
        dir.path().join("four.safetensors"),
        dir.path().join("two.safetensors"),
        dir.path().join("resumed.safetensors"),
    );
    let run = |epochs: &str, path: &Path| {
        let mut args = extra.to_vec();
        args.extend(["--epochs", epochs, "--save", arg(path)]);
        ok(&args)
    };
    run("4", &four);
    run("2", &two);
    // --resume alone: settings, device and threads come from the file; --epochs extends.
    let out = ok(&["train", "--resume", arg(&two), "--epochs", "4", "--save", arg(&resumed)]);
    assert!(out.contains("resuming after epoch 2 of 4"), "{out}");
    assert!(out.contains("epoch 3/4") && out.contains("epoch 4/4"), "{out}");
    assert_same_weights(&four, &resumed);
    let state = load(&resumed).training.unwrap();
    assert_eq!(state.position.epochs_done, 4);
    assert_eq!(state.settings.epochs, 4);
}

#[test]
fn cpu_two_epochs_saved_and_resumed_for_two_equal_four() {
    two_plus_two_equals_four(&[
        "--device",
        "cpu",
        "--threads",
        "2",
        "--layers",
        "784,32,10",
        "--train-examples",
        "5000",
        "--test-examples",
        "500",
        "--lr-decay",
        "0.5",
        "--l2",
        "0.0001",
    ]);
}

#[test]
fn gpu_two_epochs_saved_and_resumed_for_two_equal_four() {
    two_plus_two_equals_four(&[
        "--device",
        "gpu",
        "--layers",
        "784,32,10",
        "--train-examples",
        "2000",
        "--test-examples",
        "300",
        "--batch-size",
        "50",
        "--lr-decay",
        "0.5",
    ]);
}

/// Stops the run after batch `batch` of epoch `epoch` (or at the end of epoch `epoch` when
/// `batch` is None).
struct StopAt {
    epoch: usize,
    batch: Option<usize>,
    current: usize,
}

impl Observer for StopAt {
    fn epoch_started(&mut self, epoch: usize, _: usize, _: usize) {
        self.current = epoch;
    }
    fn batch_done(&mut self, batch: usize) -> ControlFlow<()> {
        if self.current == self.epoch && self.batch == Some(batch) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
    fn epoch_done(
        &mut self,
        report: &EpochReport,
        _: &Position,
        _: &mut dyn Backend,
    ) -> gpu_mlp::error::Result<ControlFlow<()>> {
        Ok(if report.epoch == self.epoch && self.batch.is_none() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }
}

/// Never stops.
struct Through;
impl Observer for Through {}

/// A backend of one device for a workload and initial parameters.
type MakeBackend = dyn for<'a> Fn(Workload<'a>, Vec<f32>) -> Box<dyn Backend + 'a>;

/// Trains 784-24-10 for 3 epochs uninterrupted, and again stopped at each of `stops` (epoch, and
/// batch or None for the epoch's end), saved to a checkpoint file, loaded into a fresh backend
/// and resumed: the weights must be the same bit for bit. With the whole toolbox on (Adam, L2,
/// dropout on the input and the hidden layer, standardised inputs, warm-up + cosine), so that
/// the optimiser's state, the dropout masks' step counter, the input statistics and a per-step
/// schedule must all survive the stop.
fn stopped_saved_loaded_and_resumed_is_bit_identical(
    device: &str,
    make: &MakeBackend,
    stops: &[(usize, Option<usize>)],
) {
    let spec = NetworkSpec {
        widths: vec![784, 24, 10],
        activation: Activation::Tanh,
        output: Output::Softmax,
        loss: Loss::Ce,
    };
    let train = MNIST.train.truncated(1500);
    let test = MNIST.test.truncated(200);
    let standardize = Standardization::of(&train);
    let work = Workload {
        test: Some(&test),
        l2: 1e-4,
        optimizer: Optimizer::new(OptimizerKind::Adam),
        dropout: Dropout {
            hidden: 0.3,
            input: 0.1,
            seed: 5,
        },
        standardize: Some(&standardize),
        ..Workload::training(&spec, &train, 32)
    };
    let schedule = Schedule {
        shape: LrSchedule::Cosine,
        warmup_epochs: 1,
        ..Schedule::constant(3, 0.003)
    };
    let mut rng = init::rng(5);
    let params = init::init_params(&spec.layout(), Init::Xavier, &mut rng);
    let start = Position::start(rng, train.len());

    let mut straight = make(work, params.clone());
    train::run(straight.as_mut(), &work, &schedule, start.clone(), &mut Through).unwrap();
    let want = straight.parameters().unwrap();

    let dir = TempDir::new().unwrap();
    for &(epoch, batch) in stops {
        let mut first = make(work, params.clone());
        let mut stop = StopAt {
            epoch,
            batch,
            current: 0,
        };
        let outcome = train::run(first.as_mut(), &work, &schedule, start.clone(), &mut stop).unwrap();
        assert!(outcome.stopped);
        let path = dir.path().join("stopped.safetensors");
        let optimizer = first.optimizer_state().unwrap();
        assert!(
            optimizer
                .buffers
                .iter()
                .all(|(_, values)| values.iter().any(|&v| v != 0.0)),
            "{device}: the optimiser's state was not read back"
        );
        let checkpoint = Checkpoint {
            model: Model {
                spec: spec.clone(),
                params: first.parameters().unwrap(),
                standardize: Some(standardize.clone()),
                info: ModelInfo::default(),
            },
            training: Some(TrainingState {
                settings: RunSettings {
                    device: device.into(),
                    ..settings()
                },
                position: outcome.position,
                optimizer,
            }),
        };
        checkpoint.save(&path).unwrap();
        let loaded = load(&path);
        let state = loaded.training.unwrap();
        assert_eq!(loaded.model.standardize.as_ref(), Some(&standardize));
        assert_eq!(state.optimizer.buffers.len(), 2, "Adam's two moments are in the file");
        assert_eq!(state.position.batches_done, batch.map_or(0, |b| b + 1));
        let mut second = make(work, loaded.model.params);
        second.set_optimizer_state(&state.optimizer).unwrap();
        train::run(second.as_mut(), &work, &schedule, state.position, &mut Through).unwrap();
        let got = second.parameters().unwrap();
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{device}: stopped at epoch {epoch} batch {batch:?}: {differ} parameters differ"
        );
    }
}

#[test]
fn cpu_stopped_mid_epoch_saved_loaded_and_resumed_is_bit_identical() {
    let make: &MakeBackend = &|work, params| Box::new(CpuBackend::new(work, params, 2).unwrap());
    stopped_saved_loaded_and_resumed_is_bit_identical("cpu", make, &[(2, Some(17)), (1, None), (1, Some(0))]);
}

/// The GPU stops only at an epoch's end (its epoch is one submit): after the first and after the
/// second of three. Adam's moments come back from the device into the file and go up again.
#[test]
fn gpu_stopped_saved_loaded_and_resumed_is_bit_identical() {
    let make: &MakeBackend =
        &|work, params| Box::new(GpuBackend::new(work, &params).expect("a GPU adapter (lavapipe will do)"));
    stopped_saved_loaded_and_resumed_is_bit_identical("gpu", make, &[(1, None), (2, None)]);
}

fn settings() -> RunSettings {
    RunSettings {
        epochs: 3,
        lr: 0.1,
        lr_decay: 0.5,
        lr_decay_every: 1,
        batch_size: 32,
        l2: 1e-4,
        seed: 5,
        threads: 2,
        init: "xavier".into(),
        dataset: "mnist".into(),
        data_dir: None,
        train_examples: Some(1500),
        validation: 0,
        test_examples: Some(200),
        data_crc32: 0,
        device: "cpu".into(),
        adapter: "cpu (2 threads)".into(),
        gpu_matmuls: None,
        optimizer: Optimizer::new(OptimizerKind::Adam),
        dropout: 0.3,
        input_dropout: 0.1,
        normalize: Normalize::Standardize,
        lr_schedule: LrSchedule::Cosine,
        warmup_epochs: 1,
    }
}

#[test]
fn resume_flags_that_contradict_the_checkpoint_are_errors_naming_both() {
    let path = arg(trained());
    fails(
        &["train", "--resume", path, "--lr", "0.1"],
        &["--lr 0.1", "--lr 0.3", path],
    );
    fails(
        &["train", "--resume", path, "--layers", "784,128,10"],
        &["--layers 784,128,10", "784,64,10", path],
    );
    fails(
        &["train", "--resume", path, "--loss", "mse"],
        &["--loss mse", "--loss ce"],
    );
    // A flag given at its default value still counts as given.
    fails(
        &[
            "train",
            "--resume",
            path,
            "--seed",
            "1",
            "--lr-decay",
            "1",
            "--batch-size",
            "10",
        ],
        &["--batch-size 10", "--batch-size 100"],
    );
    fails(
        &["train", "--resume", path, "--train-examples", "20000"],
        &["--train-examples 20000", "10000"],
    );
    fails(
        &["train", "--resume", path, "--epochs", "1"],
        &["--epochs 1", "2 epochs"],
    );
    fails(&["train", "--resume", path], &["finished its 2 epochs", "--epochs"]);
    let both = gpu_mlp(&["train", "--resume", path, "--init-from", path]);
    assert_eq!(both.status.code(), Some(1), "clap refuses --resume with --init-from");
    assert!(text(&both.stderr).contains("--init-from"));
    // Other training data.
    let dir = TempDir::new().unwrap();
    let other = data_dir_with_test(dir.path(), 100);
    fails(
        &["train", "--resume", path, "--epochs", "3", "--data-dir", arg(&other)],
        &["training data differs", path],
    );
}

#[test]
fn a_model_without_training_state_cannot_be_resumed_but_fine_tunes() {
    let dir = TempDir::new().unwrap();
    let model_only = dir.path().join("weights.safetensors");
    write_safetensors(
        &model_only,
        &nn_linear_tensors(&load(trained()).model),
        Some(metadata_of(trained())),
    );
    fails(
        &["train", "--resume", arg(&model_only)],
        &["without training state", "--init-from"],
    );
    // --init-from: the network from the file, training from its weights: the first epoch
    // starts where the saved model ended.
    let mut args = SMALL.to_vec();
    args.extend([
        "--train-examples",
        "10000",
        "--init-from",
        arg(&model_only),
        "--epochs",
        "1",
        "--json",
    ]);
    let out = ok(&args);
    let tuned = &json_lines(&out)[0];
    let before = TRAINED.epochs.last().unwrap();
    assert!(
        tuned["train_loss"].as_f64() < before["train_loss"].as_f64(),
        "fine-tuning starts from the trained weights: {tuned} vs {before}"
    );
    fails(
        &["train", "--init-from", arg(&model_only), "--layers", "784,32,10"],
        &["784,64,10", "784,32,10"],
    );
}

#[test]
fn confusion_after_training_is_evals_table() {
    let mut args = SMALL.to_vec();
    args.extend([
        "--train-examples",
        "2000",
        "--epochs",
        "1",
        "--confusion",
        "--test-examples",
        "1000",
    ]);
    let out = ok(&args);
    assert!(
        out.contains("confusion matrix (rows: true class, columns: predicted class)"),
        "{out}"
    );
    fails(
        &["--confusion", "--test-examples", "0", "--device", "cpu"],
        &["--confusion"],
    );
}

// --- predict ---------------------------------------------------------------------------------

/// Writes the first `n` test images as 28×28 grey PNG files; returns their paths.
fn test_pngs(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("test-{i:05}.png"));
            let image = image::GrayImage::from_raw(28, 28, MNIST.test.image(i).to_vec()).unwrap();
            image.save(&path).unwrap();
            path
        })
        .collect()
}

/// A data folder whose test set is the first `n` MNIST test images (and a small training set).
fn data_dir_with_test(dir: &Path, n: usize) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_idx_pair(&data, "train", &MNIST.train.truncated(100));
    common::write_idx_pair(&data, "t10k", &MNIST.test.truncated(n));
    data
}

/// `predict --json`'s predicted class per file.
fn predictions(args: &[&str]) -> Vec<usize> {
    json_lines(&ok(args))
        .iter()
        .map(|p| p["predicted"].as_u64().unwrap() as usize)
        .collect()
}

/// The test images written as PNG and read back through `predict --raw` give eval's confusion
/// matrix on the same images, to the example.
fn predict_reads_back_what_eval_sees(device: &str, n: usize) {
    let dir = TempDir::new().unwrap();
    let files = test_pngs(dir.path(), n);
    let data = data_dir_with_test(dir.path(), n);
    let eval = &json_lines(&ok(&[
        "eval",
        "--model",
        arg(trained()),
        "--data-dir",
        arg(&data),
        "--device",
        device,
        "--json",
    ]))[0];
    let want: Vec<Vec<u64>> = serde_json::from_value(eval["confusion"].clone()).unwrap();
    let mut args = vec![
        "predict",
        "--model",
        arg(trained()),
        "--raw",
        "--json",
        "--device",
        device,
    ];
    args.extend(files.iter().map(|f| arg(f)));
    let predicted = predictions(&args);
    assert_eq!(predicted.len(), n);
    let mut got = vec![vec![0u64; 10]; 10];
    for (i, &p) in predicted.iter().enumerate() {
        got[MNIST.test.labels[i] as usize][p] += 1;
    }
    assert_eq!(got, want, "predict's confusion matrix vs eval's ({device})");
}

#[test]
fn predict_raw_on_the_test_pngs_equals_eval_on_the_cpu() {
    predict_reads_back_what_eval_sees("cpu", 1000);
}

#[test]
fn predict_raw_on_the_test_pngs_equals_eval_on_the_gpu() {
    predict_reads_back_what_eval_sees("gpu", 300);
}

#[test]
fn preprocessing_mnist_digits_changes_few_predictions() {
    let dir = TempDir::new().unwrap();
    let n = 1000;
    let files = test_pngs(dir.path(), n);
    let run = |raw: bool| {
        let mut args = vec!["predict", "--model", arg(trained()), "--json", "--device", "cpu"];
        if raw {
            args.push("--raw");
        }
        args.extend(files.iter().map(|f| arg(f)));
        predictions(&args)
    };
    let (raw, prepared) = (run(true), run(false));
    let same = raw.iter().zip(&prepared).filter(|(a, b)| a == b).count();
    let right = |p: &[usize]| {
        p.iter()
            .enumerate()
            .filter(|&(i, &c)| MNIST.test.labels[i] as usize == c)
            .count()
    };
    println!(
        "preprocessing kept {same} of {n} predictions; accuracy raw {} / prepared {} of {n}",
        right(&raw),
        right(&prepared)
    );
    // MNIST digits are already cropped, scaled and centred: doing it again moves them by at most
    // a pixel and rescales by a few percent.
    assert!(same >= n * 99 / 100, "only {same} of {n} predictions unchanged");
}

/// Draws test digit `i` dark on a white `w`×`h` canvas, scaled `scale` times, at (`x`, `y`).
fn drawn_digit(i: usize, (w, h): (u32, u32), scale: u32, (x, y): (u32, u32)) -> image::RgbImage {
    let digit = image::GrayImage::from_raw(28, 28, MNIST.test.image(i).to_vec()).unwrap();
    let big = image::imageops::resize(&digit, 28 * scale, 28 * scale, image::imageops::FilterType::Triangle);
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (px, py, p) in big.enumerate_pixels() {
        let ink = 255 - p.0[0];
        canvas.put_pixel(x + px, y + py, image::Rgb([ink, ink, ink.saturating_add(20)]));
    }
    canvas
}

#[test]
fn a_large_off_centre_digit_on_white_is_recognised() {
    let dir = TempDir::new().unwrap();
    let n = 20;
    let mut files = Vec::new();
    for i in 0..n {
        let canvas = drawn_digit(i, (640, 400), 10, (20 + 17 * i as u32, 40 + 3 * i as u32));
        // PNG and JPEG, colour.
        let path = dir
            .path()
            .join(format!("digit-{i}.{}", if i % 2 == 0 { "png" } else { "jpg" }));
        canvas.save(&path).unwrap();
        files.push(path);
    }
    let mut args = vec!["predict", "--model", arg(trained()), "--json", "--device", "cpu"];
    args.extend(files.iter().map(|f| arg(f)));
    let predicted = predictions(&args);
    // The same digits as the model sees them in the test set.
    let mut args = vec![
        "predict",
        "--model",
        arg(trained()),
        "--json",
        "--device",
        "cpu",
        "--raw",
    ];
    let originals = test_pngs(dir.path(), n);
    args.extend(originals.iter().map(|f| arg(f)));
    let as_in_mnist = predictions(&args);
    let label = |i: usize| MNIST.test.labels[i] as usize;
    let known: Vec<usize> = (0..n).filter(|&i| as_in_mnist[i] == label(i)).collect();
    let recognised = known.iter().filter(|&&i| predicted[i] == label(i)).count();
    println!(
        "{recognised} of the {} digits the model reads right in the test set are read right drawn large \
         and off-centre ({} of {n} in all)",
        known.len(),
        (0..n).filter(|&i| predicted[i] == label(i)).count()
    );
    assert!(
        known.len() >= n - 3,
        "the model reads only {} of {n} test digits right",
        known.len()
    );
    assert_eq!(
        recognised,
        known.len(),
        "drawn large and off-centre: {predicted:?}, as in MNIST: {as_in_mnist:?}"
    );
    // The text output: file, digit, top 3.
    let out = ok(&["predict", "--model", arg(trained()), "--device", "cpu", arg(&files[0])]);
    assert!(out.starts_with(&format!("{}: 7  (7: ", files[0].display())), "{out}");
}

#[test]
fn the_readmes_example_digits_are_read_right() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/data/examples");
    let files = ["seven.png", "four.png", "one.png"].map(|f| format!("{examples}/{f}"));
    let mut args = vec!["predict", "--model", arg(trained()), "--json", "--device", "cpu"];
    args.extend(files.iter().map(String::as_str));
    assert_eq!(predictions(&args), vec![7, 4, 1]);
}

// --- bad files -------------------------------------------------------------------------------

type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The layers of `model` as (name, F32, shape, bytes).
fn nn_linear_tensors(model: &Model) -> Vec<Tensor> {
    model
        .tensors()
        .into_iter()
        .map(|(name, shape, values)| (name, Dtype::F32, shape, f32s(&values)))
        .collect()
}

fn metadata_of(path: &Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("train.") && !k.starts_with("optimizer"))
        .collect()
}

fn write_safetensors(path: &Path, tensors: &[Tensor], meta: Option<HashMap<String, String>>) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

/// `eval` on the file made of `tensors` and `meta` fails naming the file and the needles.
fn eval_fails(
    dir: &Path,
    name: &str,
    tensors: &[Tensor],
    meta: Option<HashMap<String, String>>,
    extra: &[&str],
    needles: &[&str],
) {
    let path = dir.join(name);
    write_safetensors(&path, tensors, meta);
    let mut args = vec!["eval", "--model", arg(&path), "--device", "cpu"];
    args.extend(extra);
    let mut needles = needles.to_vec();
    needles.push(arg(&path));
    fails(&args, &needles);
}

#[test]
fn broken_model_files_are_one_sentence_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let good = std::fs::read(trained()).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let eval = |path: &Path, needles: &[&str]| {
        let mut needles = needles.to_vec();
        needles.push(arg(path));
        fails(&["eval", "--model", arg(path), "--device", "cpu"], &needles);
    };
    eval(&d.join("missing.safetensors"), &["does not exist"]);
    eval(&write("empty.safetensors", b""), &["empty"]);
    eval(
        &write("text.safetensors", b"this is not a model at all"),
        &["not a safetensors"],
    );
    eval(&write("short.safetensors", b"abc"), &["too short"]);
    eval(
        &write("truncated.safetensors", &good[..good.len() - 100]),
        &["truncated"],
    );
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    eval(&write("header-too-long.safetensors", &long), &["header of", "only"]);
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(200_000_000u64).to_le_bytes());
    eval(&write("huge-header.safetensors", &huge), &["100 MB"]);
    let mut malformed = good.clone();
    malformed[8] = b'[';
    eval(&write("malformed.safetensors", &malformed), &["JSON"]);

    let model = load(trained()).model;
    let meta = metadata_of(trained());
    let layers = nn_linear_tensors(&model);
    let with = |f: &dyn Fn(&mut Vec<Tensor>)| {
        let mut t = layers.clone();
        f(&mut t);
        t
    };
    // Wrong dtype: float64 weights.
    let f64_weights = with(&|t| {
        let values: Vec<u8> = t[0]
            .3
            .chunks(4)
            .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) as f64).to_le_bytes())
            .collect();
        t[0] = (t[0].0.clone(), Dtype::F64, t[0].2.clone(), values);
    });
    eval_fails(
        d,
        "f64.safetensors",
        &f64_weights,
        Some(meta.clone()),
        &[],
        &["layers.0.weight", "F64", "F32"],
    );
    // A tensor's shape against the metadata.
    let narrow = with(&|t| {
        t[0] = (
            "layers.0.weight".into(),
            Dtype::F32,
            vec![32, 784],
            f32s(&vec![0.0; 32 * 784]),
        );
    });
    eval_fails(
        d,
        "shape.safetensors",
        &narrow,
        Some(meta.clone()),
        &[],
        &["layers.0.weight", "[32, 784]", "[64, 784]"],
    );
    // ... and against the flags, for a file without metadata.
    eval_fails(
        d,
        "flags.safetensors",
        &layers,
        None,
        &["--layers", "784,32,10", "--activation", "relu"],
        &["layers.0.weight", "[64, 784]", "[32, 784]"],
    );
    // Flags that contradict the metadata.
    eval_fails(
        d,
        "conflict.safetensors",
        &layers,
        Some(meta.clone()),
        &["--activation", "tanh"],
        &["--activation relu", "--activation tanh"],
    );
    // Missing and extra tensors.
    let missing = with(&|t| {
        t.retain(|x| x.0 != "layers.1.bias");
    });
    eval_fails(
        d,
        "missing.safetensors",
        &missing,
        Some(meta.clone()),
        &[],
        &["layers.1.bias"],
    );
    let extra = with(&|t| t.push(("head.weight".into(), Dtype::F32, vec![2], f32s(&[1.0, 2.0]))));
    eval_fails(
        d,
        "extra.safetensors",
        &extra,
        Some(meta.clone()),
        &[],
        &["head.weight"],
    );
    // NaN and infinite weights.
    for (name, bad) in [("nan.safetensors", f32::NAN), ("inf.safetensors", f32::INFINITY)] {
        let poisoned = with(&|t| {
            let mut values: Vec<f32> = t[2]
                .3
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            values[3 * 64 + 5] = bad;
            t[2].3 = f32s(&values);
        });
        eval_fails(
            d,
            name,
            &poisoned,
            Some(meta.clone()),
            &[],
            &["layers.1.weight[3, 5]", &bad.to_string()],
        );
    }
    // No metadata and no activation: say which flag is needed.
    eval_fails(d, "bare.safetensors", &layers, None, &[], &["--activation"]);
    // A model whose input width does not match the data.
    let small = vec![
        (
            "layers.0.weight".into(),
            Dtype::F32,
            vec![10, 100],
            f32s(&vec![0.1; 1000]),
        ),
        ("layers.0.bias".into(), Dtype::F32, vec![10], f32s(&[0.0; 10])),
    ];
    eval_fails(d, "inputs.safetensors", &small, None, &[], &["100 inputs", "784"]);
    fails(
        &[
            "predict",
            "--model",
            arg(&d.join("inputs.safetensors")),
            "--device",
            "cpu",
            arg(&test_pngs(d, 1)[0]),
        ],
        &["100 inputs", "784"],
    );
}

#[test]
fn a_file_saved_without_metadata_loads_with_the_flags() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("from-torch.safetensors");
    let model = load(trained()).model;
    // What safetensors.torch.save_file writes: the tensors and {"format": "pt"}.
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&path, &nn_linear_tensors(&model), Some(meta));
    let with_flags = &json_lines(&ok(&[
        "eval",
        "--model",
        arg(&path),
        "--activation",
        "relu",
        "--device",
        "cpu",
        "--json",
    ]))[0];
    let with_metadata = &json_lines(&ok(&["eval", "--model", arg(trained()), "--device", "cpu", "--json"]))[0];
    assert_eq!(with_flags["confusion"], with_metadata["confusion"]);
    let out = ok(&[
        "eval",
        "--model",
        arg(&path),
        "--layers",
        "784,64,10",
        "--activation",
        "relu",
        "--device",
        "cpu",
    ]);
    assert!(out.contains("no gpu-mlp metadata"), "{out}");
}

#[test]
fn bad_images_are_one_sentence_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let write = |name: &str, bytes: &[u8]| {
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let predict = |path: &Path, raw: bool, needles: &[&str]| {
        let mut needles = needles.to_vec();
        needles.push(arg(path));
        let mut args = vec!["predict", "--model", arg(trained()), "--device", "cpu", arg(path)];
        if raw {
            args.push("--raw");
        }
        fails(&args, &needles);
    };
    predict(&d.join("missing.png"), false, &["does not exist"]);
    predict(&write("empty.png", b""), false, &["empty"]);
    predict(
        &write("text.png", b"definitely not an image, just words"),
        false,
        &["not a PNG, JPEG, BMP or PGM"],
    );
    let mut png = Vec::new();
    image::GrayImage::from_pixel(40, 40, image::Luma([255]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    predict(&write("blank.png", &png), false, &["blank"]);
    let mut broken = png.clone();
    let n = broken.len();
    broken.truncate(n / 2);
    predict(&write("cut.png", &broken), false, &["cannot be decoded"]);
    predict(&write("zero.pgm", b"P5 0 0 255\n"), false, &["0"]);
    let mut strip = b"P5 1 20000 255\n".to_vec();
    strip.extend(vec![0u8; 20000]);
    predict(&write("strip.pgm", &strip), false, &["1×20000", "too small"]);
    predict(&write("big.png", &png), true, &["40×40", "--raw"]);
}

#[test]
fn atomic_save_never_leaves_a_partial_file_when_killed() {
    // The temporary file is written in slow pieces (a test hook); kill -9 while it is half
    // written; the earlier file at the path must be intact and load.
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::copy(trained(), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut child = command(&SMALL)
        .args(["--epochs", "1", "--train-examples", "500", "--save", arg(&path)])
        .env(gpu_mlp::model::SLOW_SAVE_ENV, "300")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let temp = loop {
        let found = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".tmp"));
        if let Some(entry) = found {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if size > 0 {
                break entry.path();
            }
        }
        assert!(started.elapsed().as_secs() < 60, "no temporary file appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(temp.exists(), "killed while the temporary file was being written");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the earlier file changed");
    assert_eq!(load(&path).model.params, load(trained()).model.params);
}
