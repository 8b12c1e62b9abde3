//! The machinery of row-wise kernels: reductions over one row that the compiler vectorizes,
//! and the split of `[rows, cols]` work into one contiguous block of rows per thread.
//!
//! A plain `iter().sum()` is one dependent chain of additions, which LLVM may not reorder for
//! floats; the reductions here keep [`LANES`] independent partial sums ([`Lanes`]) over
//! `chunks_exact(LANES)`, so each step is a few vector adds, and fold the lanes in a fixed
//! order at the end. The result differs from a sequential sum only by rounding.

use crate::threads;
use rayon::prelude::*;

/// Independent partial sums per reduction (a power of two, a multiple of 4).
pub(crate) const LANES: usize = 16;

/// Below this many elements a kernel runs its blocks on the calling thread: entering the
/// pool costs ~10 µs, about what streaming 32 K floats costs.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Sixteen `f32` lanes with element-wise `+`, `-`, `*`: four SSE registers on x86-64 (whose
/// baseline includes SSE2), a plain array elsewhere. Both give the same results bit for bit.
/// Four registers, not one, because a reduction is bound by the latency of its additions
/// (4 cycles): four independent chains keep the adder busy.
///
/// Written out because LLVM's SLP vectorizer, given several accumulator arrays updated in
/// one loop (Σd and Σd² together), packs the wrong elements together and leaves the
/// arithmetic scalar; measured 2-4x slower than these explicit lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lanes(LanesRepr);

#[cfg(target_arch = "x86_64")]
type LanesRepr = [std::arch::x86_64::__m128; LANES / 4];
#[cfg(not(target_arch = "x86_64"))]
type LanesRepr = [f32; LANES];

#[cfg(target_arch = "x86_64")]
impl Lanes {
    /// Every lane `v`.
    #[inline(always)]
    pub(crate) fn splat(v: f32) -> Self {
        use std::arch::x86_64::_mm_set1_ps;
        // SAFETY: SSE2 is part of every x86-64 CPU; the intrinsic touches no memory.
        Lanes([unsafe { _mm_set1_ps(v) }; LANES / 4])
    }

    /// The first [`LANES`] values of `chunk`; panics if it is shorter (a
    /// `chunks_exact(LANES)` item never is, and the compiler removes the check).
    #[inline(always)]
    pub(crate) fn load(chunk: &[f32]) -> Self {
        use std::arch::x86_64::_mm_loadu_ps;
        let chunk = &chunk[..LANES];
        // SAFETY: SSE2 is baseline; each unaligned load reads 4 elements inside `chunk`.
        Lanes(std::array::from_fn(|i| unsafe {
            _mm_loadu_ps(chunk[4 * i..].as_ptr())
        }))
    }

    /// Writes the lanes to the first [`LANES`] places of `chunk`; panics if it is shorter.
    #[inline(always)]
    pub(crate) fn store(self, chunk: &mut [f32]) {
        use std::arch::x86_64::_mm_storeu_ps;
        let chunk = &mut chunk[..LANES];
        for (i, register) in self.0.into_iter().enumerate() {
            // SAFETY: SSE2 is baseline; each unaligned store writes 4 elements inside `chunk`.
            unsafe { _mm_storeu_ps(chunk[4 * i..].as_mut_ptr(), register) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
macro_rules! lanes_op {
    ($trait:ident, $method:ident, $intrinsic:ident) => {
        impl std::ops::$trait for Lanes {
            type Output = Lanes;
            #[inline(always)]
            fn $method(self, other: Lanes) -> Lanes {
                use std::arch::x86_64::$intrinsic;
                // SAFETY: SSE2 is baseline; register-only arithmetic.
                Lanes(std::array::from_fn(|i| unsafe {
                    $intrinsic(self.0[i], other.0[i])
                }))
            }
        }
    };
}

#[cfg(not(target_arch = "x86_64"))]
impl Lanes {
    /// Every lane `v`.
    #[inline(always)]
    pub(crate) fn splat(v: f32) -> Self {
        Lanes([v; LANES])
    }

    /// The first [`LANES`] values of `chunk`; panics if it is shorter.
    #[inline(always)]
    pub(crate) fn load(chunk: &[f32]) -> Self {
        Lanes(std::array::from_fn(|i| chunk[i]))
    }

    /// Writes the lanes to the first [`LANES`] places of `chunk`; panics if it is shorter.
    #[inline(always)]
    pub(crate) fn store(self, chunk: &mut [f32]) {
        chunk[..LANES].copy_from_slice(&self.0);
    }
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! lanes_op {
    ($trait:ident, $method:ident, $intrinsic:ident) => {
        impl std::ops::$trait for Lanes {
            type Output = Lanes;
            #[inline(always)]
            fn $method(self, other: Lanes) -> Lanes {
                Lanes(std::array::from_fn(|i| {
                    std::ops::$trait::$method(self.0[i], other.0[i])
                }))
            }
        }
    };
}

lanes_op!(Add, add, _mm_add_ps);
lanes_op!(Sub, sub, _mm_sub_ps);
lanes_op!(Mul, mul, _mm_mul_ps);

impl Lanes {
    /// The sum of the lanes, added in a fixed order.
    #[inline(always)]
    pub(crate) fn sum(self) -> f32 {
        let mut lanes = [0.0; LANES];
        self.store(&mut lanes);
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            let (low, high) = lanes.split_at_mut(width);
            for (l, h) in low.iter_mut().zip(&*high) {
                *l += h;
            }
        }
        lanes[0]
    }
}

impl Default for Lanes {
    #[inline(always)]
    fn default() -> Self {
        Lanes::splat(0.0)
    }
}

impl std::ops::AddAssign for Lanes {
    #[inline(always)]
    fn add_assign(&mut self, other: Lanes) {
        *self = *self + other;
    }
}

/// `Σ x`.
#[inline]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = Lanes::default();
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        acc += Lanes::load(chunk);
    }
    acc.sum() + tail
}

/// `(Σ (x - center), Σ (x - center)²)`: the second pass of a two-pass variance, with the
/// first sum giving the correction for a `center` that is off by rounding.
#[inline]
pub(crate) fn centered_sums(x: &[f32], center: f32) -> (f32, f32) {
    let (mut acc, mut acc_sq) = (Lanes::default(), Lanes::default());
    let chunks = x.chunks_exact(LANES);
    let (mut tail, mut tail_sq) = (0.0, 0.0);
    for &v in chunks.remainder() {
        tail += v - center;
        tail_sq += (v - center) * (v - center);
    }
    let center = Lanes::splat(center);
    for chunk in chunks {
        let d = Lanes::load(chunk) - center;
        acc += d;
        acc_sq += d * d;
    }
    (acc.sum() + tail, acc_sq.sum() + tail_sq)
}

/// `Σ x²`.
#[inline]
pub(crate) fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = Lanes::default();
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        let v = Lanes::load(chunk);
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

    #[test]
    fn reductions_match_sequential_sums_with_and_without_a_tail() {
        for len in [0, 1, 7, 8, 13, 64, 77] {
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let exact = |f: &dyn Fn(f64) -> f64| x.iter().map(|&v| f(v as f64)).sum::<f64>();
            assert!(
                (sum(&x) as f64 - exact(&|v| v)).abs() < 1e-5,
                "sum, len {len}"
            );
            assert!(
                (sum_sq(&x) as f64 - exact(&|v| v * v)).abs() < 1e-5,
                "sum_sq, len {len}"
            );
            let (s, q) = centered_sums(&x, 0.25);
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
