//! Short training runs: the same step the trainer (`resnorm train`) runs, repeated, with
//! [`Diagnostics`] collected every few steps and a validation loss at the end.
//!
//! One step ([`train_step`]) is `zero_grad; loss = forward(batch); backward`, then the
//! trainer's own update, [`crate::lm::apply_gradients`] (clipping, AdamW, diagnostics).
//! A step whose loss or gradient norm is not finite is not applied: the run stops there and
//! counts as diverged.

use super::data::StudyData;
use super::model::{StudyModel, StudyModelSpec};
use super::probe::DATA_STREAM;
use super::spec::TrainSpec;
use crate::diagnostics::Diagnostics;
use crate::lm::{apply_gradients, Update};
use crate::optim::{AdamW, AdamWConfig, WarmupCosine};
use crate::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The study's weight decay (GPT-2 / nanoGPT's 0.1 on matrices only).
pub const WEIGHT_DECAY: f32 = 0.1;
/// The cosine schedule ends at this fraction of the peak rate.
pub const MIN_LR_FRACTION: f32 = 0.1;

/// What a training run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainResult {
    /// Training loss of every step taken (a diverged run stops early).
    pub losses: Vec<f32>,
    /// True when a loss or gradient norm became infinite or NaN.
    pub diverged: bool,
    /// Mean training loss over the last tenth of the steps (infinite when diverged).
    pub final_train_loss: f32,
    /// Mean validation loss after training (infinite when diverged).
    pub val_loss: f32,
    /// Median wall-clock time of one step, in milliseconds.
    pub ms_per_step: f64,
    /// Diagnostics every `diagnostics_every` steps and at the last step.
    pub diagnostics: Vec<Diagnostics>,
}

/// The loss, global gradient norm (before clipping) and learning rate of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// Training loss of the batch.
    pub loss: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f32,
}

/// One optimization step on `(inputs, targets)` (`batch` rows), the step `resnorm train` runs;
/// with `diagnose`, the model must record stream statistics and the step's [`Diagnostics`]
/// are returned too. A non-finite loss or gradient norm leaves the weights untouched.
#[allow(clippy::too_many_arguments)]
pub fn train_step<M: StudyModel + ?Sized>(
    model: &mut M,
    optimizer: &mut AdamW,
    schedule: &WarmupCosine,
    clip: f32,
    step: u64,
    (inputs, targets): (&[u32], &[u32]),
    batch: usize,
    diagnose: bool,
) -> Result<(StepOutcome, Option<Diagnostics>)> {
    crate::threads::busy(|| {
        model.zero_grad();
        let loss = model
            .forward(inputs, batch, Some(targets))?
            .expect("targets given");
        model.backward()?;
        let lr = schedule.lr_at(step);
        if !loss.is_finite() {
            // Not applied: the run stops here and counts as diverged.
            let outcome = StepOutcome {
                loss,
                grad_norm: f32::NAN,
                lr,
            };
            return Ok((outcome, None));
        }
        let update = Update {
            lr,
            grad_clip: clip,
            accum: 1,
        };
        let diagnose = diagnose.then_some((step, loss));
        let (grad_norm, diagnostics) = apply_gradients(model, optimizer, update, diagnose)?;
        Ok((
            StepOutcome {
                loss,
                grad_norm,
                lr,
            },
            diagnostics,
        ))
    })
}

/// Runs `spec` on `data`; `on_step(step)` is called after every step (progress display).
pub fn run_train<M: StudyModelSpec>(
    spec: &TrainSpec<M>,
    data: &StudyData,
    on_step: &mut dyn FnMut(u64),
) -> Result<TrainResult> {
    if spec.steps == 0 || spec.batch == 0 || spec.diagnostics_every == 0 {
        return Err(Error::invalid(
            "run_train",
            "steps, batch and diagnostics_every must be at least 1",
        ));
    }
    let context = spec.model.context();
    let mut model = spec.model.build(data.vocab())?;
    let mut optimizer = AdamW::new(AdamWConfig {
        weight_decay: WEIGHT_DECAY,
        ..AdamWConfig::default()
    })?;
    let schedule = WarmupCosine::new(spec.lr, spec.lr * MIN_LR_FRACTION, spec.warmup, spec.steps)?;
    let mut rng = Rng::new(spec.model.seed() ^ DATA_STREAM);
    let (mut inputs, mut targets) = (vec![0; spec.batch * context], vec![0; spec.batch * context]);
    let mut result = TrainResult {
        losses: Vec::with_capacity(spec.steps as usize),
        diverged: false,
        final_train_loss: f32::INFINITY,
        val_loss: f32::INFINITY,
        ms_per_step: 0.0,
        diagnostics: Vec::new(),
    };
    let mut times = Vec::with_capacity(spec.steps as usize);
    for step in 0..spec.steps {
        data.dataset
            .sample_batch_into(&mut rng, context, &mut inputs, &mut targets)?;
        let diagnose = step % spec.diagnostics_every == 0 || step + 1 == spec.steps;
        model.record_stream_stats(diagnose);
        let start = Instant::now();
        let (outcome, diagnostics) = train_step(
            &mut model,
            &mut optimizer,
            &schedule,
            spec.clip,
            step,
            (&inputs, &targets),
            spec.batch,
            diagnose,
        )?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        result.losses.push(outcome.loss);
        result.diagnostics.extend(diagnostics);
        on_step(step);
        if !(outcome.loss.is_finite() && outcome.grad_norm.is_finite()) {
            result.diverged = true;
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    result.ms_per_step = times[times.len() / 2];
    if !result.diverged {
        let tail = (result.losses.len() / 10).max(1);
        let last = &result.losses[result.losses.len() - tail..];
        result.final_train_loss = last.iter().sum::<f32>() / tail as f32;
        result.val_loss = validation_loss(&mut model, data, spec)?;
    }
    Ok(result)
}

/// Mean loss over the first `spec.eval_windows` validation windows, `spec.batch` at a time.
fn validation_loss<M: StudyModelSpec>(
    model: &mut M::Model,
    data: &StudyData,
    spec: &TrainSpec<M>,
) -> Result<f32> {
    let context = spec.model.context();
    let windows: Vec<_> = data
        .dataset
        .validation_windows(context)?
        .take(spec.eval_windows.max(1))
        .collect();
    let (mut total, mut count) = (0.0f64, 0usize);
    for chunk in windows.chunks(spec.batch) {
        let inputs: Vec<u32> = chunk.iter().flat_map(|(x, _)| x.iter().copied()).collect();
        let targets: Vec<u32> = chunk.iter().flat_map(|(_, y)| y.iter().copied()).collect();
        let loss = model
            .forward(&inputs, chunk.len(), Some(&targets))?
            .expect("targets given");
        total += loss as f64 * chunk.len() as f64;
        count += chunk.len();
    }
    Ok((total / count as f64) as f32)
}
