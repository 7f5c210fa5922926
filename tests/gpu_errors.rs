//! GPU faults come out as errors that name the kernel or the buffer, never as a panic or a hang.

mod common;

use common::{mnist, spec, BIN};
use gpu_mlp::backend::Workload;
use gpu_mlp::error::{Error, GpuError};
use gpu_mlp::gpu::context::GpuContext;
use gpu_mlp::gpu::GpuBackend;
use gpu_mlp::network::{Activation, Loss, Output};
use std::process::Command;

/// The device every test here opens.
fn context() -> GpuContext {
    GpuContext::new().expect("a GPU adapter (lavapipe in CI)")
}

#[test]
fn a_batch_beyond_the_devices_buffer_limit_is_refused_up_front() {
    let ctx = context();
    let limit = ctx
        .limits
        .max_storage_buffer_binding_size
        .min(ctx.limits.max_buffer_size);
    let train = &mnist().train;
    // X for a full batch of 60,000 images is 60,000 × 784 × 4 bytes = 188 MB.
    let needed = (train.len() * 784 * 4) as u64;
    let spec = spec(&[784, 16, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let params = vec![0.01; spec.layout().total];
    let work = Workload::training(&spec, train, train.len());
    let result = GpuBackend::with_context(ctx, work, &params);
    if needed <= limit {
        // A device that can hold it trains it.
        assert!(result.is_ok(), "{:?}", result.err());
        return;
    }
    match result {
        Err(Error::Gpu(error @ GpuError::BufferTooLarge { .. })) => {
            let message = error.to_string();
            assert!(message.contains("activations of layer 0"), "{message}");
            assert!(
                message.contains(&limit.to_string()),
                "the message gives the limit: {message}"
            );
            assert!(
                message.contains("--batch-size"),
                "the message says what to change: {message}"
            );
        }
        Err(other) => panic!("expected BufferTooLarge, got {other}"),
        Ok(_) => panic!("a {needed}-byte binding was accepted over the {limit}-byte limit"),
    }
}

#[test]
fn the_cli_refuses_an_oversized_gpu_batch_with_one_sentence() {
    let ctx = context();
    let limit = ctx
        .limits
        .max_storage_buffer_binding_size
        .min(ctx.limits.max_buffer_size);
    if limit >= 60_000 * 784 * 4 {
        return; // this device can take full-batch descent on MNIST
    }
    let output = Command::new(BIN)
        .args(["--device", "gpu", "--batch-size", "60000", "--epochs", "1"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("allows at most") && errors[0].contains("--batch-size"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("epoch 1/1"));
}

#[test]
fn a_kernel_that_fails_to_compile_is_reported_by_name() {
    let ctx = context();
    // The same mechanism `Kernels::new` builds every pipeline with.
    let result = ctx.scoped(
        || {
            ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("broken.wgsl"),
                source: wgpu::ShaderSource::Wgsl("@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }".into()),
            })
        },
        |error| GpuError::Kernel {
            kernel: "main (shaders/broken.wgsl)".into(),
            message: error.to_string(),
        },
    );
    let message = result.expect_err("an invalid shader must not compile").to_string();
    assert!(message.contains("main (shaders/broken.wgsl)"), "{message}");
    // wgpu's own description says what is wrong with the source.
    assert!(message.len() > 60, "{message}");
    // The device is still usable afterwards.
    ctx.check("after a rejected shader").unwrap();
}
