//! Inverted dropout: in training, each unit of a dropped layer is kept with probability 1−p and
//! then scaled by 1/(1−p), so that evaluation, which keeps every unit unscaled, sees the same
//! expected activations.
//!
//! Which units are dropped is not drawn from a random generator but read off a counter-based
//! hash of (seed, step, layer, row, unit): the same integer function runs here and in WGSL
//! (`dropout_keeps` in `shaders/common.wgsl`), so the CPU and the GPU drop exactly the same
//! units, a step can be replayed (the backward pass recomputes the mask instead of storing it),
//! and the same seed gives the same masks on every device.

/// Where dropout applies in a run: `hidden` on every hidden layer's output, `input` on the
/// pixels; each a drop probability in [0, 1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dropout {
    pub hidden: f32,
    pub input: f32,
    /// The run's seed, hashed into every mask.
    pub seed: u64,
}

impl Dropout {
    pub const NONE: Dropout = Dropout {
        hidden: 0.0,
        input: 0.0,
        seed: 0,
    };

    /// The drop probability of dropout layer `layer`: 0 is the input, l ≥ 1 the output of hidden
    /// layer l (counted from 1).
    pub fn probability(&self, layer: usize) -> f32 {
        if layer == 0 {
            self.input
        } else {
            self.hidden
        }
    }

    /// The mask of dropout layer `layer` at training step `step`, or None when that layer
    /// keeps every unit.
    pub fn mask(&self, layer: usize, step: u32) -> Option<Mask> {
        let p = self.probability(layer);
        (p > 0.0).then(|| Mask::new(self.seed, step, layer as u32, p))
    }
}

/// One layer's mask at one step: which (row, unit) of a batch is kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mask {
    /// Hash of (seed, step, layer): what makes each layer's and step's mask its own.
    pub key: u32,
    /// A unit is dropped when its hash is below this: round(p · 2³²).
    pub threshold: u32,
    /// 1/(1−p), the scale of a kept unit.
    pub scale: f32,
}

impl Mask {
    pub fn new(seed: u64, step: u32, layer: u32, p: f32) -> Mask {
        Mask {
            key: mask_key(seed_key(seed), step, layer),
            threshold: (p as f64 * 4_294_967_296.0).round().min(u32::MAX as f64) as u32,
            scale: (1.0 / (1.0 - p as f64)) as f32,
        }
    }

    /// Whether unit `unit` of row `row` (of a batch whose layer has `units` units) is kept.
    pub fn keeps(&self, row: usize, units: usize, unit: usize) -> bool {
        let index = (row * units + unit) as u32;
        lowbias32(self.key ^ lowbias32(index)) >= self.threshold
    }

    /// The factor unit (row, unit) is multiplied by: `scale` when kept, 0 when dropped.
    pub fn factor(&self, row: usize, units: usize, unit: usize) -> f32 {
        if self.keeps(row, units, unit) {
            self.scale
        } else {
            0.0
        }
    }
}

/// The run's seed folded into 32 bits: the part of every mask's key that stays the same all run
/// (the GPU receives it once, in `DropoutParams`).
pub fn seed_key(seed: u64) -> u32 {
    lowbias32((seed >> 32) as u32 ^ lowbias32(seed as u32))
}

/// The key of dropout layer `layer`'s mask at step `step` (`dropout_key` in WGSL).
pub fn mask_key(seed_key: u32, step: u32, layer: u32) -> u32 {
    lowbias32(layer ^ lowbias32(step ^ seed_key))
}

/// A 32-bit integer hash with good avalanche (Chris Wellons' "lowbias32"), in WGSL too.
pub fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p() {
        for p in [0.1f32, 0.5, 0.8] {
            let mask = Mask::new(7, 3, 1, p);
            let kept = (0..100)
                .flat_map(|r| (0..1000).map(move |u| (r, u)))
                .filter(|&(r, u)| mask.keeps(r, 1000, u))
                .count();
            let rate = kept as f64 / 100_000.0;
            assert!((rate - (1.0 - p as f64)).abs() < 0.01, "p {p}: kept {rate}");
        }
    }

    #[test]
    fn masks_differ_by_seed_step_and_layer_and_repeat_exactly() {
        let pattern = |mask: Mask| (0..256).map(|u| mask.keeps(0, 256, u)).collect::<Vec<_>>();
        let base = pattern(Mask::new(1, 0, 1, 0.5));
        assert_eq!(base, pattern(Mask::new(1, 0, 1, 0.5)));
        for other in [
            Mask::new(2, 0, 1, 0.5),
            Mask::new(1, 1, 1, 0.5),
            Mask::new(1, 0, 2, 0.5),
        ] {
            let same = base.iter().zip(pattern(other)).filter(|(a, b)| **a == *b).count();
            assert!((90..170).contains(&same), "{same} of 256 agree: not independent");
        }
    }

    #[test]
    fn p_zero_keeps_everything_and_scales_by_one() {
        let mask = Mask::new(1, 0, 1, 0.0);
        assert_eq!(mask.threshold, 0);
        assert_eq!(mask.scale, 1.0);
        assert!((0..1000).all(|u| mask.keeps(3, 1000, u)));
        assert_eq!(Dropout::NONE.mask(1, 0), None);
    }
}
