//! gpu-mlp in the browser: the library's GPU backend and its WGSL kernels (`shaders/`, compiled
//! into the library) on the browser's WebGPU, through wasm-bindgen. Nothing here trains or
//! computes on its own: training is [`gpu_mlp::train::run_async`] over
//! [`gpu_mlp::gpu::GpuBackend`], the loop and the backend the command line blocks on; the
//! drawing is preprocessed by [`gpu_mlp::preprocess::mnist_like`], what `gpu-mlp predict` runs
//! on an image file; model files are [`gpu_mlp::model::Checkpoint`]'s safetensors.
//!
//! The page (`web/index.html`, `web/app.js`) holds one data set and one model at a time, kept
//! here between calls; every export returns a value or a JavaScript error with gpu-mlp's own
//! message.

use gpu_mlp::backend::{Backend, Workload};
use gpu_mlp::cpu::ops;
use gpu_mlp::data::{self, Dataset};
use gpu_mlp::error::WidthsFlag;
use gpu_mlp::evaluate;
use gpu_mlp::gpu::context::{list_adapters_async, GpuContext};
use gpu_mlp::gpu::GpuBackend;
use gpu_mlp::init;
use gpu_mlp::model::{Checkpoint, Model, ModelInfo, SpecHints};
use gpu_mlp::network::{parse_widths, Activation, Init, Loss, NetworkSpec, Output};
use gpu_mlp::preprocess;
use gpu_mlp::report::thousands;
use gpu_mlp::train::{self, EpochReport, Observer, Position, Schedule};
use serde_json::json;
use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::Path;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console)]
    fn error(message: &str);
}

/// What the page holds between calls: the data set and the current model.
#[derive(Default)]
struct State {
    train: Option<Dataset>,
    test: Option<Dataset>,
    model: Option<Model>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

/// A panic becomes a message in the browser's console (instead of "unreachable executed").
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| error(&format!("gpu-mlp panicked: {info}"))));
}

fn js_error(error: impl std::fmt::Display) -> JsError {
    JsError::new(&error.to_string())
}

/// The WebGPU adapter the browser offers, as gpu-mlp names adapters; an error when there is none.
#[wasm_bindgen]
pub async fn adapter() -> Result<String, JsError> {
    let adapters = list_adapters_async().await;
    let first = adapters
        .first()
        .ok_or_else(|| JsError::new("the browser offers no WebGPU adapter"))?;
    let kind = format!("{}, {}", first.backend, first.device_type);
    Ok(match first.name.trim() {
        "" => kind,
        name => format!("{name} ({kind})"),
    })
}

/// Parses the four MNIST files' bytes (gzip or raw IDX) and keeps them; returns what was loaded.
#[wasm_bindgen]
pub fn load_data(
    train_images: Vec<u8>,
    train_labels: Vec<u8>,
    test_images: Vec<u8>,
    test_labels: Vec<u8>,
) -> Result<String, JsError> {
    let named = |name: &str| Path::new("data/mnist").join(format!("{name}.gz"));
    let train = data::dataset_from_bytes(
        train_images,
        train_labels,
        &named("train-images-idx3-ubyte"),
        &named("train-labels-idx1-ubyte"),
    )
    .map_err(js_error)?;
    let test = data::dataset_from_bytes(
        test_images,
        test_labels,
        &named("t10k-images-idx3-ubyte"),
        &named("t10k-labels-idx1-ubyte"),
    )
    .map_err(js_error)?;
    let summary = format!(
        "{} training and {} test images",
        thousands(train.len() as u64),
        thousands(test.len() as u64)
    );
    STATE.with_borrow_mut(|state| {
        state.train = Some(train);
        state.test = Some(test);
    });
    Ok(summary)
}

/// A run's settings, as the page sends them (JSON).
#[derive(serde::Deserialize)]
struct Settings {
    /// "784-64-10".
    widths: String,
    epochs: usize,
    lr: f32,
    batch: usize,
    /// The first N training images (all when absent).
    train_examples: Option<usize>,
    /// The first N test images (all when absent; 0: no test evaluation).
    test_examples: Option<usize>,
    seed: u64,
}

