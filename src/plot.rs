//! Learning curves, as the tutorials gpu-mlp reproduces end with: accuracy (train, validation,
//! test) and loss against the epoch, side by side, drawn to a PNG or an SVG with plotters.
//!
//! One run: one colour per split (train blue, validation orange, test green), in both panels.
//! Several runs (`gpu-mlp plot a.jsonl b.jsonl`): one colour per run, and the split told by the
//! line (train solid, validation dashed, test dotted), with a legend of both.
//!
//! Text is drawn with a font compiled into the binary (DejaVu Sans, `src/assets`), through
//! plotters' `ab_glyph` renderer: no fontconfig, freetype or installed font is needed.

use crate::train::EpochReport;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The picture's size in pixels (PNG) or user units (SVG).
pub const SIZE: (u32, u32) = (1280, 720);

/// One run's colours, by split.
pub const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
pub const VALIDATION_COLOUR: RGBColor = RGBColor(255, 127, 14);
pub const TEST_COLOUR: RGBColor = RGBColor(44, 160, 44);
/// Several runs' colours, one per run, in order (then again from the first).
pub const RUN_COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

static FONT: &[u8] = include_bytes!("assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// A plot that could not be made, naming the file.
#[derive(Debug, Error)]
pub enum PlotError {
    #[error("cannot draw {}: the file name must end in .png or .svg", path.display())]
    Format { path: PathBuf },
    #[error("cannot draw {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("nothing to plot: {what} has no epochs")]
    Empty { what: String },
    #[error("{}: epoch record {index} is not one gpu-mlp wrote: {message}", path.display())]
    Record {
        path: PathBuf,
        index: usize,
        message: String,
    },
}

/// What a curve needs of an epoch: the keys of `--json` it reads (others are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub validation_loss: Option<f64>,
    pub validation_accuracy: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub adapter: Option<String>,
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub batch_size: Option<usize>,
}

impl From<&EpochReport> for EpochPoint {
    fn from(r: &EpochReport) -> EpochPoint {
        EpochPoint {
            epoch: r.epoch,
            train_loss: r.train_loss,
            train_accuracy: r.train_accuracy,
            validation_loss: r.validation_loss,
            validation_accuracy: r.validation_accuracy,
            test_loss: r.test_loss,
            test_accuracy: r.test_accuracy,
            network: Some(r.network.clone()),
            device: Some(r.device.to_string()),
            adapter: Some(r.adapter.clone()),
            lr: Some(r.lr as f64),
            batch_size: Some(r.batch_size),
        }
    }
}

/// One run's curves and the name its legend entry carries.
#[derive(Clone, Debug)]
pub struct Curves {
    pub label: String,
    pub epochs: Vec<EpochPoint>,
}

impl Curves {
    /// From a finished run's reports.
    pub fn from_reports(label: &str, reports: &[EpochReport]) -> Curves {
        Curves {
            label: label.to_string(),
            epochs: reports.iter().map(EpochPoint::from).collect(),
        }
    }

    /// From the records of a metrics file (see [`crate::metrics_file::read`]).
    pub fn from_records(label: &str, path: &Path, records: Vec<Map<String, Value>>) -> Result<Curves, PlotError> {
        let epochs = records
            .into_iter()
            .enumerate()
            .map(|(index, record)| {
                serde_json::from_value(Value::Object(record)).map_err(|e| PlotError::Record {
                    path: path.to_path_buf(),
                    index: index + 1,
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Curves {
            label: label.to_string(),
            epochs,
        })
    }

    /// "784-128-10, batch 100, lr 0.3": the training settings its records carry.
    pub fn settings(&self) -> String {
        self.describe(false)
    }

    /// "cpu (2 threads)", or the GPU adapter's name.
    pub fn device(&self) -> Option<String> {
        let first = self.epochs.first()?;
        first.adapter.clone().or_else(|| first.device.clone())
    }

    fn describe(&self, with_device: bool) -> String {
        let Some(first) = self.epochs.first() else {
            return String::new();
        };
        let mut parts = Vec::new();
        if let Some(network) = &first.network {
            parts.push(network.clone());
        }
        if let Some(batch) = first.batch_size {
            parts.push(format!("batch {batch}"));
        }
        if let Some(lr) = first.lr {
            parts.push(format!("lr {}", lr as f32));
        }
        if with_device {
            parts.extend(self.device());
        }
        parts.join(", ")
    }
}

/// The three splits a curve can show, each with its colour (one run) and line (several).
#[derive(Clone, Copy)]
enum Split {
    Train,
    Validation,
    Test,
}

const SPLITS: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
    fn colour(self) -> RGBColor {
        match self {
            Split::Train => TRAIN_COLOUR,
            Split::Validation => VALIDATION_COLOUR,
            Split::Test => TEST_COLOUR,
        }
    }
    fn accuracy(self, p: &EpochPoint) -> Option<f64> {
        match self {
            Split::Train => Some(p.train_accuracy),
            Split::Validation => p.validation_accuracy,
            Split::Test => p.test_accuracy,
        }
    }
    fn loss(self, p: &EpochPoint) -> Option<f64> {
        match self {
            Split::Train => Some(p.train_loss),
            Split::Validation => p.validation_loss,
            Split::Test => p.test_loss,
        }
    }
}

/// Which panel a series belongs to.
#[derive(Clone, Copy)]
enum Metric {
    Accuracy,
    Loss,
}

impl Metric {
    /// The value plotted for a split at an epoch: accuracy in percent, loss as it is.
    fn value(self, split: Split, p: &EpochPoint) -> Option<f64> {
        match self {
            Metric::Accuracy => split.accuracy(p).map(|a| 100.0 * a),
            Metric::Loss => split.loss(p),
        }
    }
}

/// Registers the font once; plotters looks it up by family name.
fn register_font() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            unreachable!("the compiled-in font is a valid TrueType font");
        }
    });
}

