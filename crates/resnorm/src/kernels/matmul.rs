//! Matrix products: a checked, safe wrapper over the `gemm` crate.
//!
//! Computes `C[m,n] = A[m,k] · B[k,n]` (or `C += A · B` with `accumulate`), where `A` and `B`
//! may each be stored transposed: a transposed operand is read through swapped strides, never
//! copied. That is all a linear layer needs:
//!
//! | product | call |
//! |---|---|
//! | forward `y = x · W` | `a = x`, `b = W` |
//! | input gradient `dx = dy · Wᵀ` | `a = dy`, `b = W` transposed |
//! | weight gradient `dW += xᵀ · dy` | `a = x` transposed, `b = dy`, `accumulate` |
//!
//! [`matmul`] takes contiguous row-major operands. [`matmul_strided`] takes [`MatRef`] /
//! [`MatMut`] views whose rows lie `row_stride` elements apart, for blocks inside a larger
//! buffer (one attention head's columns of the `[T, 3C]` qkv activation).
//!
//! Threading: a product of at least [`PARALLEL_MIN_WORK`] multiply-adds is split into one block
//! of whole rows of `C` per thread of [`crate::threads::pool`] (or into blocks of at most
//! `MAX_BLOCK_ROWS` rows, shared out by work stealing), each block one single-threaded
//! gemm call. That beat gemm's own `Parallelism::Rayon` by 1.2-1.5x on the GPT's products
//! (`768×128×384` etc., 2 threads: 170-250 against 127-210 GFLOP/s), whose blocks are too
//! small for gemm's finer split to pay for its synchronization. Smaller products run on the
//! calling thread, where entering the pool (~10 µs) would cost more than it saves.
//!
//! A one-row product (`m = 1`: decoding a token) reads every element of `B` once and is bound
//! by how fast `B` streams from memory; with at least [`VECTOR_PARALLEL_MIN_WORK`] elements in
//! `B` it is split between threads along `B`'s stored rows, so that each thread streams whole
//! rows: the sum over `k` (partial rows added in block order) when `B` is stored `[k, n]`,
//! the columns of `C` when it is stored `[n, k]`. Only there is a sum over `k` split. The
//! blocking depends on the sizes and the thread count only: repeated runs give the same bits
//! (tested by the layers' determinism tests).
//!
//! ```
//! use resnorm::kernels::{matmul, MatDims, Trans};
//! // A = [[1, 2], [3, 4]], B stored transposed as Bᵀ = [[1, 0], [1, 1]], so B = [[1, 1], [0, 1]].
//! let a = [1.0, 2.0, 3.0, 4.0];
//! let b_t = [1.0, 0.0, 1.0, 1.0];
//! let mut c = [10.0; 4];
//! let dims = MatDims { m: 2, k: 2, n: 2 };
//! matmul(&mut c, &a, &b_t, dims, Trans { a: false, b: true }, false).unwrap();
//! assert_eq!(c, [1.0, 3.0, 3.0, 7.0]);
//! matmul(&mut c, &a, &b_t, dims, Trans { a: false, b: true }, true).unwrap();
//! assert_eq!(c, [2.0, 6.0, 6.0, 14.0]);
//! assert!(matmul(&mut c, &a[..3], &b_t, dims, Trans::NONE, false).is_err());
//! ```

use crate::{Error, Result};
use gemm::Parallelism;
use std::convert::Infallible;

/// Products with at least this many multiply-adds (`m·k·n`) run on the thread pool.
///
/// gemm's own threshold for threading (`48·48·256`). Measured on the 2-core development
/// machine: 64×64×128 took 29 µs on the calling thread and 35 µs through the pool.
pub const PARALLEL_MIN_WORK: usize = 48 * 48 * 256;

/// Sizes of `C[m,n] = A[m,k] · B[k,n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatDims {
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Columns of `A`, rows of `B`: the summed dimension.
    pub k: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
}

