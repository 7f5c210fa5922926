//! `cargo bench`: every CPU op and GPU kernel at the networks' real shapes, and one whole
//! training step of each reference network, on the CPU and on the GPU.
//!
//! Throughput is in FLOP/s for matmuls (criterion's "elem/s" counts FLOPs there) and in bytes/s
//! for element-wise ops. The first benchmark is the ceiling: a large sgemm through the same GEMM
//! code. At the end a summary prints every matmul as a percentage of that ceiling, and every
//! GPU kernel beside its CPU twin, all from this run.
//!
//! `cargo bench -- cpu` runs the CPU half only (criterion filters by name); the GPU half needs an
//! adapter and is skipped, with a message, when there is none.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use gpu_mlp::backend::{Backend, Workload};
use gpu_mlp::cpu::{ops, CpuBackend};
use gpu_mlp::data::{self, Dataset};
use gpu_mlp::gpu::oneshot::KernelRunner;
use gpu_mlp::gpu::GpuBackend;
use gpu_mlp::init;
use gpu_mlp::network::{Activation, Init, Loss, NetworkSpec, Output};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The three matmul shapes of every layer of the reference networks at batch 100:
/// (name, rows, inputs, outputs).
const LAYERS: [(&str, usize, usize, usize); 4] = [
    ("784x64", 100, 784, 64),
    ("784x128", 100, 784, 128),
    ("784x512", 100, 784, 512),
    ("512x512", 100, 512, 512),
];
const NETWORKS: [&str; 3] = ["784-64-10", "784-128-10", "784-512-512-10"];

/// Seconds per iteration of each benchmark, for the summary (criterion keeps its own copy).
static MEASURED: Mutex<BTreeMap<String, (f64, f64)>> = Mutex::new(BTreeMap::new());

fn record(name: &str, seconds: f64, flops: f64) {
    MEASURED.lock().unwrap().insert(name.to_string(), (seconds, flops));
}

/// Deterministic, non-zero data.
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 2003.0 - 0.49)
        .collect()
}

fn mnist() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");
        data::load_mnist(std::path::Path::new(dir))
            .expect("MNIST in data/mnist")
            .train
    })
}

fn spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        widths: gpu_mlp::network::parse_widths(gpu_mlp::error::WidthsFlag::Networks, name).unwrap(),
        activation: Activation::Relu,
        output: Output::Softmax,
        loss: Loss::Ce,
    }
}

/// Times `f` over `iters` runs and records the mean (criterion's own estimate is what it prints).
fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        f();
    }
    started.elapsed()
}

fn cpu_ceiling(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = 1024;
    let flops = 2.0 * (n * n * n) as f64;
    let (a, b) = (values(n * n, 1), values(n * n, 2));
    let (mut out, zero_bias) = (vec![0.0; n * n], vec![0.0; n]);
    let mut group = c.benchmark_group("cpu/ceiling");
    group.throughput(Throughput::Elements(flops as u64)).sample_size(10);
    group.bench_function(format!("sgemm {n}^3 1 thread"), |bench| {
        bench.iter_custom(|iters| {
            let elapsed = timed(iters, || ops::matmul_forward(&mut out, &a, &b, &zero_bias, n));
            record("cpu ceiling (1 thread)", elapsed.as_secs_f64() / iters as f64, flops);
            elapsed
        })
    });
    group.finish();
    let ceiling = gpu_mlp::bench::cpu_gemm_ceiling(2048, threads);
    record(
        "cpu ceiling",
        2.0 * 2048f64.powi(3) / (ceiling * 1e9),
        2.0 * 2048f64.powi(3),
    );
}

