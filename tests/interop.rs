//! The model file outside gpu-mlp: `scripts/load_model.py` (numpy + safetensors) loads a saved
//! model, runs the forward pass in numpy on the MNIST test set, and must report the accuracy
//! `gpu-mlp eval` reports on the same file, to 0.01% (one test image of 10,000).
//!
//! Needs python3 with numpy and safetensors (`python3 -m pip install numpy safetensors`; `.ci/run`
//! installs them). Without them the test fails and says so: it is never skipped.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tempfile::TempDir;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/load_model.py");

fn python_ready() {
    let probe = Command::new("python3")
        .args(["-c", "import numpy, safetensors"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to check the model file from Python ({e}); install it"));
    assert!(
        probe.status.success(),
        "python3 lacks numpy or safetensors, which this test needs to load the model from Python: \
         run `python3 -m pip install numpy safetensors`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

fn gpu_mlp(args: &[&str]) -> String {
    let out = common::gpu_mlp()
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpu-mlp {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().find(|l| l.starts_with('{')).expect("a JSON line")).unwrap()
}

/// Trains `args` and saves the model; returns numpy's and eval's correct counts.
fn numpy_and_eval(dir: &Path, name: &str, args: &[&str]) -> (i64, i64) {
    let path = dir.join(name);
    let path = path.to_str().unwrap();
    let mut train = args.to_vec();
    train.extend(["--save", path]);
    gpu_mlp(&train);
    let eval = json(&gpu_mlp(&["eval", "--model", path, "--device", "cpu", "--json"]));
    let out = Command::new("python3").args([SCRIPT, path, "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "load_model.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let numpy = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(numpy["examples"], 10_000);
    let (n, e) = (numpy["correct"].as_i64().unwrap(), eval["correct"].as_i64().unwrap());
    println!("{name}: numpy {n} / eval {e} correct of 10,000");
    (n, e)
}

#[test]
fn numpy_reading_the_file_gets_evals_accuracy() {
    python_ready();
    let dir = TempDir::new().unwrap();
    let relu = [
        "--device",
        "cpu",
        "--layers",
        "784,64,10",
        "--train-examples",
        "20000",
        "--epochs",
        "2",
    ];
    let (n, e) = numpy_and_eval(dir.path(), "relu.safetensors", &relu);
    assert!((n - e).abs() <= 1, "numpy {n} vs eval {e}: more than 0.01% apart");
    // Two hidden layers of another activation, trained on the GPU.
    let tanh = [
        "--device",
        "gpu",
        "--layers",
        "784,32,16,10",
        "--activation",
        "tanh",
        "--init",
        "xavier",
        "--train-examples",
        "3000",
        "--epochs",
        "2",
        "--lr",
        "0.1",
    ];
    let (n, e) = numpy_and_eval(dir.path(), "tanh.safetensors", &tanh);
    assert!((n - e).abs() <= 1, "numpy {n} vs eval {e}: more than 0.01% apart");
    // Standardised inputs: the file's input statistics must be applied as gpu-mlp applies them.
    let standardized = [
        "--device",
        "cpu",
        "--layers",
        "784,32,10",
        "--normalize",
        "standardize",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--train-examples",
        "5000",
        "--epochs",
        "1",
    ];
    let (n, e) = numpy_and_eval(dir.path(), "standardized.safetensors", &standardized);
    assert!((n - e).abs() <= 1, "numpy {n} vs eval {e}: more than 0.01% apart");
}
