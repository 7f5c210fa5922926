//! Keeping what `train` trains: where a run begins (`--resume`, `--init-from`, or fresh), the
//! checkpoints it writes (`--save`, `--save-every`), and how it stops on Ctrl-C or SIGTERM with
//! nothing lost.
//!
//! `--resume PATH` takes every setting the run's future depends on from the checkpoint; a flag
//! given beside it must agree with the stored value, except these, which may change:
//! `--epochs N` (the new total: it may extend a finished run), `--device`, `--threads` (the run
//! continues, but bit-for-bit equality needs the same device and thread count, so a note says
//! so), `--data-dir` (the data may have moved: its CRC-32 must match) and `--test-examples`
//! (evaluation only).

use super::train::{DatasetName, Run, TrainArgs};
use super::DeviceChoice;
use crate::backend::{Backend, OptimizerState};
use crate::data::Standardization;
use crate::error::{ConfigError, Error, Result, ResumeError, WidthsFlag};
use crate::gpu::kernels::matmul::MatmulPlan;
use crate::model::{self, Checkpoint, Model, ModelError, ModelInfo, RunSettings, SpecHints, TrainingState};
use crate::network::{parse_widths, Init, NetworkSpec};
use crate::optim::OptimizerKind;
use crate::signals::{Signal, StopSignal};
use crate::train::{EpochReport, Observer, Position};
use clap::ValueEnum;
use std::fmt::Display;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a run begins.
pub(super) struct Beginning {
    /// The flags, with a checkpoint's or a model's settings filled in.
    pub args: TrainArgs,
    /// Starting weights (None: drawn by --init).
    pub params: Option<Vec<f32>>,
    /// The checkpoint a resumed run continues.
    pub resumed: Option<(PathBuf, TrainingState)>,
    /// The file the network came from (--resume or --init-from).
    pub from_file: Option<PathBuf>,
    /// The last test accuracy known (a resumed run's, until it tests again).
    pub test_accuracy: Option<f64>,
}

impl Beginning {
    /// The GPU matmul variants a resumed checkpoint was trained with, if it records them and
    /// this build has them all.
    pub fn recorded_matmuls(&self) -> Option<MatmulPlan> {
        let (_, state) = self.resumed.as_ref()?;
        let text = state.settings.gpu_matmuls.as_ref()?;
        let names = text
            .split(';')
            .map(|layer| {
                let ops: Vec<String> = layer.split(',').map(str::to_string).collect();
                <[String; 3]>::try_from(ops).ok()
            })
            .collect::<Option<Vec<_>>>()?;
        MatmulPlan::from_names(&names)
    }

    /// Reads `--resume` or `--init-from` and merges the file's settings into the flags.
    pub fn from_args(args: &TrainArgs) -> Result<Beginning> {
        if let Some(path) = &args.resume {
            let checkpoint = Checkpoint::load(path, &SpecHints::default())?;
            let Some(state) = checkpoint.training.clone() else {
                return Err(ModelError::NotCheckpoint { path: path.clone() }.into());
            };
            let merged = merge_resume(args, path, &checkpoint.model.spec, &state)?;
            return Ok(Beginning {
                args: merged,
                params: Some(checkpoint.model.params),
                resumed: Some((path.clone(), state)),
                from_file: Some(path.clone()),
                test_accuracy: checkpoint.model.info.test_accuracy,
            });
        }
        if let Some(path) = &args.init_from {
            let hints = SpecHints {
                widths: args
                    .layers
                    .as_deref()
                    .map(|w| parse_widths(WidthsFlag::Layers, w))
                    .transpose()?,
                activation: args.activation,
                output: args.given("output").then_some(args.output),
                loss: args.given("loss").then_some(args.loss),
            };
            let model = Checkpoint::load(path, &hints)?.model;
            let mut merged = args.clone();
            merged.layers = Some(model::widths_text(&model.spec.widths));
            merged.activation = Some(model.spec.activation);
            merged.output = model.spec.output;
            merged.loss = model.spec.loss;
            return Ok(Beginning {
                args: merged,
                params: Some(model.params),
                resumed: None,
                from_file: Some(path.clone()),
                test_accuracy: None,
            });
        }
        Ok(Beginning {
            args: args.clone(),
            params: None,
            resumed: None,
            from_file: None,
            test_accuracy: None,
        })
    }