/// Which operands are stored transposed: `a` true means `A` is stored as `Aᵀ`, `[k, m]`
/// row-major; `b` true means `B` is stored as `Bᵀ`, `[n, k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trans {
    /// `A` stored as `[k, m]`.
    pub a: bool,
    /// `B` stored as `[n, k]`.
    pub b: bool,
}

impl Trans {
    /// Both operands stored as used.
    pub const NONE: Trans = Trans { a: false, b: false };
}

/// A read-only operand inside a larger buffer: rows of the *stored* matrix start at
/// `0, row_stride, 2·row_stride, ...` in `data`; `transposed` says the product uses it transposed.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Storage, starting at the matrix's first element.
    pub data: &'a [f32],
    /// Distance between the starts of consecutive stored rows.
    pub row_stride: usize,
    /// Use the stored matrix transposed.
    pub transposed: bool,
}

/// The output inside a larger buffer: row `i` of `C` starts at `i · row_stride` in `data`.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Storage, starting at the matrix's first element.
    pub data: &'a mut [f32],
    /// Distance between the starts of consecutive rows.
    pub row_stride: usize,
}

/// `c = a · b` (or `c += a · b` when `accumulate`) for contiguous row-major operands.
///
/// `c` holds `m·n` elements; `a` holds `m·k` (`[m,k]`, or `[k,m]` with `trans.a`); `b` holds
/// `k·n` (`[k,n]`, or `[n,k]` with `trans.b`). Any other length is an [`Error::Shape`].
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    dims: MatDims,
    trans: Trans,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "matmul";
    let MatDims { m, k, n } = dims;
    for (what, len, want) in [
        ("a", a.len(), m * k),
        ("b", b.len(), k * n),
        ("c", c.len(), m * n),
    ] {
        if len != want {
            return Err(Error::shape(
                OP,
                format!("{what} has {len} elements, {dims:?} needs {want}"),
            ));
        }
    }
    let a = MatRef {
        data: a,
        row_stride: if trans.a { m } else { k },
        transposed: trans.a,
    };
    let b = MatRef {
        data: b,
        row_stride: if trans.b { k } else { n },
        transposed: trans.b,
    };
    let c = MatMut {
        data: c,
        row_stride: n,
    };
    matmul_strided(c, a, b, dims, accumulate)
}

