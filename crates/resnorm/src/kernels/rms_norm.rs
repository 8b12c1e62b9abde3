//! RMSNorm over the last dimension, forward and backward (Zhang & Sennrich 2019; PyTorch's
//! `nn.RMSNorm`): LayerNorm without centering and without bias.
//!
//! For a row `x` of `n = cols` values with weight `w`:
//!
//! ```text
//! rstd = 1 / sqrt(Σ x² / n + eps)     xhat = x · rstd     y = xhat ⊙ w
//! ```
//!
//! Backward, given `dy` and the saved `rstd` (xhat is recomputed from `x`):
//!
//! ```text
//! dx       = rstd · (dy⊙w - xhat · mean(dy⊙w⊙xhat))      (overwritten)
//! dweight += Σ_rows dy ⊙ xhat                            (accumulated)
//! ```
//!
//! The mean square is a sum of non-negative terms, so one pass in `f32` (sixteen independent
//! partial sums) is accurate. Forward reads `x` once and writes `y`; backward reads `dy` and
//! `x` once and writes `dx`. Passing a bias is an [`crate::Error::InvalidArgument`].
//!
//! ```
//! use resnorm::kernels::norm::{NormGrads, NormWeights};
//! use resnorm::kernels::rms_norm::{rms_norm_backward, rms_norm_forward};
//! let x = [3.0, -4.0]; // one row, mean square 12.5
//! let weight = [1.0, 2.0];
//! let params = NormWeights { weight: &weight, bias: None, eps: 1e-6 };
//! let (mut y, mut rstd) = ([0.0; 2], [0.0; 1]);
//! rms_norm_forward(&x, &params, &mut y, &mut rstd).unwrap();
//! assert!((y[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-5);
//! assert!((y[1] + 8.0 / 12.5f32.sqrt()).abs() < 1e-5);
//!
//! let (mut dx, mut dweight) = ([0.0; 2], [0.0; 2]);
//! let grads = NormGrads { dweight: &mut dweight, dbias: None };
//! rms_norm_backward(&[1.0, 0.5], &x, &params, &rstd, &mut dx, grads).unwrap();
//! // y is invariant to scaling x, so dx is orthogonal to x.
//! assert!((dx[0] * x[0] + dx[1] * x[1]).abs() < 1e-5);
//! ```

use super::lanes::{simd_dispatch, Lanes, LANES};
use super::norm::{
    check_grads, check_len, check_weights, rows_of, NormGrads, NormKind, NormWeights,
};
use super::rows::{self, add_partials, run_blocks};
use crate::{threads, Result};

/// Normalizes every row of `x` (`[rows, cols]`, `cols = weights.weight.len()`) into `out`,
/// saving each row's `rstd` for the backward pass. `weights.bias` must be `None`.
pub fn rms_norm_forward(
    x: &[f32],
    weights: &NormWeights<'_>,
    out: &mut [f32],
    rstd: &mut [f32],
) -> Result<()> {
    const OP: &str = "rms_norm_forward";
    let cols = check_weights(OP, NormKind::Rms, weights)?;
    let rows = rows_of(OP, "x", x.len(), cols)?;
    check_len(OP, "out", out.len(), x.len())?;
    check_len(OP, "rstd", rstd.len(), rows)?;
    let block_rows = threads::rows_per_block(rows);
    let blocks: Vec<_> = x
        .chunks(block_rows * cols)
        .zip(out.chunks_mut(block_rows * cols))
        .zip(rstd.chunks_mut(block_rows))
        .collect();
    run_blocks(blocks, x.len(), |((x, out), rstd)| {
        let rows = x.chunks_exact(cols).zip(out.chunks_exact_mut(cols));
        for ((x, out), rstd) in rows.zip(rstd) {
            *rstd = forward_row(x, weights, out);
        }
    });
    Ok(())
}

