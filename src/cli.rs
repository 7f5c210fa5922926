//! The command line: `gpu-mlp [train] [OPTIONS]` (train is the default) and `gpu-mlp bench`.
//! Turns flags into a checked run, runs it, prints the epochs.

use crate::backend::{Backend, Workload};
use crate::bench;
use crate::cpu::CpuBackend;
use crate::data::{self, Dataset};
use crate::error::{ConfigError, GpuError, Result};
use crate::gpu::context::{self, AdapterKind, GpuContext};
use crate::gpu::oneshot::KernelRunner;
use crate::gpu::GpuBackend;
use crate::init;
use crate::network::{parse_widths, Activation, Init, Loss, NetworkSpec, Output};
use crate::report;
use crate::train::{self, EpochReport, Schedule};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "gpu-mlp",
    version,
    about = "Train multilayer perceptrons on MNIST, on the GPU (wgpu) or the CPU",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a network (the default when no subcommand is given).
    Train(TrainArgs),
    /// Time whole training epochs of the reference networks and print a table.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which devices to time.
    #[arg(long, value_enum, default_value_t = BenchDevice::All)]
    pub device: BenchDevice,
    /// Networks to time, as dash-separated widths, comma-separated.
    #[arg(long, default_value = "784-64-10,784-128-10,784-512-512-10")]
    pub networks: String,
    /// Examples per SGD step.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Timed epochs per network (after one warm-up epoch); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// CPU threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Folder with the MNIST IDX files [default: data/mnist]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// One JSON object per row instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchDevice {
    Cpu,
    Gpu,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    /// The MNIST digits (or any data in its IDX format, with --data-dir).
    Mnist,
    /// The four examples of XOR: the smallest problem a hidden layer is needed for.
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU.
    Auto,
    Cpu,
    Gpu,
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
    /// Evaluate on the first N test examples only.
    #[arg(long, value_name = "N")]
    pub test_examples: Option<usize>,
    /// Layer widths, input first, classes last [default: 784,128,10; xor: 2,8,2]
    #[arg(long, value_name = "WIDTHS")]
    pub layers: Option<String>,
    /// Hidden-layer activation [default: relu; xor: tanh]
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// Output non-linearity.
    #[arg(long, value_enum, default_value_t = Output::Softmax)]
    pub output: Output,
    /// Loss: cross-entropy, or sum of squared errors against the one-hot target.
    #[arg(long, value_enum, default_value_t = Loss::Ce)]
    pub loss: Loss,
    /// Weight initialisation [default: he; xor: xavier]
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    /// Examples per SGD step: 1 is per-example SGD, the training-set size is full-batch descent [default: 100; xor: 4]
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Passes over the training set [default: 10; xor: 200]
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Learning rate [default: 0.3; xor: 0.5]
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
    /// Seed for the weights and the shuffles: the same seed gives the same weights, bit for bit.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// CPU threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object per epoch on stdout instead of the text table.
    #[arg(long)]
    pub json: bool,
    /// Show the learning rate and, on the GPU, dispatches / submits / readbacks per epoch.
    #[arg(long, short)]
    pub verbose: bool,
    /// List the GPU adapters wgpu can see, and exit.
    #[arg(long)]
    pub list_devices: bool,
}

/// A run, checked: everything `train` needs.
pub struct Run {
    pub spec: NetworkSpec,
    pub init: Init,
    pub schedule: Schedule,
    pub batch_size: usize,
    pub l2: f32,
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
        }
    }
}

/// The folder the MNIST files are read from when --data-dir is not given: `data/mnist` under
/// the current folder, else the one in this crate's checkout.
fn default_data_dir() -> PathBuf {
    let local = PathBuf::from("data/mnist");
    if local.is_dir() {
        local
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))
    }
}

