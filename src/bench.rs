//! `gpu-mlp bench`: whole training epochs, timed, beside the machine's own GEMM ceiling.
//!
//! Each row trains one network for a warm-up epoch and then `epochs` timed epochs (training
//! only: no evaluation) and reports the median. FLOPs are the exact matmul FLOPs of an epoch
//! ([`NetworkSpec::train_flops_per_example`] × examples), so GFLOP/s compare directly with the
//! ceiling: a large square sgemm through the same GEMM code on the same threads.

use crate::backend::{Backend, Workload};
use crate::data::Dataset;
use crate::error::Result;
use crate::gpu::oneshot::KernelRunner;
use crate::network::NetworkSpec;
use crate::train::{self, Schedule};
use serde::Serialize;
use std::time::Instant;

/// One measured row of the table (and one `--json` object).
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub device: &'static str,
    pub adapter: String,
    pub network: String,
    pub batch_size: usize,
    /// Median over the timed epochs.
    pub epoch_seconds: f64,
    pub samples_per_second: f64,
    pub gflops: f64,
    /// `gflops` as a percentage of the device's GEMM ceiling measured in the same run.
    pub percent_of_ceiling: f64,
    /// Mean training loss of the last timed epoch: a check that the work was real.
    pub train_loss: f64,
    /// GPU only: per epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatches: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submits: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readbacks: Option<u64>,
    /// GPU only: the matmul variant of each kernel and how they were chosen (tuned, cached,
    /// default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matmul_variants: Option<String>,
}

/// Times `epochs` epochs (after one warm-up) of `spec` on `backend`; returns the median epoch.
pub fn bench_network(
    backend: &mut dyn Backend,
    spec: &NetworkSpec,
    train: &Dataset,
    batch_size: usize,
    epochs: usize,
    ceiling_gflops: f64,
) -> Result<BenchRow> {
    let work = Workload::training(spec, train, batch_size);
    let schedule = Schedule::constant(epochs + 1, 0.05);
    let mut rng = crate::init::rng(1);
    let reports = train::train(backend, &work, &schedule, &mut rng, |_| Ok(()))?;
    let mut seconds: Vec<f64> = reports[1..].iter().map(|r| r.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let epoch_seconds = seconds[seconds.len() / 2];
    let flops = spec.train_flops_per_example() as f64 * train.len() as f64;
    let gflops = flops / epoch_seconds / 1e9;
    let last = reports.last().expect("at least one timed epoch");
    Ok(BenchRow {
        device: backend.device(),
        adapter: backend.adapter(),
        network: spec.name(),
        batch_size,
        epoch_seconds,
        samples_per_second: train.len() as f64 / epoch_seconds,
        gflops,
        percent_of_ceiling: 100.0 * gflops / ceiling_gflops,
        train_loss: last.train_loss,
        dispatches: last.dispatches,
        submits: last.submits,
        readbacks: last.readbacks,
        matmul_variants: backend.kernel_choice(),
    })
}

/// GFLOP/s of the CPU GEMM (the `gemm` crate, as the CPU backend uses it) on an `n × n × n`
/// product spread over `threads` threads: the best of a few runs.
pub fn cpu_gemm_ceiling(n: usize, threads: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let mut c = vec![0.0f32; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        crate::cpu::ops::square_matmul(&mut c, &a, &b, n, threads);
        best = best.min(started.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best / 1e9
}

/// GFLOP/s of this project's matmul kernel (`matmul_forward`) on an `n × n × n` product: the
/// GPU rows' ceiling. The best of a few timings of 3 back-to-back dispatches.
pub fn gpu_matmul_ceiling(runner: &KernelRunner, n: usize) -> Result<f64> {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let bias = vec![0.0f32; n];
    // The first run compiles the kernel (software drivers compile at first use).
    runner.timed(1, |r| r.matmul_forward(&a, &b, &bias, n, None))?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(runner.timed(3, |r| r.matmul_forward(&a, &b, &bias, n, None))?);
    }
    Ok(2.0 * (n * n * n) as f64 / best / 1e9)
}

/// Seconds a dispatch costs whatever its work (on the device, in one submit): a one-element
/// `sgd_update`, dispatched many times back to back. What fusing two kernels would save.
pub fn gpu_dispatch_cost(runner: &KernelRunner) -> Result<f64> {
    let one = [0.5f32];
    runner.timed(1, |r| r.sgd_update(&one, &one, 0.1, 0.0, 1))?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(runner.timed(1000, |r| r.sgd_update(&one, &one, 0.1, 0.0, 1))?);
    }
    Ok(best)
}

/// The table, one line per row.
pub fn format_table(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<6} {:<28} {:<16} {:>6} {:>10} {:>12} {:>9} {:>8} {:>12}\n",
        "device", "adapter", "network", "batch", "epoch s", "samples/s", "GFLOP/s", "% ceil", "disp/sub/rb"
    );
    for r in rows {
        let counters = match (r.dispatches, r.submits, r.readbacks) {
            (Some(d), Some(s), Some(b)) => format!("{d}/{s}/{b}"),
            _ => "-".to_string(),
        };
        let adapter: String = r.adapter.chars().take(28).collect();
        out += &format!(
            "{:<6} {:<28} {:<16} {:>6} {:>10.3} {:>12} {:>9.1} {:>7.1}% {:>12}\n",
            r.device,
            adapter,
            r.network,
            r.batch_size,
            r.epoch_seconds,
            crate::report::thousands(r.samples_per_second.round() as u64),
            r.gflops,
            r.percent_of_ceiling,
            counters
        );
    }
    for r in rows {
        if let Some(variants) = &r.matmul_variants {
            out += &format!("{} {} matmul variants, {variants}\n", r.device, r.network);
        }
    }
    out
}
