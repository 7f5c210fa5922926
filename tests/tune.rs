//! The GPU's autotuning (`src/gpu/tune.rs`): the cache is read, written and ignored as it should
//! be — a corrupt file or one from another version costs one line on stderr and a re-timing,
//! never an error; a cached run times nothing; `--tune off` uses the default variant and touches
//! no cache; a checkpoint records the variants; and, in these tests, nothing is ever written to
//! the user's own cache folder.

mod common;

use common::{mnist, spec};
use gpu_mlp::backend::Workload;
use gpu_mlp::data::Dataset;
use gpu_mlp::gpu::context::GpuContext;
use gpu_mlp::gpu::kernels::matmul::{MatmulOp, MatmulPlan, MatmulVariant, Operands};
use gpu_mlp::gpu::tune::{self, CacheFile, PlanSource, TuneCache, TuneMode};
use gpu_mlp::network::{Activation, Loss, Output};
use std::path::Path;

fn context() -> GpuContext {
    GpuContext::new().expect("a GPU adapter (lavapipe will do)")
}

fn train_set(n: usize) -> Dataset {
    mnist().train.truncated(n)
}

/// The cache file in `dir`, parsed.
fn cache_file(dir: &Path) -> CacheFile {
    let text = std::fs::read_to_string(dir.join("tune.json")).expect("the cache was written");
    serde_json::from_str(&text).expect("the cache is valid JSON of the right shape")
}

/// A fresh tuning times every distinct matmul of a step and caches them; the next run with
/// `cached` times nothing, builds the same plan, and is faster; `fresh` times again.
#[test]
fn a_cached_run_does_not_time_again() {
    let ctx = context();
    let spec = spec(&[784, 64, 32, 10], Activation::Relu, Output::Softmax, Loss::Ce);
    let train = train_set(500);
    let work = Workload::training(&spec, &train, 100);
    let dir = tempfile::tempdir().unwrap();
    let cache = TuneCache::at(dir.path());

    let first = tune::tune(&ctx, &work, TuneMode::Cached, &cache).unwrap();
    assert_eq!(first.report.source, PlanSource::Timed);
    // forward and backward_weights of 3 layers, backward_input of the last 2.
    assert_eq!(first.report.timed, 8, "{:?}", first.report);
    // The matmuls are timed largest first. Every variant the device runs is timed on the
    // largest matmul it fits; on a smaller one, every variant that fits it (vec4 operands: widths
    // in fours, so not the 10-wide last layer) except those more than OUTPACED times slower than
    // the fastest of them on a larger one, which are not even compiled for it.
    let available = MatmulVariant::available(&ctx);
    let layout = spec.layout();
    let matmul_of = |key: &str| {
        MatmulOp::ALL
            .iter()
            .flat_map(|&op| layout.layers.iter().map(move |shape| (op, *shape)))
            .find(|(op, shape)| tune::matmul_key(*op, 100, shape) == key)
            .expect("a matmul of the network")
    };
    let size = |shape: &gpu_mlp::network::LayerShape| shape.inputs * shape.outputs;
    let timed_on = |key: &str| -> Vec<(MatmulVariant, f64)> {
        let choice = first.report.choices.iter().find(|c| c.key == key).unwrap();
        choice.timings.clone().expect("timed in this run")
    };
    for choice in &first.report.choices {
        let timings = choice.timings.as_ref().expect("timed in this run");
        let (op, shape) = matmul_of(&choice.key);
        let fitting: Vec<MatmulVariant> = available.iter().copied().filter(|v| v.fits(op, &shape)).collect();
        let timed: Vec<MatmulVariant> = timings.iter().map(|(v, _)| *v).collect();
        assert!(timed.iter().all(|v| fitting.contains(v)), "{}: {timed:?}", choice.key);
        // Outpaced on a matmul as large or larger (the same layer's other ops are as large).
        let outpaced = |variant: MatmulVariant, strictly_larger: bool| {
            first.report.choices.iter().any(|other| {
                let (_, other_shape) = matmul_of(&other.key);
                let larger = if strictly_larger {
                    size(&other_shape) > size(&shape)
                } else {
                    other.key != choice.key && size(&other_shape) >= size(&shape)
                };
                let there = timed_on(&other.key);
                let seconds = |v: MatmulVariant| there.iter().find(|(t, _)| *t == v).map(|(_, s)| *s);
                let best = fitting.iter().filter_map(|v| seconds(*v)).fold(f64::INFINITY, f64::min);
                larger && seconds(variant).is_some_and(|s| s > tune::OUTPACED * best)
            })
        };
        for variant in &fitting {
            if !timed.contains(variant) {
                assert!(
                    outpaced(*variant, false),
                    "{}: {} not timed, not outpaced",
                    choice.key,
                    variant.name
                );
            }
        }
        for variant in &timed {
            assert!(
                !outpaced(*variant, true),
                "{}: {} timed, though outpaced",
                choice.key,
                variant.name
            );
        }
        if shape.outputs == 10 {
            assert!(
                timed.iter().all(|v| v.operands == Operands::F32),
                "{}: {timed:?}",
                choice.key
            );
        }
        let fastest = timings.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        assert_eq!(choice.variant, fastest, "{}: {timings:?}", choice.key);
        assert!(timings.iter().all(|(_, s)| *s > 0.0 && s.is_finite()), "{timings:?}");
        let timings: Vec<String> = timings
            .iter()
            .map(|(v, s)| format!("{} {:.3} ms", v.name, s * 1e3))
            .collect();
        println!("{}: {}", choice.key, timings.join(", "));
    }
    // The largest matmul, forward 784 → 64, is timed with every variant that fits it.
    let largest = timed_on("forward 100x784x64");
    assert_eq!(largest.len(), available.len(), "{largest:?}");
    // The kernels hold the pipelines timed (each compiled when first timed) and the plan's,
    // and no other.
    let mut expected = first.plan.pipelines();
    for choice in &first.report.choices {
        let (op, _) = matmul_of(&choice.key);
        expected.extend(timed_on(&choice.key).iter().map(|(v, _)| (*v, op)));
    }
    let mut compiled = first.kernels.matmul.compiled();
    let order = |(v, op): &(MatmulVariant, MatmulOp)| (v.name, *op as usize);
    for list in [&mut expected, &mut compiled] {
        list.sort_by_key(order);
        list.dedup();
    }
    assert_eq!(compiled, expected);
    let file = cache_file(dir.path());
    assert_eq!(file.version, tune::version());
    let entries = &file.adapters[&tune::adapter_key(&ctx.info)];
    assert_eq!(entries.len(), 8, "{entries:?}");
    assert!(entries.contains_key("forward 100x784x64"), "{entries:?}");
    println!("timed in {:.2} s: {}", first.report.seconds, first.plan.describe());

    let second = tune::tune(&ctx, &work, TuneMode::Cached, &cache).unwrap();
    assert_eq!(second.report.source, PlanSource::Cached);
    assert_eq!(second.report.timed, 0);
    assert_eq!(second.plan, first.plan);

    let fresh = tune::tune(&ctx, &work, TuneMode::Fresh, &cache).unwrap();
    assert_eq!(fresh.report.source, PlanSource::Timed);
    assert_eq!(fresh.report.timed, 8);

    // A network that shares some shapes with the cached one times only what is new: its first
    // layer (784 → 64 at batch 100) is cached, 64 → 10 is not.
    let other = spec_of(&[784, 64, 10]);
    let work = Workload::training(&other, &train, 100);
    let partly = tune::tune(&ctx, &work, TuneMode::Cached, &cache).unwrap();
    assert_eq!(partly.report.timed, 3, "{:?}", partly.report);
}

