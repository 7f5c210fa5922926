//! Model files: a trained network as a safetensors file that PyTorch and numpy read as it is, and
//! the checkpoint a stopped run resumes from, in the same file.
//!
//! # The file
//!
//! ```text
//! tensors (little-endian, as safetensors always is)
//!   layers.{i}.weight  F32 [outputs, inputs]  layer i's W, as nn.Linear stores it: W_i transposed
//!   layers.{i}.bias    F32 [outputs]          layer i's b
//!   train.order        U32 [train examples]   checkpoint: the example order of the current epoch
//!   optimizer.{name}   F32 [n]                checkpoint: optimiser state (none for plain SGD)
//!   input.mean         F32 [inputs]           with input_scaling "standardize": each pixel's mean
//!   input.inv_std      F32 [inputs]             and 1/σ over the training set
//! metadata (a string map)
//!   format_version "1", widths "784,128,10", activation, output, loss, input_divisor "255",
//!   input_scaling "scale" or "standardize": what rebuilds and uses the network
//!     (x = pixel / input_divisor, then (x − input.mean) · input.inv_std when standardised;
//!     28×28 row-major, 0 = paper)
//!   epochs_trained, seed, init, dataset, device, adapter, test_accuracy, gpu_mlp_version:
//!     information
//!   train.*, optimizer, optimizer.step: the training state of a checkpoint (see [`TrainingState`])
//! ```
//!
//! Inside gpu-mlp the parameters are one flat buffer `[W_1 … W_L, b_1 … b_L]` with `W_l`
//! inputs × outputs ([`crate::network::ParamLayout`]); [`Model::tensors`] and loading transpose
//! between the two layouts.
//!
//! Every file gpu-mlp writes is a checkpoint (weights + training state): the state costs 4 bytes
//! per training example and makes any saved model resumable. A file without the training state
//! (for example saved from PyTorch with the same tensor names) is a model: it evaluates, predicts
//! and fine-tunes (`--init-from`), and without gpu-mlp's metadata it loads when the command line
//! gives the widths and the activation ([`SpecHints`]).
//!
//! Saving is atomic ([`save_atomic`]): a temporary file beside the target, written, flushed and
//! fsynced, then renamed over it, and the folder fsynced. Killing the process at any moment leaves
//! either the old file or the new one at the path, never a part of one.

use crate::backend::OptimizerState;
use crate::data::{Normalize, Standardization};
use crate::network::{Activation, Loss, NetworkSpec, Output};
use crate::optim::{Optimizer, OptimizerKind};
use crate::train::LrSchedule;
use crate::train::Position;
use clap::ValueEnum;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensorError, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fmt::Display;
use std::io;
#[cfg(feature = "native")]
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

/// The version of the metadata's layout; a file of another version is refused, naming both.
pub const FORMAT_VERSION: &str = "1";
/// The tensors of a standardised model's input statistics.
pub const INPUT_MEAN: &str = "input.mean";
pub const INPUT_INV_STD: &str = "input.inv_std";
/// The network's input is `pixel / INPUT_DIVISOR` (pixels 0 = background … 255 = ink).
pub const INPUT_DIVISOR: f32 = 255.0;
/// Environment variable (for tests only): sleep this many milliseconds between the chunks of a
/// save, so a test can kill the process while the temporary file is half written.
pub const SLOW_SAVE_ENV: &str = "GPU_MLP_TEST_SLOW_SAVE_MS";

/// A trained network: what eval and predict need.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub spec: NetworkSpec,
    /// The flat parameters, `[W_1 … W_L, b_1 … b_L]`, `W_l` inputs × outputs row-major.
    pub params: Vec<f32>,
    /// `--normalize standardize`: the statistics the inputs were standardised with; None: the
    /// inputs are pixel / 255.
    pub standardize: Option<Standardization>,
    pub info: ModelInfo,
}

/// What a file says about how the model was made: for information only, never needed to use it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelInfo {
    pub epochs_trained: Option<usize>,
    pub seed: Option<u64>,
    pub init: Option<String>,
    pub dataset: Option<String>,
    pub device: Option<String>,
    pub adapter: Option<String>,
    pub test_accuracy: Option<f64>,
    pub gpu_mlp_version: Option<String>,
    /// True when the file has gpu-mlp's metadata (false: the network came from the command line).
    pub has_metadata: bool,
}

/// The settings of a run that its future depends on, stored so that `--resume PATH` alone
/// continues it (and flags that contradict them can be refused).
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    pub epochs: usize,
    pub lr: f32,
    pub lr_decay: f32,
    pub lr_decay_every: usize,
    pub batch_size: usize,
    pub l2: f32,
    pub seed: u64,
    pub threads: usize,
    pub init: String,
    /// `mnist` or `xor`.
    pub dataset: String,
    /// `--data-dir` as given, if it was.
    pub data_dir: Option<String>,
    pub train_examples: Option<usize>,
    pub validation: usize,
    pub test_examples: Option<usize>,
    /// CRC-32 of the training set's images then labels: resuming on other data is refused.
    pub data_crc32: u32,
    /// `cpu` or `gpu`, and the adapter: resuming elsewhere works but is not bit for bit.
    pub device: String,
    pub adapter: String,
    /// On the GPU, the matmul variant of each layer's forward, backward-input and
    /// backward-weights matmul, `a,b,c;a,b,c` (`MatmulPlan::names`): a resumed run uses them, as
    /// summing in another order would change the results' last bits.
    pub gpu_matmuls: Option<String>,
    /// The update rule and its hyper-parameters.
    pub optimizer: Optimizer,
    pub dropout: f32,
    pub input_dropout: f32,
    /// `--normalize`: scale or standardize.
    pub normalize: Normalize,
    pub lr_schedule: LrSchedule,
    pub warmup_epochs: usize,
}

/// Everything besides the weights that a run's future depends on.
#[derive(Clone, Debug)]
pub struct TrainingState {
    pub settings: RunSettings,
    pub position: Position,
    pub optimizer: OptimizerState,
}

/// A model file: the network, and the training state when it is a checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub model: Model,
    pub training: Option<TrainingState>,
}

