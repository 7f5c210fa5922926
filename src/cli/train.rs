//! `gpu-mlp train` (the default command): its flags, each dataset's defaults, the checks that
//! turn flags into a [`Run`], and the run itself.

use super::keep::{self, Beginning, Keeper, RunProgress};
use super::{build_backend, check_fits, default_data_dir, open_device, threads_or_all, DeviceChoice, GpuKernels};
use crate::backend::{Backend, Split, Workload};
use crate::data::{self, Dataset, Normalize, Standardization};
use crate::dropout::Dropout;
use crate::error::{ConfigError, Error, Result, WidthsFlag};
use crate::evaluate;
use crate::gpu::tune::TuneMode;
use crate::init;
use crate::metrics_file::MetricsFile;
use crate::network::{parse_widths, Activation, Init, Loss, NetworkSpec, Output};
use crate::optim::{Optimizer, OptimizerKind};
use crate::plot::{self, Curves};
use crate::progress::{self, Progress};
use crate::report;
use crate::signals::StopSignal;
use crate::train::{self, EpochReport, LrSchedule, Observer, Position, Schedule};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    /// The MNIST digits (or any data in its IDX format, with --data-dir).
    Mnist,
    /// The four examples of XOR: the smallest problem a hidden layer is needed for.
    Xor,
}

/// A dataset's defaults: every flag of these that the user leaves out takes its value from here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    pub layers: &'static str,
    pub activation: Activation,
    pub init: Init,
    pub batch_size: usize,
    pub epochs: usize,
    pub lr: f32,
}

impl DatasetName {
    /// The defaults of each dataset, in one place.
    pub fn preset(self) -> Preset {
        match self {
            // 784-128-10 ReLU, He, lr 0.3: ≥ 97.5% test accuracy in 10 epochs.
            DatasetName::Mnist => Preset {
                layers: "784,128,10",
                activation: Activation::Relu,
                init: Init::He,
                batch_size: 100,
                epochs: 10,
                lr: 0.3,
            },
            // 2-8-2 tanh, full batch: learns XOR for every seed tried (1–20).
            DatasetName::Xor => Preset {
                layers: "2,8,2",
                activation: Activation::Tanh,
                init: Init::Xavier,
                batch_size: 4,
                epochs: 200,
                lr: 0.5,
            },
        }
    }
}

/// How a flag reads its default off a preset.
type PresetValue = fn(Preset) -> String;

/// The flags whose defaults depend on the dataset, and how each reads its value off a preset.
const PRESET_FLAGS: [(&str, PresetValue); 6] = [
    ("layers", |p| p.layers.to_string()),
    ("activation", |p| p.activation.to_string()),
    ("init", |p| p.init.to_string()),
    ("batch_size", |p| p.batch_size.to_string()),
    ("epochs", |p| p.epochs.to_string()),
    ("lr", |p| p.lr.to_string()),
];

