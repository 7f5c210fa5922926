//! The optimisers: how one step turns the gradient into a change of the parameters.
//!
//! For a parameter θ with gradient g = ∂loss/∂θ (+ λθ for weights when `--l2 λ` is set), step t
//! (counted from 1) with learning rate lr:
//!
//! ```text
//! sgd       θ ← θ − lr·g
//! momentum  v ← β·v + (1−β)·g                 θ ← θ − lr·v
//! rmsprop   s ← β₂·s + (1−β₂)·g²              θ ← θ − lr·g / (√s + ε)
//! adam      m ← β₁·m + (1−β₁)·g
//!           v ← β₂·v + (1−β₂)·g²              θ ← θ − lr·m̂ / (√v̂ + ε),  m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)
//! adamw     adam on g without λθ, then for weights  θ ← θ − lr·wd·θ   (decoupled weight decay)
//! ```
//!
//! Momentum is written as the exponentially weighted average of the gradients, the road from
//! momentum to RMSprop and Adam. PyTorch's `SGD(momentum=β)` keeps `v ← β·v + g` instead, a
//! velocity 1/(1−β) times larger: its lr equals ours times (1−β), so our `--lr 0.1 --momentum
//! 0.9` takes the same steps as PyTorch's `lr=0.01, momentum=0.9` (a test checks it).
//!
//! Every state buffer (v, s, m) has the flat layout of the parameters, so each update is one
//! pass (one GPU dispatch) over the whole parameter buffer. The bias corrections 1−βᵗ are
//! computed once per step on the host ([`StepConstants`]), so both devices use the same f32s.

use bytemuck::{Pod, Zeroable};
use clap::ValueEnum;
use serde::Serialize;

/// Which update rule a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// θ ← θ − lr·g
    Sgd,
    /// v ← βv + (1−β)g, θ ← θ − lr·v (the exponentially weighted average of the gradients)
    Momentum,
    /// s ← β₂s + (1−β₂)g², θ ← θ − lr·g/(√s + ε)
    Rmsprop,
    /// m, v as EWAs of g and g², bias-corrected: θ ← θ − lr·m̂/(√v̂ + ε)
    Adam,
    /// Adam with decoupled weight decay: θ ← θ − lr·wd·θ on the weights, beside the Adam step
    Adamw,
}

crate::network::display_as_value_enum!(OptimizerKind);

/// An update rule and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// β of momentum.
    pub momentum: f32,
    /// β₁ of Adam.
    pub beta1: f32,
    /// β₂ of RMSprop and Adam.
    pub beta2: f32,
    /// ε of RMSprop and Adam.
    pub eps: f32,
    /// Decoupled weight decay of AdamW.
    pub weight_decay: f32,
}

impl Optimizer {
    /// Plain SGD (the hyper-parameters of the others at their defaults, unused).
    pub const SGD: Optimizer = Optimizer {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };

    /// `kind` with every hyper-parameter at its default.
    pub fn new(kind: OptimizerKind) -> Optimizer {
        Optimizer { kind, ..Optimizer::SGD }
    }

