//! The residual add fused with the normalization that follows it, forward and backward: the
//! pre-norm transformer's `residual_stream = x + residual; y = Norm(residual_stream)`.
//!
//! ```text
//! forward:   sum = x + residual            (the new residual stream, written out)
//!            out = Norm(sum)               (LayerNorm or RMSNorm, as in layer_norm.rs / rms_norm.rs)
//! backward:  dx  = dsum + Norm_backward(dout)   (∂L/∂x = ∂L/∂residual, overwritten)
//!            dweight, dbias += as in Norm_backward
//! ```
//!
//! `dsum` is the gradient arriving directly at the residual stream from later layers (the
//! skip path); `dout` the one arriving through `out`. Fusing saves a whole pass over memory
//! each way: forward reads `x` and `residual` once and writes `sum` and `out` (the row is
//! normalized while it is still in L1); backward reads `dout`, `dsum` and `sum` once and
//! writes `dx`.
//!
//! For [`NormKind::Rms`] there is no mean: the forward's `stats.mean` may be an empty slice
//! (or `rows` long, then it is filled with zeros, RMSNorm's centre) and backward ignores it;
//! a bias is an error, as in RMSNorm.
//!
//! ```
//! use resnorm::kernels::add_norm::{add_norm_backward, add_norm_forward, UpstreamGrads};
//! use resnorm::kernels::norm::{NormGrads, NormKind, NormStats, NormStatsMut, NormWeights};
//! let x = [1.0, 2.0, 3.0, 4.0];
//! let residual = [0.5; 4];
//! let weight = [1.0; 4];
//! let params = NormWeights { weight: &weight, bias: None, eps: 1e-5 };
//! let (mut sum, mut out, mut rstd) = ([0.0; 4], [0.0; 4], [0.0; 1]);
//! let stats = NormStatsMut { mean: &mut [], rstd: &mut rstd };
//! add_norm_forward(NormKind::Rms, &x, &residual, &params, &mut sum, &mut out, stats).unwrap();
//! assert_eq!(sum, [1.5, 2.5, 3.5, 4.5]);
//!
//! // With no gradient through `out`, the skip path's gradient passes straight to x.
//! let upstream = UpstreamGrads { dout: &[0.0; 4], dsum: Some(&[1.0, -1.0, 2.0, 0.0]) };
//! let (mut dx, mut dweight) = ([0.0; 4], [0.0; 4]);
//! let stats = NormStats { mean: &[], rstd: &rstd };
//! let grads = NormGrads { dweight: &mut dweight, dbias: None };
//! add_norm_backward(NormKind::Rms, upstream, &sum, &params, stats, &mut dx, grads).unwrap();
//! assert_eq!(dx, [1.0, -1.0, 2.0, 0.0]);
//! ```

use super::norm::{
    check_grads, check_len, check_optional_mean, check_weights, rows_of, BackwardRow, NormGrads,
    NormKind, NormStats, NormStatsMut, NormWeights,
};
use super::rows::{add_partials, partial_len, split_partial, zeroed_partials, RowSource, SumOf};
use super::simd::{dispatch, rows_per_block, run_blocks, Vector, ROW_KERNEL_BLOCKS_PER_THREAD};
use super::stores::{write_row, Stores};
use super::{layer_norm, rms_norm};
use crate::Result;

/// The gradients arriving at the two outputs of [`add_norm_forward`].
#[derive(Clone, Copy, Debug)]
pub struct UpstreamGrads<'a> {
    /// `∂L/∂out`, `[rows, cols]`.
    pub dout: &'a [f32],
    /// `∂L/∂sum` from the skip path, `[rows, cols]`; `None` when the residual stream ends here.
    pub dsum: Option<&'a [f32]>,
}

