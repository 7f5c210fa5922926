//! What a person watching the trainer gets, apart from the terminal itself (tests/terminal.rs):
//! metrics files that hold every epoch as the run goes, plots with the curves drawn, shell
//! completions, and no stray lines on stderr — no warning from Mesa whatever XDG_RUNTIME_DIR
//! holds, no log lines unless asked for, no bar when stderr is not a terminal.

mod common;

use common::{json_objects, mnist_dir};
use gpu_mlp::plot::{RUN_COLOURS, SIZE, TEST_COLOUR, TRAIN_COLOUR, VALIDATION_COLOUR};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary on a small MNIST run: `args` added to a data folder and quick-run sizes.
fn gpu_mlp(args: &[&str]) -> Command {
    let mut command = common::gpu_mlp();
    command
        .arg("--data-dir")
        .arg(mnist_dir())
        .args(["--train-examples", "300", "--test-examples", "100"])
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

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `command`, expecting it to fail; returns its stderr.
fn fails(mut command: Command) -> String {
    let out = command.output().expect("the gpu-mlp binary runs");
    assert!(!out.status.success(), "{command:?} should fail:\n{}", stdout_of(&out));
    let stderr = stderr_of(&out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A small CPU run of three epochs with a validation split, printing `--json` too.
fn three_epochs(extra: &[&str]) -> Command {
    let mut args = vec!["--device", "cpu", "--epochs", "3", "--validation", "100", "--json"];
    args.extend_from_slice(extra);
    gpu_mlp(&args)
}

/// `--metrics-out run.jsonl` holds exactly the objects `--json` printed, one line per epoch;
/// nothing else appears on stderr (no bar: stderr is not a terminal).
#[test]
fn a_json_lines_metrics_file_holds_the_json_objects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.jsonl");
    let out = run(three_epochs(&["--metrics-out", file.to_str().unwrap()]));
    assert_eq!(stderr_of(&out), "", "a run with stderr piped prints nothing there");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, stdout_of(&out), "the file holds what --json printed");
    let rows = json_objects(&written);
    assert_eq!(rows.len(), 3);
    // What this run measures (seed 1, 1 or 2 threads: 51, 70, 65 of the 100 held-out images),
    // to within 3 images: a fraction, and the run's own.
    for (i, (row, want)) in rows.iter().zip([0.51, 0.70, 0.65]).enumerate() {
        assert_eq!(row["epoch"], i + 1);
        assert_eq!(row["network"], "784-128-10");
        let accuracy = row["validation_accuracy"].as_f64().unwrap();
        assert!((accuracy - want).abs() <= 0.03, "{row:?}");
    }
}

/// `--metrics-out run.csv`: a header with the keys of `--json` in their order, then one row
/// per epoch whose fields are the JSON values (empty for null, the adapter quoted).
#[test]
fn a_csv_metrics_file_has_the_json_keys_and_one_row_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.csv");
    let out = run(three_epochs(&["--metrics-out", file.to_str().unwrap()]));
    let printed = json_objects(&stdout_of(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 3, "a header and one row per epoch:\n{text}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let keys: Vec<&str> = printed[0].keys().map(|k| k.as_str()).collect();
    assert_eq!(header, keys, "the CSV's columns are --json's keys, in order");
    for (line, object) in lines[1..].iter().zip(&printed) {
        // The CPU's adapter, "cpu (2 threads)", has no comma: split plainly.
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), keys.len(), "{line}");
        for (field, key) in fields.iter().zip(&keys) {
            match &object[*key] {
                Value::Null => assert_eq!(*field, "", "{key}"),
                Value::String(s) => assert_eq!(field, s, "{key}"),
                Value::Number(n) => {
                    let parsed: f64 = field
                        .parse()
                        .unwrap_or_else(|_| panic!("{key}: {field:?} is not a number"));
                    assert_eq!(parsed, n.as_f64().unwrap(), "{key}");
                }
                other => panic!("{key}: unexpected {other}"),
            }
        }
    }
    // gpu-mlp reads it back as it wrote it.
    let back = gpu_mlp::metrics_file::read(&file).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back[2]["epoch"], 3);
    assert_eq!(back[0]["dispatches"], Value::Null);
}

/// Each epoch is flushed as it ends: a run killed mid-way leaves whole lines for the epochs it
/// finished.
#[test]
fn a_killed_run_keeps_the_epochs_it_finished() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.jsonl");
    let mut child = gpu_mlp(&[
        "--device",
        "cpu",
        "--epochs",
        "100000",
        "--metrics-out",
        file.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&file).map_or(0, |t| t.lines().count()) < 2 {
        assert!(Instant::now() < deadline, "no two epochs written within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n'), "the last line is whole");
    let rows = json_objects(&text);
    assert!(rows.len() >= 2);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["epoch"], i + 1);
    }
}

/// How many pixels of `image` have exactly `colour`.
fn pixels_of(image: &image::RgbImage, colour: plotters::style::RGBColor) -> usize {
    image.pixels().filter(|p| p.0 == [colour.0, colour.1, colour.2]).count()
}

fn open_png(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()))
        .to_rgb8()
}