fn spec_of(widths: &[usize]) -> gpu_mlp::network::NetworkSpec {
    spec(widths, Activation::Relu, Output::Softmax, Loss::Ce)
}

/// `--tune off`: the default variant everywhere, nothing timed, no cache read or written.
#[test]
fn tune_off_uses_the_default_variant() {
    let ctx = context();
    let spec = spec_of(&[784, 32, 10]);
    let train = train_set(200);
    let work = Workload::training(&spec, &train, 50);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tune.json"), "not json").unwrap();
    let off = tune::tune(&ctx, &work, TuneMode::Off, &TuneCache::at(dir.path())).unwrap();
    assert_eq!(off.report.source, PlanSource::Default);
    assert_eq!(off.report.timed, 0);
    assert_eq!(off.plan, MatmulPlan::uniform(MatmulVariant::DEFAULT, 2));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tune.json")).unwrap(),
        "not json"
    );
}

/// A short GPU run: 784-32-10 on 300 training images, 1 epoch.
const SHORT: [&str; 11] = [
    "--train-examples",
    "300",
    "--test-examples",
    "100",
    "--epochs",
    "1",
    "--layers",
    "784-32-10",
    "--quiet",
    "--device",
    "gpu",
];

/// Runs the binary on a [`SHORT`] run with `args`, its cache in `cache`, HOME pointed at `home`
/// and XDG_CACHE_HOME unset; returns (stdout, stderr).
fn run(cache: Option<&Path>, home: &Path, args: &[&str]) -> (String, String) {
    run_with(cache, home, &[&SHORT[..], args].concat())
}

