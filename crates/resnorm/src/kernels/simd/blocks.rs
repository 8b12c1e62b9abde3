//! The one split of `[rows, cols]` work between threads: contiguous blocks of whole rows,
//! a fixed number per thread of [`crate::threads::pool`], run by [`run_blocks`].
//!
//! Kernels that reduce over rows give each block its own partial and add the partials in
//! block order, so results depend only on the thread count, never on scheduling.
//!
//! ```
//! use resnorm::kernels::simd::{rows_per_block, ONE_BLOCK_PER_THREAD};
//! let threads = resnorm::threads::num_threads();
//! assert_eq!(rows_per_block(10 * threads, ONE_BLOCK_PER_THREAD), 10);
//! assert_eq!(rows_per_block(0, ONE_BLOCK_PER_THREAD), 1); // never an empty block length
//! ```

use crate::threads;
use std::convert::Infallible;

/// One block per thread: for work whose rows all cost the same.
pub const ONE_BLOCK_PER_THREAD: usize = 1;

/// Blocks per thread in the norm kernels: with more than one, a thread done with its own
/// blocks takes over the other's last ones (rayon's stealing), which measured faster at the
/// large shapes (docs/benchmarks.md, "Norm kernels: blocks per thread").
pub const ROW_KERNEL_BLOCKS_PER_THREAD: usize = 4;

/// Below this many elements a kernel runs its blocks on the calling thread: entering the
/// pool costs ~10 µs, about what streaming 32 K floats costs.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Rows per block when `rows` rows are split into `blocks_per_thread` contiguous blocks per
/// thread (at least one row each).
pub fn rows_per_block(rows: usize, blocks_per_thread: usize) -> usize {
    rows.div_ceil(threads::num_threads() * blocks_per_thread)
        .max(1)
}

/// Runs `work` on every block, in parallel on [`threads::pool`] unless the kernel touches
/// fewer than [`PARALLEL_MIN_ELEMENTS`] elements. Blocks are built by the caller from
/// `chunks(rows_per_block(rows, ..) * cols)` of its buffers, so the split, and with it every
/// result, depends only on the thread count. The threads are joined by
/// [`threads::for_each_chunk_spinning`], so the one done first does not fall asleep.
pub(crate) fn run_blocks<B: Send>(blocks: Vec<B>, elements: usize, work: impl Fn(B) + Sync + Send) {
    if blocks.len() <= 1 || elements < PARALLEL_MIN_ELEMENTS {
        blocks.into_iter().for_each(work);
    } else {
        let mut blocks: Vec<Option<B>> = blocks.into_iter().map(Some).collect();
        let Ok(()) = threads::for_each_chunk_spinning(&mut blocks, 1, &|_, block| {
            block.iter_mut().filter_map(Option::take).for_each(&work);
            Ok::<(), Infallible>(())
        });
    }
}
