//! What network to train: layer widths, activations, output, loss, and where every parameter lives.
//!
//! Conventions used everywhere (CPU ops, WGSL kernels, tests):
//! - Matrices are row-major. A batch is `rows × features`: one example per row.
//! - Layer `l` maps `inputs` to `outputs` with `Z = A·W + b`, `W` being `inputs × outputs`.
//! - All parameters live in ONE flat `f32` buffer (and all gradients in another of the same
//!   layout): every weight matrix first, layer by layer, then every bias vector. Weights come
//!   first so that L2 decay, which applies to weights only, covers one range `[0, weight_count)`.

use crate::error::{ConfigError, WidthsFlag};
use clap::ValueEnum;
use serde::Serialize;

/// The non-linearity of the hidden layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, z)
    Relu,
    /// 1 / (1 + e^-z)
    Sigmoid,
    /// tanh(z)
    Tanh,
}

/// The non-linearity of the output layer, turning logits into class scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// p = e^z / Σ e^z: one distribution over the classes.
    Softmax,
    /// p_k = 1 / (1 + e^-z_k): one independent probability per class.
    Sigmoid,
}

/// The loss of one example against its one-hot target y; a batch's loss is the mean over its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Cross-entropy: -log p_label for softmax; -Σ_k [y_k log p_k + (1-y_k) log(1-p_k)] for sigmoid.
    Ce,
    /// Sum of squared errors Σ_k (p_k - y_k)², as in the tutorials this project reproduces.
    Mse,
}

/// How the weights are drawn before training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// W ~ N(0, 2/inputs), b = 0: keeps ReLU activations' variance stable.
    He,
    /// W ~ U(-a, a) with a = √(6/(inputs+outputs)), b = 0 (Glorot): for sigmoid and tanh.
    Xavier,
    /// W, b ~ U(-0.5, 0.5), as in the classic ReLU tutorial.
    Uniform,
    /// W, b ~ N(0, 1), as in Nielsen's "Neural Networks and Deep Learning".
    Normal,
}

macro_rules! display_as_value_enum {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let value = clap::ValueEnum::to_possible_value(self).expect("no skipped variants");
                f.write_str(value.get_name())
            }
        }
    )*};
}
pub(crate) use display_as_value_enum;
display_as_value_enum!(Activation, Output, Loss, Init);

/// The architecture: widths of every layer (input first, classes last) and its non-linearities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub widths: Vec<usize>,
    pub activation: Activation,
    pub output: Output,
    pub loss: Loss,
}

impl NetworkSpec {
    /// Number of weight layers (one less than the number of widths).
    pub fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// "784-128-10": how networks are named in reports.
    pub fn name(&self) -> String {
        let widths: Vec<String> = self.widths.iter().map(|w| w.to_string()).collect();
        widths.join("-")
    }

    /// Checks that the widths describe a network that can be trained on data with `features`
    /// inputs and `classes` classes; errors name `flag`, where the widths came from.
    pub fn check(&self, flag: WidthsFlag, features: usize, classes: usize) -> Result<(), ConfigError> {
        let name = self.name();
        if self.widths.len() < 2 {
            return Err(ConfigError::TooFewLayers { flag, layers: name });
        }
        if let Some(position) = self.widths.iter().position(|&w| w == 0) {
            return Err(ConfigError::ZeroWidth {
                flag,
                layers: name,
                position,
            });
        }
        if self.widths[0] != features {
            return Err(ConfigError::InputMismatch {
                flag,
                layers: name,
                inputs: self.widths[0],
                features,
            });
        }
        let outputs = *self.widths.last().expect("at least two widths");
        if outputs != classes {
            return Err(ConfigError::OutputMismatch {
                flag,
                layers: name,
                outputs,
                classes,
            });
        }
        if self.parameter_count().is_none() {
            return Err(ConfigError::TooManyParameters { flag, layers: name });
        }
        Ok(())
    }

    /// Weights and biases of every layer, or None when the count overflows (absurd widths):
    /// checked here so that nothing downstream multiplies widths unchecked.
    pub fn parameter_count(&self) -> Option<usize> {
        self.widths.windows(2).try_fold(0usize, |sum, w| {
            let layer = w[0].checked_mul(w[1])?.checked_add(w[1])?;
            // Elements are 4 bytes: keep their byte count addressable too.
            layer.checked_add(sum).filter(|&n| n.checked_mul(4).is_some())
        })
    }