/// Appends each dataset's default to the help of the flags a preset sets:
/// "Learning rate [default: 0.3; xor: 0.5]".
pub(super) fn document_presets(mut command: clap::Command) -> clap::Command {
    for (id, value) in PRESET_FLAGS {
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let defaults: Vec<String> = DatasetName::value_variants()
                .iter()
                .map(|dataset| {
                    let name = dataset.to_possible_value().expect("no skipped variants");
                    match dataset {
                        DatasetName::Mnist => value(dataset.preset()),
                        _ => format!("{}: {}", name.get_name(), value(dataset.preset())),
                    }
                })
                .collect();
            arg.help(format!("{help} [default: {}]", defaults.join("; ")))
        });
    }
    // The optimisers' hyper-parameters have one default each, on `Optimizer`.
    let defaults = Optimizer::SGD;
    for (id, value) in [
        ("momentum", defaults.momentum),
        ("beta1", defaults.beta1),
        ("beta2", defaults.beta2),
        ("eps", defaults.eps),
        ("weight_decay", defaults.weight_decay),
    ] {
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [default: {value:?}]"))
        });
    }
    command
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Which problem to train on.
    #[arg(long, value_enum, default_value_t = DatasetName::Mnist)]
    pub dataset: DatasetName,
    /// Folder with the four MNIST IDX files (.gz or raw) [default: data/mnist]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Hold out the last N training examples as a validation set.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub validation: usize,
    /// Train on the first N training examples only (quick runs).
    #[arg(long, value_name = "N")]
    pub train_examples: Option<usize>,
    /// Evaluate on the first N test examples only (0: no test evaluation).
    #[arg(long, value_name = "N")]
    pub test_examples: Option<usize>,
    /// Layer widths, input first, classes last
    #[arg(long, value_name = "WIDTHS")]
    pub layers: Option<String>,
    /// Hidden-layer activation
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// Output non-linearity.
    #[arg(long, value_enum, default_value_t = Output::Softmax)]
    pub output: Output,
    /// Loss: cross-entropy, or sum of squared errors against the one-hot target.
    #[arg(long, value_enum, default_value_t = Loss::Ce)]
    pub loss: Loss,
    /// Weight initialisation
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// Examples per SGD step: 1 is per-example SGD, the training-set size is full-batch descent
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Passes over the training set
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Learning rate
    // Negative numbers are taken as values (not flags) so that `--lr -1` gets the real reason.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Multiply the learning rate by this every --lr-decay-every epochs.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lr_decay: f32,
    /// Epochs between learning-rate decays.
    #[arg(long, value_name = "EPOCHS", default_value_t = 1)]
    pub lr_decay_every: usize,
    /// L2 weight decay λ (adds λ·W to the weights' gradient; biases are not decayed).
    #[arg(long, value_name = "LAMBDA", default_value_t = 0.0, allow_negative_numbers = true)]
    pub l2: f32,
    /// The update rule (formulas in the README; g is the gradient, + λθ with --l2).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Sgd)]
    pub optimizer: OptimizerKind,
    /// β of --optimizer momentum: v ← βv + (1−β)g, θ ← θ − lr·v (PyTorch's lr is ours × (1−β))
    #[arg(long, value_name = "BETA", allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// β₁ of --optimizer adam/adamw: m ← β₁m + (1−β₁)g
    #[arg(long, allow_negative_numbers = true)]
    pub beta1: Option<f32>,
    /// β₂ of --optimizer rmsprop/adam/adamw: s ← β₂s + (1−β₂)g²
    #[arg(long, allow_negative_numbers = true)]
    pub beta2: Option<f32>,
    /// ε of --optimizer rmsprop/adam/adamw: θ ← θ − lr·g/(√s + ε)
    #[arg(long, allow_negative_numbers = true)]
    pub eps: Option<f32>,
    /// Decoupled weight decay of --optimizer adamw: θ ← θ − lr·wd·θ for weights
    #[arg(long, value_name = "WD", allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Inverted dropout on every hidden layer in training: drop each unit with probability P,
    /// scale the rest by 1/(1−P).
    #[arg(long, value_name = "P", default_value_t = 0.0, allow_negative_numbers = true)]
    pub dropout: f32,
    /// Inverted dropout on the input pixels in training.
    #[arg(long, value_name = "P", default_value_t = 0.0, allow_negative_numbers = true)]
    pub input_dropout: f32,
    /// How pixels become inputs.
    #[arg(long, value_enum, default_value_t = Normalize::Scale)]
    pub normalize: Normalize,
    /// The learning rate's shape over the run [default: step with --lr-decay, else constant]
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// Ramp the learning rate up linearly, step by step, over the first N epochs.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Seed for the weights and the shuffles: the same seed gives the same weights, bit for bit.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// CPU threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object per epoch on stdout instead of the text table.
    #[arg(long)]
    pub json: bool,
    /// Show the learning rate and, on the GPU, dispatches / submits / readbacks per epoch; and
    /// wgpu's log lines on stderr (RUST_LOG chooses them too).
    #[arg(long, short)]
    pub verbose: bool,
    /// No progress bar. (The bar shows only when stderr is a terminal, never with --json; the
    /// epoch lines print either way: they are the run's record.)
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write each epoch to FILE as the run goes (flushed each epoch): CSV with a header row
    /// if FILE ends in .csv, else one JSON object per line, with the keys of --json.
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
    /// At the end, draw accuracy and loss against the epoch to FILE (.png or .svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// List the GPU adapters wgpu can see, with the matmul variants tuned for each, and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// How the GPU picks its matmul kernels: `cached` uses the choice remembered for this adapter
    /// (timing the variants once, at the first run), `fresh` times them again, `off` uses the
    /// default. A resumed run uses the kernels its checkpoint records.
    #[arg(long, value_enum, default_value_t = TuneMode::Cached)]
    pub tune: TuneMode,
    /// Write the model, a checkpoint (weights and training state, safetensors), to PATH when
    /// training ends or is stopped (Ctrl-C).
    #[arg(long, value_name = "PATH")]
    pub save: Option<PathBuf>,
    /// Also write it every N epochs.
    #[arg(long, value_name = "N", requires = "save")]
    pub save_every: Option<usize>,
    /// Continue the run a checkpoint holds, exactly: its settings come from the file (--epochs N
    /// sets a new total).
    #[arg(long, value_name = "PATH", conflicts_with = "init_from")]
    pub resume: Option<PathBuf>,
    /// Start from the weights of a saved model (fine-tuning); the network comes from the file.
    #[arg(long, value_name = "PATH")]
    pub init_from: Option<PathBuf>,
    /// Print the test set's confusion matrix when training ends (the table `eval` prints).
    #[arg(long)]
    pub confusion: bool,
    /// The ids of the flags given on the command line (set by [`super::Cli::try_parse_args`]):
    /// how `--resume` tells a flag given from a default.
    #[arg(skip)]
    pub given: Vec<String>,
}

