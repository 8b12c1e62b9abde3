//! Fused softmax cross-entropy over logits `[rows, vocab]` with integer targets.
//!
//! Forward, per row `r` with target `t_r` (max-subtracted, so no `exp` overflows):
//!
//! ```text
//! m_r    = max_j z[r,j]
//! lse_r  = m_r + ln Σ_j exp(z[r,j] - m_r)          (saved for backward)
//! loss_r = lse_r - z[r, t_r]
//! L      = (1/rows) Σ_r loss_r                     (summed in f64, in row order)
//! ```
//!
//! Backward, in one pass over the logits, recomputing each probability from the saved
//! log-sum-exp instead of storing a probability matrix:
//!
//! ```text
//! dz[r,j] = (exp(z[r,j] - lse_r) - [j = t_r]) · dL / rows      (overwritten)
//! ```
//!
//! With label smoothing `ε` (Szegedy et al. 2016; torch's `label_smoothing`, fairseq's
//! `label_smoothed_cross_entropy`) the target is `(1-ε)·onehot + ε/V`:
//!
//! ```text
//! loss_r  = (1-ε)·(lse_r - z[r, t_r]) + ε·(lse_r - mean_j z[r,j])
//! dz[r,j] = (exp(z[r,j] - lse_r) - (1-ε)·[j = t_r] - ε/V) · dL / rows
//! ```
//! ([`smoothed_cross_entropy_forward`], [`smoothed_cross_entropy_backward_in_place`]; `ε = 0`
//! is the plain loss).
//!
//! [`cross_entropy_backward_in_place`] writes `dz` over the logits themselves, as llm.c does,
//! so that a `[B·T, 50257]` model needs one logits-sized buffer, not two. Rows are split into
//! one block per thread of [`crate::threads::pool`]; rows are independent, so results do not
//! depend on the split.
//!
//! ```
//! use resnorm::kernels::{cross_entropy_backward, cross_entropy_forward};
//! let logits = [0.0f32, 0.0, 2.0, 1.0]; // two rows, vocab 2
//! let targets = [1u32, 0];
//! let (mut losses, mut lse) = ([0.0; 2], [0.0; 2]);
//! let loss = cross_entropy_forward(&logits, &targets, 2, &mut losses, &mut lse).unwrap();
//! assert!((losses[0] - 2f32.ln()).abs() < 1e-6);
//! assert!((loss - (losses[0] + losses[1]) / 2.0).abs() < 1e-6);
//! let mut dlogits = [0.0; 4];
//! cross_entropy_backward(&mut dlogits, &logits, &lse, &targets, 2, 1.0).unwrap();
//! assert!((dlogits[0] - 0.25).abs() < 1e-6 && (dlogits[1] + 0.25).abs() < 1e-6);
//! assert!(cross_entropy_forward(&logits, &[2, 0], 2, &mut losses, &mut lse).is_err());
//! ```

use super::exp::{exp, row_max};
use super::simd::{dispatch, rows_per_block, ONE_BLOCK_PER_THREAD};
use crate::{Error, Result};
use rayon::prelude::*;

/// Logit matrices with at least this many elements are processed on the thread pool.
pub const PARALLEL_MIN_LEN: usize = 1 << 14;

/// Computes per-row losses and log-sum-exps and returns the mean loss.
///
/// `logits` is `[rows, vocab]` with `rows = targets.len()`; `losses` and `logsumexp` hold
/// `rows` elements each and are overwritten. Every target must be `< vocab`.
pub fn cross_entropy_forward(
    logits: &[f32],
    targets: &[u32],
    vocab: usize,
    losses: &mut [f32],
    logsumexp: &mut [f32],
) -> Result<f32> {
    const OP: &str = "cross_entropy_forward";
    forward_with(OP, (logits, targets, vocab), 0.0, losses, logsumexp)
}

/// [`cross_entropy_forward`] against the smoothed target `(1-ε)·onehot + ε/V`, with
/// `smoothing = ε` in `[0, 1]`.
pub fn smoothed_cross_entropy_forward(
    logits: &[f32],
    targets: &[u32],
    vocab: usize,
    smoothing: f32,
    losses: &mut [f32],
    logsumexp: &mut [f32],
) -> Result<f32> {
    const OP: &str = "smoothed_cross_entropy_forward";
    check_smoothing(OP, smoothing)?;
    forward_with(OP, (logits, targets, vocab), smoothing, losses, logsumexp)
}

