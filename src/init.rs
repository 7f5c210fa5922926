//! Drawing the initial weights. Seeded ChaCha8 (a stream fixed by its spec, unlike `StdRng`) so
//! the same `--seed` gives the same weights on every machine and every version.

use crate::network::{Init, ParamLayout};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// The generator for everything random in a run (weights first, then the epochs' shuffles).
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A fresh flat parameter buffer, `layout.total` long, initialised by `init`.
pub fn init_params(layout: &ParamLayout, init: Init, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut params = vec![0.0f32; layout.total];
    for layer in &layout.layers {
        let (fan_in, fan_out) = (layer.inputs as f32, layer.outputs as f32);
        let weights = layer.weight_offset..layer.weight_offset + layer.weight_len();
        let biases = layer.bias_offset..layer.bias_offset + layer.outputs;
        match init {
            Init::He => {
                let normal = Normal::new(0.0, (2.0 / fan_in).sqrt()).expect("finite std");
                params[weights].iter_mut().for_each(|w| *w = normal.sample(rng));
            }
            Init::Xavier => {
                let a = (6.0 / (fan_in + fan_out)).sqrt();
                params[weights].iter_mut().for_each(|w| *w = rng.random_range(-a..a));
            }
            Init::Uniform => {
                params[weights]
                    .iter_mut()
                    .for_each(|w| *w = rng.random_range(-0.5..0.5));
                params[biases].iter_mut().for_each(|b| *b = rng.random_range(-0.5..0.5));
            }
            Init::Normal => {
                let normal = Normal::new(0.0f32, 1.0).expect("finite std");
                params[weights].iter_mut().for_each(|w| *w = normal.sample(rng));
                params[biases].iter_mut().for_each(|b| *b = normal.sample(rng));
            }
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(values: &[f32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn each_init_has_its_distribution() {
        let layout = ParamLayout::new(&[784, 256, 10]);
        let first = layout.layers[0];
        for (init, want_var, biases_zero) in [
            (Init::He, 2.0f64 / 784.0, true),
            (Init::Xavier, 6.0 / (784.0 + 256.0) / 3.0, true),
            (Init::Uniform, 1.0 / 12.0, false),
            (Init::Normal, 1.0, false),
        ] {
            let params = init_params(&layout, init, &mut rng(7));
            let (mean, var) = moments(first.weights(&params));
            assert!(mean.abs() < 0.05 * want_var.sqrt(), "{init}: mean {mean}");
            assert!(
                (var / want_var - 1.0).abs() < 0.05,
                "{init}: var {var}, want {want_var}"
            );
            let bias_zero = first.bias(&params).iter().all(|&b| b == 0.0);
            assert_eq!(bias_zero, biases_zero, "{init}: biases");
        }
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let layout = ParamLayout::new(&[10, 5, 2]);
        let a = init_params(&layout, Init::He, &mut rng(1));
        let b = init_params(&layout, Init::He, &mut rng(1));
        let c = init_params(&layout, Init::He, &mut rng(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
