//! LayerNorm over the last dimension, forward and backward.
//!
//! For a row `x` of `n = cols` values, with weight `w` and optional bias `b`:
//!
//! ```text
//! mean = Σ x / n                      var  = Σ (x - mean)² / n     (biased, like PyTorch)
//! rstd = 1 / sqrt(var + eps)          xhat = (x - mean) · rstd
//! y    = xhat ⊙ w + b
//! ```
//!
//! Backward, given `dy = ∂L/∂y` and the saved `mean`, `rstd` (xhat is recomputed from `x`):
//!
//! ```text
//! dx       = rstd · (dy⊙w - mean(dy⊙w) - xhat · mean(dy⊙w⊙xhat))      (overwritten)
//! dweight += Σ_rows dy ⊙ xhat                                         (accumulated)
//! dbias   += Σ_rows dy                                                (accumulated)
//! ```
//!
//! Numerics: the statistics are `f32`. One pass sums `d = x - c` and `d²` around a centre `c`
//! close to the mean (the mean of the row's first sixteen values), and `mean = c + Σd/n`,
//! `var = (Σd² - (Σd)²/n)/n`: with `c` within a few standard deviations of the mean the
//! difference keeps its digits, so rows with a large offset (mean 1e4, std 1e-2) stay
//! exact where `E[x²] - E[x]²` would lose every digit; when `c` was far off, the row (in L1
//! cache) is summed again around the mean found, the corrected two-pass algorithm (see
//! `rows::deviation_sums`). Backward measures the rounding of the saved `f32` mean the same
//! way (`Σ (x - mean)`) and removes it from `xhat`. Memory is touched once per row: forward
//! reads `x` and writes `y`; backward reads `dy` and `x` and writes `dx`, streaming the
//! outputs past the cache when the call is larger than it (see `stores.rs`), and both ask
//! for the next rows' inputs while they work on this one.
//!
//! ```
//! use resnorm::kernels::layer_norm::{layer_norm_backward, layer_norm_forward};
//! use resnorm::kernels::norm::{NormGrads, NormWeights, DEFAULT_EPS};
//! let x = [1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0]; // two rows of four
//! let (weight, bias) = ([1.0; 4], [0.5; 4]);
//! let params = NormWeights { weight: &weight, bias: Some(&bias), eps: DEFAULT_EPS };
//! let (mut y, mut mean, mut rstd) = ([0.0; 8], [0.0; 2], [0.0; 2]);
//! layer_norm_forward(&x, &params, &mut y, &mut mean, &mut rstd).unwrap();
//! assert_eq!(mean, [2.5, 10.0]);
//! assert!((y[0] - (0.5 - 1.5 / 1.25f32.sqrt())).abs() < 1e-5);
//! assert_eq!(&y[4..], &[0.5; 4]); // a constant row normalizes to the bias
//!
//! let dy = [1.0; 8];
//! let (mut dx, mut dweight, mut dbias) = ([0.0; 8], [0.0; 4], [0.0; 4]);
//! let grads = NormGrads { dweight: &mut dweight, dbias: Some(&mut dbias) };
//! layer_norm_backward(&dy, &x, &params, &mean, &rstd, &mut dx, grads).unwrap();
//! assert!(dx.iter().all(|g| g.abs() < 1e-5)); // a uniform dy is removed by centering
//! assert_eq!(dbias, [2.0; 4]);
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
/// saving each row's mean and `rstd` for the backward pass.
pub fn layer_norm_forward(
    x: &[f32],
    weights: &NormWeights<'_>,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Result<()> {
    const OP: &str = "layer_norm_forward";
    let cols = check_weights(OP, NormKind::Layer, weights)?;
    let rows = rows_of(OP, "x", x.len(), cols)?;
    check_len(OP, "out", out.len(), x.len())?;
    check_len(OP, "mean", mean.len(), rows)?;
    check_len(OP, "rstd", rstd.len(), rows)?;
    let stores = Stores::for_call(2 * std::mem::size_of_val(x));
    let block_rows = rows_per_block(rows, ROW_KERNEL_BLOCKS_PER_THREAD);
    let blocks: Vec<_> = x
        .chunks(block_rows * cols)
        .zip(out.chunks_mut(block_rows * cols))
        .zip(mean.chunks_mut(block_rows).zip(rstd.chunks_mut(block_rows)))
        .collect();
    run_blocks(blocks, x.len(), |((x_block, out), (mean, rstd))| {
        let rows = x_block.chunks_exact(cols).zip(out.chunks_exact_mut(cols));
        for ((x, out), (mean, rstd)) in rows.zip(mean.iter_mut().zip(rstd)) {
            (*mean, *rstd) = forward_row(x, None, weights, out, stores);
        }
        stores.finish_block();
    });
    Ok(())
}