fn forward_with(
    op: &'static str,
    (logits, targets, vocab): (&[f32], &[u32], usize),
    smoothing: f32,
    losses: &mut [f32],
    logsumexp: &mut [f32],
) -> Result<f32> {
    check(op, logits.len(), targets, vocab)?;
    let rows = targets.len();
    if losses.len() != rows || logsumexp.len() != rows {
        return Err(Error::shape(
            op,
            format!(
                "losses and logsumexp need {rows} elements, got {} and {}",
                losses.len(),
                logsumexp.len()
            ),
        ));
    }
    let block = |first_row: usize, logits: &[f32], losses: &mut [f32], lse: &mut [f32]| {
        for (i, (z, (loss, lse))) in logits
            .chunks_exact(vocab)
            .zip(losses.iter_mut().zip(lse.iter_mut()))
            .enumerate()
        {
            *lse = row_logsumexp(z);
            *loss = *lse - z[targets[first_row + i] as usize];
            if smoothing != 0.0 {
                let mean = z.iter().map(|&v| v as f64).sum::<f64>() / vocab as f64;
                *loss = (1.0 - smoothing) * *loss + smoothing * (*lse - mean as f32);
            }
        }
    };
    if logits.len() < PARALLEL_MIN_LEN {
        block(0, logits, losses, logsumexp);
    } else {
        let block_rows = rows_per_block(rows, ONE_BLOCK_PER_THREAD);
        crate::threads::pool().install(|| {
            logits
                .par_chunks(block_rows * vocab)
                .zip(losses.par_chunks_mut(block_rows))
                .zip(logsumexp.par_chunks_mut(block_rows))
                .enumerate()
                .for_each(|(b, ((z, loss), lse))| block(b * block_rows, z, loss, lse));
        });
    }
    let total: f64 = losses.iter().map(|&l| l as f64).sum();
    Ok((total / rows as f64) as f32)
}

/// Writes `dlogits = (softmax(logits) - onehot(targets)) · dloss / rows`.
///
/// `logsumexp` is the one [`cross_entropy_forward`] saved; `dloss` the gradient of the mean
/// loss (1 when it is the final loss).
pub fn cross_entropy_backward(
    dlogits: &mut [f32],
    logits: &[f32],
    logsumexp: &[f32],
    targets: &[u32],
    vocab: usize,
    dloss: f32,
) -> Result<()> {
    const OP: &str = "cross_entropy_backward";
    check(OP, logits.len(), targets, vocab)?;
    check_backward(
        OP,
        dlogits.len(),
        logits.len(),
        logsumexp.len(),
        targets.len(),
    )?;
    dlogits.copy_from_slice(logits);
    backward_rows(dlogits, logsumexp, targets, vocab, (0.0, dloss));
    Ok(())
}

/// [`cross_entropy_backward`] that overwrites the logits with their gradient.
pub fn cross_entropy_backward_in_place(
    logits: &mut [f32],
    logsumexp: &[f32],
    targets: &[u32],
    vocab: usize,
    dloss: f32,
) -> Result<()> {
    const OP: &str = "cross_entropy_backward_in_place";
    check(OP, logits.len(), targets, vocab)?;
    check_backward(
        OP,
        logits.len(),
        logits.len(),
        logsumexp.len(),
        targets.len(),
    )?;
    backward_rows(logits, logsumexp, targets, vocab, (0.0, dloss));
    Ok(())
}

/// [`cross_entropy_backward_in_place`] of [`smoothed_cross_entropy_forward`]'s loss:
/// `dz = (softmax(z) - (1-ε)·onehot(t) - ε/V) · dloss / rows`, over the logits.
pub fn smoothed_cross_entropy_backward_in_place(
    logits: &mut [f32],
    logsumexp: &[f32],
    targets: &[u32],
    vocab: usize,
    smoothing: f32,
    dloss: f32,
) -> Result<()> {
    const OP: &str = "smoothed_cross_entropy_backward_in_place";
    check_smoothing(OP, smoothing)?;
    check(OP, logits.len(), targets, vocab)?;
    let (len, rows) = (logits.len(), targets.len());
    check_backward(OP, len, len, logsumexp.len(), rows)?;
    backward_rows(logits, logsumexp, targets, vocab, (smoothing, dloss));
    Ok(())
}