/// [`run`] with `args` alone.
fn run_with(cache: Option<&Path>, home: &Path, args: &[&str]) -> (String, String) {
    let mut command = common::gpu_mlp();
    match cache {
        Some(dir) => command.env("GPU_MLP_CACHE_DIR", dir),
        None => command.env_remove("GPU_MLP_CACHE_DIR"),
    };
    let out = command
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .args(args)
        .output()
        .expect("gpu-mlp runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "gpu-mlp {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// The lines of `stderr` about the tuning cache.
fn cache_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("tuning cache")).collect()
}

/// A corrupt cache, and one from another version, are each ignored with one line on stderr; the
/// run succeeds and rewrites the file as a valid cache of this version. The next run says nothing.
#[test]
fn a_corrupt_or_foreign_cache_costs_one_line_on_stderr() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tune.json");
    let foreign = r#"{"version": "0.0.1", "adapters": {}}"#;
    // The same crate version with other kernels (or a build from before the kernels counted).
    let other_kernels = format!(r#"{{"version": "{}", "adapters": {{}}}}"#, env!("CARGO_PKG_VERSION"));
    for (what, content) in [
        ("corrupt", "{\"version\": \"0.1.0\", \"adapters\": [tru"),
        ("foreign", foreign),
        ("other kernels", other_kernels.as_str()),
        ("binary", "\u{0}\u{1}\u{2}"),
    ] {
        std::fs::write(&path, content).unwrap();
        let (_, stderr) = run(Some(dir.path()), home.path(), &[]);
        let lines = cache_lines(&stderr);
        assert_eq!(lines.len(), 1, "{what}: {stderr}");
        assert!(lines[0].contains(&path.display().to_string()), "{what}: {stderr}");
        if what == "foreign" {
            assert!(lines[0].contains("0.0.1"), "{stderr}");
        }
        assert_eq!(cache_file(dir.path()).version, tune::version(), "{what}");
        let (_, stderr) = run(Some(dir.path()), home.path(), &[]);
        assert!(cache_lines(&stderr).is_empty(), "{what}, then a valid cache: {stderr}");
    }
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["tune.json"], "{names:?}");
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "HOME was written to"
    );
}

/// Without GPU_MLP_CACHE_DIR the cache goes to the user's cache folder (`$HOME/.cache/gpu-mlp`
/// on Linux, here a temporary HOME); with it, only there. `--tune off` writes nothing.
/// `--list-devices` shows what is cached for the adapter.
#[test]
fn the_cache_goes_where_it_is_told_and_list_devices_shows_it() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    run(Some(dir.path()), home.path(), &["--tune", "off"]);
    assert!(!dir.path().join("tune.json").exists());
    run(Some(dir.path()), home.path(), &[]);
    assert!(dir.path().join("tune.json").exists());
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "HOME was written to"
    );
    if cfg!(target_os = "linux") {
        run(None, home.path(), &[]);
        assert!(home.path().join(".cache/gpu-mlp/tune.json").exists());
    }
    let out = common::gpu_mlp()
        .env("GPU_MLP_CACHE_DIR", dir.path())
        .arg("--list-devices")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("tuned matmul variants"), "{stdout}");
    assert!(stdout.contains("forward 100x784x32"), "{stdout}");
}

/// A checkpoint records the variants the run used; resuming it uses them (the run continues bit
/// for bit even if a fresh tuning would choose others).
#[test]
fn a_checkpoint_records_the_matmul_variants() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("run.safetensors");
    let path = checkpoint.to_str().unwrap();
    run(Some(dir.path()), home.path(), &["--save", path]);
    let loaded = gpu_mlp::model::Checkpoint::load(&checkpoint, &Default::default()).unwrap();
    let settings = loaded.training.expect("a checkpoint").settings;
    let recorded = settings.gpu_matmuls.expect("the variants are recorded");
    let layers: Vec<&str> = recorded.split(';').collect();
    assert_eq!(layers.len(), 2, "{recorded}");
    for layer in layers {
        for name in layer.split(',') {
            assert!(MatmulVariant::by_name(name).is_some(), "{recorded}");
        }
    }
    let (stdout, _) = run_with(
        Some(dir.path()),
        home.path(),
        &["--resume", path, "--epochs", "2", "--json"],
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

/// A cached choice is used as it is, whatever a timing would say: a cache that names `direct`
/// for one matmul gets `direct` there, and only the other matmuls are timed; the file keeps it,
/// and keeps another adapter's choices untouched.
#[test]
fn a_cached_choice_is_used_and_kept() {
    let ctx = context();
    let spec = spec_of(&[784, 32, 10]);
    let train = train_set(300);
    let work = Workload::training(&spec, &train, 100);
    let dir = tempfile::tempdir().unwrap();
    let adapter = tune::adapter_key(&ctx.info);
    let text = serde_json::json!({
        "version": tune::version(),
        "adapters": {
            adapter.clone(): {"forward 100x784x32": {"variant": "direct", "seconds": 1.0}},
            "another adapter | its driver": {"forward 1x1x1": {"variant": "tiled32", "seconds": 2.0}},
        }
    });
    std::fs::write(dir.path().join("tune.json"), text.to_string()).unwrap();
    let tuned = tune::tune(&ctx, &work, TuneMode::Cached, &TuneCache::at(dir.path())).unwrap();
    assert_eq!(tuned.report.timed, 4, "{:?}", tuned.report);
    assert_eq!(tuned.plan.get(0, MatmulOp::Forward), MatmulVariant::DIRECT);
    // Not timed here, compiled all the same for the run.
    assert!(tuned.kernels.matmul.has((MatmulVariant::DIRECT, MatmulOp::Forward)));
    let file = cache_file(dir.path());
    assert_eq!(file.adapters[&adapter]["forward 100x784x32"].variant, "direct");
    assert_eq!(file.adapters[&adapter].len(), 5);
    assert_eq!(
        file.adapters["another adapter | its driver"]["forward 1x1x1"].variant,
        "tiled32"
    );
}