    /// The names of the optimiser's state buffers, each one flat buffer of the parameters'
    /// layout, in the order the update ops take them.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Sgd => &[],
            OptimizerKind::Momentum => &["velocity"],
            OptimizerKind::Rmsprop => &["square_average"],
            OptimizerKind::Adam | OptimizerKind::Adamw => &["first_moment", "second_moment"],
        }
    }

    /// How many state buffers the optimiser keeps.
    pub fn state_buffers(&self) -> usize {
        self.state_names().len()
    }

    /// The per-step constants of step `t` (counted from 1) at learning rate `lr`: Adam's bias
    /// corrections 1−β₁ᵗ and 1−β₂ᵗ, computed in f64 and rounded once.
    pub fn step_constants(&self, lr: f32, t: u64) -> StepConstants {
        let correction = |beta: f32| (1.0 - (beta as f64).powf(t as f64)) as f32;
        StepConstants {
            lr,
            bias1: correction(self.beta1),
            bias2: correction(self.beta2),
            // The dropout masks' step counter; past 2³² steps it wraps, which only repeats masks.
            step: (t - 1) as u32,
        }
    }

    /// The constants every update of a run shares, for the CPU ops and the GPU kernels alike.
    pub fn update_constants(&self, step: &StepConstants, l2: f32, weight_count: usize) -> UpdateConstants {
        let (beta1, l2) = match self.kind {
            OptimizerKind::Momentum => (self.momentum, l2),
            // AdamW replaces the L2 term with its decoupled decay.
            OptimizerKind::Adamw => (self.beta1, 0.0),
            _ => (self.beta1, l2),
        };
        UpdateConstants {
            lr: step.lr,
            l2,
            beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: if self.kind == OptimizerKind::Adamw {
                self.weight_decay
            } else {
                0.0
            },
            bias1: step.bias1,
            bias2: step.bias2,
            weight_count: weight_count as u32,
            _pad: [0; 3],
        }
    }
}

/// What changes from one training step to the next: the learning rate (schedules may change it
/// every step), Adam's bias corrections, and the step counter the dropout masks hash. Computed
/// on the host for each step of an epoch and handed to the backend with the epoch's order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct StepConstants {
    pub lr: f32,
    /// 1 − β₁ᵗ
    pub bias1: f32,
    /// 1 − β₂ᵗ
    pub bias2: f32,
    /// t − 1, the step's index since training began (wrapping at 2³²).
    pub step: u32,
}

/// Everything one parameter update needs, as the update ops (CPU) and kernels (GPU) read it.
/// Unused fields of a rule are ignored by it. `beta1` is momentum's β for `momentum_update`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct UpdateConstants {
    pub lr: f32,
    /// L2 decay λ, added to the weights' gradient (0 for AdamW).
    pub l2: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// AdamW's decoupled decay (0 for the others).
    pub weight_decay: f32,
    pub bias1: f32,
    pub bias2: f32,
    /// Parameters with a global index below this are weights (decayed); the rest are biases.
    pub weight_count: u32,
    pub _pad: [u32; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_corrections_approach_one() {
        let adam = Optimizer::new(OptimizerKind::Adam);
        let first = adam.step_constants(0.001, 1);
        // β₂ = 0.999 as an f32 is 0.99900001…: 1 − β₂ is 0.001 to 1e-5 relative.
        assert!((first.bias1 - 0.1).abs() < 1e-6 && (first.bias2 / 0.001 - 1.0).abs() < 1e-4);
        assert_eq!(first.step, 0);
        let late = adam.step_constants(0.001, 100_000);
        assert_eq!((late.bias1, late.bias2), (1.0, 1.0));
        // A step count past u32 still gives finite constants.
        let absurd = adam.step_constants(0.001, u64::MAX);
        assert_eq!((absurd.bias1, absurd.bias2), (1.0, 1.0));
    }

    #[test]
    fn adamw_moves_l2_into_its_decoupled_decay() {
        let step = StepConstants {
            lr: 0.1,
            bias1: 1.0,
            bias2: 1.0,
            step: 0,
        };
        let adamw = Optimizer::new(OptimizerKind::Adamw).update_constants(&step, 0.5, 10);
        assert_eq!((adamw.l2, adamw.weight_decay), (0.0, 0.01));
        let adam = Optimizer::new(OptimizerKind::Adam).update_constants(&step, 0.5, 10);
        assert_eq!((adam.l2, adam.weight_decay), (0.5, 0.0));
        let momentum = Optimizer {
            momentum: 0.8,
            ..Optimizer::new(OptimizerKind::Momentum)
        };
        assert_eq!(momentum.update_constants(&step, 0.0, 10).beta1, 0.8);
    }
}