    /// A data-dependent setting error, said about the file the network came from.
    pub fn explain(&self, error: Error, features: usize) -> Error {
        match (&self.from_file, error) {
            (Some(path), Error::Config(ConfigError::InputMismatch { inputs, .. })) => ModelError::InputMismatch {
                path: path.clone(),
                inputs,
                features,
                data: "the training data".into(),
            }
            .into(),
            (_, error) => error,
        }
    }

    /// The position a resumed run continues from, checked against the data it now trains on.
    pub fn position(&self, run: &Run) -> Result<Option<Position>> {
        let Some((path, state)) = &self.resumed else {
            return Ok(None);
        };
        let found = model::data_crc32(&run.train);
        if found != state.settings.data_crc32 {
            return Err(ResumeError::OtherData {
                path: path.clone(),
                found,
                stored: state.settings.data_crc32,
            }
            .into());
        }
        let position = &state.position;
        let damaged = |problem: String| ResumeError::Damaged {
            path: path.clone(),
            problem,
        };
        if position.order.len() != run.train.len() {
            return Err(damaged(format!(
                "its example order has {} entries for {} training examples",
                position.order.len(),
                run.train.len()
            ))
            .into());
        }
        let batches = run.train.len().div_ceil(run.batch_size);
        if position.batches_done >= batches {
            return Err(damaged(format!(
                "it stopped after batch {} of an epoch of {batches}",
                position.batches_done
            ))
            .into());
        }
        Ok(Some(position.clone()))
    }

    /// The optimiser state a resumed run restores.
    pub fn optimizer(&self) -> Option<&OptimizerState> {
        self.resumed.as_ref().map(|(_, state)| &state.optimizer)
    }
}