fn cpu_ops(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu/ops");
    group.sample_size(20);
    for (name, rows, k, n) in LAYERS {
        let flops = 2.0 * (rows * k * n) as f64;
        let (inp, weight, bias, dout) = (values(rows * k, 1), values(k * n, 2), values(n, 3), values(rows * n, 4));
        group.throughput(Throughput::Elements(flops as u64));
        let mut out = vec![0.0; rows * n];
        group.bench_function(BenchmarkId::new("matmul_forward", name), |b| {
            b.iter_custom(|iters| {
                let t = timed(iters, || ops::matmul_forward(&mut out, &inp, &weight, &bias, rows));
                record(
                    &format!("cpu matmul_forward {name}"),
                    t.as_secs_f64() / iters as f64,
                    flops,
                );
                t
            })
        });
        let (mut dweight, mut dbias) = (vec![0.0; k * n], vec![0.0; n]);
        group.bench_function(BenchmarkId::new("matmul_backward_weights", name), |b| {
            b.iter_custom(|iters| {
                let t = timed(iters, || {
                    ops::matmul_backward_weights(&mut dweight, &mut dbias, &dout, &inp, rows)
                });
                record(
                    &format!("cpu matmul_backward_weights {name}"),
                    t.as_secs_f64() / iters as f64,
                    flops,
                );
                t
            })
        });
        let mut dinp = vec![0.0; rows * k];
        group.bench_function(BenchmarkId::new("matmul_backward_input", name), |b| {
            b.iter_custom(|iters| {
                let t = timed(iters, || ops::matmul_backward_input(&mut dinp, &dout, &weight, rows, n));
                record(
                    &format!("cpu matmul_backward_input {name}"),
                    t.as_secs_f64() / iters as f64,
                    flops,
                );
                t
            })
        });
    }
    // Element-wise ops on a 100 × 512 activation: bytes read + written.
    let len = 100 * 512;
    let (a, mut d) = (
        values(len, 5).iter().map(|v| v.abs()).collect::<Vec<_>>(),
        values(len, 6),
    );
    group.throughput(Throughput::Bytes((len * 4 * 2) as u64));
    for activation in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
        let mut z = values(len, 7);
        group.bench_function(BenchmarkId::new("activation_forward", activation), |b| {
            b.iter(|| ops::activation_forward(activation, &mut z))
        });
        group.throughput(Throughput::Bytes((len * 4 * 3) as u64));
        group.bench_function(BenchmarkId::new("activation_backward", activation), |b| {
            b.iter(|| ops::activation_backward(activation, &mut d, &a))
        });
    }
    let images = &mnist().images;
    let index: Vec<u32> = (0..100).map(|i| i * 599).collect();
    let (mut x, mut labels) = (vec![0.0; 100 * 784], vec![0u8; 100]);
    group.throughput(Throughput::Bytes((100 * 784 * 5) as u64));
    group.bench_function("gather_batch/100x784", |b| {
        b.iter(|| ops::gather_batch(&mut x, &mut labels, images, &mnist().labels, &index, None))
    });
    let logits = values(100 * 10, 8);
    let mut grad = vec![0.0; 10];
    group.throughput(Throughput::Bytes((100 * 10 * 4 * 2) as u64));
    group.bench_function("output_loss/100x10 softmax ce", |b| {
        b.iter(|| {
            let mut loss = 0.0;
            for (r, z) in logits.chunks_exact(10).enumerate() {
                loss += ops::output_loss(Output::Softmax, Loss::Ce, z, r % 10, 0.01, Some(&mut grad)).0;
            }
            loss
        })
    });
    let total = 784 * 512 + 512 * 512 + 512 * 10;
    let (mut params, grads) = (values(total, 9), values(total, 10));
    group.throughput(Throughput::Bytes((total * 4 * 3) as u64));
    group.bench_function("sgd_update/784-512-512-10", |b| {
        b.iter(|| ops::sgd_update(&mut params, &grads, 1e-6, 1e-4, total - 1034, 0))
    });
    group.finish();
}

/// The constants of an epoch of plain SGD steps at batch 100 (600 steps) at rate `lr`.
fn sgd_steps(lr: f32) -> Vec<gpu_mlp::optim::StepConstants> {
    (1..=600)
        .map(|t| gpu_mlp::optim::Optimizer::SGD.step_constants(lr, t))
        .collect()
}