/// What the command line says about the network: used when a file has no metadata, checked
/// against it when it has.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecHints {
    pub widths: Option<Vec<usize>>,
    pub activation: Option<Activation>,
    pub output: Option<Output>,
    pub loss: Option<Loss>,
}

/// Every way reading or writing a model file fails; each message names the file.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("model file {path} does not exist; check the path, or train one with `gpu-mlp train --save {path}`")]
    Missing { path: PathBuf },
    #[error("cannot read model file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("model file {path} is empty (0 bytes); it was never written, save the model again")]
    Empty { path: PathBuf },
    #[error("{path} is not a safetensors model file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error(
        "{path} is truncated or has extra bytes: its header lays out {expected} bytes of tensors \
         but {found} bytes follow the header; save the model again"
    )]
    Truncated {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("tensor '{tensor}' in {path} is of type {found}, but gpu-mlp needs {expected}")]
    Dtype {
        path: PathBuf,
        tensor: String,
        found: String,
        expected: &'static str,
    },
    #[error("tensor '{tensor}' in {path} has shape {found:?}, but {why} needs {expected:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
        why: String,
    },
    #[error("{path} has no tensor '{tensor}', which {why}")]
    MissingTensor { path: PathBuf, tensor: String, why: String },
    #[error(
        "{path} has a tensor gpu-mlp does not know, '{tensor}': a model holds only layers.{{i}}.weight \
         and layers.{{i}}.bias, a checkpoint also train.order and optimizer.*"
    )]
    ExtraTensor { path: PathBuf, tensor: String },
    #[error("{path} holds a weight that is not a finite number: {tensor}{index:?} is {value}")]
    NotFinite {
        path: PathBuf,
        tensor: String,
        index: Vec<usize>,
        value: f32,
    },
    #[error("{path} has a malformed metadata entry {key} = '{value}': expected {expected}")]
    BadMetadata {
        path: PathBuf,
        key: String,
        value: String,
        expected: String,
    },
    #[error("{path} has training state but its metadata lacks '{key}'; the checkpoint is damaged")]
    MissingMetadata { path: PathBuf, key: String },
    #[error("{path} is gpu-mlp model format version {found}, but this gpu-mlp reads version {FORMAT_VERSION}")]
    Version { path: PathBuf, found: String },
    #[error("{path} does not say its {what} (it has no gpu-mlp metadata): pass {flag}")]
    Needs {
        path: PathBuf,
        what: &'static str,
        flag: &'static str,
    },
    #[error("{path} holds a network with {flag} {file_value}, but {flag} {flag_value} was given: leave {flag} out, or use a matching model")]
    Conflict {
        path: PathBuf,
        flag: &'static str,
        file_value: String,
        flag_value: String,
    },
    #[error("{path} has no layers: a model needs at least the tensors layers.0.weight and layers.0.bias")]
    NoLayers { path: PathBuf },
    #[error("{path} holds {found} floats of optimizer state '{name}' but the network has {expected} parameters")]
    OptimizerShape {
        path: PathBuf,
        name: String,
        found: usize,
        expected: usize,
    },
    #[error(
        "{path} holds a model without training state, so a run cannot resume from it: \
         use --init-from {path} to train on from its weights"
    )]
    NotCheckpoint { path: PathBuf },
    #[error("{path} takes {inputs} inputs per example, but {data} has {features}: use a model trained on such data")]
    InputMismatch {
        path: PathBuf,
        inputs: usize,
        features: usize,
        data: String,
    },
    #[error("{path} has {outputs} outputs, but {data} has label {label}: use a model trained on such data")]
    ClassMismatch {
        path: PathBuf,
        outputs: usize,
        label: usize,
        data: String,
    },
    #[error("cannot save the model to {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The bytes of a value in a tensor of `dtype` (4 for F32 and U32).
const WORD: usize = 4;

fn weight_name(layer: usize) -> String {
    format!("layers.{layer}.weight")
}

fn bias_name(layer: usize) -> String {
    format!("layers.{layer}.bias")
}

/// "784,128,10".
pub fn widths_text(widths: &[usize]) -> String {
    let parts: Vec<String> = widths.iter().map(|w| w.to_string()).collect();
    parts.join(",")
}

/// One tensor to write: name, type, shape, little-endian bytes.
struct OwnedTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

impl Model {
    /// The layers as nn.Linear stores them: `(name, [outputs, inputs] or [outputs], values)`,
    /// weights transposed from our inputs × outputs.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let layout = self.spec.layout();
        let mut tensors = Vec::new();
        for (l, shape) in layout.layers.iter().enumerate() {
            let w = shape.weights(&self.params);
            let mut transposed = vec![0.0f32; w.len()];
            for i in 0..shape.inputs {
                for o in 0..shape.outputs {
                    transposed[o * shape.inputs + i] = w[i * shape.outputs + o];
                }
            }
            tensors.push((weight_name(l), vec![shape.outputs, shape.inputs], transposed));
            tensors.push((bias_name(l), vec![shape.outputs], shape.bias(&self.params).to_vec()));
        }
        tensors
    }
}

