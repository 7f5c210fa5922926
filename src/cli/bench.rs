//! `gpu-mlp bench`: times whole training epochs of the reference networks on each device,
//! beside the device's own matmul ceiling measured in the same run.

use super::train::check_settings;
use super::{
    build_backend, check_fits, default_data_dir, open_device, threads_or_all, DeviceChoice, GpuKernels, OpenDevice,
};
use crate::backend::{Backend, Workload};
use crate::bench;
use crate::cpu::CpuBackend;
use crate::data;
use crate::error::{ConfigError, Result, WidthsFlag};
use crate::gpu::context::AdapterKind;
use crate::gpu::oneshot::KernelRunner;
use crate::gpu::tune::TuneMode;
use crate::init;
use crate::network::{parse_widths, Activation, Init, Loss, NetworkSpec, Output};
use crate::train::Schedule;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

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
    /// How the GPU picks its matmul kernels (see `train --tune`).
    #[arg(long, value_enum, default_value_t = TuneMode::Cached)]
    pub tune: TuneMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchDevice {
    Cpu,
    Gpu,
    All,
}

/// Builds a backend for a workload, checking first that it fits, then drawing its weights.
type MakeBackend<'c> = dyn for<'w> Fn(Workload<'w>) -> Result<Box<dyn Backend + 'w>> + 'c;

/// Every row starts from the same He-initialised weights (seed 1).
fn initial_params(work: &Workload) -> Vec<f32> {
    init::init_params(&work.spec.layout(), Init::He, &mut init::rng(1))
}

/// `gpu-mlp bench`: the epoch-time table.
pub fn bench_command(args: &BenchArgs) -> Result<()> {
    let threads = threads_or_all(args.threads);
    check_settings(&Schedule::constant(args.epochs, 0.1), args.batch_size, 0.0, threads)?;
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
                widths: parse_widths(WidthsFlag::Networks, name)?,
                activation: Activation::Relu,
                output: Output::Softmax,
                loss: Loss::Ce,
            };
            spec.check(WidthsFlag::Networks, train.features, train.classes)?;
            Ok(spec)
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    let mut out = std::io::stdout().lock();
    // Times every network on one device: `make` builds its backend from a workload and weights.
    let mut bench_device = |out: &mut std::io::StdoutLock, ceiling: f64, make: &MakeBackend<'_>| -> Result<()> {
        for spec in &specs {
            let mut backend = make(Workload::training(spec, &train, args.batch_size))?;
            let row = bench::bench_network(backend.as_mut(), spec, &train, args.batch_size, args.epochs, ceiling)?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&row).expect("a row always serialises"))?;
            }
            rows.push(row);
        }
        Ok(())
    };
    if matches!(args.device, BenchDevice::Cpu | BenchDevice::All) {
        // Every network must fit before the ceiling is measured.
        for spec in &specs {
            let work = Workload::training(spec, &train, args.batch_size);
            check_fits(&OpenDevice::Cpu, &work, WidthsFlag::Networks, threads)?;
        }
        let ceiling = bench::cpu_gemm_ceiling(2048, threads);
        if !args.json {
            writeln!(
                out,
                "cpu ceiling: 2048^3 sgemm, gemm crate, {threads} threads: {ceiling:.1} GFLOP/s"
            )?;
        }
        bench_device(&mut out, ceiling, &|work| {
            check_fits(&OpenDevice::Cpu, &work, WidthsFlag::Networks, threads)?;
            Ok(Box::new(CpuBackend::new(work, initial_params(&work), threads)?))
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
        if !args.json {
            writeln!(
                out,
                "gpu start-up (adapter, device, pipelines, first run of every kernel): {startup:.2} s on {adapter}"
            )?;
            out.flush()?;
        }
        let ceiling = bench::gpu_matmul_ceiling(&runner, n)?;
        let dispatch = bench::gpu_dispatch_cost(&runner)?;
        if !args.json {
            writeln!(
                out,
                "gpu dispatch: {:.1} µs each whatever its work (1,000 one-element updates in one submit)",
                dispatch * 1e6
            )?;
            // The default variant's: a tuned run may beat it (more than 100% of the ceiling).
            writeln!(
                out,
                "gpu ceiling: {n}^3 matmul_forward kernel ({}): {ceiling:.1} GFLOP/s",
                runner.variant.name
            )?;
            out.flush()?;
        }
        drop(runner);
        bench_device(&mut out, ceiling, &|work| {
            let device = open_device(DeviceChoice::Gpu)?;
            check_fits(&device, &work, WidthsFlag::Networks, threads)?;
            let params = initial_params(&work);
            build_backend(device, work, params, threads, &GpuKernels::Tune(args.tune))
        })?;
    }
    if !args.json {
        write!(out, "{}", bench::format_table(&rows))?;
    }
    Ok(())
}