/// The flags of a resumed run: the checkpoint's settings, with the flags given beside
/// `--resume` checked against them.
fn merge_resume(args: &TrainArgs, path: &Path, spec: &NetworkSpec, state: &TrainingState) -> Result<TrainArgs> {
    let s = &state.settings;
    let damaged = |what: &str, value: &str| ResumeError::Damaged {
        path: path.into(),
        problem: format!("its {what} '{value}' is not one gpu-mlp knows"),
    };
    let init = Init::from_str(&s.init, false).map_err(|_| damaged("init", &s.init))?;
    let dataset = DatasetName::from_str(&s.dataset, false).map_err(|_| damaged("dataset", &s.dataset))?;
    let device = match s.device.as_str() {
        "gpu" => DeviceChoice::Gpu,
        _ => DeviceChoice::Cpu,
    };
    let check = |flag: &'static str, id: &str, given: &dyn Display, stored: &dyn Display| -> Result<(), ResumeError> {
        let (given, stored) = (given.to_string(), stored.to_string());
        if args.given(id) && given != stored {
            return Err(ResumeError::Contradicts {
                path: path.into(),
                flag,
                given,
                stored,
            });
        }
        Ok(())
    };
    if let Some(text) = &args.layers {
        if parse_widths(WidthsFlag::Layers, text)? != spec.widths {
            return Err(ResumeError::Contradicts {
                path: path.into(),
                flag: "--layers",
                given: text.clone(),
                stored: model::widths_text(&spec.widths),
            }
            .into());
        }
    }
    let all = |n: Option<usize>| n.map_or("all".to_string(), |n| n.to_string());
    if let Some(a) = args.activation {
        check("--activation", "activation", &a, &spec.activation)?;
    }
    check("--output", "output", &args.output, &spec.output)?;
    check("--loss", "loss", &args.loss, &spec.loss)?;
    if let Some(i) = args.init {
        check("--init", "init", &i, &init)?;
    }
    if let Some(b) = args.batch_size {
        check("--batch-size", "batch_size", &b, &s.batch_size)?;
    }
    if let Some(lr) = args.lr {
        check("--lr", "lr", &lr, &s.lr)?;
    }
    check("--lr-decay", "lr_decay", &args.lr_decay, &s.lr_decay)?;
    check(
        "--lr-decay-every",
        "lr_decay_every",
        &args.lr_decay_every,
        &s.lr_decay_every,
    )?;
    check("--l2", "l2", &args.l2, &s.l2)?;
    check("--seed", "seed", &args.seed, &s.seed)?;
    check("--dataset", "dataset", &value_name(args.dataset), &value_name(dataset))?;
    check("--validation", "validation", &args.validation, &s.validation)?;
    check(
        "--train-examples",
        "train_examples",
        &all(args.train_examples),
        &all(s.train_examples),
    )?;
    check_toolbox(args, path, s)?;
    let done = state.position.epochs_done;
    if let Some(epochs) = args.epochs {
        if epochs < done {
            return Err(ResumeError::TooFewEpochs {
                path: path.into(),
                given: epochs,
                done,
            }
            .into());
        }
    }
    let epochs = args.epochs.unwrap_or(s.epochs);
    if epochs <= done {
        return Err(ResumeError::Finished {
            path: path.into(),
            epochs: done,
        }
        .into());
    }
    let mut merged = args.clone();
    merged.layers = Some(model::widths_text(&spec.widths));
    merged.activation = Some(spec.activation);
    merged.output = spec.output;
    merged.loss = spec.loss;
    merged.init = Some(init);
    merged.batch_size = Some(s.batch_size);
    merged.epochs = Some(epochs);
    merged.lr = Some(s.lr);
    merged.lr_decay = s.lr_decay;
    merged.lr_decay_every = s.lr_decay_every;
    merged.l2 = s.l2;
    merged.seed = s.seed;
    merged.dataset = dataset;
    merged.validation = s.validation;
    merged.train_examples = s.train_examples;
    merged.test_examples = args.test_examples.or(s.test_examples);
    merged.data_dir = args.data_dir.clone().or(s.data_dir.as_ref().map(PathBuf::from));
    merged.threads = args.threads.or(Some(s.threads));
    merged.optimizer = s.optimizer.kind;
    // Only the hyper-parameters the rule uses: the others given would be refused.
    let uses = |flag: &str| optimizer_flags(s.optimizer.kind).contains(&flag);
    merged.momentum = uses("--momentum").then_some(s.optimizer.momentum);
    merged.beta1 = uses("--beta1").then_some(s.optimizer.beta1);
    merged.beta2 = uses("--beta2").then_some(s.optimizer.beta2);
    merged.eps = uses("--eps").then_some(s.optimizer.eps);
    merged.weight_decay = uses("--weight-decay").then_some(s.optimizer.weight_decay);
    merged.dropout = s.dropout;
    merged.input_dropout = s.input_dropout;
    merged.normalize = s.normalize;
    merged.lr_schedule = Some(s.lr_schedule);
    merged.warmup_epochs = s.warmup_epochs;
    if !args.given("device") {
        merged.device = device;
    }
    Ok(merged)
}

/// The hyper-parameter flags each update rule takes.
fn optimizer_flags(kind: OptimizerKind) -> &'static [&'static str] {
    match kind {
        OptimizerKind::Sgd => &[],
        OptimizerKind::Momentum => &["--momentum"],
        OptimizerKind::Rmsprop => &["--beta2", "--eps"],
        OptimizerKind::Adam => &["--beta1", "--beta2", "--eps"],
        OptimizerKind::Adamw => &["--beta1", "--beta2", "--eps", "--weight-decay"],
    }
}