impl TrainArgs {
    /// Checks every setting and loads the data.
    pub fn resolve(&self) -> Result<Run> {
        let xor = self.dataset == DatasetName::Xor;
        // MNIST's default, or XOR's.
        fn pick<T>(xor: bool, mnist: T, xor_value: T) -> T {
            if xor {
                xor_value
            } else {
                mnist
            }
        }
        let layers = self
            .layers
            .clone()
            .unwrap_or_else(|| pick(xor, "784,128,10", "2,8,2").to_string());
        let spec = NetworkSpec {
            widths: parse_widths(&layers)?,
            activation: self.activation.unwrap_or(pick(xor, Activation::Relu, Activation::Tanh)),
            output: self.output,
            loss: self.loss,
        };
        let schedule = Schedule {
            epochs: self.epochs.unwrap_or(pick(xor, 10, 200)),
            lr: self.lr.unwrap_or(pick(xor, 0.3, 0.5)),
            lr_decay: self.lr_decay,
            lr_decay_every: self.lr_decay_every,
        };
        let batch_size = self.batch_size.unwrap_or(pick(xor, 100, 4));
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        check_settings(&schedule, batch_size, self.l2, threads)?;

        let (mut train, test, dataset_name) = if xor {
            if self.validation > 0 || self.data_dir.is_some() {
                return Err(ConfigError::XorOptions.into());
            }
            // XOR has no held-out data: the four examples are the test too.
            (data::xor(), Some(data::xor()), "XOR".to_string())
        } else {
            let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
            let mnist = data::load_mnist(&dir)?;
            (mnist.train, Some(mnist.test), format!("MNIST ({})", dir.display()))
        };
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
        spec.check(train.features, train.classes)?;
        if batch_size > train.len() {
            return Err(ConfigError::BatchTooLarge {
                batch: batch_size,
                examples: train.len(),
            }
            .into());
        }
        Ok(Run {
            spec,
            init: self.init.unwrap_or(pick(xor, Init::He, Init::Xavier)),
            schedule,
            batch_size,
            l2: self.l2,
            seed: self.seed,
            threads,
            device: self.device,
            train,
            validation,
            test,
            dataset_name,
        })
    }
}

/// The settings that are wrong whatever the data.
fn check_settings(schedule: &Schedule, batch_size: usize, l2: f32, threads: usize) -> Result<(), ConfigError> {
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
    if schedule.epochs == 0 {
        return Err(ConfigError::ZeroEpochs);
    }
    if threads == 0 {
        return Err(ConfigError::ZeroThreads);
    }
    Ok(())
}

/// Makes the backend the run asked for. `--device auto` takes a hardware GPU if there is one,
/// else the CPU; `--device gpu` falls back to a software adapter, saying so on stderr.
pub fn make_backend<'a>(run: &'a Run, params: Vec<f32>) -> Result<Box<dyn Backend + 'a>> {
    let use_gpu = match run.device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Gpu => true,
        DeviceChoice::Auto => context::has_hardware_gpu(),
    };
    if !use_gpu {
        return Ok(Box::new(CpuBackend::new(run.workload(), params, run.threads)?));
    }
    let ctx = GpuContext::new()?;
    if ctx.kind == AdapterKind::Software {
        eprintln!(
            "note: no hardware GPU found; running the GPU kernels on the software adapter {} (slow; for testing)",
            ctx.adapter_name()
        );
    }
    Ok(Box::new(GpuBackend::with_context(ctx, run.workload(), &params)?))
}

/// `--list-devices`: every adapter wgpu can see.
pub fn list_devices() -> Result<()> {
    let mut out = std::io::stdout().lock();
    let adapters = context::list_adapters();
    if adapters.is_empty() {
        writeln!(out, "no GPU adapters found ({})", GpuError::NoAdapter)?;
    }
    for a in adapters {
        let kind = match a.kind {
            AdapterKind::Hardware => "hardware",
            AdapterKind::Software => "software",
        };
        writeln!(
            out,
            "{}  [{}, {}, {kind}]  {}",
            a.name, a.backend, a.device_type, a.driver
        )?;
    }
    writeln!(
        out,
        "cpu  [{} threads]",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )?;
    Ok(())
}

