//! The command line: `gpu-mlp [train] [OPTIONS]` (train is the default) and `gpu-mlp bench`.
//! Each subcommand lives in its own module: its flags, how they are checked, and what it runs.
//! This module holds the parser and what the subcommands share (devices, the data folder).

mod bench;
mod keep;
mod model;
mod train;

pub use bench::{bench_command, BenchArgs, BenchDevice};
pub use model::{eval_command, logits_of, predict_command, EvalArgs, EvalSplit, NetworkFlags, PredictArgs};
pub use train::{train_command, DatasetName, Preset, Run, TrainArgs};

use crate::backend::{Backend, Workload};
use crate::cpu::CpuBackend;
use crate::error::{GpuError, Result};
use crate::gpu::context::{self, AdapterKind, GpuContext};
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
    Train(TrainArgs),
    /// Time whole training epochs of the reference networks and print a table.
    Bench(BenchArgs),
    /// Evaluate a saved model: loss, accuracy, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Classify images of digits with a saved model.
    Predict(PredictArgs),
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

    /// Parses the process's arguments; prints help, the version or the usage error and exits
    /// as clap does.
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }
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

/// `--threads`, or every core the machine has.
pub fn threads_or_all(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether `--device` asks for the GPU: `auto` takes a hardware GPU if there is one.
fn wants_gpu(device: DeviceChoice) -> bool {
    match device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Gpu => true,
        DeviceChoice::Auto => context::has_hardware_gpu(),
    }
}

/// Makes the backend `device` asks for, for `work`, starting from `params`. `--device auto`
/// takes a hardware GPU if there is one, else the CPU; `--device gpu` falls back to a software
/// adapter, saying so on stderr.
pub fn make_backend<'a>(
    device: DeviceChoice,
    work: Workload<'a>,
    params: Vec<f32>,
    threads: usize,
) -> Result<Box<dyn Backend + 'a>> {
    if !wants_gpu(device) {
        return Ok(Box::new(CpuBackend::new(work, params, threads)?));
    }
    let ctx = GpuContext::new()?;
    if ctx.kind == AdapterKind::Software {
        eprintln!(
            "note: no hardware GPU found; running the GPU kernels on the software adapter {} (slow; for testing)",
            ctx.adapter_name()
        );
    }
    Ok(Box::new(GpuBackend::with_context(ctx, work, &params)?))
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
    writeln!(out, "cpu  [{} threads]", threads_or_all(None))?;
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Train(args)) => train_command(&args),
        Some(Command::Bench(args)) => bench_command(&args),
        Some(Command::Eval(args)) => eval_command(&args),
        Some(Command::Predict(args)) => predict_command(&args),
        None => train_command(&cli.train),
    }
}