impl Checkpoint {
    /// The file's bytes: tensors and metadata through the `safetensors` crate.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SafeTensorError> {
        let mut tensors: Vec<OwnedTensor> = self
            .model
            .tensors()
            .into_iter()
            .map(|(name, shape, values)| OwnedTensor {
                name,
                dtype: Dtype::F32,
                shape,
                bytes: f32_bytes(values),
            })
            .collect();
        let mut meta = model_metadata(&self.model);
        if let Some(s) = &self.model.standardize {
            for (name, values) in [(INPUT_MEAN, &s.mean), (INPUT_INV_STD, &s.inv_std)] {
                tensors.push(OwnedTensor {
                    name: name.into(),
                    dtype: Dtype::F32,
                    shape: vec![values.len()],
                    bytes: f32_bytes(values.iter().copied()),
                });
            }
        }
        if let Some(training) = &self.training {
            let order = &training.position.order;
            tensors.push(OwnedTensor {
                name: "train.order".into(),
                dtype: Dtype::U32,
                shape: vec![order.len()],
                bytes: order.iter().flat_map(|v| v.to_le_bytes()).collect(),
            });
            for (name, values) in &training.optimizer.buffers {
                tensors.push(OwnedTensor {
                    name: format!("optimizer.{name}"),
                    dtype: Dtype::F32,
                    shape: vec![values.len()],
                    bytes: f32_bytes(values.iter().copied()),
                });
            }
            meta.extend(training_metadata(training));
        }
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|t| {
                let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?;
                Ok((t.name.clone(), view))
            })
            .collect::<Result<_, SafeTensorError>>()?;
        safetensors::serialize(views, Some(meta))
    }

    /// Reads a model file. `hints` are the network flags of the command line.
    pub fn load(path: &Path, hints: &SpecHints) -> Result<Checkpoint, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ModelError::Missing { path: path.into() },
            _ => ModelError::Read {
                path: path.into(),
                source,
            },
        })?;
        Checkpoint::from_bytes(&bytes, path, hints)
    }

    /// Parses a model file's bytes (`path` names it in errors). Checks everything: the
    /// safetensors structure, each tensor's name, type and shape against the metadata and the
    /// `hints`, finite weights, and a checkpoint's training state.
    pub fn from_bytes(bytes: &[u8], path: &Path, hints: &SpecHints) -> Result<Checkpoint, ModelError> {
        let (file, meta) = parse_safetensors(bytes, path)?;
        let meta = Meta { map: &meta, path };
        let ours = meta.map.contains_key("format_version");
        if let Some(version) = meta.map.get("format_version") {
            if version != FORMAT_VERSION {
                return Err(ModelError::Version {
                    path: path.into(),
                    found: version.clone(),
                });
            }
        }
        let spec = read_spec(&file, &meta, ours, hints)?;
        let params = read_params(&file, path, &spec)?;
        let standardize = read_standardization(&file, &meta, ours, spec.widths[0])?;
        let training = if ours && meta.map.contains_key("train.epochs_done") {
            Some(read_training(&file, &meta, spec.layout().total)?)
        } else {
            None
        };
        check_no_extra_tensors(&file, path, spec.layers(), training.as_ref(), standardize.is_some())?;
        let info = if ours {
            ModelInfo {
                epochs_trained: meta.optional("epochs_trained")?,
                seed: meta.optional("seed")?,
                init: meta.map.get("init").cloned(),
                dataset: meta.map.get("dataset").cloned(),
                device: meta.map.get("device").cloned(),
                adapter: meta.map.get("adapter").cloned(),
                test_accuracy: meta.optional("test_accuracy")?,
                gpu_mlp_version: meta.map.get("gpu_mlp_version").cloned(),
                has_metadata: true,
            }
        } else {
            ModelInfo::default()
        };
        Ok(Checkpoint {
            model: Model {
                spec,
                params,
                standardize,
                info,
            },
            training,
        })
    }

    /// Writes the file atomically (see [`save_atomic`]).
    #[cfg(feature = "native")]
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes().map_err(|e| ModelError::Write {
            path: path.into(),
            source: io::Error::other(e.to_string()),
        })?;
        save_atomic(path, &bytes).map_err(|source| ModelError::Write {
            path: path.into(),
            source,
        })
    }
}

/// The metadata that rebuilds and describes the network.
fn model_metadata(model: &Model) -> HashMap<String, String> {
    let spec = &model.spec;
    let info = &model.info;
    let mut meta = HashMap::new();
    let mut put = |key: &str, value: String| {
        meta.insert(key.to_string(), value);
    };
    put("format_version", FORMAT_VERSION.into());
    put("widths", widths_text(&spec.widths));
    put("activation", spec.activation.to_string());
    put("output", spec.output.to_string());
    put("loss", spec.loss.to_string());
    put("input_divisor", INPUT_DIVISOR.to_string());
    match model.standardize {
        None => {
            put("input_scaling", Normalize::Scale.to_string());
            put(
                "input",
                "pixels row-major (28x28 for MNIST), 0 = background, 255 = ink; x = pixel / input_divisor".into(),
            );
        }
        Some(_) => {
            put("input_scaling", Normalize::Standardize.to_string());
            put(
                "input",
                "pixels row-major (28x28 for MNIST), 0 = background, 255 = ink; \
                 x = (pixel / input_divisor - input.mean) * input.inv_std"
                    .into(),
            );
        }
    }
    put(
        "gpu_mlp_version",
        info.gpu_mlp_version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
    );
    let optional: [(&str, Option<String>); 7] = [
        ("epochs_trained", info.epochs_trained.map(|v| v.to_string())),
        ("seed", info.seed.map(|v| v.to_string())),
        ("init", info.init.clone()),
        ("dataset", info.dataset.clone()),
        ("device", info.device.clone()),
        ("adapter", info.adapter.clone()),
        ("test_accuracy", info.test_accuracy.map(|v| v.to_string())),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            put(key, value);
        }
    }
    meta
}

