//! The machinery of row-wise kernels: reductions over one row in explicit vector lanes, the
//! rows they read ([`RowSource`]), prefetching ahead of the reads, and the per-block
//! parameter-gradient partials (the blocks themselves come from
//! [`simd::rows_per_block`](super::simd::rows_per_block)).
//!
//! A plain `iter().sum()` is one dependent chain of additions, which LLVM may not reorder for
//! floats; the reductions here keep [`LANES`] independent partial sums ([`Vector`]) over
//! chunks of `LANES` elements, so each step is a few vector adds, and fold the lanes in a
//! fixed order at the end. The result differs from a sequential sum only by rounding.

use super::simd::{prefetch_lines, Vector, LANES};
use crate::aligned::AlignedVec;

/// One row of a kernel's input, read by chunks of [`LANES`] or by element: a slice, or the
/// element-wise [`SumOf`] two slices (the fused residual add, recomputed instead of read
/// back).
pub(crate) trait RowSource: Copy {
    /// Elements in the row.
    fn len(self) -> usize;
    /// The lanes of chunk `k`, elements `k * LANES..(k + 1) * LANES`; panics past the last
    /// whole chunk.
    fn lanes<V: Vector>(self, k: usize) -> V;
    /// Element `i`; panics past the end.
    fn at(self, i: usize) -> f32;
    /// [`prefetch_ahead`] of chunk `k` of every slice the row reads.
    fn prefetch_ahead(self, k: usize);
}

/// Chunk `k` of `LANES` elements of `row`; panics past its last whole chunk. The chunks'
/// count is `row.len() / LANES` whoever asks, so a loop over the chunks of one row reads the
/// same chunk of another row of the same length without a second bounds check.
#[inline(always)]
pub(crate) fn chunk(row: &[f32], k: usize) -> &[f32; LANES] {
    &row.as_chunks::<LANES>().0[k]
}

/// [`chunk`] for writing.
#[inline(always)]
pub(crate) fn chunk_mut(row: &mut [f32], k: usize) -> &mut [f32; LANES] {
    &mut row.as_chunks_mut::<LANES>().0[k]
}

impl RowSource for &[f32] {
    #[inline(always)]
    fn len(self) -> usize {
        <[f32]>::len(self)
    }

    #[inline(always)]
    fn lanes<V: Vector>(self, k: usize) -> V {
        V::read(chunk(self, k))
    }

    #[inline(always)]
    fn at(self, i: usize) -> f32 {
        self[i]
    }

    #[inline(always)]
    fn prefetch_ahead(self, k: usize) {
        prefetch_ahead(self, k);
    }
}

/// `a + b`, element by element, for two rows of equal length (the caller checks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SumOf<'a>(pub &'a [f32], pub &'a [f32]);

impl RowSource for SumOf<'_> {
    #[inline(always)]
    fn len(self) -> usize {
        self.0.len()
    }

    #[inline(always)]
    fn lanes<V: Vector>(self, k: usize) -> V {
        V::read(chunk(self.0, k)) + V::read(chunk(self.1, k))
    }

    #[inline(always)]
    fn at(self, i: usize) -> f32 {
        self.0[i] + self.1[i]
    }

    #[inline(always)]
    fn prefetch_ahead(self, k: usize) {
        prefetch_ahead(self.0, k);
        prefetch_ahead(self.1, k);
    }
}

/// Elements of `x` that whole chunks of [`LANES`] cover.
#[inline(always)]
fn body_len(x: impl RowSource) -> usize {
    x.len() - x.len() % LANES
}

/// `(center, Σ (x - center), Σ (x - center)²)` in one pass, with `center` the mean of the
/// first chunk: the deviations are then a few standard deviations at most, so
/// `Σd² - (Σd)²/n`, the variance times `n`, keeps its digits even for rows with a large
/// offset. When the first chunk was so unrepresentative that this difference would lose
/// more than two bits (`(Σd)²/n > ¾ Σd²`), a second pass sums around the mean just found:
/// the corrected two-pass algorithm, whose first sum measures the rounding of the centre.
#[inline(always)]
pub(crate) fn deviation_sums<V: Vector>(x: impl RowSource) -> (f32, f32, f32) {
    let center = if x.len() >= LANES {
        x.lanes::<V>(0).sum() / LANES as f32
    } else {
        (0..x.len()).map(|i| x.at(i)).sum::<f32>() / x.len().max(1) as f32
    };
    let (dev_sum, dev_sq) = centered_sums::<V>(x, center);
    let n = x.len() as f32;
    if 4.0 * dev_sum * (dev_sum / n) > 3.0 * dev_sq {
        let center = center + dev_sum / n;
        let (dev_sum, dev_sq) = centered_sums::<V>(x, center);
        return (center, dev_sum, dev_sq);
    }
    (center, dev_sum, dev_sq)
}

