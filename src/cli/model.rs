//! `gpu-mlp eval` and `gpu-mlp predict`: using a saved model, on the device asked for.

use super::{default_data_dir, make_backend, threads_or_all, DeviceChoice};
use crate::backend::{Split, Workload};
use crate::data::{self, Dataset};
use crate::error::{ConfigError, Result, WidthsFlag};
use crate::evaluate::{self, Evaluation};
use crate::model::{Checkpoint, Model, ModelError, SpecHints};
use crate::network::{parse_widths, Activation, Loss, Output};
use crate::preprocess;
use crate::report::thousands;
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The network flags, for a model file without gpu-mlp's metadata (one saved from PyTorch):
/// they say what the file does not. With metadata they must agree with it.
#[derive(Args, Debug, Clone, Default)]
pub struct NetworkFlags {
    /// Layer widths, input first (only for files without gpu-mlp metadata; inferred from the
    /// tensors' shapes when left out)
    #[arg(long, value_name = "WIDTHS")]
    pub layers: Option<String>,
    /// Hidden-layer activation (needed for files without gpu-mlp metadata)
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// Output non-linearity (files without metadata: softmax)
    #[arg(long, value_enum)]
    pub output: Option<Output>,
    /// Loss, for the reported loss (files without metadata: ce)
    #[arg(long, value_enum)]
    pub loss: Option<Loss>,
}

impl NetworkFlags {
    pub fn hints(&self) -> Result<SpecHints, ConfigError> {
        Ok(SpecHints {
            widths: self
                .layers
                .as_deref()
                .map(|w| parse_widths(WidthsFlag::Layers, w))
                .transpose()?,
            activation: self.activation,
            output: self.output,
            loss: self.loss,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// The training file (all of it).
    Train,
    /// The test file.
    Test,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// The model file (safetensors) to evaluate.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Folder with the four MNIST IDX files [default: the one the model was trained on, else data/mnist]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Which set to evaluate on.
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    pub split: EvalSplit,
    /// Where to run the forward pass.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// CPU threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub network: NetworkFlags,
}

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The model file (safetensors).
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Images of digits: PNG, JPEG, BMP or PGM/PPM, any size, grey or colour.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// Take 28×28 images as they are (light digit on black, like MNIST's) instead of
    /// preprocessing them.
    #[arg(long)]
    pub raw: bool,
    /// Where to run the forward pass.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// CPU threads [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object per image instead of a line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub network: NetworkFlags,
}

/// Loads the model a command uses.
fn load_model(path: &Path, network: &NetworkFlags) -> Result<Checkpoint> {
    Ok(Checkpoint::load(path, &network.hints()?)?)
}

/// Refuses data the model cannot take: other input width, more classes than outputs.
fn check_fits(model: &Model, path: &Path, data: &Dataset, source: &str) -> Result<(), ModelError> {
    let inputs = model.spec.widths[0];
    let outputs = *model.spec.widths.last().expect("widths");
    if inputs != data.features {
        return Err(ModelError::InputMismatch {
            path: path.into(),
            inputs,
            features: data.features,
            data: source.into(),
        });
    }
    if let Some(&label) = data.labels.iter().max().filter(|&&l| l as usize >= outputs) {
        return Err(ModelError::ClassMismatch {
            path: path.into(),
            outputs,
            label: label as usize,
            data: source.into(),
        });
    }
    Ok(())
}

/// The logits of every example of `data` under `model`, on `device`: a backend whose test split
/// is `data` (and whose unused training set is its first example).
pub fn logits_of(
    model: &Model,
    data: &Dataset,
    device: DeviceChoice,
    threads: usize,
) -> Result<(Vec<f32>, String, String)> {
    let one = data.truncated(1);
    let work = Workload {
        test: Some(data),
        standardize: model.standardize.as_ref(),
        ..Workload::training(&model.spec, &one, 1)
    };
    let mut backend = make_backend(device, work, model.params.clone(), threads)?;
    let logits = backend.logits(Split::Test)?;
    Ok((logits, backend.device().to_string(), backend.adapter()))
}

/// One line that names the model: "784-128-10 (relu hidden, softmax output, ce loss), 10 epochs".
pub fn describe(model: &Model) -> String {
    let spec = &model.spec;
    let mut text = format!(
        "{} ({} hidden, {} output, {} loss)",
        spec.name(),
        spec.activation,
        spec.output,
        spec.loss
    );
    let info = &model.info;
    if let Some(epochs) = info.epochs_trained {
        text += &format!(", {epochs} epochs");
    }
    if let Some(device) = &info.device {
        text += &format!(" on {device}");
    }
    if let Some(seed) = info.seed {
        text += &format!(", seed {seed}");
    }
    if !info.has_metadata {
        text += " (no gpu-mlp metadata: network from the command line)";
    }
    text
}

#[derive(Serialize)]
struct EvalJson<'a> {
    model: &'a Path,
    split: EvalSplit,
    data_dir: &'a Path,
    device: &'a str,
    adapter: &'a str,
    #[serde(flatten)]
    evaluation: &'a Evaluation,
}

/// `gpu-mlp eval`: the model's loss, accuracy, per-class accuracy and confusion matrix.
pub fn eval_command(args: &EvalArgs) -> Result<()> {
    let checkpoint = load_model(&args.model, &args.network)?;
    let model = &checkpoint.model;
    let threads = threads_or_all(args.threads);
    if threads == 0 {
        return Err(ConfigError::ZeroThreads.into());
    }
    let stored_dir = checkpoint
        .training
        .as_ref()
        .and_then(|t| t.settings.data_dir.clone())
        .map(PathBuf::from);
    let dir = args.data_dir.clone().or(stored_dir).unwrap_or_else(default_data_dir);
    let mnist = data::load_mnist(&dir)?;
    let data = match args.split {
        EvalSplit::Train => mnist.train,
        EvalSplit::Test => mnist.test,
    };
    let source = format!("the {} set in {}", split_name(args.split), dir.display());
    check_fits(model, &args.model, &data, &source)?;
    let (logits, device, adapter) = logits_of(model, &data, args.device, threads)?;
    let evaluation = evaluate::evaluate(&model.spec, &logits, &data.labels);
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = EvalJson {
            model: &args.model,
            split: args.split,
            data_dir: &dir,
            device: &device,
            adapter: &adapter,
            evaluation: &evaluation,
        };
        writeln!(out, "{}", serde_json::to_string(&json).expect("serialisable"))?;
    } else {
        writeln!(out, "model {}: {}", args.model.display(), describe(model))?;
        writeln!(
            out,
            "{} set of {}: {} examples; device {device} ({adapter})",
            split_name(args.split),
            dir.display(),
            thousands(data.len() as u64)
        )?;
        write!(out, "{}", evaluation.table())?;
    }
    Ok(())
}

