//! Column sums of a row-major matrix, the gradient of a bias added to every row:
//!
//! ```text
//! y[r, j] = z[r, j] + b[j]   =>   db[j] += Σ_r dy[r, j]
//! ```
//!
//! The rows are summed in fixed blocks of [`SUM_BLOCK_ROWS`], each block into a partial row
//! of its own (on the thread pool, every thread reading whole rows in order), and the
//! partials are then added in block order. The blocks do not depend on the thread count, so
//! neither do the bits. A kernel that writes such a gradient itself (the GELU after a
//! linear layer) sums the rows it has just written the same way, through `sum_row_blocks`.
//!
//! ```
//! use resnorm::kernels::column_sums::add_column_sums;
//! let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]
//! let mut db = [0.5, 0.0];
//! add_column_sums(&mut db, &dy).unwrap();
//! assert_eq!(db, [9.5, 12.0]);
//! assert!(add_column_sums(&mut db, &dy[..5]).is_err());
//! ```

use super::simd::run_blocks;
use crate::{Error, Result};

/// Rows per block of a column sum.
pub const SUM_BLOCK_ROWS: usize = 256;

/// `sums[j] += Σ_r m[r, j]` for `m` of `sums.len()` columns; an [`Error::Shape`] unless `m`
/// holds whole rows.
///
/// Each thread summing a block of columns over all rows was slower than blocks of rows: the
/// bias gradients of one layer of the 6-layer width-384 GPT (`dy` of 1152, 384, 1536 and 384
/// columns, 2048 rows), 2 threads, a scratch program alternating the two, three runs:
/// 1.06-1.16 ms against 1.60-1.78.
pub fn add_column_sums(sums: &mut [f32], m: &[f32]) -> Result<()> {
    let cols = sums.len();
    if cols == 0 || !m.len().is_multiple_of(cols) {
        return Err(Error::shape(
            "add_column_sums",
            format!("{} elements are not rows of {cols}", m.len()),
        ));
    }
    let blocks = m.chunks(SUM_BLOCK_ROWS * cols);
    sum_row_blocks(sums, m.len() / cols, blocks, |block, partial| {
        add_rows(partial, block, cols)
    });
    Ok(())
}

/// Adds into `sums` the column sums of a `[rows, sums.len()]` matrix that `work` produces
/// block by block: `blocks` yields one item per [`SUM_BLOCK_ROWS`] rows (the last may be
/// shorter), and `work(item, partial)` adds its block's column sums into the zeroed
/// `partial`; the partials are then added into `sums` in block order.
pub(crate) fn sum_row_blocks<B: Send>(
    sums: &mut [f32],
    rows: usize,
    blocks: impl Iterator<Item = B>,
    work: impl Fn(B, &mut [f32]) + Sync + Send,
) {
    let cols = sums.len();
    let count = rows.div_ceil(SUM_BLOCK_ROWS);
    // Taken out of the thread-local store while the blocks run: waiting for them, this
    // thread may run other pool work that sums columns too.
    let mut partials = PARTIAL_ROWS.take();
    if partials.len() < count * cols {
        partials.resize(count * cols, 0.0);
    }
    let partials_used = &mut partials[..count * cols];
    let jobs: Vec<_> = blocks.zip(partials_used.chunks_exact_mut(cols)).collect();
    debug_assert_eq!(jobs.len(), count, "one block per {SUM_BLOCK_ROWS} rows");
    run_blocks(jobs, rows * cols, |(block, partial)| {
        partial.fill(0.0);
        work(block, partial);
    });
    add_rows(sums, partials_used, cols);
    PARTIAL_ROWS.set(partials);
}

/// `sums[j] += Σ_r rows[r·row_stride + j]`, the rows one after another: the first
/// `sums.len()` elements of each whole `row_stride` in `rows`.
pub(crate) fn add_rows(sums: &mut [f32], rows: &[f32], row_stride: usize) {
    for row in rows.chunks_exact(row_stride) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

thread_local! {
    /// The partial rows of [`sum_row_blocks`], kept between calls.
    static PARTIAL_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn sums_are_the_row_blocks_added_in_order() {
        // 700 rows: two full blocks and a short one, enough elements to run on the pool.
        let (rows, cols) = (700, 64);
        assert!(rows % SUM_BLOCK_ROWS != 0);
        let mut rng = Rng::new(3);
        let m: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let start: Vec<f32> = (0..cols).map(|j| j as f32).collect();
        let mut want = start.clone();
        for block in m.chunks(SUM_BLOCK_ROWS * cols) {
            let mut partial = vec![0.0f32; cols];
            add_rows(&mut partial, block, cols);
            add_rows(&mut want, &partial, cols);
        }
        let mut sums = start;
        add_column_sums(&mut sums, &m).unwrap();
        assert_eq!(
            sums, want,
            "the same bits as one thread summing the blocks in order"
        );
        let exact: f64 = (0..rows).map(|r| m[r * cols + 5] as f64).sum::<f64>() + 5.0;
        assert!(
            (sums[5] as f64 - exact).abs() < 1e-4,
            "{} vs {exact}",
            sums[5]
        );
    }

    #[test]
    fn rejects_partial_rows() {
        assert!(add_column_sums(&mut [0.0; 3], &[1.0; 7]).is_err());
        assert!(add_column_sums(&mut [], &[1.0; 3]).is_err());
    }
}