/// The toolbox's flags given beside `--resume` must agree with the checkpoint's settings.
fn check_toolbox(args: &TrainArgs, path: &Path, s: &RunSettings) -> Result<(), ResumeError> {
    let contradicts = |flag: &'static str, given: String, stored: String| {
        Err(ResumeError::Contradicts {
            path: path.into(),
            flag,
            given,
            stored,
        })
    };
    let check = |flag: &'static str, id: &str, given: String, stored: String| {
        if args.given(id) && given != stored {
            return contradicts(flag, given, stored);
        }
        Ok(())
    };
    let o = &s.optimizer;
    check(
        "--optimizer",
        "optimizer",
        args.optimizer.to_string(),
        o.kind.to_string(),
    )?;
    let reals = [
        ("--momentum", "momentum", args.momentum, o.momentum),
        ("--beta1", "beta1", args.beta1, o.beta1),
        ("--beta2", "beta2", args.beta2, o.beta2),
        ("--eps", "eps", args.eps, o.eps),
        ("--weight-decay", "weight_decay", args.weight_decay, o.weight_decay),
    ];
    for (flag, id, given, stored) in reals {
        if let Some(given) = given {
            check(flag, id, given.to_string(), stored.to_string())?;
        }
    }
    check("--dropout", "dropout", args.dropout.to_string(), s.dropout.to_string())?;
    check(
        "--input-dropout",
        "input_dropout",
        args.input_dropout.to_string(),
        s.input_dropout.to_string(),
    )?;
    check(
        "--normalize",
        "normalize",
        args.normalize.to_string(),
        s.normalize.to_string(),
    )?;
    if let Some(shape) = args.lr_schedule {
        check(
            "--lr-schedule",
            "lr_schedule",
            shape.to_string(),
            s.lr_schedule.to_string(),
        )?;
    }
    check(
        "--warmup-epochs",
        "warmup_epochs",
        args.warmup_epochs.to_string(),
        s.warmup_epochs.to_string(),
    )
}

/// A flag value as the command line spells it.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// The settings a checkpoint of `run` stores.
pub(super) fn settings_of(run: &Run, args: &TrainArgs, backend: &dyn Backend) -> RunSettings {
    RunSettings {
        epochs: run.schedule.epochs,
        lr: run.schedule.lr,
        lr_decay: run.schedule.lr_decay,
        lr_decay_every: run.schedule.lr_decay_every,
        batch_size: run.batch_size,
        l2: run.l2,
        seed: run.seed,
        threads: run.threads,
        init: run.init.to_string(),
        dataset: value_name(args.dataset),
        data_dir: args.data_dir.as_ref().map(|d| d.display().to_string()),
        train_examples: args.train_examples,
        validation: args.validation,
        test_examples: args.test_examples,
        data_crc32: model::data_crc32(&run.train),
        device: backend.device().to_string(),
        adapter: backend.adapter(),
        gpu_matmuls: backend.matmul_variants().map(|layers| {
            let layers: Vec<String> = layers.iter().map(|ops| ops.join(",")).collect();
            layers.join(";")
        }),
        optimizer: run.optimizer,
        dropout: run.dropout.hidden,
        input_dropout: run.dropout.input,
        normalize: args.normalize,
        lr_schedule: run.schedule.shape,
        warmup_epochs: run.schedule.warmup_epochs,
    }
}

/// What the signal watcher needs to say how long stopping will take.
#[derive(Default)]
pub(super) struct RunProgress {
    pub steps_each_batch: bool,
    pub epoch: usize,
    pub epoch_started: Option<Instant>,
    pub last_epoch_seconds: Option<f64>,
    pub save: Option<PathBuf>,
}

/// "press Ctrl-C again" / "send SIGTERM again".
fn again(signal: Signal) -> &'static str {
    match signal.name {
        "SIGINT" => "press Ctrl-C again",
        "SIGTERM" => "send SIGTERM again",
        _ => "send it again",
    }
}

/// What the first signal makes the run do, said at once on stderr.
pub(super) fn announce(progress: &RunProgress, signal: Signal) -> String {
    let when = if progress.steps_each_batch {
        "stopping after the current batch".to_string()
    } else {
        let epoch = progress.epoch.max(1);
        let elapsed = progress.epoch_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        match progress.last_epoch_seconds {
            Some(last) => format!(
                "stopping when epoch {epoch} ends, in about {:.0} s (the GPU runs an epoch as one \
                 submission; an epoch takes {last:.1} s)",
                (last - elapsed).max(0.0).ceil()
            ),
            None => format!(
                "stopping when epoch {epoch} ends (the GPU runs an epoch as one submission; the first \
                 epoch's length is not known yet, it began {elapsed:.0} s ago)"
            ),
        }
    };
    let then = match &progress.save {
        Some(path) => format!(", then writing the checkpoint {}", path.display()),
        None => " (nothing will be saved: no --save was given)".to_string(),
    };
    format!(
        "\ngpu-mlp: {} received: {when}{then}; {} to quit at once without saving",
        signal.name,
        again(signal)
    )
}

