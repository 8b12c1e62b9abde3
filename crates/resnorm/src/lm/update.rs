//! The optimizer half of a training step, shared by [`super::Trainer`] and the study's short
//! runs so that both train exactly alike:
//!
//! ```text
//! g = g / accum                          (gradients were summed over accum micro-batches)
//! (diagnostics: read gradients and weights)
//! norm = ‖g‖₂; clip to grad_clip when grad_clip > 0
//! if norm is finite: optimizer.step(lr)  (a non-finite norm leaves the weights untouched)
//! (diagnostics: update/weight ratios)
//! ```
//! Sharded (ZeRO stage 1), each rank holds the averaged gradients of its own run only: the
//! norm is then the root of one all-reduce of the runs' sums of squares, and the clipped
//! step of each run is followed by the all-gather of the weights.

use crate::diagnostics::{DiagnosedModel, Diagnostics, PendingDiagnostics};
use crate::distributed::Communicator;
use crate::models::CausalLm;
use crate::nn::Param;
use crate::optim::{clip_grad_norm, clip_to_norm, grad_norm, grad_sum_of_squares, Optimizer};
use crate::Error;
use crate::Result;

use super::OptimizerShard;

/// How to turn a model's accumulated gradients into an update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// Learning rate of this step.
    pub lr: f32,
    /// Largest global gradient norm; 0 turns clipping off.
    pub grad_clip: f32,
    /// Micro-batches whose gradients were summed (at least 1).
    pub accum: usize,
}

/// Applies `update` to `model` with `optimizer`; returns the global gradient norm before
/// clipping and, when `diagnose` gives the step number and loss, the step's [`Diagnostics`]
/// (the model must then have recorded stream statistics through its last backward).
pub fn apply_gradients<M: DiagnosedModel + ?Sized>(
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    update: Update,
    diagnose: Option<(u64, f32)>,
) -> Result<(f32, Option<Diagnostics>)> {
    apply_gradients_sharded(model, optimizer, update, diagnose, None)
}

/// [`apply_gradients`] where, with `shard`, this rank's gradients are averaged for its own
/// parameters only (reduce-scattered), the optimizer steps those, and the new values are
/// then gathered from their owners (ZeRO stage 1, see [`OptimizerShard`]); collective then.
/// Diagnostics need every averaged gradient, so they are an error with a shard.
pub fn apply_gradients_sharded<M: DiagnosedModel + ?Sized>(
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    update: Update,
    diagnose: Option<(u64, f32)>,
    shard: Option<(&mut OptimizerShard, &mut dyn Communicator)>,
) -> Result<(f32, Option<Diagnostics>)> {
    if let Some((shard, comm)) = shard {
        if diagnose.is_some() {
            return Err(Error::invalid(
                "apply_gradients_sharded",
                "diagnostics need every averaged gradient, which a shard does not hold",
            ));
        }
        return step_shard(model.params_mut(), optimizer, update, shard, comm)
            .map(|norm| (norm, None));
    }
    scale_for_accum(&mut model.params_mut(), update.accum);
    let pending = diagnose
        .map(|(step, loss)| PendingDiagnostics::after_backward(model, step, loss, update.lr))
        .transpose()?;
    let norm = clip_and_step(model.params_mut(), optimizer, update)?;
    let diagnostics = pending.map(|p| p.finish(model)).transpose()?;
    Ok((norm, diagnostics))
}

/// [`apply_gradients`] for either model, without diagnostics (the GPT's alone): how the
/// trainer updates a fine-tuned Llama-family model.
pub fn apply_gradients_plain(
    model: &mut CausalLm,
    optimizer: &mut dyn Optimizer,
    update: Update,
) -> Result<f32> {
    scale_for_accum(&mut model.params_mut(), update.accum);
    clip_and_step(model.params_mut(), optimizer, update)
}

/// Divides the gradients summed over `accum` micro-batches by `accum`.
fn scale_for_accum(params: &mut [&mut Param], accum: usize) {
    if accum > 1 {
        let scale = 1.0 / accum as f32;
        for p in params {
            p.grad.iter_mut().for_each(|g| *g *= scale);
        }
    }
}

/// The global gradient norm before clipping; clips, then steps when it is finite.
fn clip_and_step(
    mut params: Vec<&mut Param>,
    optimizer: &mut dyn Optimizer,
    update: Update,
) -> Result<f32> {
    let norm = if update.grad_clip > 0.0 {
        clip_grad_norm(&mut params, update.grad_clip)?
    } else {
        grad_norm(&params)
    };
    if norm.is_finite() {
        optimizer.step(&mut params, update.lr)?;
    }
    Ok(norm)
}

/// The ZeRO step of [`apply_gradients_sharded`]: the global norm of the runs' gradients,
/// clipping and AdamW on this rank's run, then the all-gather of the weights.
fn step_shard(
    mut params: Vec<&mut Param>,
    optimizer: &mut dyn Optimizer,
    update: Update,
    shard: &mut OptimizerShard,
    comm: &mut dyn Communicator,
) -> Result<f32> {
    let own = &mut params[shard.owned()];
    scale_for_accum(own, update.accum);
    let mut sum = [grad_sum_of_squares(own)];
    comm.sum_f64(&mut sum)?;
    let norm = sum[0].sqrt();
    if update.grad_clip > 0.0 {
        clip_to_norm(own, norm, update.grad_clip)?;
    }
    // The norm is the same on every rank, so all of them step and gather, or none.
    if (norm as f32).is_finite() {
        optimizer.step(own, update.lr)?;
        shard.gather_weights(&mut params, comm)?;
    }
    Ok(norm as f32)
}