/// The training state as metadata. Floats are written with Rust's shortest round-trip
/// formatting, so they parse back to the same bits; the generator as its seed (hex), stream and
/// word position.
fn training_metadata(training: &TrainingState) -> HashMap<String, String> {
    let s = &training.settings;
    let p = &training.position;
    let seed: String = p.rng.get_seed().iter().map(|b| format!("{b:02x}")).collect();
    let mut entries: Vec<(&str, String)> = vec![
        ("train.epochs_done", p.epochs_done.to_string()),
        ("train.batches_done", p.batches_done.to_string()),
        ("train.partial_loss", p.partial_loss.to_string()),
        ("train.partial_correct", p.partial_correct.to_string()),
        ("train.rng_seed", seed),
        ("train.rng_stream", p.rng.get_stream().to_string()),
        ("train.rng_word_pos", p.rng.get_word_pos().to_string()),
        ("train.epochs", s.epochs.to_string()),
        ("train.lr", s.lr.to_string()),
        ("train.lr_decay", s.lr_decay.to_string()),
        ("train.lr_decay_every", s.lr_decay_every.to_string()),
        ("train.batch_size", s.batch_size.to_string()),
        ("train.l2", s.l2.to_string()),
        ("train.seed", s.seed.to_string()),
        ("train.threads", s.threads.to_string()),
        ("train.init", s.init.clone()),
        ("train.dataset", s.dataset.clone()),
        ("train.validation", s.validation.to_string()),
        ("train.data_crc32", s.data_crc32.to_string()),
        ("train.device", s.device.clone()),
        ("train.adapter", s.adapter.clone()),
        ("optimizer", training.optimizer.name.clone()),
        ("optimizer.step", training.optimizer.step.to_string()),
        ("train.optimizer", s.optimizer.kind.to_string()),
        ("train.momentum", s.optimizer.momentum.to_string()),
        ("train.beta1", s.optimizer.beta1.to_string()),
        ("train.beta2", s.optimizer.beta2.to_string()),
        ("train.eps", s.optimizer.eps.to_string()),
        ("train.weight_decay", s.optimizer.weight_decay.to_string()),
        ("train.dropout", s.dropout.to_string()),
        ("train.input_dropout", s.input_dropout.to_string()),
        ("train.normalize", s.normalize.to_string()),
        ("train.lr_schedule", s.lr_schedule.to_string()),
        ("train.warmup_epochs", s.warmup_epochs.to_string()),
    ];
    if let Some(dir) = &s.data_dir {
        entries.push(("train.data_dir", dir.clone()));
    }
    if let Some(matmuls) = &s.gpu_matmuls {
        entries.push(("train.gpu_matmuls", matmuls.clone()));
    }
    if let Some(n) = s.train_examples {
        entries.push(("train.train_examples", n.to_string()));
    }
    if let Some(n) = s.test_examples {
        entries.push(("train.test_examples", n.to_string()));
    }
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The safetensors structure and its metadata map, with the crate's errors turned into
/// sentences about the file.
fn parse_safetensors<'a>(
    bytes: &'a [u8],
    path: &Path,
) -> Result<(SafeTensors<'a>, HashMap<String, String>), ModelError> {
    if bytes.is_empty() {
        return Err(ModelError::Empty { path: path.into() });
    }
    let not = |reason: String| ModelError::NotSafetensors {
        path: path.into(),
        reason,
    };
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let parsed = SafeTensors::read_metadata(bytes).and_then(|(_, metadata)| {
        let map = metadata.metadata().clone().unwrap_or_default();
        Ok((SafeTensors::deserialize(bytes)?, map))
    });
    parsed.map_err(|error| match error {
        SafeTensorError::HeaderTooSmall => not(format!(
            "it is {} bytes long, too short to hold even the 8-byte header length",
            bytes.len()
        )),
        SafeTensorError::HeaderTooLarge => not(format!(
            "its first 8 bytes give a header of {} bytes, more than the 100 MB safetensors allows",
            header_len.unwrap_or(0)
        )),
        SafeTensorError::InvalidHeaderLength => not(format!(
            "its first 8 bytes give a header of {} bytes, but only {} bytes follow them",
            header_len.unwrap_or(0),
            bytes.len().saturating_sub(8)
        )),
        SafeTensorError::InvalidHeader(e) => not(format!("its header is not UTF-8 text ({e})")),
        SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => {
            not(format!("its header is not a valid safetensors JSON header ({e})"))
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            let n = header_len.unwrap_or(0) as usize;
            let found = bytes.len().saturating_sub(8 + n);
            let expected = expected_data_len(bytes, n).unwrap_or(0);
            ModelError::Truncated {
                path: path.into(),
                expected,
                found,
            }
        }
        SafeTensorError::InvalidOffset(name) => not(format!(
            "the data offsets of tensor '{name}' leave a gap or overlap another tensor"
        )),
        SafeTensorError::TensorInvalidInfo => not("a tensor's data offsets do not match its shape and type".into()),
        SafeTensorError::ValidationOverflow => not("a tensor's shape is too large to address".into()),
        other => not(other.to_string()),
    })
}

/// The tensor bytes a header lays out (the end of its last tensor), for the truncation message.
fn expected_data_len(bytes: &[u8], header_len: usize) -> Option<usize> {
    let header = bytes.get(8..8usize.checked_add(header_len)?)?;
    let value: serde_json::Value = serde_json::from_slice(header).ok()?;
    value
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .map(|v| v as usize)
}

/// The metadata map of one file, with typed getters that name the file and key on error.
struct Meta<'a> {
    map: &'a HashMap<String, String>,
    path: &'a Path,
}

impl Meta<'_> {
    fn parse<T: FromStr>(&self, key: &str, value: &str, expected: &str) -> Result<T, ModelError> {
        value.parse().map_err(|_| ModelError::BadMetadata {
            path: self.path.into(),
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        })
    }

    fn optional<T: FromStr>(&self, key: &str) -> Result<Option<T>, ModelError> {
        self.map
            .get(key)
            .map(|v| self.parse(key, v, kind_of::<T>()))
            .transpose()
    }

    fn required<T: FromStr>(&self, key: &str) -> Result<T, ModelError> {
        match self.map.get(key) {
            Some(v) => self.parse(key, v, kind_of::<T>()),
            None => Err(ModelError::MissingMetadata {
                path: self.path.into(),
                key: key.into(),
            }),
        }
    }

    fn required_text(&self, key: &str) -> Result<String, ModelError> {
        self.required::<String>(key)
    }

    fn required_enum<T: ValueEnum>(&self, key: &str) -> Result<T, ModelError> {
        self.choice(key)?.ok_or_else(|| ModelError::MissingMetadata {
            path: self.path.into(),
            key: key.into(),
        })
    }

    fn choice<T: ValueEnum>(&self, key: &str) -> Result<Option<T>, ModelError> {
        let Some(value) = self.map.get(key) else {
            return Ok(None);
        };
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        T::from_str(value, false)
            .map(Some)
            .map_err(|_| ModelError::BadMetadata {
                path: self.path.into(),
                key: key.into(),
                value: value.clone(),
                expected: format!("one of {}", names.join(", ")),
            })
    }
}

