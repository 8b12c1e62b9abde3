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

use super::norm::{
    check_grads, check_len, check_weights, rows_of, BackwardRow, NormGrads, NormKind, NormWeights,
};
use super::rows::{
    self, add_partials, chunk, chunk_mut, partial_len, prefetch_ahead, prefetch_ahead_of,
    split_partial, zeroed_partials, RowSource, SumOf,
};
use super::simd::{
    dispatch, rows_per_block, run_blocks, Vector, LANES, ROW_KERNEL_BLOCKS_PER_THREAD,
};
use super::stores::{output_ahead, write_row, Stores};
use crate::Result;

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
    let stores = Stores::for_call(2 * std::mem::size_of_val(x));
    let block_rows = rows_per_block(rows, ROW_KERNEL_BLOCKS_PER_THREAD);
    let blocks: Vec<_> = x
        .chunks(block_rows * cols)
        .zip(out.chunks_mut(block_rows * cols))
        .zip(rstd.chunks_mut(block_rows))
        .collect();
    run_blocks(blocks, x.len(), |((x_block, out), rstd)| {
        let rows = x_block.chunks_exact(cols).zip(out.chunks_exact_mut(cols));
        for ((x, out), rstd) in rows.zip(rstd) {
            *rstd = forward_row(x, None, weights.weight, weights.eps, out, stores);
        }
        stores.finish_block();
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
    let stores = Stores::for_call(3 * std::mem::size_of_val(x));
    let block_rows = rows_per_block(rows, ROW_KERNEL_BLOCKS_PER_THREAD);
    let partial_len = partial_len(cols, false);
    let mut partials = zeroed_partials(rows.div_ceil(block_rows), partial_len);
    let blocks: Vec<_> = dy
        .chunks(block_rows * cols)
        .zip(x.chunks(block_rows * cols))
        .zip(dx.chunks_mut(block_rows * cols))
        .zip(rstd.chunks(block_rows))
        .zip(partials.chunks_mut(partial_len))
        .collect();
    run_blocks(
        blocks,
        x.len(),
        |((((dy_block, x_block), dx), rstd), partial)| {
            let (dweight, _) = split_partial(partial, cols, false);
            let rows = dy_block.chunks_exact(cols).zip(x_block.chunks_exact(cols));
            let rows = rows.zip(dx.chunks_exact_mut(cols)).zip(rstd);
            for (((dy, x), dx), &rstd) in rows {
                let row = BackwardRow { dy, x, dsum: None };
                backward_row(row, weights.weight, rstd, dx, dweight, stores);
            }
            stores.finish_block();
        },
    );
    add_partials(&partials, grads.dweight, None);
    Ok(())
}

dispatch! {
    /// RMSNorm of one row, `x` or `x + residual` when a residual is given, into `out`;
    /// returns `rstd`.
    pub(crate) fn forward_row(
        x: &[f32],
        residual: Option<&[f32]>,
        weight: &[f32],
        eps: f32,
        out: &mut [f32],
        stores: Stores,
    ) -> f32 => forward_row_of
}

#[inline(always)]
fn forward_row_of<V: Vector>(
    x: &[f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
    stores: Stores,
) -> f32 {
    let n = out.len();
    let (x, weight) = (&x[..n], &weight[..n]);
    match residual {
        None => forward_row_with::<V>(x, weight, eps, out, stores),
        Some(residual) => forward_row_with::<V>(SumOf(x, &residual[..n]), weight, eps, out, stores),
    }
}

#[inline(always)]
fn forward_row_with<V: Vector>(
    x: impl RowSource,
    w: &[f32],
    eps: f32,
    out: &mut [f32],
    stores: Stores,
) -> f32 {
    let rstd = 1.0 / (rows::sum_sq::<V>(x) / x.len() as f32 + eps).sqrt();
    let rstd_l = V::splat(rstd);
    write_row(
        out,
        stores,
        &mut (),
        |_, k| x.lanes::<V>(k) * rstd_l * V::read(chunk(w, k)),
        |_, i| x.at(i) * rstd * w[i],
    );
    rstd
}

dispatch! {
    /// RMSNorm backward of one row: writes `dx` (plus `row.dsum` when given) and adds
    /// `dy ⊙ xhat` into `dweight`.
    pub(crate) fn backward_row(
        row: BackwardRow<'_>,
        weight: &[f32],
        rstd: f32,
        dx: &mut [f32],
        dweight: &mut [f32],
        stores: Stores,
    ) => backward_row_with
}

#[inline(always)]
fn backward_row_with<V: Vector>(
    row: BackwardRow<'_>,
    w: &[f32],
    rstd: f32,
    dx: &mut [f32],
    dweight: &mut [f32],
    stores: Stores,
) {
    let n = dx.len();
    let (BackwardRow { dy, x, dsum }, w, dweight) = (row.cut(n), &w[..n], &mut dweight[..n]);
    let mean_dyw_xhat = rstd * dot3::<V>(dy, w, x) / x.len() as f32;
    let [rstd_l, mean_dyw_xhat_l] = [rstd, mean_dyw_xhat].map(V::splat);
    let dx_ahead = output_ahead(dx, stores);
    let vector = |dweight: &mut &mut [f32], k: usize| {
        if let Some(dx) = dx_ahead {
            prefetch_ahead_of(dx, k);
        }
        let (g, w) = (V::read(chunk(dy, k)), V::read(chunk(w, k)));
        let xhat = V::read(chunk(x, k)) * rstd_l;
        let dw = chunk_mut(dweight, k);
        (V::read(dw) + g * xhat).write(dw);
        let d = rstd_l * (g * w - xhat * mean_dyw_xhat_l);
        dsum.map_or(d, |s| {
            prefetch_ahead(s, k);
            d + V::read(chunk(s, k))
        })
    };
    let scalar = |dweight: &mut &mut [f32], i: usize| {
        let (g, w) = (dy[i], w[i]);
        let xhat = x[i] * rstd;
        dweight[i] += g * xhat;
        let d = rstd * (g * w - xhat * mean_dyw_xhat);
        dsum.map_or(d, |s| d + s[i])
    };
    write_row(dx, stores, &mut &mut *dweight, vector, scalar);
}

/// `Σ dy ⊙ w ⊙ x`, asking for `dy` and `x` ahead as it reads them (the weight stays cached).
#[inline(always)]
fn dot3<V: Vector>(dy: &[f32], w: &[f32], x: &[f32]) -> f32 {
    let mut acc = V::zero();
    for k in 0..dy.len() / LANES {
        prefetch_ahead(dy, k);
        prefetch_ahead(x, k);
        acc += V::read(chunk(dy, k)) * V::read(chunk(w, k)) * V::read(chunk(x, k));
    }
    let done = dy.len() - dy.len() % LANES;
    let tail: f32 = dy[done..]
        .iter()
        .zip(&w[done..])
        .zip(&x[done..])
        .map(|((g, w), x)| g * w * x)
        .sum();
    acc.sum() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::norm::{assert_near, TestRow};
    use crate::kernels::simd::each_level;

    /// A backward row run from the forward's `rstd`, writing `dx` and `dweight`.
    type Backward<'a> = &'a dyn Fn(f32, &mut [f32], &mut [f32]);

    /// The rows at every level: within rounding of an `f64` reference, and the same bits as
    /// the dispatched rows (the vector's non-fused operations are exact on every level).
    #[test]
    fn rows_match_the_reference_with_the_same_bits_on_every_level() {
        for cols in [1, 15, 16, 37, 130] {
            let row = TestRow::new(cols);
            let (x, residual, dy, dsum) = (&row.x, &row.residual, &row.dy, &row.dsum);
            let (weight, sum) = (&row.weight, row.sum());
            let n = cols as f64;
            let rstd =
                1.0 / (sum.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n + 1e-5).sqrt();
            let xhat: Vec<f64> = sum.iter().map(|&v| v as f64 * rstd).collect();
            let g: Vec<f64> = (0..cols).map(|i| dy[i] as f64 * weight[i] as f64).collect();
            let mean_gx = g.iter().zip(&xhat).map(|(g, x)| g * x).sum::<f64>() / n;
            let run = |forward: &dyn Fn(&mut [f32]) -> f32, backward: Backward<'_>| {
                let mut out = vec![0.0; cols];
                let rstd_row = forward(&mut out);
                let (mut dx, mut dweight) = (vec![0.0; cols], vec![0.0; cols]);
                backward(rstd_row, &mut dx, &mut dweight);
                for i in 0..cols {
                    let y = xhat[i] * weight[i] as f64;
                    assert_near(&format!("y, {cols} columns"), out[i], y, 1e-5);
                    let d = rstd * (g[i] - xhat[i] * mean_gx) + dsum[i] as f64;
                    assert_near(&format!("dx, {cols} columns"), dx[i], d, 1e-4);
                    let dw = dy[i] as f64 * xhat[i];
                    assert_near(&format!("dw, {cols} columns"), dweight[i], dw, 1e-5);
                }
                [out, dx, dweight, vec![rstd_row]]
                    .concat()
                    .into_iter()
                    .map(f32::to_bits)
                    .collect::<Vec<_>>()
            };
            let row = BackwardRow {
                dy,
                x: &sum,
                dsum: Some(dsum),
            };
            let dispatched = run(
                &|out| forward_row(x, Some(residual), weight, 1e-5, out, Stores::Cached),
                &|rstd, dx, dweight| backward_row(row, weight, rstd, dx, dweight, Stores::Cached),
            );
            each_level!(|V, level| {
                let at_level = run(
                    &|out| {
                        forward_row_of::<V>(x, Some(residual), weight, 1e-5, out, Stores::Cached)
                    },
                    &|rstd, dx, dweight| {
                        backward_row_with::<V>(row, weight, rstd, dx, dweight, Stores::Cached)
                    },
                );
                assert_eq!(at_level, dispatched, "cols {cols}, {level}");
            });
        }
    }
}