/// Writes `sum = x + residual` and `out = Norm(sum)` (all `[rows, cols]`) and the row
/// statistics of `sum`.
pub fn add_norm_forward(
    kind: NormKind,
    x: &[f32],
    residual: &[f32],
    weights: &NormWeights<'_>,
    sum: &mut [f32],
    out: &mut [f32],
    stats: NormStatsMut<'_>,
) -> Result<()> {
    const OP: &str = "add_norm_forward";
    let cols = check_weights(OP, kind, weights)?;
    let rows = rows_of(OP, "x", x.len(), cols)?;
    check_len(OP, "residual", residual.len(), x.len())?;
    check_len(OP, "sum", sum.len(), x.len())?;
    check_len(OP, "out", out.len(), x.len())?;
    check_len(OP, "rstd", stats.rstd.len(), rows)?;
    let mean: &mut [f32] = match kind {
        NormKind::Layer => {
            check_len(OP, "mean", stats.mean.len(), rows)?;
            stats.mean
        }
        NormKind::Rms => {
            check_optional_mean(OP, stats.mean.len(), rows)?;
            stats.mean.fill(0.0);
            &mut []
        }
    };
    let stores = Stores::for_call(4 * std::mem::size_of_val(x));
    let block_rows = rows_per_block(rows, ROW_KERNEL_BLOCKS_PER_THREAD);
    let block_len = block_rows * cols;
    let mut mean_blocks = mean.chunks_mut(block_rows);
    let blocks: Vec<_> = x
        .chunks(block_len)
        .zip(residual.chunks(block_len))
        .zip(sum.chunks_mut(block_len).zip(out.chunks_mut(block_len)))
        .zip(stats.rstd.chunks_mut(block_rows))
        .map(|block| (block, mean_blocks.next()))
        .collect();
    run_blocks(
        blocks,
        x.len(),
        |((((x_block, residual_block), (sum, out)), rstd), mean)| {
            let inputs = x_block
                .chunks_exact(cols)
                .zip(residual_block.chunks_exact(cols));
            let outputs = sum.chunks_exact_mut(cols).zip(out.chunks_exact_mut(cols));
            let mut means = mean.map(|m| m.iter_mut());
            for (((x, residual), (sum, out)), rstd) in inputs.zip(outputs).zip(rstd) {
                add_row(x, residual, sum, stores);
                // Through the cache the norm reads `sum` back from L1; streamed, `sum` is
                // past the cache, so the norm recomputes `x + residual` (the same bits).
                let (x, residual) = match stores {
                    Stores::Cached => (&*sum, None),
                    Stores::Streaming => (x, Some(residual)),
                };
                // A LayerNorm block always has its means (checked above); RMSNorm has none.
                match (kind, means.as_mut().and_then(Iterator::next)) {
                    (NormKind::Layer, Some(mean)) => {
                        (*mean, *rstd) = layer_norm::forward_row(x, residual, weights, out, stores);
                    }
                    _ => {
                        let (weight, eps) = (weights.weight, weights.eps);
                        *rstd = rms_norm::forward_row(x, residual, weight, eps, out, stores);
                    }
                }
            }
            stores.finish_block();
        },
    );
    Ok(())
}

dispatch! {
    /// Writes `sum = x + residual` for one row.
    fn add_row(x: &[f32], residual: &[f32], sum: &mut [f32], stores: Stores) => add_row_with
}

#[inline(always)]
fn add_row_with<V: Vector>(x: &[f32], residual: &[f32], sum: &mut [f32], stores: Stores) {
    let row = SumOf(&x[..sum.len()], &residual[..sum.len()]);
    write_row(
        sum,
        stores,
        &mut (),
        |_, k| {
            row.prefetch_ahead(k);
            row.lanes::<V>(k)
        },
        |_, i| row.at(i),
    );
}