/// Writes `dx` for upstream gradient `dy` and adds into `grads`; `mean` and `rstd` are what
/// [`layer_norm_forward`] saved for this `x`.
pub fn layer_norm_backward(
    dy: &[f32],
    x: &[f32],
    weights: &NormWeights<'_>,
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    grads: NormGrads<'_>,
) -> Result<()> {
    const OP: &str = "layer_norm_backward";
    let cols = check_weights(OP, NormKind::Layer, weights)?;
    let rows = rows_of(OP, "x", x.len(), cols)?;
    check_len(OP, "dy", dy.len(), x.len())?;
    check_len(OP, "dx", dx.len(), x.len())?;
    check_len(OP, "mean", mean.len(), rows)?;
    check_len(OP, "rstd", rstd.len(), rows)?;
    check_grads(OP, weights, &grads)?;
    let stores = Stores::for_call(3 * std::mem::size_of_val(x));
    let block_rows = rows_per_block(rows, ROW_KERNEL_BLOCKS_PER_THREAD);
    let partial_len = partial_len(cols, weights.bias.is_some());
    let mut partials = zeroed_partials(rows.div_ceil(block_rows), partial_len);
    let blocks: Vec<_> = dy
        .chunks(block_rows * cols)
        .zip(x.chunks(block_rows * cols))
        .zip(dx.chunks_mut(block_rows * cols))
        .zip(mean.chunks(block_rows).zip(rstd.chunks(block_rows)))
        .zip(partials.chunks_mut(partial_len))
        .collect();
    run_blocks(
        blocks,
        x.len(),
        |((((dy_block, x_block), dx), (mean, rstd)), partial)| {
            let (dweight, dbias) = split_partial(partial, cols, weights.bias.is_some());
            let mut block_grads = NormGrads { dweight, dbias };
            let rows = dy_block.chunks_exact(cols).zip(x_block.chunks_exact(cols));
            let rows = rows.zip(dx.chunks_exact_mut(cols));
            let stats = mean.iter().copied().zip(rstd.iter().copied());
            for (((dy, x), dx), stats) in rows.zip(stats) {
                let row = BackwardRow { dy, x, dsum: None };
                backward_row(row, weights, stats, dx, &mut block_grads, stores);
            }
            stores.finish_block();
        },
    );
    add_partials(&partials, grads.dweight, grads.dbias);
    Ok(())
}

dispatch! {
    /// LayerNorm of one row, `x` or `x + residual` when a residual is given, into `out`;
    /// returns `(mean, rstd)`.
    pub(crate) fn forward_row(
        x: &[f32],
        residual: Option<&[f32]>,
        weights: &NormWeights<'_>,
        out: &mut [f32],
        stores: Stores,
    ) -> (f32, f32) => forward_row_of
}

#[inline(always)]
fn forward_row_of<V: Vector>(
    x: &[f32],
    residual: Option<&[f32]>,
    weights: &NormWeights<'_>,
    out: &mut [f32],
    stores: Stores,
) -> (f32, f32) {
    let n = out.len();
    let (x, weights) = (&x[..n], &weights.cut(n));
    match residual {
        None => forward_row_with::<V>(x, weights, out, stores),
        Some(residual) => forward_row_with::<V>(SumOf(x, &residual[..n]), weights, out, stores),
    }
}