/// What a metadata value of type `T` must look like, in words.
fn kind_of<T>() -> &'static str {
    match std::any::type_name::<T>() {
        "f32" | "f64" => "a number",
        name if name.ends_with("String") => "text",
        _ => "a whole number",
    }
}

/// Reads a tensor that must exist, with the given type.
fn tensor<'a>(
    file: &SafeTensors<'a>,
    path: &Path,
    name: &str,
    dtype: Dtype,
    why: &str,
) -> Result<TensorView<'a>, ModelError> {
    let view = file.tensor(name).map_err(|_| ModelError::MissingTensor {
        path: path.into(),
        tensor: name.into(),
        why: why.into(),
    })?;
    if view.dtype() != dtype {
        return Err(ModelError::Dtype {
            path: path.into(),
            tensor: name.into(),
            found: format!("{:?}", view.dtype()),
            expected: if dtype == Dtype::F32 { "F32 (float32)" } else { "U32" },
        });
    }
    Ok(view)
}

/// The metadata value of a network setting, checked against the flag given for it.
fn settle<T: PartialEq + Display + Clone>(
    path: &Path,
    flag: &'static str,
    from_file: Option<T>,
    from_flag: Option<T>,
) -> Result<Option<T>, ModelError> {
    match (from_file, from_flag) {
        (Some(file), Some(flag_value)) if file != flag_value => Err(ModelError::Conflict {
            path: path.into(),
            flag,
            file_value: file.to_string(),
            flag_value: flag_value.to_string(),
        }),
        (file, flag_value) => Ok(file.or(flag_value)),
    }
}

/// A width list as a value that prints like `--layers` takes it.
#[derive(Clone, PartialEq)]
struct Widths(Vec<usize>);

impl Display for Widths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&widths_text(&self.0))
    }
}

/// The network: its widths from the layer tensors' shapes (checked against the metadata and the
/// flags), its non-linearities from the metadata or the flags.
fn read_spec(file: &SafeTensors, meta: &Meta, ours: bool, hints: &SpecHints) -> Result<NetworkSpec, ModelError> {
    let path = meta.path;
    let from_meta: Option<Vec<usize>> = match meta.map.get("widths").filter(|_| ours) {
        Some(text) => Some(
            crate::network::parse_widths(crate::error::WidthsFlag::Layers, text)
                .ok()
                .filter(|w| w.len() >= 2 && w.iter().all(|&x| x > 0))
                .ok_or_else(|| ModelError::BadMetadata {
                    path: path.into(),
                    key: "widths".into(),
                    value: text.clone(),
                    expected: "at least two positive widths, like 784,128,10".into(),
                })?,
        ),
        None => None,
    };
    let from_meta_given = from_meta.is_some();
    let declared = settle(
        path,
        "--layers",
        from_meta.map(Widths),
        hints.widths.clone().map(Widths),
    )?
    .map(|w| w.0);
    let source = if from_meta_given {
        "the file's metadata"
    } else {
        "--layers"
    };
    let widths = widths_from_tensors(file, path, declared.as_deref(), source)?;
    let layers = widths.len() - 1;
    let activation = settle(
        path,
        "--activation",
        file_choice(meta, ours, "activation")?,
        hints.activation,
    )?;
    let activation = match activation {
        Some(a) => a,
        // One layer has no hidden activation: any value gives the same network.
        None if layers == 1 => Activation::Relu,
        None => {
            return Err(ModelError::Needs {
                path: path.into(),
                what: "hidden-layer activation",
                flag: "--activation relu|sigmoid|tanh",
            })
        }
    };
    let output = settle(path, "--output", file_choice(meta, ours, "output")?, hints.output)?;
    let loss = settle(path, "--loss", file_choice(meta, ours, "loss")?, hints.loss)?;
    let (output, loss) = (output.unwrap_or(Output::Softmax), loss.unwrap_or(Loss::Ce));
    Ok(NetworkSpec {
        widths,
        activation,
        output,
        loss,
    })
}

/// A non-linearity named in gpu-mlp's metadata (none in a foreign file).
fn file_choice<T: ValueEnum>(meta: &Meta, ours: bool, key: &str) -> Result<Option<T>, ModelError> {
    if ours {
        meta.choice(key)
    } else {
        Ok(None)
    }
}

/// The widths the layer tensors' shapes give, layer by layer, checked against `declared` (the
/// metadata's or the flags') where there is one.
fn widths_from_tensors(
    file: &SafeTensors,
    path: &Path,
    declared: Option<&[usize]>,
    source: &str,
) -> Result<Vec<usize>, ModelError> {
    let why_missing = |l: usize| match declared {
        Some(w) => format!("the {}-layer network {} needs", w.len() - 1, widths_text(w)),
        None => format!("layer {l} of the network needs"),
    };
    // Without declared widths, the layers are those whose weights are in the file.
    let layers = match declared {
        Some(w) => w.len() - 1,
        None => (0..).take_while(|&l| file.tensor(&weight_name(l)).is_ok()).count(),
    };
    if layers == 0 {
        return Err(ModelError::NoLayers { path: path.into() });
    }
    let mut widths: Vec<usize> = Vec::with_capacity(layers + 1);
    for l in 0..layers {
        let name = weight_name(l);
        let weight = tensor(file, path, &name, Dtype::F32, &why_missing(l))?;
        let shape = weight.shape().to_vec();
        let expected = match declared {
            Some(w) => vec![w[l + 1], w[l]],
            None if l > 0 => vec![shape.first().copied().unwrap_or(0), widths[l]],
            None => shape.clone(),
        };
        let why = match declared {
            Some(w) => format!("{source} ({}) as nn.Linear [outputs, inputs]", widths_text(w)),
            None if l > 0 => format!("following a layer of {} outputs, layer {l}", widths[l]),
            None => "a weight matrix [outputs, inputs]".to_string(),
        };
        if shape.len() != 2 || shape != expected || shape.contains(&0) {
            return Err(ModelError::Shape {
                path: path.into(),
                tensor: name,
                found: shape,
                expected,
                why,
            });
        }
        if l == 0 {
            widths.push(shape[1]);
        }
        widths.push(shape[0]);
        let bias = tensor(file, path, &bias_name(l), Dtype::F32, &why_missing(l))?;
        if bias.shape() != [shape[0]] {
            return Err(ModelError::Shape {
                path: path.into(),
                tensor: bias_name(l),
                found: bias.shape().to_vec(),
                expected: vec![shape[0]],
                why: format!("{} (shape [{}, {}])", weight_name(l), shape[0], shape[1]),
            });
        }
    }
    Ok(widths)
}

