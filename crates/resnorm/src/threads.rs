//! The one explicit thread pool that every parallel kernel runs on.
//!
//! Its size is set once per process with [`set_threads`] (the command line's `--threads`);
//! without that call it uses every core the machine reports. Kernels enter it with
//! `threads::pool().install(..)`, which costs a few microseconds from outside the pool and
//! nothing from inside it, so callers that run many small kernels should wrap their whole
//! loop in one `install`.
//!
//! ```
//! let n = resnorm::threads::num_threads();
//! assert!(n >= 1);
//! ```

use crate::{Error, Result};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::OnceLock;

static POOL: OnceLock<ThreadPool> = OnceLock::new();

fn build(threads: usize) -> Result<ThreadPool> {
    ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("resnorm-{i}"))
        .build()
        .map_err(|e| Error::Threads(e.to_string()))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Fixes the pool's size. Must come before the first kernel runs; calling it again with the
/// same size is harmless, with another size it is an error.
pub fn set_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(Error::Threads(
            "the number of threads must be at least 1".into(),
        ));
    }
    let mut built_here = false;
    let pool = POOL.get_or_init(|| {
        built_here = true;
        build(threads).unwrap_or_else(|_| build(1).expect("a one-thread pool always builds"))
    });
    if pool.current_num_threads() != threads {
        let why = if built_here {
            "the system refused to start them"
        } else {
            "already running"
        };
        return Err(Error::Threads(format!(
            "cannot use {threads} threads: {} threads are {why}",
            pool.current_num_threads()
        )));
    }
    Ok(())
}

/// The pool, built with every core on first use unless [`set_threads`] came first.
pub fn pool() -> &'static ThreadPool {
    POOL.get_or_init(|| {
        build(default_threads())
            .unwrap_or_else(|_| build(1).expect("a one-thread pool always builds"))
    })
}

/// The number of threads kernels run on.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Splits `rows` into at most `num_threads()` contiguous blocks of whole rows and returns the
/// block length in rows (at least 1). Kernels that reduce over rows give each block its own
/// partial sum and add the partials in block order, so results depend only on the thread
/// count, never on scheduling.
pub fn rows_per_block(rows: usize) -> usize {
    rows.div_ceil(num_threads()).max(1)
}