impl TrainArgs {
    /// True when flag `id` (its field name, like `lr_decay`) was given on the command line.
    pub fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }
}

/// A run, checked: everything `train` needs.
pub struct Run {
    pub spec: NetworkSpec,
    pub init: Init,
    pub schedule: Schedule,
    pub batch_size: usize,
    pub l2: f32,
    pub optimizer: Optimizer,
    pub dropout: Dropout,
    /// The training set's statistics, with --normalize standardize.
    pub standardize: Option<Standardization>,
    pub seed: u64,
    pub threads: usize,
    pub device: DeviceChoice,
    pub train: Dataset,
    pub validation: Option<Dataset>,
    pub test: Option<Dataset>,
    pub dataset_name: String,
}

impl Run {
    pub fn workload(&self) -> Workload<'_> {
        Workload {
            spec: &self.spec,
            train: &self.train,
            validation: self.validation.as_ref(),
            test: self.test.as_ref(),
            batch_size: self.batch_size,
            l2: self.l2,
            optimizer: self.optimizer,
            dropout: self.dropout,
            standardize: self.standardize.as_ref(),
        }
    }
}

/// The data a run trains and is tested on, and how it is named in the header.
struct LoadedData {
    train: Dataset,
    test: Option<Dataset>,
    name: String,
}

impl TrainArgs {
    /// Checks every setting and loads the data.
    pub fn resolve(&self) -> Result<Run> {
        let preset = self.dataset.preset();
        let layers = self.layers.as_deref().unwrap_or(preset.layers);
        let spec = NetworkSpec {
            widths: parse_widths(WidthsFlag::Layers, layers)?,
            activation: self.activation.unwrap_or(preset.activation),
            output: self.output,
            loss: self.loss,
        };
        let schedule = self.schedule(&preset)?;
        let batch_size = self.batch_size.unwrap_or(preset.batch_size);
        let threads = threads_or_all(self.threads);
        check_settings(&schedule, batch_size, self.l2, threads)?;
        let optimizer = self.optimizer()?;
        let dropout = self.dropout_settings()?;

        let LoadedData { mut train, test, name } = self.load_data()?;
        if let Some(n) = self.train_examples {
            if n == 0 {
                return Err(ConfigError::ZeroTrainExamples.into());
            }
            train = train.truncated(n);
        }
        // --test-examples 0 skips the test evaluation.
        let test = match self.test_examples {
            Some(0) => None,
            Some(n) => test.map(|t| t.truncated(n)),
            None => test,
        };
        let validation = match self.validation {
            0 => None,
            n => Some(
                train
                    .split_off_validation(n)
                    .map_err(|_| ConfigError::ValidationTooLarge {
                        requested: n,
                        examples: train.len(),
                    })?,
            ),
        };
        spec.check(WidthsFlag::Layers, train.features, train.classes)?;
        // Statistics of the data trained on, applied alike to every split.
        let standardize = (self.normalize == Normalize::Standardize).then(|| Standardization::of(&train));
        if batch_size > train.len() {
            return Err(ConfigError::BatchTooLarge {
                batch: batch_size,
                examples: train.len(),
            }
            .into());
        }
        Ok(Run {
            spec,
            init: self.init.unwrap_or(preset.init),
            schedule,
            batch_size,
            l2: self.l2,
            optimizer,
            dropout,
            standardize,
            seed: self.seed,
            threads,
            device: self.device,
            train,
            validation,
            test,
            dataset_name: name,
        })
    }