/// `gpu-mlp train`: trains and prints each epoch.
pub fn train_command(args: &TrainArgs) -> Result<()> {
    if args.list_devices {
        return list_devices();
    }
    let run = args.resolve()?;
    let work = run.workload();
    let mut rng = init::rng(run.seed);
    let params = init::init_params(&run.spec.layout(), run.init, &mut rng);
    let started = Instant::now();
    let mut backend = make_backend(&run, params)?;
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
            "device {} ({}); batch {}, lr {}, {} epochs, seed {}",
            backend.device(),
            backend.adapter(),
            run.batch_size,
            run.schedule.lr,
            run.schedule.epochs,
            run.seed
        )?;
    }
    let verbose = args.verbose;
    let json = args.json;
    let reports = train::train(
        backend.as_mut(),
        &work,
        &run.schedule,
        &mut rng,
        |report: &EpochReport| {
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(report).expect("a report always serialises")
                )?;
            } else {
                writeln!(out, "{}", report::human_line(report, verbose))?;
            }
            out.flush()?;
            Ok(())
        },
    )?;
    if !json {
        let last = reports.last().expect("at least one epoch");
        let (which, accuracy) = match (last.test_accuracy, last.validation_accuracy) {
            (Some(test), _) => ("test", test),
            (None, Some(validation)) => ("validation", validation),
            (None, None) => ("train", last.train_accuracy),
        };
        writeln!(
            out,
            "done: {which} accuracy {:.2}% after {} epochs in {:.1} s",
            100.0 * accuracy,
            reports.len(),
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Train(args)) => train_command(&args),
        Some(Command::Bench(args)) => bench_command(&args),
        None => train_command(&cli.train),
    }
}

/// Builds a backend for a workload, from initial weights.
type MakeBackend<'c> = dyn for<'w> Fn(Workload<'w>, Vec<f32>) -> Result<Box<dyn Backend + 'w>> + 'c;

/// `gpu-mlp bench`: the epoch-time table.
pub fn bench_command(args: &BenchArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    check_settings(
        &Schedule {
            epochs: args.epochs,
            lr: 0.1,
            lr_decay: 1.0,
            lr_decay_every: 1,
        },
        args.batch_size,
        0.0,
        threads,
    )?;
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let train = data::load_mnist(&dir)?.train;
    if args.batch_size > train.len() {
        return Err(ConfigError::BatchTooLarge {
            batch: args.batch_size,
            examples: train.len(),
        }
        .into());
    }
    let specs: Vec<NetworkSpec> = args
        .networks
        .split(',')
        .map(|name| {
            let spec = NetworkSpec {
                widths: parse_widths(name)?,
                activation: Activation::Relu,
                output: Output::Softmax,
                loss: Loss::Ce,
            };
            spec.check(train.features, train.classes)?;
            Ok(spec)
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    let mut out = std::io::stdout().lock();
    // Times every network on one device: `make` builds its backend from a workload and weights.
    let mut bench_device = |out: &mut std::io::StdoutLock, ceiling: f64, make: &MakeBackend<'_>| -> Result<()> {
        for spec in &specs {
            let params = init::init_params(&spec.layout(), Init::He, &mut init::rng(1));
            let work = Workload::training(spec, &train, args.batch_size);
            let mut backend = make(work, params)?;
            let row = bench::bench_network(backend.as_mut(), spec, &train, args.batch_size, args.epochs, ceiling)?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&row).expect("a row always serialises"))?;
            }
            rows.push(row);
        }
        Ok(())
    };
    if matches!(args.device, BenchDevice::Cpu | BenchDevice::All) {
        let ceiling = bench::cpu_gemm_ceiling(2048, threads);
        if !args.json {
            writeln!(
                out,
                "cpu ceiling: 2048^3 sgemm, gemm crate, {threads} threads: {ceiling:.1} GFLOP/s"
            )?;
        }
        bench_device(&mut out, ceiling, &|work, params| {
            Ok(Box::new(CpuBackend::new(work, params, threads)?))
        })?;
    }
    if matches!(args.device, BenchDevice::Gpu | BenchDevice::All) {
        let started = Instant::now();
        let runner = KernelRunner::new()?;
        runner.warm_up()?;
        let startup = started.elapsed().as_secs_f64();
        let adapter = runner.ctx.adapter_name();
        // Large enough to fill a real GPU; smaller on a software adapter, which runs it on the CPU.
        let n = if runner.ctx.kind == AdapterKind::Software {
            1024
        } else {
            4096
        };
        let ceiling = bench::gpu_matmul_ceiling(&runner, n)?;
        if !args.json {
            writeln!(
                out,
                "gpu start-up (adapter, device, pipelines, first run of every kernel): {startup:.2} s on {adapter}\n\
                 gpu ceiling: {n}^3 matmul_forward kernel: {ceiling:.1} GFLOP/s"
            )?;
        }
        drop(runner);
        bench_device(&mut out, ceiling, &|work, params| {
            Ok(Box::new(GpuBackend::new(work, &params)?))
        })?;
    }
    if !args.json {
        write!(out, "{}", bench::format_table(&rows))?;
    }
    Ok(())
}
