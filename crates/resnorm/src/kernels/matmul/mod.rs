//! Matrix products: a checked, safe wrapper over the `gemm` crate.
//!
//! Computes `C[m,n] = A[m,k] · B[k,n]` (or `C += A · B` with `accumulate`), where `A` and `B`
//! may each be stored transposed: a transposed operand is read through swapped strides, never
//! copied. That is all a linear layer needs:
//!
//! | product | call |
//! |---|---|
//! | forward `y = x · W + b` | `a = x`, `b = W`, [`matmul_plus_row`] with `b` the row |
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
use one_row::row_times_matrix;
use std::convert::Infallible;

mod one_row;
pub use one_row::VECTOR_PARALLEL_MIN_WORK;

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
    let (c, a, b) = contiguous("matmul", c, a, b, dims, trans)?;
    matmul_strided(c, a, b, dims, accumulate)
}

/// `c = a · b + 1·rowᵀ`: the product with `row` (`n` elements) added to each of its `m` rows,
/// as a linear layer's bias. Contiguous row-major operands, as [`matmul`].
///
/// Each thread adds the row to its own block of `c` right after its product. Filling `c` with
/// the row first and letting gemm add the product to it was slower: gemm then reads every
/// tile of `c` back from the L3 cache as it finishes it (the four forward products of one
/// layer of the 6-layer width-384 GPT, 2 threads, a scratch program alternating the ways,
/// medians of six runs: 23.7-24.9 ms this way, 24.6-25.8 filling first, 22.8-23.8 with no
/// bias at all).
///
/// ```
/// use resnorm::kernels::{matmul_plus_row, MatDims, Trans};
/// let a = [1.0, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let identity = [1.0, 0.0, 0.0, 1.0];
/// let mut c = [0.0; 4];
/// let dims = MatDims { m: 2, k: 2, n: 2 };
/// matmul_plus_row(&mut c, &a, &identity, &[10.0, 20.0], dims, Trans::NONE).unwrap();
/// assert_eq!(c, [11.0, 22.0, 13.0, 24.0]);
/// assert!(matmul_plus_row(&mut c, &a, &identity, &[1.0], dims, Trans::NONE).is_err());
/// ```
pub fn matmul_plus_row(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    row: &[f32],
    dims: MatDims,
    trans: Trans,
) -> Result<()> {
    if row.len() != dims.n {
        return Err(Error::shape(
            "matmul_plus_row",
            format!("row has {} elements, {dims:?} needs {}", row.len(), dims.n),
        ));
    }
    let (c, a, b) = contiguous("matmul_plus_row", c, a, b, dims, trans)?;
    product("matmul_plus_row", c, a, b, dims, Output::AddRow(row))
}

/// Checks the lengths of contiguous row-major operands for `dims` and `trans` and views them
/// as [`MatMut`] / [`MatRef`].
fn contiguous<'a>(
    op: &'static str,
    c: &'a mut [f32],
    a: &'a [f32],
    b: &'a [f32],
    dims: MatDims,
    trans: Trans,
) -> Result<(MatMut<'a>, MatRef<'a>, MatRef<'a>)> {
    let MatDims { m, k, n } = dims;
    for (what, len, want) in [
        ("a", a.len(), m * k),
        ("b", b.len(), k * n),
        ("c", c.len(), m * n),
    ] {
        if len != want {
            return Err(Error::shape(
                op,
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
    Ok((c, a, b))
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
    let output = if accumulate {
        Output::Accumulate
    } else {
        Output::Overwrite
    };
    product("matmul_strided", c, a, b, dims, output)
}

/// What a product does with `c`.
#[derive(Clone, Copy)]
enum Output<'a> {
    /// `c = a·b`.
    Overwrite,
    /// `c += a·b`.
    Accumulate,
    /// `c = a·b + 1·rowᵀ`, the row added to each row of `c` by the thread that wrote it.
    AddRow(&'a [f32]),
}

/// `c = a · b`, `c += a · b` or `c = a · b + 1·rowᵀ` after checking that every operand fits;
/// `op` names the caller in errors.
fn product(
    op: &'static str,
    c: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    dims: MatDims,
    output: Output<'_>,
) -> Result<()> {
    let MatDims { m, k, n } = dims;
    let (a_rows, a_cols) = if a.transposed { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if b.transposed { (n, k) } else { (k, n) };
    check_fits(op, "a", a.data.len(), a_rows, a_cols, a.row_stride)?;
    check_fits(op, "b", b.data.len(), b_rows, b_cols, b.row_stride)?;
    check_fits(op, "c", c.data.len(), m, n, c.row_stride)?;
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
    let accumulate = matches!(output, Output::Accumulate);
    if m == 1 {
        row_times_matrix(c.data, a, b, k, n, accumulate);
        add_row(c.data, n, 1, output);
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
        add_row(c.data, c.row_stride, m, output);
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
        add_row(c_block, c_stride, rows, output);
        Ok::<(), Infallible>(())
    });
    Ok(())
}

/// With [`Output::AddRow`], adds the row to each of the first `rows` rows of `c`, row `i`
/// starting at `i · c_stride`; otherwise does nothing.
fn add_row(c: &mut [f32], c_stride: usize, rows: usize, output: Output<'_>) {
    let Output::AddRow(row) = output else {
        return;
    };
    for i in 0..rows {
        let c_row = &mut c[i * c_stride..i * c_stride + row.len()];
        for (c, r) in c_row.iter_mut().zip(row) {
            *c += r;
        }
    }
}

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
mod tests;
