//! The machinery of row-wise kernels: reductions over one row in explicit vector lanes, and
//! the split of `[rows, cols]` work into one contiguous block of rows per thread.
//!
//! A plain `iter().sum()` is one dependent chain of additions, which LLVM may not reorder for
//! floats; the reductions here keep [`LANES`] independent partial sums ([`Lanes`]) over
//! `chunks_exact(LANES)`, so each step is a few vector adds, and fold the lanes in a fixed
//! order at the end. The result differs from a sequential sum only by rounding.

use super::lanes::{Lanes, LANES};
use crate::threads;
use rayon::prelude::*;

/// Below this many elements a kernel runs its blocks on the calling thread: entering the
/// pool costs ~10 µs, about what streaming 32 K floats costs.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// `Σ x`.
#[inline(always)]
pub(crate) fn sum<L: Lanes>(x: &[f32]) -> f32 {
    let mut acc = L::zero();
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        acc += L::load(chunk);
    }
    acc.sum() + tail
}

/// `(Σ (x - center), Σ (x - center)²)`: the second pass of a two-pass variance, with the
/// first sum giving the correction for a `center` that is off by rounding.
#[inline(always)]
pub(crate) fn centered_sums<L: Lanes>(x: &[f32], center: f32) -> (f32, f32) {
    let (mut acc, mut acc_sq) = (L::zero(), L::zero());
    let chunks = x.chunks_exact(LANES);
    let (mut tail, mut tail_sq) = (0.0, 0.0);
    for &v in chunks.remainder() {
        tail += v - center;
        tail_sq += (v - center) * (v - center);
    }
    let center = L::splat(center);
    for chunk in chunks {
        let d = L::load(chunk) - center;
        acc += d;
        acc_sq += d * d;
    }
    (acc.sum() + tail, acc_sq.sum() + tail_sq)
}

/// `Σ x²`.
#[inline(always)]
pub(crate) fn sum_sq<L: Lanes>(x: &[f32]) -> f32 {
    let mut acc = L::zero();
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        let v = L::load(chunk);
        acc += v * v;
    }
    acc.sum() + tail
}

/// Runs `work` on every block, in parallel on [`threads::pool`] unless the kernel touches
/// fewer than [`PARALLEL_MIN_ELEMENTS`] elements. Blocks are built by the caller from
/// `chunks(threads::rows_per_block(rows) * cols)` of its buffers, so the split, and with it
/// every result, depends only on the thread count.
pub(crate) fn run_blocks<B: Send>(blocks: Vec<B>, elements: usize, work: impl Fn(B) + Sync + Send) {
    if blocks.len() <= 1 || elements < PARALLEL_MIN_ELEMENTS {
        blocks.into_iter().for_each(work);
    } else {
        threads::pool().install(|| blocks.into_par_iter().for_each(work));
    }
}

/// Entries of one block's parameter-gradient partial: `dweight`, then `dbias` if any.
pub(crate) fn partial_len(cols: usize, has_bias: bool) -> usize {
    cols * if has_bias { 2 } else { 1 }
}

/// Splits a block's partial into its `dweight` and optional `dbias` parts.
pub(crate) fn split_partial(
    partial: &mut [f32],
    cols: usize,
    has_bias: bool,
) -> (&mut [f32], Option<&mut [f32]>) {
    let (dweight, dbias) = partial.split_at_mut(cols);
    (dweight, has_bias.then_some(dbias))
}

/// Adds the per-block parameter-gradient partials (each `[dweight | dbias]`, `cols` entries
/// per part) into `dweight` and `dbias`, in block order.
pub(crate) fn add_partials(partials: &[f32], dweight: &mut [f32], mut dbias: Option<&mut [f32]>) {
    let cols = dweight.len();
    let parts = if dbias.is_some() { 2 } else { 1 };
    for partial in partials.chunks_exact(parts * cols) {
        let (dw_part, db_part) = partial.split_at(cols);
        for (g, &p) in dweight.iter_mut().zip(dw_part) {
            *g += p;
        }
        if let Some(dbias) = dbias.as_deref_mut() {
            for (g, &p) in dbias.iter_mut().zip(db_part) {
                *g += p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    type Default = crate::kernels::lanes::Sse;
    #[cfg(not(target_arch = "x86_64"))]
    type Default = crate::kernels::lanes::Portable;

    #[test]
    fn reductions_match_sequential_sums_with_and_without_a_tail() {
        for len in [0, 1, 7, 8, 13, 64, 77] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let exact = |f: &dyn Fn(f64) -> f64| x.iter().map(|&v| f(v as f64)).sum::<f64>();
            assert!(
                (sum::<Default>(&x) as f64 - exact(&|v| v)).abs() < 1e-5,
                "sum, len {len}"
            );
            assert!(
                (sum_sq::<Default>(&x) as f64 - exact(&|v| v * v)).abs() < 1e-5,
                "sum_sq, len {len}"
            );
            let (s, q) = centered_sums::<Default>(&x, 0.25);
            assert!(
                (s as f64 - exact(&|v| v - 0.25)).abs() < 1e-5,
                "centered sum, len {len}"
            );
            let sq = exact(&|v| (v - 0.25) * (v - 0.25));
            assert!((q as f64 - sq).abs() < 1e-5, "centered squares, len {len}");
        }
    }

    #[test]
    fn partials_are_added_in_block_order() {
        let partials = [1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0];
        let mut dweight = [0.5, 0.5];
        let mut dbias = [0.0, 1.0];
        add_partials(&partials, &mut dweight, Some(&mut dbias));
        assert_eq!(dweight, [4.5, 6.5]);
        assert_eq!(dbias, [40.0, 61.0]);
    }
}
