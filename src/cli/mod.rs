//! The command line: `gpu-mlp [train] [OPTIONS]` (train is the default), `gpu-mlp eval`,
//! `gpu-mlp predict`, `gpu-mlp bench`, `gpu-mlp plot` and `gpu-mlp completions`.
//! Each subcommand lives in its own module: its flags, how they are checked, and what it runs.
//! This module holds the parser and what the subcommands share (devices, the data folder).

mod bench;
mod keep;
mod model;
mod plot;
mod train;

pub use bench::{bench_command, BenchArgs, BenchDevice};
pub use model::{eval_command, logits_of, predict_command, EvalArgs, EvalSplit, NetworkFlags, PredictArgs};
pub use plot::{plot_command, PlotArgs};
pub use train::{train_command, DatasetName, Preset, Run, TrainArgs};

use crate::backend::{Backend, Workload};
use crate::cpu::CpuBackend;
use crate::error::{GpuError, Result, WidthsFlag};
use crate::footprint::{Footprint, Memory};
use crate::gpu::context::{self, AdapterKind, GpuContext};
use crate::gpu::kernels::matmul::MatmulPlan;
use crate::gpu::tune::{self, PlanSource, TuneCache, TuneMode};
use crate::gpu::GpuBackend;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

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
    Train(Box<TrainArgs>),
    /// Time whole training epochs of the reference networks and print a table.
    Bench(BenchArgs),
    /// Evaluate a saved model: loss, accuracy, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Classify images of digits with a saved model.
    Predict(PredictArgs),
    /// Draw saved runs (--metrics-out or --json files) to a PNG or SVG, to compare them.
    Plot(PlotArgs),
    /// Print a shell completion script: `source <(gpu-mlp completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// The parser, with each dataset's defaults written into the help of the flags they set
    /// (from [`Preset`], so the help can never disagree with what runs).
    pub fn command_with_presets() -> clap::Command {
        let command = Cli::command();
        let command = train::document_presets(command);
        command.mut_subcommand("train", train::document_presets)
    }

    /// Parses `args` (the program name first) with [`Cli::command_with_presets`].
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command_with_presets().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let train = matches.subcommand_matches("train").unwrap_or(&matches);
        let given: Vec<String> = train
            .ids()
            .filter(|id| train.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
            .map(|id| id.to_string())
            .collect();
        match &mut cli.command {
            Some(Command::Train(args)) => args.given = given,
            None => cli.train.given = given,
            Some(_) => {}
        }
        Ok(cli)
    }

    /// Parses the process's arguments. `--help` and `--version` print and exit 0; a usage error
    /// prints one sentence (clap's, with its tips) and exits 1, like every other error.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit()
            }
            eprintln!("{}", usage_error_sentence(&e.render().to_string()));
            std::process::exit(1)
        })
    }
}

/// clap's usage error as one line: its first sentence, its tips and the possible values in
/// brackets, and where to look.
/// "error: unexpected argument '--lr-decya' found (tip: a similar argument exists:
/// '--lr-decay'); see gpu-mlp --help"
fn usage_error_sentence(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut sentence = lines.next().unwrap_or("error: invalid arguments").to_string();
    for tip in lines.filter(|l| l.starts_with("tip:") || l.starts_with("[possible values")) {
        sentence += &format!(" ({})", tip.trim_start_matches('[').trim_end_matches(']'));
    }
    sentence + "; see gpu-mlp --help"
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU.
    Auto,
    Cpu,
    Gpu,
}

/// The folder the MNIST files are read from when --data-dir is not given: `data/mnist` under
/// the current folder, else the one in this crate's checkout.
pub fn default_data_dir() -> PathBuf {
    let local = PathBuf::from("data/mnist");
    if local.is_dir() {
        local
    } else {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))
    }
}

/// The cores this machine has.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads`, or every core the machine has; more threads than cores are capped at the cores,
/// saying so (they would only take turns, and each holds its own gradients).
pub fn threads_or_all(threads: Option<usize>) -> usize {
    match threads {
        Some(n) if n > cores() => {
            eprintln!(
                "note: --threads {n} is more than the {} cores this machine has; using {}",
                cores(),
                cores()
            );
            cores()
        }
        Some(n) => n,
        None => cores(),
    }
}

/// What `--device` resolved to, opened.
pub enum OpenDevice {
    Cpu,
    Gpu(Box<GpuContext>),
}

/// Opens the device `device` asks for. `--device auto` takes a hardware GPU if there is one,
/// else the CPU; `--device gpu` falls back to a software adapter, saying so on stderr.
pub fn open_device(device: DeviceChoice) -> Result<OpenDevice> {
    let use_gpu = match device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Gpu => true,
        DeviceChoice::Auto => context::has_hardware_gpu(),
    };
    if !use_gpu {
        return Ok(OpenDevice::Cpu);
    }
    let ctx = GpuContext::new()?;
    if ctx.kind == AdapterKind::Software {
        eprintln!(
            "note: no hardware GPU found; running the GPU kernels on the software adapter {} (slow; for testing)",
            ctx.adapter_name()
        );
    }
    Ok(OpenDevice::Gpu(Box::new(ctx)))
}

