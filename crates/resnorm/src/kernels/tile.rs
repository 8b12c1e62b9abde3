//! Register-tiled products of small matrices that sit in the cache: the per-head products of
//! attention, each a few hundred rows deep and one head (64) or one row of scores wide.
//!
//! ```text
//! c[i, j] = Σ_{p ∈ span} a[i, p] · b[p, j]        (c overwritten)
//! ```
//!
//! The rows of `c` are computed in blocks of [`ROWS`], each with its own columns `0..width`
//! and its own range `span` of the sum, so that a causal product stops at the diagonal. A
//! tile of `ROWS × COLUMN_VECTORS` vectors of `c` stays in registers for the whole sum: per
//! `p`, the tile's vectors of `b`'s row are loaded once and multiplied by each of the `ROWS`
//! elements `a[i, p]`, broadcast. [`TileVector::COLUMN_VECTORS`] is 4 on AVX-512 (16 of its
//! 32 registers) and 1 on AVX2 (8 of its 16: two registers per vector). `a` is read element
//! by element, so it may be stored either way round
//! (`dSᵀ` is `dS` with its strides swapped); `b` must be row-major with whole vectors of
//! columns, which the callers arrange by padding their copies to [`LANES`].
//!
//! Where gemm packs its operands for every call, here they are used where they lie: at these
//! sizes (`[4, 64] · [64, 256]`) the packing was a third of gemm's time and its kernels ran at
//! half their large-matrix speed (scratch measurements: 80-130 GFLOP/s on one core, against
//! ~150 for large products). Each element of `c` is one sum in `p` order: results do not
//! depend on threads.

use super::simd::{Kernel, Scalar, Vector, LANES};
use std::marker::PhantomData;

/// Rows of `c` per block.
pub(crate) const ROWS: usize = 4;

/// A matrix read element by element: `(i, p)` at `data[i·row_stride + p·col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

/// Rows `row..row + ROWS` of `c`, columns `0..width` (a multiple of [`LANES`]), summed over
/// `span`.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub row: usize,
    pub width: usize,
    pub span: std::ops::Range<usize>,
}

/// A [`Vector`] with the tile shape that fits its registers.
pub(crate) trait TileVector: Vector {
    /// Vectors of columns per tile (1 to 4): `ROWS × COLUMN_VECTORS` accumulators, which
    /// must fit the registers with the row of `b` and a broadcast beside them.
    const COLUMN_VECTORS: usize;
}

impl TileVector for Scalar {
    const COLUMN_VECTORS: usize = 4;
}

/// 16 of AVX-512's 32 registers.
#[cfg(target_arch = "x86_64")]
impl TileVector for super::simd::Avx512 {
    const COLUMN_VECTORS: usize = 4;
}

/// Four rows of one vector: 8 accumulators, 2 for the row of `b`, 1 broadcast.
#[cfg(target_arch = "x86_64")]
impl TileVector for super::simd::Avx2 {
    const COLUMN_VECTORS: usize = 1;
}

/// Where a tile writes: `ROWS` rows of `row_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    data: *mut f32,
    row_stride: usize,
}

/// Writes every block of `c` (`row_stride` apart) from `a` and `b` (row-major, rows
/// `b_stride` apart). Panics if a block reaches outside a slice: the callers size them.
pub(crate) fn product<V: TileVector>(
    (c, c_stride): (&mut [f32], usize),
    a: Strided<'_>,
    (b, b_stride): (&[f32], usize),
    blocks: impl Iterator<Item = Block>,
) {
    for Block { row, width, span } in blocks {
        let last_row = row + ROWS - 1;
        assert!(width.is_multiple_of(LANES) && last_row * c_stride + width <= c.len());
        if let Some(last) = span.end.checked_sub(1).filter(|_| !span.is_empty()) {
            assert!(last_row * a.row_stride + last * a.col_stride < a.data.len());
            assert!(last * b_stride + width <= b.len());
        }
        let k = span.len();
        let a_block = Strided {
            data: &a.data[(row * a.row_stride + span.start * a.col_stride).min(a.data.len())..],
            ..a
        };
        let b_block = b[(span.start * b_stride).min(b.len())..].as_ptr();
        let c_block = c[row * c_stride..].as_mut_ptr();
        for first in (0..width).step_by(V::COLUMN_VECTORS * LANES) {
            let out = Out {
                // SAFETY: `first < width`, and the rows of `c` hold `width` columns (asserted).
                data: unsafe { c_block.add(first) },
                row_stride: c_stride,
            };
            // SAFETY: `product`'s callers run it at a level the CPU has; the asserts above
            // bound every element the tile reads and writes: rows `row..=last_row`, columns
            // `first..first + N·LANES <= width`, `p < k`.
            unsafe {
                let b = (b_block.add(first), b_stride);
                let a = a_block;
                match ((width - first) / LANES).min(V::COLUMN_VECTORS) {
                    1 => V::compiled(Tile::<V, 1> {
                        a,
                        b,
                        k,
                        c: out,
                        vector: PhantomData,
                    }),
                    2 => V::compiled(Tile::<V, 2> {
                        a,
                        b,
                        k,
                        c: out,
                        vector: PhantomData,
                    }),
                    3 => V::compiled(Tile::<V, 3> {
                        a,
                        b,
                        k,
                        c: out,
                        vector: PhantomData,
                    }),
                    _ => V::compiled(Tile::<V, 4> {
                        a,
                        b,
                        k,
                        c: out,
                        vector: PhantomData,
                    }),
                }
            }
        }
    }
}