/// `--plot run.png`: a PNG of the promised size, with the train, validation and test curves
/// drawn in their colours (both panels), on a white background.
#[test]
fn plot_draws_the_curves_to_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("run.png");
    let out = run(three_epochs(&["--plot", png.to_str().unwrap()]));
    assert_eq!(json_objects(&stdout_of(&out)).len(), 3, "--json prints only the epochs");
    let image = open_png(&png);
    assert_eq!(image.dimensions(), SIZE);
    let white = pixels_of(&image, plotters::style::RGBColor(255, 255, 255));
    assert!(white > image.len() / 3 / 2, "mostly white background: {white}");
    for (name, colour) in [
        ("train", TRAIN_COLOUR),
        ("validation", VALIDATION_COLOUR),
        ("test", TEST_COLOUR),
    ] {
        let count = pixels_of(&image, colour);
        // Two panels of three epochs: the markers and legend swatches alone make ~320 pixels,
        // the lines between them ~1500 more.
        assert!(
            count > 1000,
            "the {name} curve is missing: {count} pixels of {colour:?}"
        );
    }
    // Text is drawn (the font is compiled in): dark pixels in the title band.
    let title_ink = (0..SIZE.0)
        .flat_map(|x| (0..40).map(move |y| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0.iter().all(|&c| c < 100))
        .count();
    assert!(title_ink > 200, "no title drawn: {title_ink} dark pixels");
}

/// `--plot run.svg`: an SVG with a path in each split's colour.
#[test]
fn plot_draws_the_curves_to_an_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    run(three_epochs(&["--plot", svg.to_str().unwrap()]));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
    for colour in [TRAIN_COLOUR, VALIDATION_COLOUR, TEST_COLOUR] {
        let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", colour.0, colour.1, colour.2);
        assert!(text.contains(&stroke), "no curve with {stroke}");
    }
    assert!(text.contains("accuracy (%)"), "no axis label");
}

/// `gpu-mlp plot a.jsonl b.csv -o cmp.png`: saved runs of either format on one chart, one
/// colour per run; the legend names them.
#[test]
fn plot_compares_saved_runs() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("slow.jsonl");
    let b = dir.path().join("fast.csv");
    run(three_epochs(&["--lr", "0.05", "--metrics-out", a.to_str().unwrap()]));
    run(three_epochs(&["--lr", "0.5", "--metrics-out", b.to_str().unwrap()]));
    let png = dir.path().join("cmp.png");
    let mut command = common::gpu_mlp();
    command.args([
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
    ]);
    let out = run(command);
    assert_eq!(stdout_of(&out).trim(), format!("plot: {}", png.display()));
    let image = open_png(&png);
    assert_eq!(image.dimensions(), SIZE);
    for (run, colour) in RUN_COLOURS[..2].iter().enumerate() {
        let count = pixels_of(&image, *colour);
        assert!(
            count > 1000,
            "run {run}'s curves are missing: {count} pixels of {colour:?}"
        );
    }
    assert_eq!(pixels_of(&image, RUN_COLOURS[2]), 0, "only two runs");
}

/// Files a run cannot write are refused before it trains, naming the file; a file `plot`
/// cannot read is named with its line.
#[test]
fn unwritable_and_unreadable_files_are_named() {
    let stderr = fails(gpu_mlp(&[
        "--device",
        "cpu",
        "--metrics-out",
        "/nonexistent/dir/run.csv",
    ]));
    assert!(
        stderr.contains("cannot write the metrics file /nonexistent/dir/run.csv"),
        "{stderr}"
    );
    let stderr = fails(gpu_mlp(&["--device", "cpu", "--plot", "curves.gif"]));
    assert!(
        stderr.contains("curves.gif") && stderr.contains(".png or .svg"),
        "{stderr}"
    );
    let stderr = fails(gpu_mlp(&["--device", "cpu", "--plot", "/nonexistent/dir/run.png"]));
    assert!(stderr.contains("/nonexistent/dir/run.png"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"epoch\": 1, \"train_loss\": 0.5, \"train_accuracy\": 0.9}\nnot json\n",
    )
    .unwrap();
    let mut command = common::gpu_mlp();
    command.args([
        "plot",
        bad.to_str().unwrap(),
        "-o",
        dir.path().join("x.png").to_str().unwrap(),
    ]);
    let stderr = fails(command);
    assert!(stderr.contains(&format!("{}, line 2", bad.display())), "{stderr}");
}

/// wgpu's log lines appear only when asked for: RUST_LOG shows them, a plain run does not
/// (mesa_never_warns_about_xdg_runtime_dir checks the plain run's whole stderr).
#[test]
fn wgpu_logs_only_when_asked() {
    let mut command = gpu_mlp(&["--device", "gpu", "--epochs", "1"]);
    command.env("RUST_LOG", "wgpu_hal=debug");
    let stderr = stderr_of(&run(command));
    assert!(
        stderr.contains("wgpu_hal"),
        "RUST_LOG=wgpu_hal=debug shows wgpu's lines:\n{stderr}"
    );
    let mut command = gpu_mlp(&["--device", "gpu", "--epochs", "1"]);
    command.env_remove("RUST_LOG");
    let stderr = stderr_of(&run(command));
    assert!(!stderr.contains("wgpu"), "{stderr}");
}

/// `gpu-mlp completions bash|zsh|fish` prints a script that knows the subcommands and flags.
#[test]
fn completions_know_the_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let mut command = common::gpu_mlp();
        command.args(["completions", shell]);
        let script = stdout_of(&run(command));
        for word in ["gpu-mlp", "metrics-out", "plot", "bench", "quiet"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
}