fn check_smoothing(op: &'static str, smoothing: f32) -> Result<()> {
    match (0.0..=1.0).contains(&smoothing) {
        true => Ok(()),
        false => Err(Error::invalid(
            op,
            format!("label smoothing {smoothing} must be in [0, 1]"),
        )),
    }
}

/// Turns each row of logits, in place, into its gradient under smoothing `ε`.
fn backward_rows(
    z: &mut [f32],
    logsumexp: &[f32],
    targets: &[u32],
    vocab: usize,
    (smoothing, dloss): (f32, f32),
) {
    let scale = dloss / targets.len() as f32;
    let uniform = smoothing * scale / vocab as f32;
    let block = |z: &mut [f32], lse: &[f32], targets: &[u32]| {
        for ((z, &lse), &target) in z.chunks_exact_mut(vocab).zip(lse).zip(targets) {
            softmax_row(z, lse, scale);
            if smoothing != 0.0 {
                z.iter_mut().for_each(|v| *v -= uniform);
            }
            z[target as usize] -= (1.0 - smoothing) * scale;
        }
    };
    if z.len() < PARALLEL_MIN_LEN {
        block(z, logsumexp, targets);
        return;
    }
    let block_rows = rows_per_block(targets.len(), ONE_BLOCK_PER_THREAD);
    crate::threads::pool().install(|| {
        z.par_chunks_mut(block_rows * vocab)
            .zip(logsumexp.par_chunks(block_rows))
            .zip(targets.par_chunks(block_rows))
            .for_each(|((z, lse), t)| block(z, lse, t));
    });
}

dispatch! {
    /// `z ← exp(z - lse) · scale`: one row's softmax, scaled.
    fn softmax_row(z: &mut [f32], lse: f32, scale: f32) => auto softmax_row_with
}

#[inline(always)]
fn softmax_row_with(z: &mut [f32], lse: f32, scale: f32) {
    z.iter_mut().for_each(|v| *v = exp(*v - lse) * scale);
}

dispatch! {
    /// `max + ln Σ exp(z - max)`, the sum kept in eight partial sums.
    fn row_logsumexp(z: &[f32]) -> f32 => auto logsumexp
}

#[inline(always)]
fn logsumexp(z: &[f32]) -> f32 {
    let max = row_max(z);
    let mut partial = [0.0f32; 8];
    let mut chunks = z.chunks_exact(8);
    for chunk in &mut chunks {
        for (p, &v) in partial.iter_mut().zip(chunk) {
            *p += exp(v - max);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - max)).sum();
    max + (partial.iter().sum::<f32>() + tail).ln()
}

/// Sizes and target range shared by forward and backward.
fn check(op: &'static str, logits_len: usize, targets: &[u32], vocab: usize) -> Result<()> {
    if vocab == 0 || targets.is_empty() {
        return Err(Error::invalid(
            op,
            format!(
                "needs at least one row and one class, got {} rows and vocab {vocab}",
                targets.len()
            ),
        ));
    }
    if Some(logits_len) != targets.len().checked_mul(vocab) {
        return Err(Error::shape(
            op,
            format!(
                "logits have {logits_len} elements, {} rows of vocab {vocab} need {}",
                targets.len(),
                targets.len().saturating_mul(vocab)
            ),
        ));
    }
    if let Some((row, &t)) = targets
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        return Err(Error::invalid(
            op,
            format!("target {t} of row {row} is not below vocab {vocab}"),
        ));
    }
    Ok(())
}

fn check_backward(
    op: &'static str,
    dlogits_len: usize,
    logits_len: usize,
    logsumexp_len: usize,
    rows: usize,
) -> Result<()> {
    if dlogits_len != logits_len || logsumexp_len != rows {
        return Err(Error::shape(
            op,
            format!(
                "dlogits needs {logits_len} elements and logsumexp {rows}, got {dlogits_len} and {logsumexp_len}"
            ),
        ));
    }
    Ok(())
}