/// Little-endian f32 values of a tensor's bytes, refusing NaN and infinities.
fn finite_values(view: &TensorView, path: &Path, name: &str) -> Result<Vec<f32>, ModelError> {
    let values: Vec<f32> = view
        .data()
        .chunks_exact(WORD)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        let shape = view.shape();
        let index = if shape.len() == 2 {
            vec![at / shape[1], at % shape[1]]
        } else {
            vec![at]
        };
        return Err(ModelError::NotFinite {
            path: path.into(),
            tensor: name.into(),
            index,
            value: values[at],
        });
    }
    Ok(values)
}

/// The flat parameters, weights transposed from nn.Linear's [outputs, inputs] to our inputs ×
/// outputs.
fn read_params(file: &SafeTensors, path: &Path, spec: &NetworkSpec) -> Result<Vec<f32>, ModelError> {
    let layout = spec.layout();
    let mut params = vec![0.0f32; layout.total];
    for (l, shape) in layout.layers.iter().enumerate() {
        let weight = file.tensor(&weight_name(l)).expect("checked by read_spec");
        let values = finite_values(&weight, path, &weight_name(l))?;
        let w = &mut params[shape.weight_offset..shape.weight_offset + shape.weight_len()];
        for o in 0..shape.outputs {
            for i in 0..shape.inputs {
                w[i * shape.outputs + o] = values[o * shape.inputs + i];
            }
        }
        let bias = file.tensor(&bias_name(l)).expect("checked by read_spec");
        let values = finite_values(&bias, path, &bias_name(l))?;
        params[shape.bias_offset..shape.bias_offset + shape.outputs].copy_from_slice(&values);
    }
    Ok(params)
}

/// A checkpoint's training state: the position (order, generator, partial sums), the settings and
/// the optimiser's state.
fn read_training(file: &SafeTensors, meta: &Meta, parameters: usize) -> Result<TrainingState, ModelError> {
    let path = meta.path;
    let bad = |key: &str, value: &str, expected: &str| ModelError::BadMetadata {
        path: path.into(),
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    };
    let order_view = tensor(file, path, "train.order", Dtype::U32, "a checkpoint needs")?;
    if order_view.shape().len() != 1 {
        return Err(ModelError::Shape {
            path: path.into(),
            tensor: "train.order".into(),
            found: order_view.shape().to_vec(),
            expected: vec![order_view.shape().iter().product()],
            why: "the example order".into(),
        });
    }
    let order: Vec<u32> = order_view
        .data()
        .chunks_exact(WORD)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let mut seen = vec![false; order.len()];
    for &i in &order {
        match seen.get_mut(i as usize) {
            Some(slot) if !*slot => *slot = true,
            _ => {
                return Err(ModelError::NotSafetensors {
                    path: path.into(),
                    reason: format!(
                        "its tensor train.order is not a permutation of 0..{} (it holds {i} out of range or twice)",
                        order.len()
                    ),
                })
            }
        }
    }
    let seed_text = meta.required_text("train.rng_seed")?;
    let seed: Option<Vec<u8>> = (seed_text.len() == 64 && seed_text.is_ascii())
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(&seed_text[2 * i..2 * i + 2], 16).ok())
                .collect()
        })
        .flatten();
    let seed: [u8; 32] = seed
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("train.rng_seed", &seed_text, "64 hex digits"))?;
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(meta.required("train.rng_stream")?);
    rng.set_word_pos(meta.required("train.rng_word_pos")?);
    let partial_loss: f64 = meta.required("train.partial_loss")?;
    if !partial_loss.is_finite() {
        return Err(bad("train.partial_loss", &partial_loss.to_string(), "a finite number"));
    }
    let position = Position {
        epochs_done: meta.required("train.epochs_done")?,
        batches_done: meta.required("train.batches_done")?,
        order,
        rng,
        partial_loss,
        partial_correct: meta.required("train.partial_correct")?,
    };
    let settings = RunSettings {
        epochs: meta.required("train.epochs")?,
        lr: meta.required("train.lr")?,
        lr_decay: meta.required("train.lr_decay")?,
        lr_decay_every: meta.required("train.lr_decay_every")?,
        batch_size: meta.required("train.batch_size")?,
        l2: meta.required("train.l2")?,
        seed: meta.required("train.seed")?,
        threads: meta.required("train.threads")?,
        init: meta.required_text("train.init")?,
        dataset: meta.required_text("train.dataset")?,
        data_dir: meta.map.get("train.data_dir").cloned(),
        train_examples: meta.optional("train.train_examples")?,
        validation: meta.required("train.validation")?,
        test_examples: meta.optional("train.test_examples")?,
        data_crc32: meta.required("train.data_crc32")?,
        device: meta.required_text("train.device")?,
        adapter: meta.required_text("train.adapter")?,
        gpu_matmuls: meta.map.get("train.gpu_matmuls").cloned(),
        optimizer: Optimizer {
            kind: meta.required_enum::<OptimizerKind>("train.optimizer")?,
            momentum: meta.required("train.momentum")?,
            beta1: meta.required("train.beta1")?,
            beta2: meta.required("train.beta2")?,
            eps: meta.required("train.eps")?,
            weight_decay: meta.required("train.weight_decay")?,
        },
        dropout: meta.required("train.dropout")?,
        input_dropout: meta.required("train.input_dropout")?,
        normalize: meta.required_enum::<Normalize>("train.normalize")?,
        lr_schedule: meta.required_enum::<LrSchedule>("train.lr_schedule")?,
        warmup_epochs: meta.required("train.warmup_epochs")?,
    };
    let mut buffers = Vec::new();
    let mut names: Vec<&str> = file
        .names()
        .into_iter()
        .filter(|n| n.starts_with("optimizer."))
        .collect();
    names.sort_unstable();
    for name in names {
        let view = tensor(file, path, name, Dtype::F32, "the optimizer state needs")?;
        let values = finite_values(&view, path, name)?;
        if view.shape().len() != 1 || values.len() != parameters {
            return Err(ModelError::OptimizerShape {
                path: path.into(),
                name: name.into(),
                found: values.len(),
                expected: parameters,
            });
        }
        buffers.push((name["optimizer.".len()..].to_string(), values));
    }
    let optimizer = OptimizerState {
        name: meta.required_text("optimizer")?,
        step: meta.required("optimizer.step")?,
        buffers,
    };
    Ok(TrainingState {
        settings,
        position,
        optimizer,
    })
}