/// One SGD step (forward, backward, update) of each network at batch 100.
fn cpu_steps(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("cpu/train_step");
    group.sample_size(20);
    for name in NETWORKS {
        let spec = spec(name);
        let work = Workload::training(&spec, mnist(), 100);
        let params = init::init_params(&spec.layout(), Init::He, &mut init::rng(1));
        let mut backend = CpuBackend::new(work, params, threads).unwrap();
        let permutation: Vec<u32> = (0..60_000).collect();
        backend.begin_epoch(&permutation, &sgd_steps(0.01)).unwrap();
        let flops = spec.train_flops_per_example() as f64 * 100.0;
        group.throughput(Throughput::Elements(flops as u64));
        let mut batch = 0;
        group.bench_function(BenchmarkId::new("batch 100", name), |b| {
            b.iter_custom(|iters| {
                let t = timed(iters, || {
                    backend.train_batch(batch % 600).unwrap();
                    batch += 1;
                });
                record(&format!("cpu train_step {name}"), t.as_secs_f64() / iters as f64, flops);
                t
            })
        });
    }
    group.finish();
}

fn gpu_runner() -> Option<&'static KernelRunner> {
    static RUNNER: OnceLock<Option<KernelRunner>> = OnceLock::new();
    RUNNER
        .get_or_init(|| match KernelRunner::new() {
            Ok(runner) => Some(runner),
            Err(error) => {
                eprintln!("skipping the GPU benchmarks: {error}");
                None
            }
        })
        .as_ref()
}

/// GPU kernels: each timed as `iters` dispatches in one submit (as in training), so the launch
/// overhead is amortised the way the trainer amortises it.
fn gpu_kernels(c: &mut Criterion) {
    let Some(runner) = gpu_runner() else { return };
    let mut group = c.benchmark_group("gpu/kernels");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let per_dispatch = |iters: u64, result: f64| Duration::from_secs_f64(result * iters as f64);
    for (name, rows, k, n) in LAYERS {
        let flops = 2.0 * (rows * k * n) as f64;
        let (inp, weight, bias, dout) = (values(rows * k, 1), values(k * n, 2), values(n, 3), values(rows * n, 4));
        let a_prev: Vec<f32> = inp.iter().map(|v| v.max(0.0)).collect();
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new("matmul_forward", name), |b| {
            b.iter_custom(|iters| {
                let s = runner
                    .timed(iters as u32, |r| {
                        r.matmul_forward(&inp, &weight, &bias, rows, Some(Activation::Relu))
                    })
                    .unwrap();
                record(&format!("gpu matmul_forward {name}"), s, flops);
                per_dispatch(iters, s)
            })
        });
        group.bench_function(BenchmarkId::new("matmul_backward_weights", name), |b| {
            b.iter_custom(|iters| {
                let s = runner
                    .timed(iters as u32, |r| r.matmul_backward_weights(&dout, &inp, rows, k, n))
                    .unwrap();
                record(&format!("gpu matmul_backward_weights {name}"), s, flops);
                per_dispatch(iters, s)
            })
        });
        group.bench_function(BenchmarkId::new("matmul_backward_input", name), |b| {
            b.iter_custom(|iters| {
                let s = runner
                    .timed(iters as u32, |r| {
                        r.matmul_backward_input(&dout, &weight, &a_prev, rows, n, Activation::Relu)
                    })
                    .unwrap();
                record(&format!("gpu matmul_backward_input {name}"), s, flops);
                per_dispatch(iters, s)
            })
        });
    }
    let index: Vec<u32> = (0..100).map(|i| i * 599).collect();
    group.throughput(Throughput::Bytes((100 * 784 * 5) as u64));
    group.bench_function("gather_batch/100x784", |b| {
        b.iter_custom(|iters| {
            let s = runner
                .timed(iters as u32, |r| r.gather_batch(&mnist().images, 784, &index))
                .unwrap();
            per_dispatch(iters, s)
        })
    });
    let logits = values(100 * 10, 8);
    let labels: Vec<u8> = (0..100).map(|i| (i % 10) as u8).collect();
    group.throughput(Throughput::Bytes((100 * 10 * 4 * 2) as u64));
    group.bench_function("output_loss/100x10 softmax ce", |b| {
        b.iter_custom(|iters| {
            let s = runner
                .timed(iters as u32, |r| {
                    r.output_loss(Output::Softmax, Loss::Ce, &logits, &labels, 10, true)
                })
                .unwrap();
            per_dispatch(iters, s)
        })
    });
    let total = 784 * 512 + 512 * 512 + 512 * 10;
    let (params, grads) = (values(total, 9), values(total, 10));
    group.throughput(Throughput::Bytes((total * 4 * 3) as u64));
    group.bench_function("sgd_update/784-512-512-10", |b| {
        b.iter_custom(|iters| {
            let s = runner
                .timed(iters as u32, |r| {
                    r.sgd_update(&params, &grads, 1e-6, 1e-4, total - 1034)
                })
                .unwrap();
            per_dispatch(iters, s)
        })
    });
    group.finish();
}