    /// The learning-rate schedule the flags describe.
    fn schedule(&self, preset: &Preset) -> Result<Schedule, ConfigError> {
        let decays = self.lr_decay != 1.0 || self.lr_decay_every != 1;
        let shape = match self.lr_schedule {
            None if decays => LrSchedule::Step,
            None => LrSchedule::Constant,
            Some(LrSchedule::Step) => LrSchedule::Step,
            Some(other) if decays => {
                return Err(ConfigError::DecayWithoutStep { schedule: other });
            }
            Some(other) => other,
        };
        let schedule = Schedule {
            epochs: self.epochs.unwrap_or(preset.epochs),
            lr: self.lr.unwrap_or(preset.lr),
            shape,
            lr_decay: self.lr_decay,
            lr_decay_every: self.lr_decay_every,
            warmup_epochs: self.warmup_epochs,
        };
        if schedule.warmup_epochs > 0 && schedule.warmup_epochs >= schedule.epochs {
            return Err(ConfigError::WarmupTooLong {
                warmup: schedule.warmup_epochs,
                epochs: schedule.epochs,
            });
        }
        Ok(schedule)
    }

    /// The optimiser the flags describe; a hyper-parameter the rule does not use is an error,
    /// so a typo'd run never silently trains with something else.
    fn optimizer(&self) -> Result<Optimizer, ConfigError> {
        use OptimizerKind::*;
        let kind = self.optimizer;
        let given: [(&'static str, Option<f32>, &[OptimizerKind]); 5] = [
            ("--momentum", self.momentum, &[Momentum]),
            ("--beta1", self.beta1, &[Adam, Adamw]),
            ("--beta2", self.beta2, &[Rmsprop, Adam, Adamw]),
            ("--eps", self.eps, &[Rmsprop, Adam, Adamw]),
            ("--weight-decay", self.weight_decay, &[Adamw]),
        ];
        for (flag, value, users) in given {
            if value.is_some() && !users.contains(&kind) {
                let users: Vec<String> = users.iter().map(|k| k.to_string()).collect();
                return Err(ConfigError::UnusedOptimizerFlag {
                    flag,
                    optimizer: kind,
                    users: users.join(" or "),
                });
            }
        }
        let defaults = Optimizer::new(kind);
        let optimizer = Optimizer {
            kind,
            momentum: self.momentum.unwrap_or(defaults.momentum),
            beta1: self.beta1.unwrap_or(defaults.beta1),
            beta2: self.beta2.unwrap_or(defaults.beta2),
            eps: self.eps.unwrap_or(defaults.eps),
            weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
        };
        for (flag, beta) in [
            ("--momentum", optimizer.momentum),
            ("--beta1", optimizer.beta1),
            ("--beta2", optimizer.beta2),
        ] {
            if !(0.0..1.0).contains(&beta) {
                return Err(ConfigError::BadBeta { flag, value: beta });
            }
        }
        if !(optimizer.eps.is_finite() && optimizer.eps > 0.0) {
            return Err(ConfigError::BadEps(optimizer.eps));
        }
        if !(optimizer.weight_decay.is_finite() && optimizer.weight_decay >= 0.0) {
            return Err(ConfigError::BadWeightDecay(optimizer.weight_decay));
        }
        Ok(optimizer)
    }

    /// The dropout the flags describe: probabilities in [0, 1).
    fn dropout_settings(&self) -> Result<Dropout, ConfigError> {
        for (flag, p) in [("--dropout", self.dropout), ("--input-dropout", self.input_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(ConfigError::BadDropout { flag, value: p });
            }
        }
        Ok(Dropout {
            hidden: self.dropout,
            input: self.input_dropout,
            seed: self.seed,
        })
    }

    fn load_data(&self) -> Result<LoadedData> {
        match self.dataset {
            DatasetName::Xor => {
                if self.validation > 0 || self.data_dir.is_some() {
                    return Err(ConfigError::XorOptions.into());
                }
                // XOR has no held-out data: the four examples are the test too.
                Ok(LoadedData {
                    train: data::xor(),
                    test: Some(data::xor()),
                    name: "XOR".to_string(),
                })
            }
            DatasetName::Mnist => {
                let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
                let mnist = data::load_mnist(&dir)?;
                Ok(LoadedData {
                    train: mnist.train,
                    test: Some(mnist.test),
                    name: format!("MNIST ({})", dir.display()),
                })
            }
        }
    }
}

/// The settings that are wrong whatever the data.
pub(super) fn check_settings(
    schedule: &Schedule,
    batch_size: usize,
    l2: f32,
    threads: usize,
) -> Result<(), ConfigError> {
    if batch_size == 0 {
        return Err(ConfigError::ZeroBatch);
    }
    if !(schedule.lr.is_finite() && schedule.lr > 0.0) {
        return Err(ConfigError::BadLearningRate(schedule.lr));
    }
    if !(schedule.lr_decay > 0.0 && schedule.lr_decay <= 1.0) {
        return Err(ConfigError::BadDecay(schedule.lr_decay));
    }
    if schedule.lr_decay_every == 0 {
        return Err(ConfigError::ZeroDecayEvery);
    }
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(ConfigError::BadL2(l2));
    }
    // Each step multiplies the weights by (1 - lr·l2) before the gradient: from lr·l2 = 2 on,
    // that factor is -1 or beyond and the weights can only grow.
    if schedule.lr * l2 >= 2.0 {
        return Err(ConfigError::L2TooLarge { l2, lr: schedule.lr });
    }
    if schedule.epochs == 0 {
        return Err(ConfigError::ZeroEpochs);
    }
    if threads == 0 {
        return Err(ConfigError::ZeroThreads);
    }
    Ok(())
}