/// Writes `dx = dsum + Norm_backward(dout)` and adds into `grads`; `sum` and `stats` are what
/// [`add_norm_forward`] wrote.
pub fn add_norm_backward(
    kind: NormKind,
    upstream: UpstreamGrads<'_>,
    sum: &[f32],
    weights: &NormWeights<'_>,
    stats: NormStats<'_>,
    dx: &mut [f32],
    grads: NormGrads<'_>,
) -> Result<()> {
    const OP: &str = "add_norm_backward";
    let cols = check_weights(OP, kind, weights)?;
    let rows = rows_of(OP, "sum", sum.len(), cols)?;
    check_len(OP, "dout", upstream.dout.len(), sum.len())?;
    if let Some(dsum) = upstream.dsum {
        check_len(OP, "dsum", dsum.len(), sum.len())?;
    }
    check_len(OP, "dx", dx.len(), sum.len())?;
    check_len(OP, "rstd", stats.rstd.len(), rows)?;
    let mean = match kind {
        NormKind::Layer => {
            check_len(OP, "mean", stats.mean.len(), rows)?;
            stats.mean
        }
        NormKind::Rms => {
            check_optional_mean(OP, stats.mean.len(), rows)?;
            &[]
        }
    };
    check_grads(OP, weights, &grads)?;
    let tensors = if upstream.dsum.is_some() { 4 } else { 3 };
    let stores = Stores::for_call(tensors * std::mem::size_of_val(sum));
    let block_rows = rows_per_block(rows, ROW_KERNEL_BLOCKS_PER_THREAD);
    let block_len = block_rows * cols;
    let has_bias = weights.bias.is_some();
    let partial_len = partial_len(cols, has_bias);
    let mut partials = zeroed_partials(rows.div_ceil(block_rows), partial_len);
    let mut dsum_blocks = upstream.dsum.unwrap_or(&[]).chunks(block_len);
    let mut mean_blocks = mean.chunks(block_rows);
    let blocks: Vec<_> = upstream
        .dout
        .chunks(block_len)
        .zip(sum.chunks(block_len))
        .zip(dx.chunks_mut(block_len))
        .zip(stats.rstd.chunks(block_rows))
        .zip(partials.chunks_mut(partial_len))
        .map(|block| (block, (dsum_blocks.next(), mean_blocks.next())))
        .collect();
    run_blocks(blocks, sum.len(), |(block, (dsum_block, mean))| {
        let ((((dout_block, sum_block), dx), rstd), partial) = block;
        let (dweight, dbias) = split_partial(partial, cols, has_bias);
        let mut block_grads = NormGrads { dweight, dbias };
        let mut dsum_rows = dsum_block.map(|d| d.chunks_exact(cols));
        let mut means = mean.map(|m| m.iter());
        let rows = dout_block
            .chunks_exact(cols)
            .zip(sum_block.chunks_exact(cols));
        let rows = rows.zip(dx.chunks_exact_mut(cols)).zip(rstd);
        for (((dout, sum), dx), &rstd) in rows {
            let dsum = dsum_rows.as_mut().and_then(Iterator::next);
            let row = BackwardRow {
                dy: dout,
                x: sum,
                dsum,
            };
            // A LayerNorm block always has its means (checked above); RMSNorm has none.
            match (kind, means.as_mut().and_then(Iterator::next)) {
                (NormKind::Layer, Some(&mean)) => {
                    let stats = (mean, rstd);
                    layer_norm::backward_row(row, weights, stats, dx, &mut block_grads, stores);
                }
                _ => {
                    let dweight = &mut *block_grads.dweight;
                    rms_norm::backward_row(row, weights.weight, rstd, dx, dweight, stores);
                }
            }
        }
        stores.finish_block();
    });
    add_partials(&partials, grads.dweight, grads.dbias);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::each_level;

    #[test]
    fn the_sum_row_is_exact_on_every_level() {
        for cols in [1, 16, 37] {
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
            let residual: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.91).cos()).collect();
            let want: Vec<f32> = x.iter().zip(&residual).map(|(a, b)| a + b).collect();
            each_level!(|V, level| {
                let mut sum = vec![f32::NAN; cols];
                add_row_with::<V>(&x, &residual, &mut sum, Stores::Cached);
                assert_eq!(sum, want, "cols {cols}, {level}");
            });
        }
    }
}