/// One SGD step of each network on the GPU: `iters` batches recorded, one submit, one readback.
fn gpu_steps(c: &mut Criterion) {
    if gpu_runner().is_none() {
        return;
    }
    let mut group = c.benchmark_group("gpu/train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for name in NETWORKS {
        let spec = spec(name);
        let work = Workload::training(&spec, mnist(), 100);
        let params = init::init_params(&spec.layout(), Init::He, &mut init::rng(1));
        let mut backend = GpuBackend::new(work, &params).unwrap();
        let permutation: Vec<u32> = (0..60_000).collect();
        let flops = spec.train_flops_per_example() as f64 * 100.0;
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new("batch 100", name), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                backend.begin_epoch(&permutation, &sgd_steps(0.01)).unwrap();
                for batch in 0..iters as usize {
                    backend.train_batch(batch % 600).unwrap();
                }
                backend.end_epoch().unwrap();
                let t = started.elapsed();
                record(&format!("gpu train_step {name}"), t.as_secs_f64() / iters as f64, flops);
                t
            })
        });
    }
    group.finish();
}

/// Every matmul and step as a percentage of the CPU ceiling, and each GPU kernel beside its CPU
/// twin: ratios from this run only.
fn summary() {
    let measured = MEASURED.lock().unwrap();
    let Some(&(ceiling_s, ceiling_flops)) = measured.get("cpu ceiling") else {
        return;
    };
    let ceiling = ceiling_flops / ceiling_s / 1e9;
    println!("\nsummary (this run): CPU ceiling {ceiling:.1} GFLOP/s (2048^3 sgemm, all threads)");
    println!(
        "{:<44} {:>10} {:>9} {:>9} {:>12}",
        "benchmark", "time", "GFLOP/s", "% ceil", "gpu/cpu time"
    );
    for (name, &(seconds, flops)) in measured.iter() {
        if name.starts_with("cpu ceiling") {
            continue;
        }
        let gflops = flops / seconds / 1e9;
        let twin = name
            .strip_prefix("gpu ")
            .and_then(|rest| measured.get(&format!("cpu {rest}")));
        let ratio = twin.map_or("-".to_string(), |&(cpu_s, _)| format!("{:.2}x", seconds / cpu_s));
        println!(
            "{name:<44} {:>8.3}ms {gflops:>9.2} {:>8.1}% {ratio:>12}",
            seconds * 1e3,
            100.0 * gflops / ceiling
        );
    }
}

criterion_group!(cpu, cpu_ceiling, cpu_ops, cpu_steps);
criterion_group!(gpu, gpu_kernels, gpu_steps);

fn main() {
    cpu();
    gpu();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