    /// Where each layer's weights and biases sit in the flat parameter buffer.
    pub fn layout(&self) -> ParamLayout {
        ParamLayout::new(&self.widths)
    }

    /// Multiply-adds ×2 of the matmuls of one training step, per example: forward X·W for every
    /// layer, backward Aᵀ·dZ for every layer and dZ·Wᵀ for all but the first (whose input is data).
    pub fn train_flops_per_example(&self) -> u64 {
        let products: Vec<u64> = self.widths.windows(2).map(|w| (w[0] * w[1]) as u64).collect();
        let first = products[0];
        let all: u64 = products.iter().sum();
        2 * (all + all + (all - first))
    }
}

/// Parses "784,128,10" (or "784-128-10") into widths; errors name `flag`.
pub fn parse_widths(flag: WidthsFlag, text: &str) -> Result<Vec<usize>, ConfigError> {
    text.split([',', '-'])
        .map(|part| {
            part.trim().parse::<usize>().map_err(|_| ConfigError::BadLayers {
                flag,
                text: text.to_string(),
            })
        })
        .collect()
}

/// Offsets of one layer's tensors in the flat parameter (or gradient) buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    pub inputs: usize,
    pub outputs: usize,
    /// W: `inputs × outputs`, row-major, starting here.
    pub weight_offset: usize,
    /// b: `outputs`, starting here.
    pub bias_offset: usize,
}

impl LayerShape {
    pub fn weight_len(&self) -> usize {
        self.inputs * self.outputs
    }
    pub fn weights<'a>(&self, params: &'a [f32]) -> &'a [f32] {
        &params[self.weight_offset..self.weight_offset + self.weight_len()]
    }
    pub fn bias<'a>(&self, params: &'a [f32]) -> &'a [f32] {
        &params[self.bias_offset..self.bias_offset + self.outputs]
    }
}

/// The flat buffer's map: `[W_1, W_2, …, W_L, b_1, b_2, …, b_L]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    pub layers: Vec<LayerShape>,
    /// Number of weights (the L2-decayed range `[0, weight_count)`).
    pub weight_count: usize,
    /// Number of parameters, weights and biases.
    pub total: usize,
}

impl ParamLayout {
    pub fn new(widths: &[usize]) -> ParamLayout {
        let weight_count: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
        let mut weight_offset = 0;
        let mut bias_offset = weight_count;
        let mut layers = Vec::new();
        for pair in widths.windows(2) {
            let (inputs, outputs) = (pair[0], pair[1]);
            layers.push(LayerShape {
                inputs,
                outputs,
                weight_offset,
                bias_offset,
            });
            weight_offset += inputs * outputs;
            bias_offset += outputs;
        }
        ParamLayout {
            layers,
            weight_count,
            total: bias_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_puts_weights_first_then_biases() {
        let layout = ParamLayout::new(&[3, 4, 2]);
        assert_eq!(layout.weight_count, 12 + 8);
        assert_eq!(layout.total, 20 + 4 + 2);
        assert_eq!(layout.layers[0].weight_offset, 0);
        assert_eq!(layout.layers[1].weight_offset, 12);
        assert_eq!(layout.layers[0].bias_offset, 20);
        assert_eq!(layout.layers[1].bias_offset, 24);
    }

    #[test]
    fn flops_count_skips_the_input_gradient_of_the_first_layer() {
        let spec = NetworkSpec {
            widths: vec![784, 512, 512, 10],
            activation: Activation::Relu,
            output: Output::Softmax,
            loss: Loss::Ce,
        };
        // The figure quoted for one epoch of this network: ≈ 192.6 GFLOP.
        let epoch = spec.train_flops_per_example() * 60_000;
        assert_eq!(epoch, 192_552_960_000);
    }

    #[test]
    fn widths_parse_with_commas_or_dashes() {
        let parse = |text| parse_widths(WidthsFlag::Layers, text);
        assert_eq!(parse("784,128,10").unwrap(), vec![784, 128, 10]);
        assert_eq!(parse("784-64-10").unwrap(), vec![784, 64, 10]);
        assert!(parse("784,,10").is_err());
        assert!(parse("784,x,10").is_err());
    }
}