/// Hands each epoch's report to the page's callback, as JSON, with the mean loss of each of the
/// epoch's batches (`batch_loss`) for the chart.
struct PageObserver {
    on_epoch: js_sys::Function,
    batch_size: usize,
    examples: usize,
    batch_loss: Vec<f32>,
}

// SAFETY: `Observer` asks for `Send` because the command line's observers are shared with a
// signal thread. On wasm32 without atomics there is one thread: the observer never leaves it.
unsafe impl Send for PageObserver {}

impl Observer for PageObserver {
    fn batches_trained(&mut self, _epoch: usize, first: usize, batch_loss: &[f32], _batch_correct: &[u32]) {
        let rows = |b: usize| (self.examples - b * self.batch_size).min(self.batch_size) as f32;
        self.batch_loss = batch_loss
            .iter()
            .enumerate()
            .map(|(i, &loss)| loss / rows(first + i))
            .collect();
    }

    fn epoch_done(
        &mut self,
        report: &EpochReport,
        _position: &Position,
        _backend: &mut dyn Backend,
    ) -> gpu_mlp::error::Result<ControlFlow<()>> {
        let mut message = serde_json::to_value(report).expect("a report is JSON");
        message["batch_loss"] = json!(std::mem::take(&mut self.batch_loss));
        let text = message.to_string();
        // A callback that throws is the page's problem; training goes on.
        let _ = self.on_epoch.call1(&JsValue::NULL, &JsValue::from_str(&text));
        Ok(ControlFlow::Continue(()))
    }
}

/// Trains a network on the loaded data on the GPU, as `gpu-mlp train --device gpu` does with the
/// same settings (He init and the shuffles from `seed`, SGD, relu, softmax, cross-entropy):
/// calls `on_epoch` with each epoch's report (JSON) and keeps the trained model. Returns the
/// last report (JSON; "null" for 0 epochs, which keeps the initial weights).
#[wasm_bindgen]
pub async fn train(settings: String, on_epoch: js_sys::Function) -> Result<String, JsError> {
    let settings: Settings = serde_json::from_str(&settings).map_err(js_error)?;
    let (train, test) = STATE.with_borrow(|state| (state.train.clone(), state.test.clone()));
    let (Some(mut train), Some(mut test)) = (train, test) else {
        return Err(JsError::new("load the MNIST data first"));
    };
    if let Some(n) = settings.train_examples.filter(|&n| n > 0) {
        train = train.truncated(n);
    }
    if let Some(n) = settings.test_examples {
        test = test.truncated(n);
    }
    let spec = NetworkSpec {
        widths: parse_widths(WidthsFlag::Layers, &settings.widths).map_err(js_error)?,
        activation: Activation::Relu,
        output: Output::Softmax,
        loss: Loss::Ce,
    };
    spec.check(WidthsFlag::Layers, train.features, train.classes)
        .map_err(js_error)?;
    if settings.batch == 0 || settings.batch > train.len() {
        return Err(JsError::new(&format!(
            "the batch size must be between 1 and the {} training images",
            train.len()
        )));
    }
    let work = Workload {
        test: (!test.is_empty()).then_some(&test),
        ..Workload::training(&spec, &train, settings.batch)
    };
    let schedule = Schedule::constant(settings.epochs, settings.lr);
    // As the command line does: the weights, then the shuffles, from one generator.
    let mut rng = init::rng(settings.seed);
    let initial = init::init_params(&spec.layout(), Init::He, &mut rng);
    let start = Position::start(rng, train.len());
    let context = GpuContext::open(|_| {}).await.map_err(js_error)?;
    let mut backend = GpuBackend::with_context(context, work, &initial).map_err(js_error)?;
    let adapter = backend.adapter();
    let mut observer = PageObserver {
        on_epoch,
        batch_size: settings.batch,
        examples: train.len(),
        batch_loss: Vec::new(),
    };
    let outcome = train::run_async(&mut backend, &work, &schedule, start, &mut observer)
        .await
        .map_err(js_error)?;
    let params = backend.parameters_async().await.map_err(js_error)?;
    let last = outcome.reports.last();
    let model = Model {
        spec,
        params,
        standardize: None,
        info: ModelInfo {
            epochs_trained: Some(settings.epochs),
            seed: Some(settings.seed),
            init: Some(Init::He.to_string()),
            dataset: Some("mnist".into()),
            device: Some("gpu".into()),
            adapter: Some(adapter),
            test_accuracy: last.and_then(|r| r.test_accuracy),
            gpu_mlp_version: Some(env!("CARGO_PKG_VERSION").into()),
            has_metadata: true,
        },
    };
    STATE.with_borrow_mut(|state| state.model = Some(model));
    Ok(serde_json::to_string(&last).expect("a report is JSON"))
}