/// `(Σ (x - center), Σ (x - center)²)`.
#[inline(always)]
pub(crate) fn centered_sums<V: Vector>(x: impl RowSource, center: f32) -> (f32, f32) {
    let (mut acc, mut acc_sq) = (V::zero(), V::zero());
    let body = body_len(x);
    let (mut tail, mut tail_sq) = (0.0, 0.0);
    for i in body..x.len() {
        let d = x.at(i) - center;
        tail += d;
        tail_sq += d * d;
    }
    let center = V::splat(center);
    for k in 0..body / LANES {
        x.prefetch_ahead(k);
        let d = x.lanes::<V>(k) - center;
        acc += d;
        acc_sq += d * d;
    }
    (acc.sum() + tail, acc_sq.sum() + tail_sq)
}

/// `Σ x²`.
#[inline(always)]
pub(crate) fn sum_sq<V: Vector>(x: impl RowSource) -> f32 {
    let mut acc = V::zero();
    let body = body_len(x);
    let tail: f32 = (body..x.len()).map(|i| x.at(i) * x.at(i)).sum();
    for k in 0..body / LANES {
        x.prefetch_ahead(k);
        let v = x.lanes::<V>(k);
        acc += v * v;
    }
    acc.sum() + tail
}

/// How far ahead of the chunk it reads a kernel's first pass over a row asks for memory:
/// one line per chunk, this many bytes further on, so that the requests are spread over the
/// pass and the next rows arrive while this one is worked on (faster than a whole row at
/// once, or 2 KB ahead: docs/benchmarks.md, "Norm kernels: reading ahead").
const READ_AHEAD_FLOATS: usize = 4096 / std::mem::size_of::<f32>();

/// Asks for the cache line [`READ_AHEAD_FLOATS`] past chunk `k` of `row`. The address may lie
/// past the row or its whole buffer: a prefetch reads nothing and never faults.
#[inline(always)]
pub(crate) fn prefetch_ahead(row: &[f32], k: usize) {
    prefetch_ahead_of(row.as_ptr(), k);
}

/// [`prefetch_ahead`] for the row that starts at `start`: for an output row, which is
/// borrowed for writing while its chunks are computed.
#[inline(always)]
pub(crate) fn prefetch_ahead_of(start: *const f32, k: usize) {
    prefetch_lines(start.wrapping_add(k * LANES + READ_AHEAD_FLOATS), 1);
}

/// Entries of one block's parameter-gradient partial: `dweight`, then `dbias` if any, then
/// padding to a whole number of cache lines. Every row of a block adds into its partial:
/// were two blocks' partials to share a line, the two threads writing them would pass that
/// line back and forth at every row (LayerNorm backward, 65536x128 with 2 threads, about
/// twice as slow).
pub(crate) fn partial_len(cols: usize, has_bias: bool) -> usize {
    (cols * if has_bias { 2 } else { 1 }).next_multiple_of(LANES)
}

/// Zeroed partials for `blocks` blocks of `partial_len` entries (see [`partial_len`]), each
/// starting on a cache line.
pub(crate) fn zeroed_partials(blocks: usize, partial_len: usize) -> AlignedVec {
    AlignedVec::zeros(blocks * partial_len)
}

/// Splits a block's partial into its `dweight` and optional `dbias` parts (`cols` each).
pub(crate) fn split_partial(
    partial: &mut [f32],
    cols: usize,
    has_bias: bool,
) -> (&mut [f32], Option<&mut [f32]>) {
    let (dweight, rest) = partial.split_at_mut(cols);
    (dweight, has_bias.then(|| &mut rest[..cols]))
}