/// The input statistics of a standardised model (`input_scaling "standardize"`): `input.mean`
/// and `input.inv_std`, one finite value per input. A file without gpu-mlp's metadata is scaled.
fn read_standardization(
    file: &SafeTensors,
    meta: &Meta,
    ours: bool,
    inputs: usize,
) -> Result<Option<Standardization>, ModelError> {
    let path = meta.path;
    let scaling = match meta.map.get("input_scaling").filter(|_| ours) {
        None => Normalize::Scale,
        Some(text) => <Normalize as ValueEnum>::from_str(text, false).map_err(|_| ModelError::BadMetadata {
            path: path.into(),
            key: "input_scaling".into(),
            value: text.clone(),
            expected: "scale or standardize".into(),
        })?,
    };
    if scaling == Normalize::Scale {
        return Ok(None);
    }
    let read = |name: &str| -> Result<Vec<f32>, ModelError> {
        let view = tensor(file, path, name, Dtype::F32, "a standardised model needs")?;
        let values = finite_values(&view, path, name)?;
        if view.shape() != [inputs] {
            return Err(ModelError::Shape {
                path: path.into(),
                tensor: name.into(),
                found: view.shape().to_vec(),
                expected: vec![inputs],
                why: "one value per input".into(),
            });
        }
        Ok(values)
    };
    Ok(Some(Standardization {
        mean: read(INPUT_MEAN)?,
        inv_std: read(INPUT_INV_STD)?,
    }))
}