/// Writes `dx` for upstream gradient `dy` and adds into `grads.dweight` (`grads.dbias` must be
/// `None`); `rstd` is what [`rms_norm_forward`] saved for this `x`.
pub fn rms_norm_backward(
    dy: &[f32],
    x: &[f32],
    weights: &NormWeights<'_>,
    rstd: &[f32],
    dx: &mut [f32],
    grads: NormGrads<'_>,
) -> Result<()> {
    const OP: &str = "rms_norm_backward";
    let cols = check_weights(OP, NormKind::Rms, weights)?;
    let rows = rows_of(OP, "x", x.len(), cols)?;
    check_len(OP, "dy", dy.len(), x.len())?;
    check_len(OP, "dx", dx.len(), x.len())?;
    check_len(OP, "rstd", rstd.len(), rows)?;
    check_grads(OP, weights, &grads)?;
    let block_rows = threads::rows_per_block(rows);
    let mut partials = vec![0.0f32; rows.div_ceil(block_rows) * cols];
    let blocks: Vec<_> = dy
        .chunks(block_rows * cols)
        .zip(x.chunks(block_rows * cols))
        .zip(dx.chunks_mut(block_rows * cols))
        .zip(rstd.chunks(block_rows))
        .zip(partials.chunks_mut(cols))
        .collect();
    run_blocks(blocks, x.len(), |((((dy, x), dx), rstd), dweight)| {
        let rows = dy.chunks_exact(cols).zip(x.chunks_exact(cols));
        for (((dy, x), dx), &rstd) in rows.zip(dx.chunks_exact_mut(cols)).zip(rstd) {
            backward_row(dy, x, weights.weight, rstd, dx, None, dweight);
        }
    });
    add_partials(&partials, grads.dweight, None);
    Ok(())
}

simd_dispatch! {
    /// RMSNorm of one row into `out`; returns `rstd`.
    pub(crate) fn forward_row(x: &[f32], weights: &NormWeights<'_>, out: &mut [f32]) -> f32
        => forward_row_with
}

#[inline(always)]
fn forward_row_with<L: Lanes>(x: &[f32], weights: &NormWeights<'_>, out: &mut [f32]) -> f32 {
    let rstd = 1.0 / (rows::sum_sq::<L>(x) / x.len() as f32 + weights.eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weights.weight) {
        *o = v * rstd * w;
    }
    rstd
}

simd_dispatch! {
    /// RMSNorm backward of one row: writes `dx` (plus `dsum` when given, for a fused residual
    /// add) and adds `dy ⊙ xhat` into `dweight`.
    pub(crate) fn backward_row(
        dy: &[f32],
        x: &[f32],
        weight: &[f32],
        rstd: f32,
        dx: &mut [f32],
        dsum: Option<&[f32]>,
        dweight: &mut [f32],
    ) => backward_row_with
}

#[inline(always)]
fn backward_row_with<L: Lanes>(
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    rstd: f32,
    dx: &mut [f32],
    dsum: Option<&[f32]>,
    dweight: &mut [f32],
) {
    let mean_dyw_xhat = rstd * dot3::<L>(dy, weight, x) / x.len() as f32;
    let split = x.len() - x.len() % LANES;
    let (dx_body, dx_tail) = dx.split_at_mut(split);
    let (dw_body, dw_tail) = dweight.split_at_mut(split);
    let [rstd_l, mean_dyw_xhat_l] = [rstd, mean_dyw_xhat].map(L::splat);
    let inputs = dy.chunks_exact(LANES).zip(x.chunks_exact(LANES));
    let inputs = inputs.zip(weight.chunks_exact(LANES));
    let outputs = dx_body
        .chunks_exact_mut(LANES)
        .zip(dw_body.chunks_exact_mut(LANES));
    for (((g, v), w), (d, dw)) in inputs.zip(outputs) {
        let (g, w) = (L::load(g), L::load(w));
        let xhat = L::load(v) * rstd_l;
        (rstd_l * (g * w - xhat * mean_dyw_xhat_l)).store(d);
        (L::load(dw) + g * xhat).store(dw);
    }
    let inputs = dy[split..].iter().zip(&x[split..]).zip(&weight[split..]);
    for (((&g, &v), &w), (d, dw)) in inputs.zip(dx_tail.iter_mut().zip(dw_tail)) {
        let xhat = v * rstd;
        *d = rstd * (g * w - xhat * mean_dyw_xhat);
        *dw += g * xhat;
    }
    if let Some(dsum) = dsum {
        for (d, &s) in dx.iter_mut().zip(dsum) {
            *d += s;
        }
    }
}

/// `Σ a ⊙ b ⊙ c`.
#[inline(always)]
fn dot3<L: Lanes>(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = L::zero();
    let chunks = a.chunks_exact(LANES).zip(b.chunks_exact(LANES));
    for ((a, b), c) in chunks.zip(c.chunks_exact(LANES)) {
        acc += L::load(a) * L::load(b) * L::load(c);
    }
    let done = a.len() - a.len() % LANES;
    let tail: f32 = a[done..]
        .iter()
        .zip(&b[done..])
        .zip(&c[done..])
        .map(|((a, b), c)| a * b * c)
        .sum();
    acc.sum() + tail
}
