//! Optimizers, learning-rate schedules and gradient clipping.
//!
//! One training step, after the backward pass has filled every [`Param::grad`]:
//! ```text
//! lr   = schedule.lr_at(step)                      schedule.rs
//! norm = clip_grad_norm(params, max_norm)          clip.rs   (optional)
//! optimizer.step(params, lr)                       adamw.rs / sgd.rs
//! ```
//! Optimizers see a model only as `&mut [&mut Param]`, the parameters in a fixed order; they
//! keep one set of buffers per parameter, bound to it by position and checked by name and
//! shape at every step ([`OptimizerState`] is their saved form). [`DecayScope`] decides which
//! [`ParamKind`]s receive weight decay: by default only matrices ([`ParamKind::Weight`]),
//! never biases, norm gains, embeddings or scalar gates.
//!
//! ```
//! use resnorm::nn::{Param, ParamKind};
//! use resnorm::optim::{clip_grad_norm, AdamW, AdamWConfig, Optimizer, WarmupCosine};
//!
//! let mut w = Param::filled("w", vec![3], ParamKind::Weight, 1.0);
//! let schedule = WarmupCosine::new(1e-2, 1e-3, 2, 10).unwrap();
//! let mut adamw = AdamW::new(AdamWConfig::default()).unwrap();
//! for step in 0..10 {
//!     w.zero_grad();
//!     for (g, v) in w.grad.iter_mut().zip(&w.value) {
//!         *g = 2.0 * v; // d/dw of |w|²
//!     }
//!     let norm = clip_grad_norm(&mut [&mut w], 1.0).unwrap();
//!     assert!(norm.is_finite());
//!     adamw.step(&mut [&mut w], schedule.lr_at(step)).unwrap();
//! }
//! assert!(w.value.iter().all(|&v| v < 1.0));
//! ```

pub mod adamw;
pub mod clip;
pub mod schedule;
pub mod sgd;
pub mod state;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_grad_norm, clip_to_norm, grad_norm, grad_sum_of_squares};
pub use schedule::{Schedule, StepDecay, WarmupCosine};
pub use sgd::{Sgd, SgdConfig};
pub use state::OptimizerState;

use crate::nn::{Param, ParamKind};
use crate::{Error, Result};

/// An optimizer: updates parameters from their gradients, and saves and restores its state.
pub trait Optimizer {
    /// One update of every parameter with learning rate `lr` (finite, zero or positive).
    ///
    /// `params` must be the same parameters, in the same order, at every step: the state
    /// created at the first step is checked against their names and shapes, and a mismatch
    /// is an error that leaves parameters and state untouched.
    fn step(&mut self, params: &mut [&mut Param], lr: f32) -> Result<()>;

    /// A copy of the state (step count and per-parameter buffers), for a checkpoint.
    fn state(&self) -> OptimizerState;

    /// Replaces the state with one exported by [`Optimizer::state`] of the same optimizer.
    fn load_state(&mut self, state: OptimizerState) -> Result<()>;
}

/// Which parameters receive weight decay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecayScope {
    /// Only [`ParamKind::Weight`] (matrices and convolution kernels).
    #[default]
    WeightsOnly,
    /// Every parameter.
    All,
}

impl DecayScope {
    /// True when a parameter of kind `kind` decays.
    pub fn applies_to(self, kind: ParamKind) -> bool {
        match self {
            DecayScope::WeightsOnly => kind == ParamKind::Weight,
            DecayScope::All => true,
        }
    }
}

/// Refuses a learning rate that is negative or not finite.
fn check_lr(op: &'static str, lr: f32) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("learning rate {lr}, must be finite and zero or positive"),
        ))
    }
}