/// Loads a model file saved by `gpu-mlp train --save` (or by this page); returns its description.
#[wasm_bindgen]
pub fn load_model(bytes: Vec<u8>, name: String) -> Result<String, JsError> {
    let checkpoint = Checkpoint::from_bytes(&bytes, Path::new(&name), &SpecHints::default()).map_err(js_error)?;
    let model = checkpoint.model;
    if model.spec.widths[0] != data::MNIST_PIXELS {
        return Err(JsError::new(&format!(
            "{name} takes {} inputs; a drawing has {} pixels (28×28)",
            model.spec.widths[0],
            data::MNIST_PIXELS
        )));
    }
    let text = describe(&model);
    STATE.with_borrow_mut(|state| state.model = Some(model));
    Ok(text)
}

/// "784-64-10 (relu hidden, softmax output, ce loss), 1 epochs on gpu".
fn describe(model: &Model) -> String {
    let spec = &model.spec;
    let mut text = format!(
        "{} ({} hidden, {} output, {} loss)",
        spec.name(),
        spec.activation,
        spec.output,
        spec.loss
    );
    if let Some(epochs) = model.info.epochs_trained {
        text += &format!(", {epochs} epoch{}", if epochs == 1 { "" } else { "s" });
    }
    if let Some(device) = &model.info.device {
        text += &format!(" on {device}");
    }
    text
}

/// The current model as a safetensors file, as `gpu-mlp train --save` writes it.
#[wasm_bindgen]
pub fn save_model() -> Result<Vec<u8>, JsError> {
    STATE.with_borrow(|state| {
        let model = state.model.clone().ok_or_else(|| JsError::new("no model yet"))?;
        Checkpoint { model, training: None }.to_bytes().map_err(js_error)
    })
}

/// The current model's flat parameters (the parity test's hook).
#[wasm_bindgen]
pub fn parameters() -> Result<Vec<f32>, JsError> {
    STATE.with_borrow(|state| {
        let model = state.model.as_ref().ok_or_else(|| JsError::new("no model yet"))?;
        Ok(model.params.clone())
    })
}

/// Recognises a drawing: `image` is an image file's bytes (the canvas as PNG), preprocessed as
/// `gpu-mlp predict` preprocesses a file (ink found, cropped, fitted in 20×20, centred by mass
/// in 28×28). Returns JSON: the digit, each class's probability, and the 784 input pixels.
#[wasm_bindgen]
pub fn predict(image: Vec<u8>) -> Result<String, JsError> {
    let pixels = preprocess::mnist_like(&image).map_err(js_error)?;
    STATE.with_borrow(|state| {
        let model = state
            .model
            .as_ref()
            .ok_or_else(|| JsError::new("train a network or load a model first"))?;
        let probabilities = evaluate::probabilities(model.spec.output, &logits(model, &pixels));
        let digit = ops::argmax(&probabilities);
        Ok(json!({ "digit": digit, "probabilities": probabilities, "pixels": pixels }).to_string())
    })
}

/// One example's logits: the CPU reference's ops, one row (`gpu-mlp predict`'s forward pass).
fn logits(model: &Model, pixels: &[u8]) -> Vec<f32> {
    let spec = &model.spec;
    let mut x = vec![0.0f32; spec.widths[0]];
    ops::gather_batch(&mut x, &mut [0], pixels, &[0], &[0], model.standardize.as_ref());
    let layout = spec.layout();
    for (l, shape) in layout.layers.iter().enumerate() {
        let mut out = vec![0.0f32; shape.outputs];
        ops::matmul_forward(&mut out, &x, shape.weights(&model.params), shape.bias(&model.params), 1);
        if l + 1 < layout.layers.len() {
            ops::activation_forward(spec.activation, &mut out);
        }
        x = out;
    }
    x
}