/// Whether `path` can take a plot, checked before a run spends any time: it ends in `.png` or
/// `.svg` and its folder exists.
pub fn check_path(path: &Path) -> Result<(), PlotError> {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(extension.as_deref(), Some("png" | "svg")) {
        return Err(PlotError::Format {
            path: path.to_path_buf(),
        });
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(PlotError::Draw {
            path: path.to_path_buf(),
            message: format!("the folder {} does not exist", folder.display()),
        });
    }
    Ok(())
}

/// Draws `runs` to `path` (`.png` or `.svg`), with `title` above both panels.
pub fn draw(runs: &[Curves], title: &str, path: &Path) -> Result<(), PlotError> {
    for run in runs {
        if run.epochs.is_empty() {
            return Err(PlotError::Empty {
                what: run.label.clone(),
            });
        }
    }
    if runs.is_empty() {
        return Err(PlotError::Empty {
            what: "the list of runs".into(),
        });
    }
    register_font();
    let draw_error = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("png") => {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            draw_on(&root, runs, title).map_err(draw_error)?;
            root.present().map_err(|e| draw_error(e.to_string()))
        }
        Some("svg") => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            draw_on(&root, runs, title).map_err(draw_error)?;
            root.present().map_err(|e| draw_error(e.to_string()))
        }
        _ => Err(PlotError::Format {
            path: path.to_path_buf(),
        }),
    }
}

/// The title when none is given: "gpu-mlp: 784-128-10, batch 100, lr 0.3, cpu (2 threads)" for
/// one run; for several, how many and the device they share, if they share one.
pub fn default_title(runs: &[Curves]) -> String {
    match runs {
        [one] if !one.describe(true).is_empty() => format!("gpu-mlp: {}", one.describe(true)),
        _ => {
            let device = runs[0].device();
            match device {
                Some(device) if runs.iter().all(|r| r.device().as_ref() == Some(&device)) => {
                    format!("gpu-mlp: {} runs on {device}", runs.len())
                }
                _ => format!("gpu-mlp: {} runs", runs.len()),
            }
        }
    }
}

/// A run's legend entry among several: its name, and its settings when they say more.
fn legend_label(run: &Curves) -> String {
    let settings = run.settings();
    if settings.is_empty() {
        run.label.clone()
    } else {
        format!("{}: {settings}", run.label)
    }
}

fn draw_on<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, runs: &[Curves], title: &str) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.margin(10, 0, 0, 0);
    let root = root.titled(title, (FAMILY, 24).into_font().color(&BLACK)).map_err(e)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    panel(&left, runs, Metric::Accuracy)?;
    panel(&right, runs, Metric::Loss)?;
    Ok(())
}

/// The y range of a panel: the values' span with a margin; accuracy never above 100%, loss
/// from 0.
fn y_range(runs: &[Curves], metric: Metric) -> std::ops::Range<f64> {
    let values = runs.iter().flat_map(|run| {
        run.epochs
            .iter()
            .flat_map(move |p| SPLITS.iter().filter_map(move |&s| metric.value(s, p)))
    });
    let (low, high) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !low.is_finite() {
        return 0.0..1.0;
    }
    match metric {
        Metric::Accuracy => {
            let pad = ((high - low) * 0.08).max(0.5);
            (low - pad).max(0.0).floor()..(high + pad).min(100.0).ceil()
        }
        Metric::Loss => 0.0..(high * 1.08).max(1e-6),
    }
}