/// `c = a · b` (or `c += a · b` when `accumulate`) for operands inside larger buffers.
///
/// Every stored row must fit in its row stride and the last one in `data`; otherwise an
/// [`Error::Shape`] is returned before anything is read or written. Elements of `c.data`
/// between rows are left untouched.
pub fn matmul_strided(
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    dims: MatDims,
    accumulate: bool,
) -> Result<()> {
    const OP: &str = "matmul_strided";
    let MatDims { m, k, n } = dims;
    let (a_rows, a_cols) = if a.transposed { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if b.transposed { (n, k) } else { (k, n) };
    check_fits(OP, "a", a.data.len(), a_rows, a_cols, a.row_stride)?;
    check_fits(OP, "b", b.data.len(), b_rows, b_cols, b.row_stride)?;
    check_fits(OP, "c", c.data.len(), m, n, c.row_stride)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Element (i, j) of a used operand sits at i·rs + j·cs of its storage.
    let a = Operand {
        data: a.data,
        strides: strides(a.row_stride, a.transposed),
    };
    let b = Operand {
        data: b.data,
        strides: strides(b.row_stride, b.transposed),
    };
    if m == 1 {
        row_times_matrix(c.data, a, b, k, n, accumulate);
        return Ok(());
    }
    // Blocks of whole rows of C (and of A), one per thread, or of at most MAX_BLOCK_ROWS
    // rows; each is one single-threaded gemm call: block `r` reads A's rows from
    // `r·rows_per_block`, and all of B.
    let parallel = m.saturating_mul(k).saturating_mul(n) >= PARALLEL_MIN_WORK;
    let threads = if parallel {
        crate::threads::num_threads()
    } else {
        1
    };
    let rows_per_block = m
        .div_ceil(threads)
        .next_multiple_of(ROW_TILE)
        .min(MAX_BLOCK_ROWS);
    if rows_per_block >= m {
        // SAFETY: check_fits proved that every element of `a`, `b` and `c` addressed for
        // these sizes lies inside its slice.
        unsafe { gemm_on_this_thread(c.data, c.row_stride, a, b, dims, accumulate) };
        return Ok(());
    }
    let c_stride = c.row_stride;
    let block_len = rows_per_block * c_stride;
    let Ok(()) = crate::threads::for_each_chunk_spinning(c.data, block_len, &|block, c_block| {
        let first = block * rows_per_block;
        if first >= m {
            return Ok(()); // a tail of `c.data` past the last row
        }
        let rows = rows_per_block.min(m - first);
        let a_block = Operand {
            data: &a.data[first * a.strides.0 as usize..],
            strides: a.strides,
        };
        let dims = MatDims { m: rows, k, n };
        // SAFETY: the block's rows of `a` and `c` are rows `first..first + rows` of operands
        // check_fits proved to fit; shifting the start by `first` rows keeps every addressed
        // element inside the shortened slices.
        unsafe { gemm_on_this_thread(c_block, c_stride, a_block, b, dims, accumulate) };
        Ok::<(), Infallible>(())
    });
    Ok(())
}

/// `c[..n] = a · b` (or `+=`) for a one-row `a` (decoding a token is such products).
///
/// Each element of `b` is used once, so the product runs at the speed `b` streams from memory,
/// and two cores' loads stream faster than one core's. The split between threads follows
/// `b`'s storage, so that every thread reads whole rows of it, in order: stored `[k, n]`, the
/// sum over `k` is split into blocks, each giving a partial row of `c` (in a scratch buffer of
/// the calling thread), added in block order at the end; stored `[n, k]`, the columns of `c`
/// are split. Measured for the 6-layer width-384 GPT's per-token products (42 MB, 2 threads
/// spinning): splitting the sum 1.10 ms, splitting the columns of a `[k, n]` `b` (every thread
/// reading part of every row) 1.95 ms, one thread 1.95 ms.
fn row_times_matrix(
    c: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    let c = &mut c[..n];
    let threads = crate::threads::num_threads();
    if threads == 1 || k.saturating_mul(n) < VECTOR_PARALLEL_MIN_WORK {
        // SAFETY: check_fits proved that `a`, `b` and `c` fit these sizes.
        unsafe { gemm_on_this_thread(c, n, a, b, MatDims { m: 1, k, n }, accumulate) };
        return;
    }
    let (b_rs, b_cs) = b.strides;
    let block_of_b = |first_row: usize, first_col: usize| Operand {
        data: &b.data[first_row * b_rs as usize + first_col * b_cs as usize..],
        strides: b.strides,
    };
    if b_cs != 1 {
        // `b` stored [n, k]: a block of columns of `c` reads a contiguous block of rows of `b`.
        let cols = n
            .div_ceil(threads * BLOCKS_PER_THREAD)
            .next_multiple_of(COL_TILE);
        let Ok(()) = crate::threads::for_each_chunk_spinning(c, cols, &|block, c_block| {
            let dims = MatDims {
                m: 1,
                k,
                n: c_block.len(),
            };
            let b_block = block_of_b(0, block * cols);
            // SAFETY: columns `block·cols..` of `b` lie inside the operand check_fits proved
            // to fit for `n` columns; `c_block` has one row.
            unsafe { gemm_on_this_thread(c_block, n, a, b_block, dims, accumulate) };
            Ok::<(), Infallible>(())
        });
        return;
    }
    let rows = k.div_ceil(threads * BLOCKS_PER_THREAD).max(MIN_BLOCK_ROWS);
    let blocks = k.div_ceil(rows);
    // Taken out of the thread-local store, not borrowed, while the blocks run: waiting for
    // them, this thread may run another one-row product that needs partial rows of its own.
    let mut partials = PARTIAL_ROWS.take();
    if partials.len() < blocks * n {
        partials.resize(blocks * n, 0.0);
    }
    let partials_used = &mut partials[..blocks * n];
    let Ok(()) = crate::threads::for_each_chunk_spinning(partials_used, n, &|block, partial| {
        let first = block * rows; // < k: there are k.div_ceil(rows) blocks
        let a_block = Operand {
            data: &a.data[first * a.strides.1 as usize..],
            strides: a.strides,
        };
        let dims = MatDims {
            m: 1,
            k: rows.min(k - first),
            n,
        };
        let b_block = block_of_b(first, 0);
        // SAFETY: rows `first..first + dims.k` of `b` and the same columns of `a` lie inside
        // the operands check_fits proved to fit for `k`; `partial` holds one row.
        unsafe { gemm_on_this_thread(partial, n, a_block, b_block, dims, false) };
        Ok::<(), Infallible>(())
    });
    if !accumulate {
        c.fill(0.0);
    }
    for partial in partials_used.chunks_exact(n) {
        for (c, p) in c.iter_mut().zip(partial) {
            *c += p;
        }
    }
    PARTIAL_ROWS.set(partials);
}

thread_local! {
    /// The per-block partial rows of [`row_times_matrix`]'s split sum, kept between calls.
    static PARTIAL_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One-row products with at least this many elements in `B` (256 KiB) are split between
/// threads: at the ~25 GB/s one core streams, ~10 µs of work per product, against ~1 µs to
/// hand a block to a spinning worker.
pub const VECTOR_PARALLEL_MIN_WORK: usize = 64 * 1024;

/// A one-row product is split into this many blocks per thread, so that a thread that
/// finishes first takes another block (6-layer width-384 GPT decoding, 2 threads,
/// interleaved runs: 480-640 tokens/s with one block per thread, 700-915 with two or four).
const BLOCKS_PER_THREAD: usize = 4;

/// The fewest rows of `b` in a block of a one-row product's split sum.
const MIN_BLOCK_ROWS: usize = 32;

/// Columns of C per block of a one-row product are rounded up to a multiple of this: one
/// AVX-512 register of f32 lanes, so no block ends in a partial vector but the last.
const COL_TILE: usize = 16;

/// Rows of C per block are rounded up to a multiple of this, so that no block is a sliver;
/// 64 is the long side of gemm's AVX-512 micro-kernel tile (4 registers of 16 lanes).
const ROW_TILE: usize = 64;

/// The most rows of C one gemm call computes. Measured on one thread for the GPT-2 head's
/// weight gradient (`50257×512×256`, `A` stored transposed): one call 65 GFLOP/s, blocks of
/// 512-2048 rows 94-98 GFLOP/s; past a few thousand rows gemm's own blocking loses the cache.
const MAX_BLOCK_ROWS: usize = 1024;

/// A used operand: its storage and the (row, column) strides of its elements in it.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    strides: (isize, isize),
}

/// `c = a · b` (or `c += a · b`) by gemm on the calling thread; row `i` of `c` starts at
/// `i · c_stride`.
///
/// # Safety
/// For `i < m`, `j < n`, `l < k`: `i·rs + l·cs` of `a` (with its strides), `l·rs + j·cs` of
/// `b` and `i·c_stride + j` of `c` must lie inside their slices.
unsafe fn gemm_on_this_thread(
    c: &mut [f32],
    c_stride: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    dims: MatDims,
    accumulate: bool,
) {
    let MatDims { m, k, n } = dims;
    let ((a_rs, a_cs), (b_rs, b_cs)) = (a.strides, b.strides);
    // SAFETY: the caller guarantees every addressed element is inside its slice; `c` is
    // borrowed mutably and so aliases neither input. gemm reads `c` only when `read_dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// (row stride, column stride) of the matrix as used, given how it is stored.
fn strides(row_stride: usize, transposed: bool) -> (isize, isize) {
    if transposed {
        (1, row_stride as isize)
    } else {
        (row_stride as isize, 1)
    }
}

/// Checks that a stored `rows × cols` matrix with `row_stride` fits in `len` elements.
fn check_fits(
    op: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> Result<()> {
    if row_stride > isize::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{what}: row stride {row_stride} is too large"),
        ));
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if rows > 1 && cols > row_stride {
        return Err(Error::shape(
            op,
            format!("{what}: rows of {cols} elements overlap with row stride {row_stride}"),
        ));
    }
    let needed = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|v| v.checked_add(cols));
    match needed {
        Some(needed) if needed <= len => Ok(()),
        _ => Err(Error::shape(
            op,
            format!(
                "{what}: {rows}x{cols} with row stride {row_stride} does not fit in {len} elements"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use rayon::prelude::*;

    fn normal(seed: u64, len: usize) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.normal()).collect()
    }

    fn is_shape(r: Result<()>) -> bool {
        matches!(r, Err(Error::Shape { .. }))
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= atol + rtol * w.abs(),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// `A·B` with `A` read as `[m,k]` (or stored `[k,m]`), `B` as `[k,n]` (or `[n,k]`), in f64.
    fn naive_matmul(a: &[f32], b: &[f32], d: MatDims, t: Trans) -> Vec<f32> {
        let at = |i: usize, p: usize| if t.a { a[p * d.m + i] } else { a[i * d.k + p] } as f64;
        let bt = |p: usize, j: usize| if t.b { b[j * d.k + p] } else { b[p * d.n + j] } as f64;
        let mut c = vec![0.0; d.m * d.n];
        for i in 0..d.m {
            for j in 0..d.n {
                c[i * d.n + j] = (0..d.k).map(|p| at(i, p) * bt(p, j)).sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn matmul_matches_naive_for_every_transpose_and_accumulate() {
        // (97, 101, 67) is above PARALLEL_MIN_WORK, so it runs on the pool; the one-row
        // products after it are above VECTOR_PARALLEL_MIN_WORK: (1, 300, 257) splits its sum
        // into blocks of 38 rows and a last of 34 (or its columns, `B` transposed);
        // (1, 3, 30000) sums in one block of 3 rows (or splits its columns).
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (17, 9, 13),
            (33, 65, 31),
            (97, 101, 67),
            (1, 300, 257),
            (1, 3, 30_000),
        ];
        const { assert!(97 * 101 * 67 >= PARALLEL_MIN_WORK) };
        const { assert!(300 * 257 >= VECTOR_PARALLEL_MIN_WORK) };
        const { assert!(3 * 30_000 >= VECTOR_PARALLEL_MIN_WORK) };
        for (m, k, n) in shapes {
            let dims = MatDims { m, k, n };
            let a = normal(1, m * k);
            let b = normal(2, k * n);
            let start = normal(3, m * n);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let trans = Trans { a: ta, b: tb };
                let want = naive_matmul(&a, &b, dims, trans);
                let mut c = start.clone();
                matmul(&mut c, &a, &b, dims, trans, false).unwrap();
                assert_close(&format!("{dims:?} {trans:?}"), &c, &want, 1e-5, 1e-5);
                matmul(&mut c, &a, &b, dims, trans, true).unwrap();
                let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
                assert_close(&format!("{dims:?} {trans:?} += "), &c, &twice, 1e-5, 2e-5);
            }
        }
    }

    /// One-row products started from several pool tasks at once (decoding several sequences
    /// in parallel) are each the product alone: a thread waiting for its blocks may run
    /// another product, which must not share its partial rows.
    #[test]
    fn one_row_products_run_concurrently() {
        let dims = MatDims {
            m: 1,
            k: 300,
            n: 257,
        };
        let b = normal(2, dims.k * dims.n);
        let rows: Vec<Vec<f32>> = (0..16).map(|s| normal(10 + s, dims.k)).collect();
        let want: Vec<Vec<f32>> = rows
            .iter()
            .map(|a| naive_matmul(a, &b, dims, Trans::NONE))
            .collect();
        let got: Vec<Vec<f32>> = crate::threads::pool().install(|| {
            rows.par_iter()
                .map(|a| {
                    let mut c = vec![0.0; dims.n];
                    matmul(&mut c, a, &b, dims, Trans::NONE, false).unwrap();
                    c
                })
                .collect()
        });
        for (got, want) in got.iter().zip(&want) {
            assert_close("concurrent one-row product", got, want, 1e-5, 1e-5);
        }
    }

    #[test]
    fn matmul_with_empty_sum_writes_zeros_or_keeps_c() {
        let dims = MatDims { m: 2, k: 0, n: 3 };
        let mut c = vec![5.0; 6];
        matmul(&mut c, &[], &[], dims, Trans::NONE, true).unwrap();
        assert_eq!(c, vec![5.0; 6]);
        matmul(&mut c, &[], &[], dims, Trans::NONE, false).unwrap();
        assert_eq!(c, vec![0.0; 6]);
    }

    #[test]
    fn matmul_strided_writes_only_its_block() {
        // A 3x2 block at column 1 of a [3, 5] buffer times a stored-transposed [2, 2] B.
        let a_buf = normal(4, 15);
        let b = normal(5, 4);
        let mut c_buf = [9.0; 3 * 4];
        let a = MatRef {
            data: &a_buf[1..],
            row_stride: 5,
            transposed: false,
        };
        let b_ref = MatRef {
            data: &b,
            row_stride: 2,
            transposed: true,
        };
        let c = MatMut {
            data: &mut c_buf[2..],
            row_stride: 4,
        };
        let dims = MatDims { m: 3, k: 2, n: 2 };
        matmul_strided(c, a, b_ref, dims, false).unwrap();
        let a_dense: Vec<f32> = (0..3)
            .flat_map(|r| a_buf[r * 5 + 1..r * 5 + 3].to_vec())
            .collect();
        let want = naive_matmul(&a_dense, &b, dims, Trans { a: false, b: true });
        for r in 0..3 {
            assert_eq!(
                &c_buf[r * 4..r * 4 + 2],
                &[9.0, 9.0],
                "untouched columns of row {r}"
            );
            assert_close(
                "block",
                &c_buf[r * 4 + 2..r * 4 + 4],
                &want[r * 2..r * 2 + 2],
                1e-5,
                1e-6,
            );
        }
    }

    #[test]
    fn matmul_rejects_bad_sizes() {
        let dims = MatDims { m: 2, k: 3, n: 4 };
        let (a, b, mut c) = (vec![0.0; 6], vec![0.0; 12], vec![0.0; 8]);
        assert!(is_shape(matmul(
            &mut c,
            &a[..5],
            &b,
            dims,
            Trans::NONE,
            false
        )));
        assert!(is_shape(matmul(
            &mut c,
            &a,
            &b[..11],
            dims,
            Trans::NONE,
            false
        )));
        assert!(is_shape(matmul(
            &mut c[..7],
            &a,
            &b,
            dims,
            Trans::NONE,
            false
        )));
        let overlapping = MatRef {
            data: &a,
            row_stride: 2,
            transposed: false,
        };
        let b_ref = MatRef {
            data: &b,
            row_stride: 4,
            transposed: false,
        };
        let c_mut = MatMut {
            data: &mut c,
            row_stride: 4,
        };
        assert!(is_shape(matmul_strided(
            c_mut,
            overlapping,
            b_ref,
            dims,
            false
        )));
        let a_ref = MatRef {
            data: &a,
            row_stride: 3,
            transposed: false,
        };
        let short = MatMut {
            data: &mut c,
            row_stride: 5,
        };
        assert!(is_shape(matmul_strided(short, a_ref, b_ref, dims, false)));
        assert_eq!(c, vec![0.0; 8], "nothing written on error");
    }
}
