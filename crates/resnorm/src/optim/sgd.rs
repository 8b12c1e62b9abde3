//! Stochastic gradient descent with momentum, exactly as `torch.optim.SGD` with
//! `dampening = 0` and `nesterov = False`.
//!
//! For parameter `p` with gradient `g` and learning rate `lr`:
//! ```text
//! d ← g + λ · p                 (only parameters the DecayScope selects)
//! b ← μ · b + d                 (momentum μ > 0; b starts at zero, so b₁ = d₁)
//! p ← p − lr · b                (p − lr · d when μ = 0)
//! ```
//! Unlike [`super::AdamW`], the weight decay `λ` is *coupled*: it is added to the gradient
//! and so passes through the momentum buffer. With `μ = 0` there is no state at all.
//!
//! ```
//! use resnorm::nn::{Param, ParamKind};
//! use resnorm::optim::{Optimizer, Sgd, SgdConfig};
//!
//! let mut w = Param::filled("w", vec![1], ParamKind::Weight, 1.0);
//! let mut sgd = Sgd::new(SgdConfig { momentum: 0.9, ..SgdConfig::default() }).unwrap();
//! w.grad.copy_from_slice(&[1.0]);
//! sgd.step(&mut [&mut w], 0.1).unwrap(); // b = 1,   p = 1 - 0.1
//! sgd.step(&mut [&mut w], 0.1).unwrap(); // b = 1.9, p = 0.9 - 0.19
//! assert!((w.value[0] - 0.71).abs() < 1e-6);
//! ```

use super::state::{OptimizerState, Slots};
use super::{check_lr, DecayScope, Optimizer};
use crate::nn::Param;
use crate::{Error, Result};

/// Hyperparameters of [`Sgd`]; the defaults are PyTorch's (plain SGD).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SgdConfig {
    /// Momentum `μ` (0), in `[0, 1)`.
    pub momentum: f32,
    /// Weight decay `λ` added to the gradient (0); zero or positive.
    pub weight_decay: f32,
    /// Which parameters decay (only [`ParamKind::Weight`](crate::nn::ParamKind::Weight)).
    pub decay: DecayScope,
}

/// The SGD optimizer: its hyperparameters, step count and momentum buffers.
#[derive(Clone, Debug)]
pub struct Sgd {
    config: SgdConfig,
    steps: u64,
    momentum_buffers: Slots<1>,
}

/// Name of SGD in saved state.
const NAME: &str = "sgd";

impl Sgd {
    /// An optimizer that has taken no step; refuses a momentum outside `[0, 1)` or a
    /// negative weight decay.
    pub fn new(config: SgdConfig) -> Result<Self> {
        const OP: &str = "Sgd::new";
        if !(0.0..1.0).contains(&config.momentum) {
            return Err(Error::invalid(
                OP,
                format!("momentum = {}, must be in [0, 1)", config.momentum),
            ));
        }
        if !(config.weight_decay.is_finite() && config.weight_decay >= 0.0) {
            return Err(Error::invalid(
                OP,
                format!(
                    "weight_decay = {}, must be zero or positive",
                    config.weight_decay
                ),
            ));
        }
        Ok(Sgd {
            config,
            steps: 0,
            momentum_buffers: Slots::new(["momentum"]),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [&mut Param], lr: f32) -> Result<()> {
        const OP: &str = "Sgd::step";
        check_lr(OP, lr)?;
        if self.config.momentum == 0.0 {
            super::state::check_params(OP, params)?;
            self.steps += 1;
            for param in params.iter_mut() {
                update(&self.config, param, None, lr);
            }
            return Ok(());
        }
        let config = self.config;
        let slots = self.momentum_buffers.bind(OP, params)?;
        for (param, slot) in params.iter_mut().zip(slots) {
            let [buffer] = &mut slot.buffers;
            update(&config, param, Some(buffer.data_mut()), lr);
        }
        self.steps += 1;
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        self.momentum_buffers.export(NAME, self.steps)
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        const OP: &str = "Sgd::load_state";
        let steps = state.step;
        let buffers = self.momentum_buffers.import(OP, NAME, state)?;
        if self.config.momentum == 0.0 && !buffers.is_empty() {
            return Err(Error::invalid(
                OP,
                "the state has momentum buffers, but this optimizer's momentum is 0",
            ));
        }
        self.momentum_buffers = buffers;
        self.steps = steps;
        Ok(())
    }
}

/// The update of one parameter: `direction` is the momentum buffer `b`, or `None` without
/// momentum.
fn update(config: &SgdConfig, param: &mut Param, direction: Option<&mut [f32]>, lr: f32) {
    let SgdConfig {
        momentum,
        weight_decay,
        decay,
    } = *config;
    let weight_decay = if decay.applies_to(param.kind) {
        weight_decay
    } else {
        0.0
    };
    let neg_lr = -lr;
    match direction {
        Some(buffer) => {
            let elements = param.value.iter_mut().zip(&param.grad).zip(buffer);
            for ((p, &g), b) in elements {
                *b = *b * momentum + (g + weight_decay * *p);
                *p += neg_lr * *b;
            }
        }
        None => {
            for (p, &g) in param.value.iter_mut().zip(&param.grad) {
                *p += neg_lr * (g + weight_decay * *p);
            }
        }
    }
}