/// Adds the per-block parameter-gradient partials (each `[dweight | dbias | padding]`, as
/// [`partial_len`] lays them out) into `dweight` and `dbias`, in block order.
pub(crate) fn add_partials(partials: &[f32], dweight: &mut [f32], mut dbias: Option<&mut [f32]>) {
    let cols = dweight.len();
    for partial in partials.chunks_exact(partial_len(cols, dbias.is_some())) {
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

    use crate::kernels::simd::{each_level, Scalar};

    /// The reductions at every level: within rounding of the exact sums, and the same bits as
    /// the scalar level's (the vector's non-fused operations are exact on every level).
    #[test]
    fn reductions_match_sequential_sums_with_and_without_a_tail() {
        for len in [0, 1, 7, 8, 13, 64, 77] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let exact = |f: &dyn Fn(f64) -> f64| x.iter().map(|&v| f(v as f64)).sum::<f64>();
            let scalar = (
                sum_sq::<Scalar>(&x[..]),
                centered_sums::<Scalar>(&x[..], 0.25),
            );
            each_level!(|V, level| {
                let sq = sum_sq::<V>(&x[..]);
                assert!(
                    (sq as f64 - exact(&|v| v * v)).abs() < 1e-5,
                    "sum_sq, len {len}, {level}"
                );
                let (s, q) = centered_sums::<V>(&x[..], 0.25);
                assert!(
                    (s as f64 - exact(&|v| v - 0.25)).abs() < 1e-5,
                    "centered sum, len {len}, {level}"
                );
                let want = exact(&|v| (v - 0.25) * (v - 0.25));
                assert!(
                    (q as f64 - want).abs() < 1e-5,
                    "centered squares, len {len}"
                );
                assert_eq!((sq, (s, q)), scalar, "len {len}, {level}");
            });
        }
    }

    /// A first chunk far from the rest of the row: the one-pass sums around it would cancel,
    /// so the row is summed again around its mean; constant rows and short rows stay exact.
    #[test]
    fn deviation_sums_recenter_when_the_first_chunk_is_unrepresentative() {
        let mut x = vec![1e4f32; LANES];
        x.extend((0..200).map(|i| (i as f32 * 0.37).sin()));
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        each_level!(|V, level| {
            let (center, dev_sum, dev_sq) = deviation_sums::<V>(&x[..]);
            assert!(
                (center as f64 - mean).abs() < 1e-3 * mean,
                "re-centred on the mean, {center}, {level}"
            );
            let got_mean = center as f64 + dev_sum as f64 / n;
            assert!(
                (got_mean - mean).abs() < 1e-6 * mean,
                "{got_mean} vs {mean}, {level}"
            );
            let got_var = (dev_sq as f64 - dev_sum as f64 * dev_sum as f64 / n) / n;
            assert!(
                (got_var - var).abs() < 1e-5 * var,
                "{got_var} vs {var}, {level}"
            );

            assert_eq!(deviation_sums::<V>(&[3.0f32; 40][..]), (3.0, 0.0, 0.0));
            let (center, dev_sum, dev_sq) = deviation_sums::<V>(&[1.0f32, 3.0][..]);
            assert_eq!((center, dev_sum, dev_sq), (2.0, 0.0, 2.0), "{level}");
        });
    }

    #[test]
    fn partials_are_added_in_block_order() {
        let len = partial_len(2, true);
        assert_eq!(len, LANES, "padded to a cache line");
        let mut partials = zeroed_partials(2, len);
        assert_eq!(partials.as_ptr().align_offset(64), 0);
        for (partial, values) in partials
            .chunks_exact_mut(len)
            .zip([[1.0, 2.0, 10.0, 20.0], [3.0, 4.0, 30.0, 40.0]])
        {
            let (dweight, dbias) = split_partial(partial, 2, true);
            dweight.copy_from_slice(&values[..2]);
            dbias.unwrap().copy_from_slice(&values[2..]);
        }
        let mut dweight = [0.5, 0.5];
        let mut dbias = [0.0, 1.0];
        add_partials(&partials, &mut dweight, Some(&mut dbias));
        assert_eq!(dweight, [4.5, 6.5]);
        assert_eq!(dbias, [40.0, 61.0]);
        let mut dweight = [0.5, 0.5];
        add_partials(
            &zeroed_partials(3, partial_len(2, false)),
            &mut dweight,
            None,
        );
        assert_eq!(dweight, [0.5, 0.5]);
    }
}
