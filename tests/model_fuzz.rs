//! Fuzzing the model loader and the image path with random mutations of valid files: every
//! mutated file must load (and then be a consistent model) or give an error; a panic fails the
//! test (nothing here catches one).
//!
//! CI runs a few thousand cases with a fixed seed. A longer run:
//!
//! ```sh
//! GPU_MLP_FUZZ_CASES=200000 GPU_MLP_FUZZ_SEED=7 cargo test --release --test model_fuzz -- --nocapture
//! ```

use gpu_mlp::backend::OptimizerState;
use gpu_mlp::data::{Normalize, Standardization};
use gpu_mlp::model::{Checkpoint, Model, ModelInfo, RunSettings, SpecHints, TrainingState};
use gpu_mlp::network::{Activation, Loss, NetworkSpec, Output};
use gpu_mlp::optim::{Optimizer, OptimizerKind};
use gpu_mlp::preprocess;
use gpu_mlp::train::LrSchedule;
use gpu_mlp::train::Position;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Cases per kind of file (`GPU_MLP_FUZZ_CASES` to change).
fn cases() -> usize {
    std::env::var("GPU_MLP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn rng() -> ChaCha8Rng {
    let seed = std::env::var("GPU_MLP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_240_601);
    ChaCha8Rng::seed_from_u64(seed)
}

/// Interesting replacements for a number in a JSON header.
const NUMBERS: [&str; 9] = [
    "0",
    "1",
    "-1",
    "7",
    "1e9",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "2.5",
];

/// One random change to `bytes`. `header` is where the JSON header ends (mutations aim there
/// half of the time, where the structure lives).
fn mutate(bytes: &mut Vec<u8>, header: usize, rng: &mut impl Rng) {
    let len = bytes.len().max(1);
    let at = |rng: &mut dyn FnMut() -> usize| rng() % len;
    let mut pick = || {
        if rng.random_bool(0.5) {
            rng.random_range(0..header.clamp(1, len))
        } else {
            rng.random_range(0..len)
        }
    };
    let position = at(&mut pick);
    match rng.random_range(0..9) {
        0 => {
            if let Some(b) = bytes.get_mut(position) {
                *b ^= 1 << rng.random_range(0..8);
            }
        }
        1 => {
            let value = *[0u8, 0xff, b'"', b'{', b'}', b'[', b',', b':', b'9', b'-']
                .get(rng.random_range(0..10))
                .unwrap();
            if let Some(b) = bytes.get_mut(position) {
                *b = value;
            }
        }
        2 => bytes.truncate(position),
        3 => {
            let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            let position = position.min(bytes.len());
            bytes.splice(position..position, extra);
        }
        4 => {
            let end = (position + rng.random_range(1..32)).min(bytes.len());
            if position < end {
                bytes.drain(position..end);
            }
        }
        5 => {
            // Replace the number that starts at or after `position` in the header.
            let text = &bytes[..header.min(bytes.len())];
            if let Some(start) = (position.min(text.len())..text.len()).find(|&i| text[i].is_ascii_digit()) {
                let end = (start..text.len())
                    .find(|&i| !text[i].is_ascii_digit())
                    .unwrap_or(text.len());
                let number = NUMBERS[rng.random_range(0..NUMBERS.len())].as_bytes().to_vec();
                bytes.splice(start..end, number);
            }
        }
        6 => {
            let end = (position + rng.random_range(1..64)).min(bytes.len());
            let copy = bytes[position.min(end)..end].to_vec();
            let to = rng.random_range(0..=bytes.len());
            bytes.splice(to..to, copy);
        }
        7 => {
            if bytes.len() >= 8 {
                let n: u64 = match rng.random_range(0..3) {
                    0 => rng.random(),
                    1 => rng.random_range(0..bytes.len() as u64 * 2),
                    _ => (header as u64).saturating_sub(8) + rng.random_range(0..3) - 1,
                };
                bytes[..8].copy_from_slice(&n.to_le_bytes());
            }
        }
        _ => {
            // A run of random bytes.
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..len);
                if let Some(b) = bytes.get_mut(i) {
                    *b = rng.random();
                }
            }
        }
    }
}

fn checkpoint() -> Checkpoint {
    let spec = NetworkSpec {
        widths: vec![6, 5, 3],
        activation: Activation::Sigmoid,
        output: Output::Softmax,
        loss: Loss::Ce,
    };
    let total = spec.layout().total;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    Checkpoint {
        model: Model {
            spec,
            params: (0..total).map(|_| rng.random_range(-1.0..1.0)).collect(),
            // Standardised, so that the input statistics are fuzzed too.
            standardize: Some(Standardization {
                mean: (0..784).map(|i| (i % 7) as f32 * 0.1).collect(),
                inv_std: (0..784).map(|i| 1.0 + (i % 5) as f32).collect(),
            }),
            info: ModelInfo {
                epochs_trained: Some(2),
                test_accuracy: Some(0.5),
                has_metadata: true,
                ..ModelInfo::default()
            },
        },
        training: Some(TrainingState {
            settings: RunSettings {
                epochs: 4,
                lr: 0.3,
                lr_decay: 1.0,
                lr_decay_every: 1,
                batch_size: 2,
                l2: 0.0,
                seed: 1,
                threads: 1,
                init: "he".into(),
                dataset: "mnist".into(),
                data_dir: None,
                train_examples: Some(8),
                validation: 0,
                test_examples: None,
                data_crc32: 12345,
                device: "cpu".into(),
                adapter: "cpu (1 thread)".into(),
                gpu_matmuls: None,
                optimizer: Optimizer::new(OptimizerKind::Momentum),
                dropout: 0.5,
                input_dropout: 0.0,
                normalize: Normalize::Standardize,
                lr_schedule: LrSchedule::Cosine,
                warmup_epochs: 1,
            },
            position: Position {
                epochs_done: 2,
                batches_done: 1,
                order: vec![4, 1, 7, 0, 2, 6, 3, 5],
                rng: rng.clone(),
                partial_loss: 1.25,
                partial_correct: 1,
            },
            optimizer: OptimizerState {
                name: "momentum".into(),
                step: 3,
                buffers: vec![("velocity".into(), vec![0.125; total])],
            },
        }),
    }
}