fn split_name(split: EvalSplit) -> &'static str {
    match split {
        EvalSplit::Train => "training",
        EvalSplit::Test => "test",
    }
}

#[derive(Serialize)]
struct Ranked {
    class: usize,
    probability: f32,
}

#[derive(Serialize)]
struct PredictJson<'a> {
    file: &'a Path,
    predicted: usize,
    top3: Vec<Ranked>,
}

/// `gpu-mlp predict`: each image's predicted digit and its three most probable classes.
pub fn predict_command(args: &PredictArgs) -> Result<()> {
    let checkpoint = load_model(&args.model, &args.network)?;
    let model = &checkpoint.model;
    let threads = threads_or_all(args.threads);
    if threads == 0 {
        return Err(ConfigError::ZeroThreads.into());
    }
    // Every image first: a bad one is reported before anything is printed.
    let mut images = Vec::with_capacity(args.images.len() * data::MNIST_PIXELS);
    for path in &args.images {
        images.extend(preprocess::load(path, args.raw)?);
    }
    let classes = *model.spec.widths.last().expect("widths");
    let data = Dataset {
        images,
        labels: vec![0; args.images.len()],
        features: data::MNIST_PIXELS,
        classes,
    };
    check_fits(model, &args.model, &data, "a 28×28 image")?;
    let (logits, _, _) = logits_of(model, &data, args.device, threads)?;
    let mut out = std::io::stdout().lock();
    for (path, z) in args.images.iter().zip(logits.chunks_exact(classes)) {
        let p = evaluate::probabilities(model.spec.output, z);
        let predicted = crate::cpu::ops::argmax(z);
        let top = evaluate::top_k(&p, 3);
        if args.json {
            let json = PredictJson {
                file: path,
                predicted,
                top3: top
                    .iter()
                    .map(|&(class, probability)| Ranked { class, probability })
                    .collect(),
            };
            writeln!(out, "{}", serde_json::to_string(&json).expect("serialisable"))?;
        } else {
            let ranked: Vec<String> = top
                .iter()
                .map(|(class, probability)| format!("{class}: {:.2}%", 100.0 * probability))
                .collect();
            writeln!(out, "{}: {predicted}  ({})", path.display(), ranked.join(", "))?;
        }
    }
    Ok(())
}