/// The observer that keeps the run: passes every event on to `inner` (the printer), writes the
/// checkpoints, and stops the run when a signal asks.
pub(super) struct Keeper<'a> {
    pub inner: &'a mut dyn Observer,
    pub save: Option<PathBuf>,
    pub every: Option<usize>,
    pub stop: &'a StopSignal,
    pub progress: Arc<Mutex<RunProgress>>,
    pub spec: NetworkSpec,
    /// The input statistics of `--normalize standardize`, stored with the weights.
    pub standardize: Option<Standardization>,
    pub settings: RunSettings,
    pub test_accuracy: Option<f64>,
    /// The position last written, (epochs_done, batches_done).
    pub saved_at: Option<(usize, usize)>,
}

impl Keeper<'_> {
    /// Writes the checkpoint of `position` (weights from `backend`) to `--save`, if given.
    pub fn write(&mut self, position: &Position, backend: &mut dyn Backend) -> Result<()> {
        let Some(path) = self.save.clone() else { return Ok(()) };
        let at = (position.epochs_done, position.batches_done);
        if self.saved_at == Some(at) {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            model: Model {
                spec: self.spec.clone(),
                params: backend.parameters()?,
                standardize: self.standardize.clone(),
                info: ModelInfo {
                    epochs_trained: Some(position.epochs_done),
                    seed: Some(self.settings.seed),
                    init: Some(self.settings.init.clone()),
                    dataset: Some(self.settings.dataset.clone()),
                    device: Some(backend.device().to_string()),
                    adapter: Some(backend.adapter()),
                    test_accuracy: self.test_accuracy,
                    gpu_mlp_version: None,
                    has_metadata: true,
                },
            },
            training: Some(TrainingState {
                settings: self.settings.clone(),
                position: position.clone(),
                optimizer: backend.optimizer_state()?,
            }),
        };
        checkpoint.save(&path)?;
        self.saved_at = Some(at);
        Ok(())
    }

    fn stopping(&self) -> bool {
        self.stop.requested().is_some()
    }
}

impl Observer for Keeper<'_> {
    fn epoch_started(&mut self, epoch: usize, first: usize, batches: usize) {
        {
            let mut progress = self.progress.lock().expect("progress");
            progress.epoch = epoch;
            progress.epoch_started = Some(Instant::now());
        }
        self.inner.epoch_started(epoch, first, batches);
    }

    fn batch_done(&mut self, batch: usize) -> ControlFlow<()> {
        let flow = self.inner.batch_done(batch);
        if self.stopping() {
            ControlFlow::Break(())
        } else {
            flow
        }
    }

    fn epoch_done(
        &mut self,
        report: &EpochReport,
        position: &Position,
        backend: &mut dyn Backend,
    ) -> Result<ControlFlow<()>> {
        let flow = self.inner.epoch_done(report, position, backend)?;
        self.test_accuracy = report.test_accuracy.or(self.test_accuracy);
        self.progress.lock().expect("progress").last_epoch_seconds = Some(report.seconds);
        let due = self.every.is_some_and(|n| position.epochs_done % n == 0);
        if due && !self.stopping() {
            self.write(position, backend)?;
        }
        Ok(if self.stopping() { ControlFlow::Break(()) } else { flow })
    }
}

/// `program train --resume PATH --save PATH [--save-every N]`, quoted for a shell.
pub(super) fn resume_command(path: &Path, every: Option<usize>) -> String {
    let program = std::env::args().next().unwrap_or_else(|| "gpu-mlp".into());
    let quote = |text: &str| shlex::try_quote(text).map_or(text.to_string(), |q| q.into_owned());
    let path = quote(&path.display().to_string());
    let mut command = format!("{} train --resume {path} --save {path}", quote(&program));
    if let Some(n) = every {
        command += &format!(" --save-every {n}");
    }
    command
}

/// Where a stopped run stands, in words: "after epoch 3 of 10" or "in epoch 4 of 10, after batch 120 of 600".
pub(super) fn where_stopped(position: &Position, epochs: usize, batches: usize) -> String {
    if position.batches_done == 0 {
        format!("after epoch {} of {epochs}", position.epochs_done)
    } else {
        format!(
            "in epoch {} of {epochs}, after batch {} of {batches}",
            position.epochs_done + 1,
            position.batches_done
        )
    }
}
