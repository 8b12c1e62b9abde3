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

use crate::diagnostics::{DiagnosedModel, Diagnostics, PendingDiagnostics};
use crate::distributed::Communicator;
use crate::models::CausalLm;
use crate::nn::Param;
use crate::optim::{clip_grad_norm, grad_norm, Optimizer};
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

/// [`apply_gradients`] where, with `shard`, the optimizer steps only this rank's parameters
/// and the new values are then gathered from their owners (ZeRO stage 1, see
/// [`OptimizerShard`]); collective then.
pub fn apply_gradients_sharded<M: DiagnosedModel + ?Sized>(
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    update: Update,
    diagnose: Option<(u64, f32)>,
    shard: Option<(&OptimizerShard, &mut dyn Communicator)>,
) -> Result<(f32, Option<Diagnostics>)> {
    scale_for_accum(&mut model.params_mut(), update.accum);
    let pending = diagnose
        .map(|(step, loss)| PendingDiagnostics::after_backward(model, step, loss, update.lr))
        .transpose()?;
    let norm = clip_and_step(model.params_mut(), optimizer, update, shard)?;
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
    clip_and_step(model.params_mut(), optimizer, update, None)
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
    shard: Option<(&OptimizerShard, &mut dyn Communicator)>,
) -> Result<f32> {
    let norm = if update.grad_clip > 0.0 {
        clip_grad_norm(&mut params, update.grad_clip)?
    } else {
        grad_norm(&params)
    };
    if norm.is_finite() {
        match shard {
            None => optimizer.step(&mut params, update.lr)?,
            Some((shard, comm)) => {
                optimizer.step(&mut params[shard.owned()], update.lr)?;
                shard.gather_weights(&mut params, comm)?;
            }
        }
    }
    Ok(norm)
}