/// One panel: accuracy (%) or loss against the epoch, every run's splits, and its legend.
fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, runs: &[Curves], metric: Metric) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let last_epoch = runs
        .iter()
        .flat_map(|r| r.epochs.iter().map(|p| p.epoch))
        .max()
        .unwrap_or(1);
    let first_epoch = runs
        .iter()
        .flat_map(|r| r.epochs.iter().map(|p| p.epoch))
        .min()
        .unwrap_or(1);
    // Epoch 0 is "before training": room to the left of the first point.
    let x_range = first_epoch.saturating_sub(1) as i64..last_epoch as i64;
    let (caption, y_desc) = match metric {
        Metric::Accuracy => ("Accuracy", "accuracy (%)"),
        Metric::Loss => ("Loss", "mean loss per example"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range(runs, metric))
        .map_err(e)?;
    let accuracy_label = |v: &f64| format!("{v:.0}%");
    let loss_label = |v: &f64| format!("{v:.2}");
    let y_format: &dyn Fn(&f64) -> String = match metric {
        Metric::Accuracy => &accuracy_label,
        Metric::Loss => &loss_label,
    };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels((last_epoch + 1).min(12))
        .y_label_formatter(y_format)
        .axis_desc_style((FAMILY, 18))
        .label_style((FAMILY, 15))
        .max_light_lines(2)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(e)?;

    let several = runs.len() > 1;
    for (index, run) in runs.iter().enumerate() {
        for split in SPLITS {
            let points: Vec<(i64, f64)> = run
                .epochs
                .iter()
                .filter_map(|p| metric.value(split, p).map(|v| (p.epoch as i64, v)))
                .filter(|(_, v)| v.is_finite())
                .collect();
            if points.is_empty() {
                continue;
            }
            let colour = if several {
                RUN_COLOURS[index % RUN_COLOURS.len()]
            } else {
                split.colour()
            };
            let style = colour.stroke_width(2);
            let series = match (several, split) {
                (true, Split::Validation) => chart.draw_series(DashedLineSeries::new(points.clone(), 10, 6, style)),
                (true, Split::Test) => chart.draw_series(DashedLineSeries::new(points.clone(), 3, 4, style)),
                _ => chart.draw_series(LineSeries::new(points.clone(), style)),
            }
            .map_err(e)?;
            if !several {
                series
                    .label(split.name())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
            } else if split_is_first_shown(run, split, metric) {
                series
                    .label(legend_label(run))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3)));
            }
            // A marker at each epoch, so a run of one epoch still shows.
            if points.len() <= 60 {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                    .map_err(e)?;
            }
        }
    }
    if several {
        // How each split is drawn, in grey: legend entries with no data.
        let grey = RGBColor(90, 90, 90);
        for split in SPLITS {
            let shown = runs
                .iter()
                .any(|run| run.epochs.iter().any(|p| metric.value(split, p).is_some()));
            if !shown {
                continue;
            }
            let style = grey.stroke_width(2);
            chart
                .draw_series(std::iter::empty::<PathElement<(i64, f64)>>())
                .map_err(e)?
                .label(split.name())
                .legend(move |(x, y)| -> DynElement<'static, DB, (i32, i32)> {
                    match split {
                        Split::Train => PathElement::new(vec![(x, y), (x + 24, y)], style).into_dyn(),
                        Split::Validation => DashedPathElement::new(vec![(x, y), (x + 24, y)], 8, 4, style).into_dyn(),
                        Split::Test => DashedPathElement::new(vec![(x, y), (x + 24, y)], 3, 3, style).into_dyn(),
                    }
                });
        }
    }
    let position = match metric {
        Metric::Accuracy => SeriesLabelPosition::LowerRight,
        Metric::Loss => SeriesLabelPosition::UpperRight,
    };
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .margin(12)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Whether `split` is the first split `run` has values for in this panel (its legend entry
/// goes on that series, once per run).
fn split_is_first_shown(run: &Curves, split: Split, metric: Metric) -> bool {
    let first = SPLITS
        .iter()
        .find(|&&s| run.epochs.iter().any(|p| metric.value(s, p).is_some()));
    first.is_some_and(|&s| s.name() == split.name())
}