/// Where the JSON header of a safetensors file ends.
fn header_end(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// A loaded file must be a consistent model.
fn check_loaded(c: &Checkpoint) {
    let layout = c.model.spec.layout();
    assert_eq!(c.model.params.len(), layout.total);
    assert!(c.model.params.iter().all(|v| v.is_finite()));
    if let Some(state) = &c.training {
        let mut sorted = state.position.order.clone();
        sorted.sort_unstable();
        assert!(
            sorted.iter().enumerate().all(|(i, &v)| v as usize == i),
            "the order is a permutation"
        );
        assert!(state.optimizer.buffers.iter().all(|(_, b)| b.len() == layout.total));
    }
}

#[test]
fn mutated_model_files_load_or_fail_cleanly() {
    let original = checkpoint();
    let with_metadata = original.to_bytes().unwrap();
    // The same tensors without gpu-mlp's metadata, as a PyTorch user would save them.
    let foreign = {
        let c = Checkpoint {
            model: original.model.clone(),
            training: None,
        };
        let bytes = c.to_bytes().unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<(String, safetensors::tensor::TensorView)> = file.tensors();
        safetensors::serialize(tensors, None).unwrap()
    };
    let hints = [
        SpecHints::default(),
        SpecHints {
            activation: Some(Activation::Sigmoid),
            ..SpecHints::default()
        },
        SpecHints {
            widths: Some(vec![6, 5, 3]),
            activation: Some(Activation::Sigmoid),
            ..SpecHints::default()
        },
    ];
    let path = Path::new("fuzzed.safetensors");
    let mut rng = rng();
    let (mut loaded, mut refused) = (0, 0);
    let mut reasons = std::collections::BTreeMap::new();
    for case in 0..cases() {
        let base = if case % 3 == 2 { &foreign } else { &with_metadata };
        let mut bytes = base.clone();
        for _ in 0..rng.random_range(1..=3) {
            mutate(&mut bytes, header_end(base), &mut rng);
        }
        match Checkpoint::from_bytes(&bytes, path, &hints[case % hints.len()]) {
            Ok(c) => {
                check_loaded(&c);
                loaded += 1;
            }
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("fuzzed.safetensors"), "the error names the file: {text}");
                assert!(!text.contains('\n'), "one line: {text}");
                let kind = format!("{e:?}");
                *reasons
                    .entry(kind.split([' ', '{', '(']).next().unwrap_or("").to_string())
                    .or_insert(0) += 1;
                refused += 1;
            }
        }
    }
    println!(
        "{} mutated model files: {loaded} loaded, {refused} refused: {reasons:?}",
        cases()
    );
    assert!(refused > cases() / 2, "the mutations reach the checks");
}

/// Valid images of a digit in each format the image path reads.
fn images() -> Vec<(&'static str, Vec<u8>)> {
    let mut digit = image::GrayImage::new(28, 28);
    for y in 6..22 {
        for x in 12..16 {
            digit.put_pixel(x, y, image::Luma([230]));
        }
    }
    let colour = image::DynamicImage::ImageLuma8(image::imageops::resize(
        &digit,
        40,
        48,
        image::imageops::FilterType::Triangle,
    ))
    .to_rgba8();
    let encode = |image: &image::DynamicImage, format: image::ImageFormat| {
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
        bytes
    };
    let gray = image::DynamicImage::ImageLuma8(digit);
    let rgba = image::DynamicImage::ImageRgba8(colour);
    let rgb = image::DynamicImage::ImageRgb8(rgba.to_rgb8());
    vec![
        ("png", encode(&gray, image::ImageFormat::Png)),
        ("rgba png", encode(&rgba, image::ImageFormat::Png)),
        ("pgm", encode(&gray, image::ImageFormat::Pnm)),
        ("bmp", encode(&rgb, image::ImageFormat::Bmp)),
        ("jpeg", encode(&rgb, image::ImageFormat::Jpeg)),
    ]
}

#[test]
fn mutated_images_preprocess_or_fail_cleanly() {
    let originals = images();
    for (name, bytes) in &originals {
        assert_eq!(preprocess::mnist_like(bytes).unwrap().len(), 784, "{name} is valid");
    }
    let mut rng = rng();
    let mut results = std::collections::BTreeMap::new();
    for case in 0..cases() {
        let (name, base) = &originals[case % originals.len()];
        let mut bytes = base.clone();
        for _ in 0..rng.random_range(1..=3) {
            // The headers of these formats sit in their first ~64 bytes.
            mutate(&mut bytes, 64, &mut rng);
        }
        for raw in [false, true] {
            let result = if raw {
                preprocess::raw(&bytes)
            } else {
                preprocess::mnist_like(&bytes)
            };
            let outcome = match result {
                Ok(pixels) => {
                    assert_eq!(pixels.len(), 784);
                    "ok".to_string()
                }
                Err(problem) => {
                    let debug = format!("{problem:?}");
                    debug.split(['(', ' ', '{']).next().unwrap_or("").to_string()
                }
            };
            *results.entry((*name, outcome)).or_insert(0) += 1;
        }
    }
    println!("{} mutated images: {results:?}", cases());
}
