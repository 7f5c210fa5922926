//! GPU faults come out as errors that name the kernel or the buffer, never as a panic or a hang.
//! Each test runs on every adapter: where the adapter's own limits are too large to reach, the
//! test opens the device with lower ones, or sizes its work from the adapter's limit.

mod common;

use common::{mnist, spec};
use gpu_mlp::backend::{Backend, Workload};
use gpu_mlp::error::{Error, GpuError};
use gpu_mlp::gpu::context::GpuContext;
use gpu_mlp::gpu::kernels::matmul::MatmulVariant;
use gpu_mlp::gpu::kernels::{Kernels, WgslFile};
use gpu_mlp::gpu::GpuBackend;
use gpu_mlp::network::{Activation, Loss, Output};
use gpu_mlp::optim::Optimizer;

/// The device every test here opens.
fn context() -> GpuContext {
    GpuContext::new().expect("a GPU adapter (lavapipe in CI)")
}

/// The largest storage binding the device allows, as the backend checks it.
fn binding_limit(ctx: &GpuContext) -> u64 {
    ctx.limits
        .max_storage_buffer_binding_size
        .min(ctx.limits.max_buffer_size)
}

/// A device that allows 1 MiB per storage binding, whatever the adapter offers: X of a batch of
/// 784 pixels holds 334 rows (1,047,424 bytes), not 335 (1,050,560). A batch one row too large
/// is refused up front, naming the buffer, the limit and the flag to change; the largest batch
/// that fits trains.
#[test]
fn a_batch_beyond_the_devices_buffer_limit_is_refused_up_front() {
    const LIMIT: u64 = 1 << 20;
    let limited = || {
        let ctx = GpuContext::with_limits(|limits| limits.max_storage_buffer_binding_size = LIMIT)
            .expect("a GPU adapter (lavapipe in CI)");
        assert_eq!(binding_limit(&ctx), LIMIT, "the device took the lower limit");
        ctx
    };
    let train = mnist().train.truncated(668);
    let spec = spec(&[784, 16, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let params = vec![0.01; spec.layout().total];

    let work = Workload::training(&spec, &train, 335);
    match GpuBackend::with_context(limited(), work, &params) {
        Err(Error::Gpu(error @ GpuError::BufferTooLarge { .. })) => {
            let message = error.to_string();
            assert!(message.contains("activations of layer 0"), "{message}");
            assert!(
                message.contains("1050560 bytes"),
                "the message gives the need: {message}"
            );
            assert!(
                message.contains(&format!("at most {LIMIT} bytes")),
                "the message gives the limit: {message}"
            );
            assert!(
                message.contains("--batch-size"),
                "the message says what to change: {message}"
            );
        }
        Err(other) => panic!("expected BufferTooLarge, got {other}"),
        Ok(_) => panic!("a 1050560-byte binding was accepted over the {LIMIT}-byte limit"),
    }

    let work = Workload::training(&spec, &train, 334);
    let mut gpu = GpuBackend::with_context(limited(), work, &params).expect("the largest batch that fits");
    let steps = vec![Optimizer::SGD.step_constants(0.1, 1); work.batches()];
    gpu.begin_epoch(&(0..668).collect::<Vec<u32>>(), &steps).unwrap();
    for batch in 0..work.batches() {
        gpu.train_batch(batch).unwrap();
    }
    let metrics = gpu.end_epoch().unwrap();
    assert_eq!(metrics.batch_loss.len(), 2);
    assert!(
        metrics.batch_loss.iter().all(|l| l.is_finite()),
        "{:?}",
        metrics.batch_loss
    );
}

/// The binary, with this adapter's own limit: full-batch descent on MNIST (60,000 rows), with a
/// hidden layer wide enough that its activations exceed the limit when the input's (188 MB) do
/// not. One sentence, exit status 1, no epoch.
#[test]
fn the_cli_refuses_an_oversized_gpu_batch_with_one_sentence() {
    let limit = binding_limit(&context());
    let input_bytes = 60_000 * 784 * 4;
    let width = if limit < input_bytes {
        128
    } else {
        limit / (60_000 * 4) + 1
    };
    let layers = format!("784,{width},10");
    println!("binding limit {limit} bytes: --layers {layers}");
    let output = common::gpu_mlp()
        .args([
            "--device",
            "gpu",
            "--batch-size",
            "60000",
            "--epochs",
            "1",
            "--layers",
            &layers,
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("activations of layer") && errors[0].contains(&format!("allows at most {limit} bytes")),
        "{stderr}"
    );
    assert!(errors[0].contains("--batch-size"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("epoch 1/1"));
}

/// A broken copy of a real shader, `shaders/matmul_tiled.wgsl`, compiled through the real
/// pipeline-building path (`Kernels::with_matmul_variant`, as a matmul variant): the error names
/// the kernel whose pipeline failed and the files it was compiled from, and carries the
/// compiler's description. Twice: a type error, which fails the whole module (so the first of its
/// kernels to be built, matmul_forward), and a workgroup too large for the device in one entry
/// point only, which fails that kernel's pipeline alone (matmul_backward_weights, built last).
#[test]
fn a_kernel_that_fails_to_compile_is_reported_by_name_and_file() {
    let ctx = context();
    let sources = MatmulVariant::TILED_64.sources;
    let real = *sources
        .iter()
        .find(|file| file.path == "shaders/matmul_tiled.wgsl")
        .expect("the tiled variant's own file");
    let broken = |from: &str, to: &str| -> MatmulVariant {
        assert!(real.text.contains(from), "{from:?} is not in {}", real.path);
        let text = real.text.replacen(from, to, 1);
        let source: &'static WgslFile = Box::leak(Box::new(WgslFile {
            path: real.path,
            text: Box::leak(text.into_boxed_str()),
        }));
        let with_broken: Vec<&'static WgslFile> = sources
            .iter()
            .map(|&file| if file.path == real.path { source } else { file })
            .collect();
        MatmulVariant {
            sources: Box::leak(with_broken.into_boxed_slice()),
            ..MatmulVariant::TILED_64
        }
    };
    let error_of = |variant: MatmulVariant| match Kernels::with_matmul_variant(&ctx, variant) {
        Ok(_) => panic!("a broken shader compiled"),
        Err(error @ GpuError::Kernel { .. }) => error.to_string(),
        Err(other) => panic!("expected a kernel error, got {other}"),
    };

    // A u32 assigned to an f32 in matmul_backward_input's body.
    let message = error_of(broken(
        "let k = params.outputs; // reduce over the layer's outputs, produce its inputs",
        "let k: f32 = params.outputs;",
    ));
    assert!(
        message.contains(
            "kernel 'matmul_forward (shaders/matmul.wgsl, shaders/matmul_f32.wgsl, shaders/matmul_tiled.wgsl)'"
        ),
        "{message}"
    );
    assert!(
        message.contains("f32") && message.contains("u32"),
        "the compiler's reason: {message}"
    );
    println!("{message}");
    ctx.check("after a rejected shader").unwrap();

    // matmul_backward_weights alone asks for more invocations than the device allows.
    let too_many = ctx.limits.max_compute_invocations_per_workgroup + 1;
    let message = error_of(broken(
        "@compute @workgroup_size(MATMUL_WORKGROUP)\nfn matmul_backward_weights(",
        &format!("@compute @workgroup_size({too_many})\nfn matmul_backward_weights("),
    ));
    assert!(
        message.contains("kernel 'matmul_backward_weights (shaders/matmul.wgsl, shaders/matmul_f32.wgsl, shaders/matmul_tiled.wgsl)'"),
        "{message}"
    );
    println!("{message}");
    // The device is still usable afterwards.
    ctx.check("after a rejected pipeline").unwrap();
}

/// Every kernel fits WebGPU's default of 8 storage buffers per shader stage (what a browser
/// gives unless asked for more), group 1 included: on a device opened with that limit, the whole
/// toolbox — Adam, dropout, standardised inputs, evaluation — builds and trains an epoch.
#[test]
fn every_kernel_fits_webgpus_default_storage_buffer_limit() {
    let ctx = GpuContext::with_limits(|limits| {
        limits.max_storage_buffers_per_shader_stage = limits.max_storage_buffers_per_shader_stage.min(8)
    })
    .expect("a GPU adapter (lavapipe in CI)");
    assert!(ctx.limits.max_storage_buffers_per_shader_stage <= 8);
    let (train, test) = (mnist().train.truncated(200), mnist().test.truncated(50));
    let statistics = gpu_mlp::data::Standardization::of(&train);
    let spec = spec(&[784, 16, 16, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let work = Workload {
        test: Some(&test),
        optimizer: Optimizer::new(gpu_mlp::optim::OptimizerKind::Adam),
        dropout: gpu_mlp::dropout::Dropout {
            hidden: 0.2,
            input: 0.1,
            seed: 1,
        },
        standardize: Some(&statistics),
        ..Workload::training(&spec, &train, 50)
    };
    let params = vec![0.01; spec.layout().total];
    let mut gpu = GpuBackend::with_context(ctx, work, &params).unwrap_or_else(|e| panic!("{e}"));
    let steps: Vec<_> = (1..=4).map(|t| work.optimizer.step_constants(0.001, t)).collect();
    gpu.begin_epoch(&(0..200).collect::<Vec<u32>>(), &steps).unwrap();
    for batch in 0..4 {
        gpu.train_batch(batch).unwrap();
    }
    gpu.evaluate(gpu_mlp::backend::Split::Test).unwrap();
    let metrics = gpu.end_epoch().unwrap();
    assert!(
        metrics.batch_loss.iter().all(|l| l.is_finite()),
        "{:?}",
        metrics.batch_loss
    );
    assert_eq!(metrics.test.unwrap().examples, 50);
}