/// `c[r, j] = Σ_{p<k} a[r, p] · b[p, j]` for `r < ROWS`, `j < N·LANES`, in registers.
///
/// # Safety
/// `a` holds every `(r, p)`, `b.0` points at `k` rows of `b.1` apart with `N·LANES` readable
/// floats each, and `c` at `ROWS` rows with `N·LANES` writable floats each.
#[inline(always)]
unsafe fn tile<V: Vector, const N: usize>(
    a: Strided<'_>,
    (b, b_stride): (*const f32, usize),
    k: usize,
    c: Out,
) {
    let mut acc = [[V::zero(); N]; ROWS];
    let a_data = a.data.as_ptr();
    for p in 0..k {
        let b_row = b.add(p * b_stride);
        let b_vectors: [V; N] = std::array::from_fn(|j| V::load(b_row.add(j * LANES)));
        let a_column = a_data.add(p * a.col_stride);
        for (r, acc) in acc.iter_mut().enumerate() {
            let a_rp = V::splat(*a_column.add(r * a.row_stride));
            for (acc, &b) in acc.iter_mut().zip(&b_vectors) {
                *acc = acc.mul_add(a_rp, b);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            acc.store(c.data.add(r * c.row_stride + j * LANES));
        }
    }
}

/// [`tile`] as a [`Kernel`], so that each vector compiles each width in a function of its
/// own, whose registers its accumulators have to themselves (as the convolution's kernels).
struct Tile<'a, V, const N: usize> {
    a: Strided<'a>,
    b: (*const f32, usize),
    k: usize,
    c: Out,
    vector: PhantomData<V>,
}

impl<V: Vector, const N: usize> Kernel for Tile<'_, V, N> {
    type Output = ();

    #[inline(always)]
    unsafe fn run(self) {
        // SAFETY: the caller's contract, as for `tile`.
        unsafe { tile::<V, N>(self.a, self.b, self.k, self.c) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block against a plain triple loop.
    fn check<V: TileVector>() {
        let (rows, depth, cols) = (8, 37, 80);
        let a: Vec<f32> = (0..rows * depth).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..depth * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        // `a` used transposed: (i, p) at p·rows + i, stored [depth, rows].
        let at: Vec<f32> = (0..depth * rows)
            .map(|i| a[(i % rows) * depth + i / rows])
            .collect();
        for (a, name) in [
            (
                Strided {
                    data: &a,
                    row_stride: depth,
                    col_stride: 1,
                },
                "a",
            ),
            (
                Strided {
                    data: &at,
                    row_stride: 1,
                    col_stride: rows,
                },
                "aᵀ",
            ),
        ] {
            let mut c = vec![f32::NAN; rows * cols];
            let blocks = [
                Block {
                    row: 0,
                    width: 80,
                    span: 0..37,
                },
                Block {
                    row: 4,
                    width: 32,
                    span: 5..20,
                },
            ];
            product::<V>((&mut c, cols), a, (&b, cols), blocks.iter().cloned());
            for block in &blocks {
                for i in block.row..block.row + ROWS {
                    for j in 0..cols {
                        let got = c[i * cols + j];
                        if j >= block.width {
                            assert!(got.is_nan(), "{name}: ({i}, {j}) was written");
                            continue;
                        }
                        let want: f32 = block
                            .span
                            .clone()
                            .map(|p| a.data[i * a.row_stride + p * a.col_stride] * b[p * cols + j])
                            .sum();
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{name} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tiles_match_a_triple_loop_on_every_level() {
        crate::kernels::simd::each_level!(|V, _level| check::<V>());
    }

    #[test]
    #[should_panic]
    fn a_block_past_the_output_panics() {
        let (a, b, mut c) = (vec![1.0; 64], vec![1.0; 64], vec![0.0; 16 * 4]);
        let a = Strided {
            data: &a,
            row_stride: 4,
            col_stride: 1,
        };
        let block = Block {
            row: 1,
            width: 16,
            span: 0..4,
        };
        product::<Scalar>((&mut c, 16), a, (&b, 16), std::iter::once(block));
    }
}
