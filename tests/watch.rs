//! What a person watching the trainer sees, apart from the terminal itself (tests/terminal.rs):
//! no stray warnings from Mesa on stderr, whatever XDG_RUNTIME_DIR holds.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gpu-mlp");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist");

/// The binary on a small MNIST run: `args` added to a data folder and quick-run sizes.
fn gpu_mlp(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["--data-dir", DATA, "--train-examples", "300", "--test-examples", "100"])
        .args(args);
    command
}

fn run(mut command: Command) -> Output {
    let out = command.output().expect("the gpu-mlp binary runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// The stderr lines that are not the one note gpu-mlp itself prints on a software adapter.
fn stray_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|line| {
            !line.starts_with("note: no hardware GPU found; running the GPU kernels on the software adapter")
        })
        .map(str::to_string)
        .collect()
}

/// Mesa's device-selection layer makes libwayland print `error: XDG_RUNTIME_DIR is invalid or
/// not set in the environment.` when the variable is unset or not absolute; the program points
/// it at a private directory of its own first. Checked on a GPU run with the variable unset,
/// empty, relative, missing, and pointing at a directory that is not private.
#[test]
fn mesa_never_warns_about_xdg_runtime_dir() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let values: [Option<&str>; 5] = [
        None,
        Some(""),
        Some("relative/dir"),
        Some("/nonexistent/gpu-mlp-test"),
        Some(shared.path().to_str().unwrap()),
    ];
    for value in values {
        let mut command = gpu_mlp(&["--device", "gpu", "--epochs", "1"]);
        match value {
            None => command.env_remove("XDG_RUNTIME_DIR"),
            Some(v) => command.env("XDG_RUNTIME_DIR", v),
        };
        let out = run(command);
        let stray = stray_lines(&out.stderr);
        assert!(
            stray.is_empty(),
            "with XDG_RUNTIME_DIR={value:?}, stderr had more than gpu-mlp's note: {stray:#?}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("epoch 1/1"), "{stdout}");
    }
}

/// The library does the same for its users (and for these tests, which set nothing): after
/// the first GPU use the variable names a private directory of this user's.
#[test]
fn the_library_gives_mesa_a_private_runtime_dir() {
    gpu_mlp::gpu::context::prepare_environment();
    let dir = std::env::var_os("XDG_RUNTIME_DIR").expect("XDG_RUNTIME_DIR is set");
    let meta = std::fs::metadata(&dir).unwrap();
    assert!(meta.is_dir(), "{dir:?}");
    assert_eq!(meta.permissions().mode() & 0o077, 0, "{dir:?} is not private");
}