/// What a training run shows: one line (or JSON object) per epoch on stdout, a progress bar on
/// stderr while an epoch trains, and each epoch in the metrics file.
struct Printer {
    json: bool,
    verbose: bool,
    progress: Option<Progress>,
    metrics: Option<MetricsFile>,
}

impl Observer for Printer {
    fn epoch_started(&mut self, epoch: usize, first: usize, batches: usize) {
        if let Some(progress) = &mut self.progress {
            progress.epoch_started(epoch, first, batches);
        }
    }

    fn batch_done(&mut self, batch: usize) -> ControlFlow<()> {
        if let Some(progress) = &mut self.progress {
            progress.batch_done(batch);
        }
        ControlFlow::Continue(())
    }

    fn epoch_done(&mut self, report: &EpochReport, _: &Position, _: &mut dyn Backend) -> Result<ControlFlow<()>> {
        // The bar goes before the line is printed: the lines are never garbled.
        if let Some(progress) = &mut self.progress {
            progress.epoch_done(report.epoch, report.seconds);
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.write(report)?;
        }
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(report).expect("a report always serialises")
            )?;
        } else {
            writeln!(out, "{}", report::human_line(report, self.verbose))?;
        }
        out.flush()?;
        Ok(ControlFlow::Continue(()))
    }
}