#[inline(always)]
fn forward_row_with<V: Vector>(
    x: impl RowSource,
    weights: &NormWeights<'_>,
    out: &mut [f32],
    stores: Stores,
) -> (f32, f32) {
    let n = x.len() as f32;
    let (center, dev_sum, dev_sq) = rows::deviation_sums::<V>(x);
    let correction = dev_sum / n;
    let var = ((dev_sq - dev_sum * correction) / n).max(0.0);
    let rstd = 1.0 / (var + weights.eps).sqrt();
    let xhat = |v: f32| ((v - center) - correction) * rstd;
    let [center_l, correction_l, rstd_l] = [center, correction, rstd].map(V::splat);
    let xhat_l = |v: V| ((v - center_l) - correction_l) * rstd_l;
    let w = weights.weight;
    match weights.bias {
        Some(b) => write_row(
            out,
            stores,
            &mut (),
            |_, k| xhat_l(x.lanes(k)) * V::read(chunk(w, k)) + V::read(chunk(b, k)),
            |_, i| xhat(x.at(i)) * w[i] + b[i],
        ),
        None => write_row(
            out,
            stores,
            &mut (),
            |_, k| xhat_l(x.lanes(k)) * V::read(chunk(w, k)),
            |_, i| xhat(x.at(i)) * w[i],
        ),
    }
    (center + correction, rstd)
}

dispatch! {
    /// LayerNorm backward of one row: writes `dx` (plus `row.dsum` when given) and adds into
    /// `grads`; `stats` is the row's `(mean, rstd)`.
    pub(crate) fn backward_row(
        row: BackwardRow<'_>,
        weights: &NormWeights<'_>,
        stats: (f32, f32),
        dx: &mut [f32],
        grads: &mut NormGrads<'_>,
        stores: Stores,
    ) => backward_row_with
}

#[inline(always)]
fn backward_row_with<V: Vector>(
    row: BackwardRow<'_>,
    weights: &NormWeights<'_>,
    (mean, rstd): (f32, f32),
    dx: &mut [f32],
    grads: &mut NormGrads<'_>,
    stores: Stores,
) {
    let len = dx.len();
    let (BackwardRow { dy, x, dsum }, weights) = (row.cut(len), weights.cut(len));
    let grads = &mut grads.cut(len);
    let n = x.len() as f32;
    let w = weights.weight;
    let (sum_dyw, sum_dyw_dev, sum_dev) = backward_sums::<V>(dy, x, w, mean);
    let correction = sum_dev / n;
    let mean_dyw = sum_dyw / n;
    let mean_dyw_xhat = rstd * (sum_dyw_dev - correction * sum_dyw) / n;
    let [mean_l, correction_l, rstd_l, mean_dyw_l, mean_dyw_xhat_l] =
        [mean, correction, rstd, mean_dyw, mean_dyw_xhat].map(V::splat);
    let dx_ahead = output_ahead(dx, stores);
    let vector = |grads: &mut NormGrads<'_>, k: usize| {
        if let Some(dx) = dx_ahead {
            prefetch_ahead_of(dx, k);
        }
        let (g, w) = (V::read(chunk(dy, k)), V::read(chunk(w, k)));
        let xhat = ((V::read(chunk(x, k)) - mean_l) - correction_l) * rstd_l;
        let dw = chunk_mut(grads.dweight, k);
        (V::read(dw) + g * xhat).write(dw);
        if let Some(dbias) = grads.dbias.as_deref_mut() {
            let db = chunk_mut(dbias, k);
            (V::read(db) + g).write(db);
        }
        let d = rstd_l * (g * w - mean_dyw_l - xhat * mean_dyw_xhat_l);
        dsum.map_or(d, |s| {
            prefetch_ahead(s, k);
            d + V::read(chunk(s, k))
        })
    };
    let scalar = |grads: &mut NormGrads<'_>, i: usize| {
        let (g, w) = (dy[i], w[i]);
        let xhat = ((x[i] - mean) - correction) * rstd;
        grads.dweight[i] += g * xhat;
        if let Some(dbias) = grads.dbias.as_deref_mut() {
            dbias[i] += g;
        }
        let d = rstd * (g * w - mean_dyw - xhat * mean_dyw_xhat);
        dsum.map_or(d, |s| d + s[i])
    };
    write_row(dx, stores, grads, vector, scalar);
}

