//! One-row products (`m = 1`), of which decoding a token is made: see [`row_times_matrix`].

use super::{gemm_on_this_thread, MatDims, Operand};
use std::convert::Infallible;

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
pub(super) fn row_times_matrix(
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