/// Refuses `work` up front when what the backend would allocate for it does not fit in the
/// memory this process can take (see [`crate::footprint`]). A hardware GPU's own memory cannot
/// be queried through wgpu: there the backend checks each buffer against the adapter's limits.
/// `widths` names the flag the layer widths came from.
pub fn check_fits(device: &OpenDevice, work: &Workload, widths: WidthsFlag, threads: usize) -> Result<()> {
    let state = work.optimizer.state_buffers();
    let footprint = match device {
        OpenDevice::Cpu => Footprint::cpu(work, widths, threads, state)?,
        OpenDevice::Gpu(ctx) if ctx.kind == AdapterKind::Software => Footprint::gpu(work, widths, state)?,
        OpenDevice::Gpu(_) => return Ok(()),
    };
    Ok(footprint.check(Memory::available())?)
}

/// How a GPU run chooses its matmul variants: `--tune`, or the variants a checkpoint recorded
/// (a resumed run uses them, so that it continues bit for bit).
#[derive(Clone, Debug)]
pub enum GpuKernels {
    Tune(TuneMode),
    Recorded(MatmulPlan),
}

/// The backend for `work` on an open device, starting from `params`; on the GPU with its matmul
/// variants chosen as `kernels` says.
pub fn build_backend<'a>(
    device: OpenDevice,
    work: Workload<'a>,
    params: Vec<f32>,
    threads: usize,
    kernels: &GpuKernels,
) -> Result<Box<dyn Backend + 'a>> {
    Ok(match device {
        OpenDevice::Cpu => Box::new(CpuBackend::new(work, params, threads)?),
        OpenDevice::Gpu(ctx) => {
            let tuned = match kernels {
                GpuKernels::Tune(mode) => tune::tune(&ctx, &work, *mode, &TuneCache::from_env())?,
                GpuKernels::Recorded(plan) => {
                    let plan = plan.clone().fitted(&work.spec.layout().layers);
                    tune::planned(&ctx, plan, PlanSource::Checkpoint)?
                }
            };
            Box::new(GpuBackend::tuned(*ctx, tuned, work, &params)?)
        }
    })
}

/// Opens the device `device` asks for, checks that `work` fits, and builds its backend from
/// `params`.
pub fn make_backend<'a>(
    device: DeviceChoice,
    work: Workload<'a>,
    params: Vec<f32>,
    threads: usize,
) -> Result<Box<dyn Backend + 'a>> {
    let device = open_device(device)?;
    check_fits(&device, &work, WidthsFlag::Layers, threads)?;
    build_backend(device, work, params, threads, &GpuKernels::Tune(TuneMode::Off))
}

/// `--list-devices`: every adapter wgpu can see.
pub fn list_devices() -> Result<()> {
    let mut out = std::io::stdout().lock();
    let adapters = context::list_adapters();
    let cache = TuneCache::from_env();
    let cached = tune::cached_choices(&cache);
    let cache_path = cache
        .path()
        .map_or_else(|| "none: no cache folder".to_string(), |p| p.display().to_string());
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
        let choices = cached.get(&a.tune_key);
        match choices {
            Some(choices) if !choices.is_empty() => {
                writeln!(out, "  tuned matmul variants (cache {}):", cache_path)?;
                for (matmul, choice) in choices {
                    writeln!(
                        out,
                        "    {matmul:<28} {:<8} {:.3} ms",
                        choice.variant,
                        choice.seconds * 1e3
                    )?;
                }
            }
            _ => writeln!(out, "  no tuned matmul variants cached (cache {cache_path})")?,
        }
    }
    writeln!(out, "cpu  [{} threads]", cores())?;
    Ok(())
}

/// Installs a logger for wgpu's (and the Vulkan backend's) log lines, on stderr, only when
/// `--verbose` or `RUST_LOG` asks for them: by default they are off. `RUST_LOG` chooses the
/// lines (`RUST_LOG=wgpu_hal=debug`); `--verbose` alone shows warnings and wgpu's info lines.
pub fn init_logging(verbose: bool) {
    if !verbose && std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    let env = env_logger::Env::default().default_filter_or("warn,wgpu_core=info,wgpu_hal=info");
    // Only fails if a logger is already installed (a library user's own): keep theirs.
    let _ = env_logger::Builder::from_env(env).format_timestamp(None).try_init();
}

/// `gpu-mlp completions SHELL`: the completion script, from the same parser that runs.
fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command_with_presets(), "gpu-mlp", &mut out);
    out.flush()?;
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Train(args)) => {
            init_logging(args.verbose);
            train_command(&args)
        }
        Some(Command::Bench(args)) => {
            init_logging(false);
            bench_command(&args)
        }
        Some(Command::Eval(args)) => {
            init_logging(false);
            eval_command(&args)
        }
        Some(Command::Predict(args)) => {
            init_logging(false);
            predict_command(&args)
        }
        Some(Command::Plot(args)) => plot_command(&args),
        Some(Command::Completions { shell }) => completions(shell),
        None => {
            init_logging(cli.train.verbose);
            train_command(&cli.train)
        }
    }
}