/// The header's note of the settings that are on: ", dropout 0.5, standardised inputs".
fn extras(run: &Run) -> String {
    let mut extras = String::new();
    if run.schedule.warmup_epochs > 0 {
        extras += &format!(", {} warm-up epochs", run.schedule.warmup_epochs);
    }
    if run.l2 > 0.0 {
        extras += &format!(", l2 {}", run.l2);
    }
    if run.dropout.hidden > 0.0 {
        extras += &format!(", dropout {}", run.dropout.hidden);
    }
    if run.dropout.input > 0.0 {
        extras += &format!(", input dropout {}", run.dropout.input);
    }
    if run.standardize.is_some() {
        extras += ", standardised inputs";
    }
    extras
}

/// `gpu-mlp train`: trains and prints each epoch; keeps the model (`--save`), resumes
/// (`--resume`), fine-tunes (`--init-from`), and stops cleanly on Ctrl-C or SIGTERM.
pub fn train_command(args: &TrainArgs) -> Result<()> {
    if args.list_devices {
        return super::list_devices();
    }
    if args.save_every == Some(0) {
        return Err(ConfigError::ZeroSaveEvery.into());
    }
    let beginning = Beginning::from_args(args)?;
    let args = &beginning.args;
    let run = args.resolve().map_err(|e| beginning.explain(e, data::MNIST_PIXELS))?;
    if args.confusion && run.test.is_none() {
        return Err(ConfigError::ConfusionWithoutTest.into());
    }
    // The files a run writes are checked before it spends any time.
    let metrics = args.metrics_out.as_deref().map(MetricsFile::create).transpose()?;
    if let Some(path) = &args.plot {
        plot::check_path(path)?;
    }
    let work = run.workload();
    let started = Instant::now();
    let device = open_device(run.device)?;
    check_fits(&device, &work, WidthsFlag::Layers, run.threads)?;
    let mut rng = init::rng(run.seed);
    let params = match &beginning.params {
        Some(params) => params.clone(),
        None => init::init_params(&run.spec.layout(), run.init, &mut rng),
    };
    let start = beginning
        .position(&run)?
        .unwrap_or_else(|| Position::start(rng, run.train.len()));
    // From here on a signal stops the run at its next consistent point instead of killing it.
    // What it says goes around the progress bar, never through it.
    let bar = progress::SharedBar::default();
    let run_progress = Arc::new(Mutex::new(RunProgress {
        save: args.save.clone(),
        ..RunProgress::default()
    }));
    let (watched, watched_bar) = (Arc::clone(&run_progress), bar.clone());
    let stop = StopSignal::install(move |signal| {
        let progress = watched.lock().expect("progress");
        watched_bar.suspend(|| eprintln!("{}", keep::announce(&progress, signal)));
    })?;
    let kernels = match beginning.recorded_matmuls() {
        Some(plan) if !args.given("tune") => GpuKernels::Recorded(plan),
        _ => GpuKernels::Tune(args.tune),
    };
    let mut backend = build_backend(device, work, params, run.threads, &kernels)?;
    if let Some(state) = beginning.optimizer() {
        backend.set_optimizer_state(state)?;
    }
    run_progress.lock().expect("progress").steps_each_batch = backend.steps_each_batch();
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "gpu-mlp: {} ({} hidden, {} output, {} loss, {} init) on {}: {} train, {} validation, {} test",
            run.spec.name(),
            run.spec.activation,
            run.spec.output,
            run.spec.loss,
            run.init,
            run.dataset_name,
            run.train.len(),
            run.validation.as_ref().map_or(0, |d| d.len()),
            run.test.as_ref().map_or(0, |d| d.len()),
        )?;
        writeln!(
            out,
            "device {} ({}); batch {}, {} lr {} ({}), {} epochs, seed {}{}",
            backend.device(),
            backend.adapter(),
            run.batch_size,
            run.optimizer.kind,
            run.schedule.lr,
            run.schedule.shape,
            run.schedule.epochs,
            run.seed,
            extras(&run),
        )?;
        if let Some((path, _)) = &beginning.resumed {
            writeln!(
                out,
                "resuming {} from {}",
                keep::where_stopped(&start, run.schedule.epochs, work.batches()),
                path.display()
            )?;
        } else if let Some(path) = &beginning.from_file {
            writeln!(out, "starting from the weights of {}", path.display())?;
        }
    }
    drop(out);
    if let Some((_, state)) = &beginning.resumed {
        let (device, adapter) = (backend.device(), backend.adapter());
        if state.settings.device != device || state.settings.adapter != adapter {
            eprintln!(
                "note: the checkpoint was trained on {} ({}); resuming on {device} ({adapter}) continues the run, \
                 but not bit for bit",
                state.settings.device, state.settings.adapter
            );
        }
    }
    let settings = keep::settings_of(&run, args, backend.as_ref());
    let mut printer = Printer {
        json: args.json,
        verbose: args.verbose,
        progress: (!args.json && !args.quiet && progress::wanted())
            .then(|| Progress::new(bar, backend.steps_each_batch(), run.schedule.epochs)),
        metrics,
    };
    let mut keeper = Keeper {
        inner: &mut printer,
        save: args.save.clone(),
        every: args.save_every,
        stop: &stop,
        progress: run_progress,
        spec: run.spec.clone(),
        standardize: run.standardize.clone(),
        settings,
        test_accuracy: beginning.test_accuracy,
        saved_at: None,
    };
    let outcome = train::run(backend.as_mut(), &work, &run.schedule, start, &mut keeper)?;
    keeper.write(&outcome.position, backend.as_mut())?;
    drop(keeper);
    // The bar goes before anything else is printed.
    drop(printer);
    if let Some(path) = &args.plot {
        let title = format!(
            "{} {}, {} output, {} loss · batch {}, {} lr {} · {} · {}",
            run.spec.name(),
            run.spec.activation,
            run.spec.output,
            run.spec.loss,
            run.batch_size,
            run.optimizer.kind,
            run.schedule.lr,
            run.dataset_name.split(" (").next().unwrap_or_default(),
            backend.adapter()
        );
        plot::draw(&[Curves::from_reports("", &outcome.reports)], &title, path)?;
    }
    if let Some(signal) = stop.requested() {
        let position = &outcome.position;
        let mut message = format!(
            "gpu-mlp: stopped by {} {}",
            signal.name,
            keep::where_stopped(position, run.schedule.epochs, work.batches())
        );
        match (&args.save, outcome.stopped) {
            (Some(path), true) => {
                message += &format!(
                    "; checkpoint written to {}\nresume with: {}",
                    path.display(),
                    keep::resume_command(path, args.save_every)
                )
            }
            (Some(path), false) => message += &format!(" (the run is complete); model written to {}", path.display()),
            (None, _) => message += "; nothing was saved (no --save was given)",
        }
        eprintln!("{message}");
        return Err(Error::Interrupted {
            signal: signal.name,
            code: signal.code,
        });
    }
    if args.confusion {
        let logits = backend.logits(Split::Test)?;
        let test = run.test.as_ref().expect("checked above");
        let evaluation = evaluate::evaluate(&run.spec, &logits, &test.labels);
        let mut out = std::io::stdout().lock();
        if args.json {
            let json = serde_json::json!({ "confusion": evaluation });
            writeln!(out, "{json}")?;
        } else {
            write!(out, "\ntest set after the last epoch:\n{}", evaluation.table())?;
        }
    }
    if let Some(path) = &args.save {
        eprintln!("model written to {}", path.display());
    }
    if !args.json {
        let (which, accuracy) = match outcome.reports.last() {
            Some(last) => match (last.test_accuracy, last.validation_accuracy) {
                (Some(test), _) => ("test", test),
                (None, Some(validation)) => ("validation", validation),
                (None, None) => ("train", last.train_accuracy),
            },
            None => ("train", 0.0),
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "done: {which} accuracy {:.2}% after {} epochs in {:.1} s",
            100.0 * accuracy,
            outcome.position.epochs_done,
            started.elapsed().as_secs_f64()
        )?;
        if let Some(metrics) = &args.metrics_out {
            writeln!(out, "metrics: {}", metrics.display())?;
        }
        if let Some(plot) = &args.plot {
            writeln!(out, "plot: {}", plot.display())?;
        }
    }
    Ok(())
}
