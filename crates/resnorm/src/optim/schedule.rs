//! Learning-rate schedules: pure functions of the step number (counted from 0).
//!
//! [`WarmupCosine`] is llm.c's schedule (`train_gpt2.c`), a linear warm-up followed by a
//! half cosine down to `min_lr`:
//! ```text
//! lr(s) = max_lr · (s + 1) / W                                     s < W
//! lr(s) = min_lr + ½ (1 + cos(π (s − W) / (T − W))) · (max_lr − min_lr)    W ≤ s < T
//! lr(s) = min_lr                                                   s ≥ T
//! ```
//! with `W` warm-up steps and `T` total steps: the first step already uses `max_lr / W`
//! (never 0), steps `W − 1` and `W` both use `max_lr`, and the rate stays at `min_lr` after
//! step `T`. [`StepDecay`] is `torch.optim.lr_scheduler.StepLR`:
//! `lr(s) = lr · γ^⌊s / k⌋`. Values are computed in `f64` and rounded once.
//!
//! ```
//! use resnorm::optim::{Schedule, StepDecay, WarmupCosine};
//!
//! let cosine = WarmupCosine::new(1.0, 0.1, 4, 14).unwrap();
//! assert_eq!(cosine.lr_at(0), 0.25);
//! assert_eq!(cosine.lr_at(3), 1.0);
//! assert_eq!(cosine.lr_at(4), 1.0);
//! assert!((cosine.lr_at(9) - 0.55).abs() < 1e-6); // halfway: (max + min) / 2
//! assert_eq!(cosine.lr_at(14), 0.1);
//!
//! let steps = StepDecay::new(1.0, 0.5, 3).unwrap();
//! assert_eq!([steps.lr_at(2), steps.lr_at(3), steps.lr_at(6)], [1.0, 0.5, 0.25]);
//!
//! let constant = Schedule::Constant(3e-4);
//! assert_eq!(constant.lr_at(1_000_000), 3e-4);
//! ```

use crate::{Error, Result};

/// Any of the schedules, for configuration files and command lines.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The same rate at every step.
    Constant(f32),
    /// Linear warm-up, then cosine decay.
    WarmupCosine(WarmupCosine),
    /// Multiplied by `gamma` every `every` steps.
    StepDecay(StepDecay),
}

impl Schedule {
    /// The learning rate at step `step` (from 0).
    pub fn lr_at(&self, step: u64) -> f32 {
        match self {
            Schedule::Constant(lr) => *lr,
            Schedule::WarmupCosine(schedule) => schedule.lr_at(step),
            Schedule::StepDecay(schedule) => schedule.lr_at(step),
        }
    }
}

/// Linear warm-up to `max_lr` over `warmup_steps`, cosine decay to `min_lr` at
/// `total_steps`, then constant (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    max_lr: f32,
    min_lr: f32,
    warmup_steps: u64,
    total_steps: u64,
}

impl WarmupCosine {
    /// Refuses rates that are not finite, `min_lr` outside `[0, max_lr]`, or a warm-up
    /// longer than the whole schedule.
    pub fn new(max_lr: f32, min_lr: f32, warmup_steps: u64, total_steps: u64) -> Result<Self> {
        const OP: &str = "WarmupCosine::new";
        if !(max_lr.is_finite() && max_lr >= 0.0) {
            return Err(Error::invalid(
                OP,
                format!("max_lr = {max_lr}, must be finite and zero or positive"),
            ));
        }
        if !(min_lr.is_finite() && (0.0..=max_lr).contains(&min_lr)) {
            return Err(Error::invalid(
                OP,
                format!("min_lr = {min_lr}, must be in [0, max_lr = {max_lr}]"),
            ));
        }
        if warmup_steps > total_steps {
            return Err(Error::invalid(
                OP,
                format!("warmup_steps = {warmup_steps} exceeds total_steps = {total_steps}"),
            ));
        }
        Ok(WarmupCosine {
            max_lr,
            min_lr,
            warmup_steps,
            total_steps,
        })
    }

    /// A trainer's schedule: the warm-up capped at `steps`, and a refusal reported as a
    /// configuration error, since the rates come from the run's settings.
    pub fn for_run(lr: f32, min_lr: f32, warmup: u64, steps: u64) -> Result<Self> {
        Self::new(lr, min_lr, warmup.min(steps), steps).map_err(|e| Error::Config(e.to_string()))
    }

    /// The learning rate at step `step` (from 0).
    pub fn lr_at(&self, step: u64) -> f32 {
        let (max_lr, min_lr) = (self.max_lr as f64, self.min_lr as f64);
        if step < self.warmup_steps {
            return (max_lr * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let ratio =
            (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        (min_lr + coeff * (max_lr - min_lr)) as f32
    }
}

/// `lr · gamma^⌊step / every⌋`, as PyTorch's `StepLR`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepDecay {
    lr: f32,
    gamma: f32,
    every: u64,
}

impl StepDecay {
    /// Refuses a rate that is not finite or negative, a `gamma` that is not finite and
    /// positive, or `every = 0`.
    pub fn new(lr: f32, gamma: f32, every: u64) -> Result<Self> {
        const OP: &str = "StepDecay::new";
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::invalid(
                OP,
                format!("lr = {lr}, must be finite and zero or positive"),
            ));
        }
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(Error::invalid(
                OP,
                format!("gamma = {gamma}, must be finite and positive"),
            ));
        }
        if every == 0 {
            return Err(Error::invalid(OP, "every = 0, must be at least 1"));
        }
        Ok(StepDecay { lr, gamma, every })
    }

    /// The learning rate at step `step` (from 0).
    pub fn lr_at(&self, step: u64) -> f32 {
        let decays = (step / self.every) as f64;
        (self.lr as f64 * (self.gamma as f64).powf(decays)) as f32
    }
}
