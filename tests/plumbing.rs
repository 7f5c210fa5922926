//! How the binary behaves at the ends of a pipe: a reader that goes away early, a closed or
//! full standard output.

mod common;

use common::BIN;
use std::process::{Command, Stdio};

fn gpu_mlp() -> Command {
    let mut command = common::gpu_mlp();
    command.args(["--device", "cpu", "--train-examples", "500", "--test-examples", "100"]);
    command
}

/// `gpu-mlp --json | head -1`: the trainer stops at its next write, silently, with the status
/// of a process killed by SIGPIPE (128 + 13), as `yes | head -1` does.
#[test]
fn a_reader_that_goes_away_ends_the_run_quietly() {
    let mut child = gpu_mlp()
        .args(["--json", "--epochs", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while std::io::Read::read(&mut stdout, &mut byte).unwrap() == 1 && byte[0] != b'\n' {
        first.push(byte[0]);
    }
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let first = String::from_utf8(first).unwrap();
    assert!(first.starts_with("{\"epoch\":1"), "{first}");
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gpu-mlp >&-`: Rust would silently drop the output of a closed stdout; the run refuses to
/// start instead.
#[test]
fn a_closed_stdout_is_an_error() {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' --device cpu --train-examples 100 --epochs 1 >&-"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("standard output is closed"), "{stderr}");
}

/// A stdout that cannot take the output (a full disk) is an error naming the cause.
#[test]
fn a_full_stdout_is_an_error() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = gpu_mlp().args(["--epochs", "1"]).stdout(full).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write the output") && stderr.contains("No space left"),
        "{stderr}"
    );
}