/// `(Σ dy⊙w, Σ dy⊙w⊙(x - mean), Σ (x - mean))` over one row.
#[inline(always)]
fn backward_sums<V: Vector>(dy: &[f32], x: &[f32], w: &[f32], mean: f32) -> (f32, f32, f32) {
    let (mut dyw, mut dyw_dev, mut dev) = (V::zero(), V::zero(), V::zero());
    let mean_lanes = V::splat(mean);
    for k in 0..dy.len() / LANES {
        prefetch_ahead(dy, k);
        prefetch_ahead(x, k);
        let g_w = V::read(chunk(dy, k)) * V::read(chunk(w, k));
        let d = V::read(chunk(x, k)) - mean_lanes;
        dyw += g_w;
        dyw_dev += g_w * d;
        dev += d;
    }
    let (mut dyw_tail, mut dyw_dev_tail, mut dev_tail) = (0.0, 0.0, 0.0);
    let done = dy.len() - dy.len() % LANES;
    for ((&g, &v), &w) in dy[done..].iter().zip(&x[done..]).zip(&w[done..]) {
        let d = v - mean;
        dyw_tail += g * w;
        dyw_dev_tail += g * w * d;
        dev_tail += d;
    }
    (
        dyw.sum() + dyw_tail,
        dyw_dev.sum() + dyw_dev_tail,
        dev.sum() + dev_tail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::norm::{assert_near, TestRow};
    use crate::kernels::simd::each_level;

    /// A backward row run from the forward's `(mean, rstd)`.
    type Backward<'a> = &'a dyn Fn((f32, f32), &mut [f32], &mut NormGrads<'_>);

    /// The rows at every level: within rounding of an `f64` reference, and the same bits as
    /// the dispatched rows (the vector's non-fused operations are exact on every level).
    #[test]
    fn rows_match_the_reference_with_the_same_bits_on_every_level() {
        for cols in [1, 15, 16, 37, 130] {
            let row = TestRow::new(cols);
            let (x, residual, dy, dsum) = (&row.x, &row.residual, &row.dy, &row.dsum);
            let (weight, bias, weights) = (&row.weight, &row.bias, row.weights());
            let sum = row.sum();
            let n = cols as f64;
            let mean = sum.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = sum.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            let xhat: Vec<f64> = sum.iter().map(|&v| (v as f64 - mean) * rstd).collect();
            let g: Vec<f64> = (0..cols).map(|i| dy[i] as f64 * weight[i] as f64).collect();
            let mean_g = g.iter().sum::<f64>() / n;
            let mean_gx = g.iter().zip(&xhat).map(|(g, x)| g * x).sum::<f64>() / n;
            let run = |forward: &dyn Fn(&mut [f32]) -> (f32, f32), backward: Backward<'_>| {
                let mut out = vec![0.0; cols];
                let stats = forward(&mut out);
                let (mut dx, mut dweight, mut dbias) =
                    (vec![0.0; cols], vec![0.0; cols], vec![0.0; cols]);
                let mut grads = NormGrads {
                    dweight: &mut dweight,
                    dbias: Some(&mut dbias),
                };
                backward(stats, &mut dx, &mut grads);
                for i in 0..cols {
                    let y = xhat[i] * weight[i] as f64 + bias[i] as f64;
                    assert_near(&format!("y, {cols} columns"), out[i], y, 1e-5);
                    let d = rstd * (g[i] - mean_g - xhat[i] * mean_gx) + dsum[i] as f64;
                    assert_near(&format!("dx, {cols} columns"), dx[i], d, 1e-4);
                    let dw = dy[i] as f64 * xhat[i];
                    assert_near(&format!("dw, {cols} columns"), dweight[i], dw, 1e-5);
                    assert_eq!(dbias[i], dy[i]);
                }
                [out, dx, dweight, dbias, vec![stats.0, stats.1]]
                    .concat()
                    .into_iter()
                    .map(f32::to_bits)
                    .collect::<Vec<_>>()
            };
            let dispatched = run(
                &|out| forward_row(x, Some(residual), &weights, out, Stores::Cached),
                &|stats, dx, grads| {
                    let row = BackwardRow {
                        dy,
                        x: &sum,
                        dsum: Some(dsum),
                    };
                    backward_row(row, &weights, stats, dx, grads, Stores::Cached)
                },
            );
            each_level!(|V, level| {
                let at_level = run(
                    &|out| forward_row_of::<V>(x, Some(residual), &weights, out, Stores::Cached),
                    &|stats, dx, grads| {
                        let row = BackwardRow {
                            dy,
                            x: &sum,
                            dsum: Some(dsum),
                        };
                        backward_row_with::<V>(row, &weights, stats, dx, grads, Stores::Cached)
                    },
                );
                assert_eq!(at_level, dispatched, "cols {cols}, {level}");
            });
        }
    }
}