/// Refuses tensors that are neither layers of the network nor training state.
fn check_no_extra_tensors(
    file: &SafeTensors,
    path: &Path,
    layers: usize,
    training: Option<&TrainingState>,
    standardized: bool,
) -> Result<(), ModelError> {
    let mut names = file.names();
    names.sort_unstable();
    for name in names {
        let layer = (0..layers).any(|l| name == weight_name(l) || name == bias_name(l));
        let state = training.is_some() && (name == "train.order" || name.starts_with("optimizer."));
        let input = standardized && (name == INPUT_MEAN || name == INPUT_INV_STD);
        if !layer && !state && !input {
            return Err(ModelError::ExtraTensor {
                path: path.into(),
                tensor: name.into(),
            });
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, written, flushed and
/// fsynced, then renamed over `path`, then the folder fsynced so the rename itself is durable.
/// A process killed at any moment leaves `path` as it was or as it is now, never half written
/// (what it may leave is a stray `.NAME.*.tmp` beside it).
#[cfg(feature = "native")]
pub fn save_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // The permissions a plain File::create gives (0666 less the umask), not a temp file's 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut temp = builder.tempfile_in(&folder)?;
    let pause = std::env::var(SLOW_SAVE_ENV).ok().and_then(|v| v.parse::<u64>().ok());
    match pause {
        // Test hook: write in 16 pieces with a pause between them.
        Some(ms) => {
            for piece in bytes.chunks(bytes.len().div_ceil(16).max(1)) {
                temp.write_all(piece)?;
                temp.flush()?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        None => temp.write_all(bytes)?,
    }
    temp.flush()?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_folder(&folder)
}

/// fsyncs a folder, making a rename inside it durable (a no-op where folders cannot be opened).
#[cfg(feature = "native")]
fn sync_folder(folder: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(folder)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = folder;
        Ok(())
    }
}

/// CRC-32 of a data set's images then labels: identifies the training set a checkpoint was
/// trained on.
pub fn data_crc32(data: &crate::data::Dataset) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(&data.images);
    crc.update(&data.labels);
    crc.sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    fn spec() -> NetworkSpec {
        NetworkSpec {
            widths: vec![3, 4, 2],
            activation: Activation::Tanh,
            output: Output::Sigmoid,
            loss: Loss::Mse,
        }
    }

    fn model() -> Model {
        let layout = spec().layout();
        Model {
            spec: spec(),
            params: (0..layout.total).map(|i| i as f32 * 0.25 - 3.0).collect(),
            standardize: None,
            info: ModelInfo {
                epochs_trained: Some(3),
                seed: Some(9),
                gpu_mlp_version: Some(env!("CARGO_PKG_VERSION").into()),
                has_metadata: true,
                ..ModelInfo::default()
            },
        }
    }

    fn settings() -> RunSettings {
        RunSettings {
            epochs: 5,
            lr: 0.1 + 0.2,
            lr_decay: 0.7,
            lr_decay_every: 2,
            batch_size: 3,
            l2: 1e-4,
            seed: 9,
            threads: 2,
            init: "he".into(),
            dataset: "mnist".into(),
            data_dir: Some("some dir".into()),
            train_examples: Some(7),
            validation: 1,
            test_examples: None,
            data_crc32: 0xdead_beef,
            device: "cpu".into(),
            adapter: "cpu (2 threads)".into(),
            gpu_matmuls: None,
            optimizer: Optimizer {
                beta2: 0.99,
                ..Optimizer::new(OptimizerKind::Adamw)
            },
            dropout: 0.25,
            input_dropout: 0.1,
            normalize: Normalize::Standardize,
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 1,
        }
    }

    fn checkpoint() -> Checkpoint {
        let mut rng = crate::init::rng(9);
        let _: u64 = rng.random();
        let _: u32 = rng.random();
        Checkpoint {
            model: model(),
            training: Some(TrainingState {
                settings: settings(),
                position: Position {
                    epochs_done: 2,
                    batches_done: 1,
                    order: vec![3, 0, 6, 1, 5, 2, 4],
                    rng,
                    partial_loss: 1.0 / 3.0,
                    partial_correct: 2,
                },
                optimizer: OptimizerState::sgd(),
            }),
        }
    }

    fn reload(c: &Checkpoint) -> Checkpoint {
        let bytes = c.to_bytes().unwrap();
        Checkpoint::from_bytes(&bytes, Path::new("m.safetensors"), &SpecHints::default()).unwrap()
    }

    #[test]
    fn weights_are_stored_as_nn_linear_outputs_by_inputs() {
        let m = model();
        let layout = m.spec.layout();
        let tensors = m.tensors();
        let (name, shape, values) = &tensors[0];
        assert_eq!((name.as_str(), shape.as_slice()), ("layers.0.weight", &[4usize, 3][..]));
        let w = layout.layers[0].weights(&m.params);
        for o in 0..4 {
            for i in 0..3 {
                assert_eq!(values[o * 3 + i], w[i * 4 + o], "[{o}][{i}]");
            }
        }
        assert_eq!(tensors[1].0, "layers.0.bias");
        assert_eq!(tensors[1].2, layout.layers[0].bias(&m.params));
    }

    #[test]
    fn a_checkpoint_round_trips_exactly() {
        let c = checkpoint();
        let back = reload(&c);
        assert_eq!(back.model, c.model);
        let (a, b) = (c.training.unwrap(), back.training.unwrap());
        assert_eq!(a.settings, b.settings);
        assert_eq!(a.optimizer, b.optimizer);
        let (p, q) = (a.position, b.position);
        assert_eq!(
            (p.epochs_done, p.batches_done, &p.order),
            (q.epochs_done, q.batches_done, &q.order)
        );
        assert_eq!(p.partial_loss.to_bits(), q.partial_loss.to_bits());
        assert_eq!(p.partial_correct, q.partial_correct);
        assert_eq!(p.rng, q.rng);
        let (mut r1, mut r2) = (p.rng, q.rng);
        assert_eq!(r1.random::<u64>(), r2.random::<u64>(), "the generator goes on the same");
    }

    /// A standardised model keeps its input statistics (and says so in its metadata); a file
    /// that says it is standardised but lacks them is refused, naming the tensor.
    #[test]
    fn input_statistics_round_trip() {
        let mut c = checkpoint();
        c.model.standardize = Some(Standardization {
            mean: vec![0.5, 0.25, 0.125],
            inv_std: vec![2.0, 10.0, 3.5],
        });
        let back = reload(&c);
        assert_eq!(back.model.standardize, c.model.standardize);
        let bytes = c.to_bytes().unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta["input_scaling"], "standardize");

        // The same metadata without the statistics.
        c.model.standardize = None;
        let plain = c.to_bytes().unwrap();
        let (_, plain_meta) = SafeTensors::read_metadata(&plain).unwrap();
        let mut meta = plain_meta.metadata().clone().unwrap();
        assert_eq!(meta["input_scaling"], "scale");
        meta.insert("input_scaling".into(), "standardize".into());
        let file = SafeTensors::deserialize(&plain).unwrap();
        let views: Vec<(String, TensorView)> = file.tensors();
        let broken = safetensors::serialize(views, Some(meta)).unwrap();
        let err = Checkpoint::from_bytes(&broken, Path::new("m.safetensors"), &SpecHints::default()).unwrap_err();
        assert!(err.to_string().contains("input.mean"), "{err}");
    }

    #[test]
    fn optimizer_state_round_trips() {
        let mut c = checkpoint();
        let total = c.model.params.len();
        let state = c.training.as_mut().unwrap();
        state.optimizer = OptimizerState {
            name: "adam".into(),
            step: 42,
            buffers: vec![("m".into(), vec![0.5; total]), ("v".into(), vec![0.25; total])],
        };
        let back = reload(&c);
        assert_eq!(back.training.unwrap().optimizer, c.training.unwrap().optimizer);
    }

    #[test]
    fn a_model_without_metadata_needs_the_activation() {
        let m = model();
        let tensors = m.tensors();
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, s, v)| (n.clone(), f32_bytes(v.iter().copied()), s.clone()))
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, b, s)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        let file = safetensors::serialize(views, None).unwrap();
        let path = Path::new("torch.safetensors");
        let err = Checkpoint::from_bytes(&file, path, &SpecHints::default()).unwrap_err();
        assert!(matches!(err, ModelError::Needs { .. }), "{err}");
        let hints = SpecHints {
            activation: Some(Activation::Tanh),
            output: Some(Output::Sigmoid),
            loss: Some(Loss::Mse),
            ..SpecHints::default()
        };
        let loaded = Checkpoint::from_bytes(&file, path, &hints).unwrap();
        assert_eq!(loaded.model.params, m.params);
        assert_eq!(loaded.model.spec, m.spec);
        assert!(loaded.training.is_none());
        let wrong = SpecHints {
            widths: Some(vec![3, 5, 2]),
            ..hints
        };
        let err = Checkpoint::from_bytes(&file, path, &wrong).unwrap_err();
        assert!(err.to_string().contains("layers.0.weight"), "{err}");
    }

    #[test]
    fn flags_that_contradict_the_metadata_name_both_values() {
        let bytes = checkpoint().to_bytes().unwrap();
        let hints = SpecHints {
            activation: Some(Activation::Relu),
            ..SpecHints::default()
        };
        let err = Checkpoint::from_bytes(&bytes, Path::new("m.safetensors"), &hints).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--activation tanh") && text.contains("--activation relu"),
            "{text}"
        );
    }

    #[test]
    fn save_is_atomic_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save_atomic(&path, b"first").unwrap();
        save_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }
}
