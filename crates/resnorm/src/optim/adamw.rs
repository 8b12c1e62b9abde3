//! AdamW: Adam with decoupled weight decay, exactly as `torch.optim.AdamW`.
//!
//! For parameter `p` with gradient `g`, at step `t = 1, 2, ...` with learning rate `lr`:
//! ```text
//! p   ← p · (1 − lr · λ)                  (only parameters the DecayScope selects)
//! m   ← m + (1 − β₁) · (g − m)            (= β₁ m + (1 − β₁) g)
//! v   ← β₂ · v + (1 − β₂) · g²
//! m̂   = m / (1 − β₁ᵗ)
//! v̂   = v / (1 − β₂ᵗ)
//! p   ← p − lr · m̂ / (√v̂ + ε)
//! ```
//! `m` and `v` start at zero. As in PyTorch, the bias corrections are folded into scalars
//! computed in `f64` (`step_size = lr / (1 − β₁ᵗ)`, `denom = √v / √(1 − β₂ᵗ) + ε`), so `ε`
//! is added to `√v̂`, not to `√v`. The weight decay is *decoupled*: it shrinks the weights
//! directly instead of being added to the gradient (compare [`super::Sgd`]).
//!
//! ```
//! use resnorm::nn::{Param, ParamKind};
//! use resnorm::optim::{AdamW, AdamWConfig, Optimizer};
//!
//! let mut w = Param::filled("w", vec![2], ParamKind::Weight, 1.0);
//! let mut b = Param::filled("b", vec![1], ParamKind::Bias, 1.0);
//! w.grad.copy_from_slice(&[0.5, -2.0]);
//! b.grad.copy_from_slice(&[0.25]);
//! let config = AdamWConfig { weight_decay: 0.1, ..AdamWConfig::default() };
//! let mut adamw = AdamW::new(config).unwrap();
//! adamw.step(&mut [&mut w, &mut b], 0.01).unwrap();
//! // The first step moves every element by ~lr against the sign of its gradient;
//! // the weight also shrinks by lr·λ = 0.1 %, the bias does not.
//! assert!((w.value[0] - (0.999 - 0.01)).abs() < 1e-6);
//! assert!((w.value[1] - (0.999 + 0.01)).abs() < 1e-6);
//! assert!((b.value[0] - (1.0 - 0.01)).abs() < 1e-6);
//! ```

use super::state::{OptimizerState, Slots};
use super::{check_lr, DecayScope, Optimizer};
use crate::kernels::simd::dispatch;
use crate::nn::Param;
use crate::{Error, Result};
use rayon::prelude::*;

/// Hyperparameters of [`AdamW`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first-moment average `m` (0.9), in `[0, 1)`.
    pub beta1: f32,
    /// Decay of the second-moment average `v` (0.999), in `[0, 1)`.
    pub beta2: f32,
    /// Added to `√v̂` (1e-8); positive.
    pub eps: f32,
    /// Decoupled weight decay `λ` (0.01); zero or positive.
    pub weight_decay: f32,
    /// Which parameters decay (only [`ParamKind::Weight`](crate::nn::ParamKind::Weight)).
    pub decay: DecayScope,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decay: DecayScope::WeightsOnly,
        }
    }
}

/// The AdamW optimizer: its hyperparameters, step count and moment buffers.
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    steps: u64,
    moments: Slots<2>,
}

/// Name of AdamW in saved state.
const NAME: &str = "adamw";

impl AdamW {
    /// An optimizer that has taken no step; refuses betas outside `[0, 1)`, a non-positive
    /// `eps` or a negative weight decay.
    pub fn new(config: AdamWConfig) -> Result<Self> {
        const OP: &str = "AdamW::new";
        for (name, beta) in [("beta1", config.beta1), ("beta2", config.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::invalid(
                    OP,
                    format!("{name} = {beta}, must be in [0, 1)"),
                ));
            }
        }
        if !(config.eps.is_finite() && config.eps > 0.0) {
            return Err(Error::invalid(
                OP,
                format!("eps = {}, must be positive", config.eps),
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
        Ok(AdamW {
            config,
            steps: 0,
            moments: Slots::new(["m", "v"]),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Parameters are updated in chunks of this many elements, so that one large parameter (a
/// 50257-token embedding) is shared between threads too.
const CHUNK: usize = 1 << 16;

/// The constants of one step (the learning rate and the bias corrections folded in).
#[derive(Clone, Copy)]
struct StepScalars {
    /// `1 − lr·λ` for the parameters that decay, else 1 (a multiplication by 1 is exact).
    decay_factor: f32,
    m_weight: f32,
    v_beta: f32,
    v_weight: f32,
    neg_step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

dispatch! {
    /// The update of one chunk of a parameter, in one pass, at the instruction-set level of
    /// `simd::level` (every operation is IEEE arithmetic, so the bits do not depend on it).
    fn update_chunk(value: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: StepScalars) => auto update_elements
}

#[inline(always)]
fn update_elements(value: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: StepScalars) {
    let elements = value.iter_mut().zip(grad).zip(m.iter_mut()).zip(v);
    for (((p, &g), m), v) in elements {
        *m += s.m_weight * (g - *m);
        *v = *v * s.v_beta + s.v_weight * g * g;
        let denom = v.sqrt() / s.bias_correction2_sqrt + s.eps;
        *p = *p * s.decay_factor + s.neg_step_size * *m / denom;
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &mut [&mut Param], lr: f32) -> Result<()> {
        const OP: &str = "AdamW::step";
        check_lr(OP, lr)?;
        let slots = self.moments.bind(OP, params)?;
        self.steps += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            decay,
        } = self.config;
        let t = self.steps as f64;
        let (lr, beta1, beta2) = (lr as f64, beta1 as f64, beta2 as f64);
        let scalars = StepScalars {
            decay_factor: 1.0,
            m_weight: (1.0 - beta1) as f32,
            v_beta: beta2 as f32,
            v_weight: (1.0 - beta2) as f32,
            neg_step_size: (-lr / (1.0 - beta1.powf(t))) as f32,
            bias_correction2_sqrt: (1.0 - beta2.powf(t)).sqrt() as f32,
            eps,
        };
        let decay_factor = (1.0 - lr * weight_decay as f64) as f32;
        // Element-wise, so chunks of every parameter update in parallel with the same bits
        // as in sequence.
        crate::threads::pool().install(|| {
            params
                .par_iter_mut()
                .zip(slots.par_iter_mut())
                .flat_map(|(param, slot)| {
                    let scalars = StepScalars {
                        decay_factor: match decay.applies_to(param.kind) {
                            true => decay_factor,
                            false => 1.0,
                        },
                        ..scalars
                    };
                    let [m, v] = &mut slot.buffers;
                    param
                        .value
                        .par_chunks_mut(CHUNK)
                        .zip(param.grad.par_chunks(CHUNK))
                        .zip(m.data_mut().par_chunks_mut(CHUNK))
                        .zip(v.data_mut().par_chunks_mut(CHUNK))
                        .map(move |chunk| (chunk, scalars))
                })
                .for_each(|((((value, grad), m), v), scalars)| {
                    update_chunk(value, grad, m, v, scalars)
                });
        });
        Ok(())
    }

    fn state(&self) -> OptimizerState {
        self.moments.export(NAME, self.steps)
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        let steps = state.step;
        self.moments = self.moments.import("AdamW::load_state", NAME, state)?;
        self.steps = steps;
        Ok(())
    }
}
