//! The one explicit thread pool that every parallel kernel runs on.
//!
//! Its size is set once per process with [`set_threads`] (the command line's `--threads`);
//! without that call it uses every core the machine reports. Kernels enter it with
//! `threads::pool().install(..)`, which costs nothing from inside the pool but, from outside,
//! a hand-over to a worker and, when the workers are asleep, waking them: tens of
//! microseconds on a virtual machine. Loops of many small kernels (a training step, an
//! evaluation, decoding) therefore run inside [`busy`], which keeps the other workers spinning
//! for work: the nanoGPT-sized training step went from 38-43 to 27-37 ms with it on the 2-core
//! development machine.
//!
//! ```
//! let n = resnorm::threads::num_threads();
//! assert!(n >= 1);
//! // Refused before any thread starts:
//! assert!(resnorm::threads::set_threads(resnorm::threads::MAX_THREADS + 1).is_err());
//! ```

use crate::{Error, Result};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

static POOL: OnceLock<ThreadPool> = OnceLock::new();

/// Most threads [`set_threads`] accepts: more is a typo, not a machine, and every thread
/// costs a stack (a million of them took minutes to start before failing).
pub const MAX_THREADS: usize = 1024;

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
    if threads > MAX_THREADS {
        return Err(Error::Threads(format!(
            "the number of threads must be at most {MAX_THREADS}, got {threads}"
        )));
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

/// Runs `body` on the pool while every other worker stays awake, spinning for work instead
/// of sleeping, until `body` returns (or until it has found no work for
/// 500 µs, when it sleeps as usual).
///
/// Every kernel enters the pool, and a worker that found nothing to do for a few microseconds
/// goes to sleep; waking it costs tens of microseconds on a virtual machine, more than a
/// small kernel takes. A loop of many small kernels (a training step, decoding a token)
/// should run inside `busy`: its kernels then start at once on every thread. The price is one
/// core per other worker spinning while `body` runs on one thread only, so keep `body` to the
/// busy work itself.
///
/// ```
/// let total: u64 = resnorm::threads::busy(|| (0..1000u64).sum());
/// assert_eq!(total, 499_500);
/// ```
pub fn busy<R: Send>(body: impl FnOnce() -> R + Send) -> R {
    let pool = pool();
    if pool.current_num_threads() == 1 {
        return pool.install(body);
    }
    pool.install(|| {
        let driver = rayon::current_thread_index();
        let release = Release(Arc::new(AtomicBool::new(false)));
        let done = Arc::clone(&release.0);
        pool.spawn_broadcast(move |context| {
            if Some(context.index()) != driver {
                spin_for_work(&done);
            }
        });
        body()
    })
}

/// How long a spinning worker of [`busy`] looks for work in vain before it stops spinning.
///
/// The limit also guarantees progress: rayon may start a worker's spinning job while that
/// worker waits inside a job of the very `body` the spinning serves (a worker waiting for a
/// `join` runs whatever is queued for it). `body` then cannot finish before that job does, so
/// the spinning must end by itself: after this long without work, or at once when the worker
/// is already spinning further up its stack.
const SPIN_IDLE_LIMIT: Duration = Duration::from_micros(500);

thread_local! {
    /// Whether this worker is inside [`spin_for_work`].
    static SPINNING: Cell<bool> = const { Cell::new(false) };
}

/// Runs the pool's pending jobs until `done`, or until none has come for
/// [`SPIN_IDLE_LIMIT`].
fn spin_for_work(done: &AtomicBool) {
    if SPINNING.with(|spinning| spinning.replace(true)) {
        return; // nested inside an outer spin of this worker
    }
    let mut last_work = Instant::now();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            last_work = Instant::now();
        } else if last_work.elapsed() > SPIN_IDLE_LIMIT {
            break;
        } else {
            std::hint::spin_loop();
        }
    }
    SPINNING.with(|spinning| spinning.set(false));
}

/// Runs `first` on the calling thread and `second` on another worker when one takes it, as
/// [`rayon::join`] does, except that a caller done first spins (running any pool work that
/// comes) until `second` is done, instead of going to sleep.
///
/// Inside rayon's `join`, a thread that finishes its half first looks for work for a few
/// rounds of `sched_yield`, then sleeps; when the halves take a few tens of microseconds
/// (a one-row matrix product while decoding), the other worker finishing a little later
/// must then wake it, which costs as much as the half itself on a virtual machine.
///
/// ```
/// let (a, b) = resnorm::threads::pool().install(|| {
///     resnorm::threads::join_spinning(|| (0..10u32).sum::<u32>(), || 7)
/// });
/// assert_eq!((a, b), (45, 7));
/// ```
pub fn join_spinning<A: Send, B: Send>(
    first: impl FnOnce() -> A + Send,
    second: impl FnOnce() -> B + Send,
) -> (A, B) {
    let second_done = AtomicBool::new(false);
    rayon::join(
        || {
            let a = first();
            while !second_done.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
            a
        },
        || {
            let _done = Flag(&second_done);
            second()
        },
    )
}

/// Calls `f(i, chunk)` for the `i`-th `chunk_len`-long chunk of `data` (the last may be
/// shorter), the chunks shared out between the pool's threads by [`join_spinning`], in halves;
/// returns the error of the first failing chunk in chunk order, if any fails.
///
/// ```
/// let mut data = [0usize; 10];
/// resnorm::threads::for_each_chunk_spinning(&mut data, 4, &|i, chunk| {
///     chunk.fill(i);
///     Ok::<(), ()>(())
/// })
/// .unwrap();
/// assert_eq!(data, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
/// ```
pub fn for_each_chunk_spinning<T: Send, E: Send>(
    data: &mut [T],
    chunk_len: usize,
    f: &(impl Fn(usize, &mut [T]) -> std::result::Result<(), E> + Sync),
) -> std::result::Result<(), E> {
    fn split<T: Send, E: Send>(
        data: &mut [T],
        first: usize,
        chunk_len: usize,
        f: &(impl Fn(usize, &mut [T]) -> std::result::Result<(), E> + Sync),
    ) -> std::result::Result<(), E> {
        let chunks = data.len().div_ceil(chunk_len);
        if chunks <= 1 {
            return f(first, data);
        }
        let left_chunks = chunks.div_ceil(2);
        let (left, right) = data.split_at_mut(left_chunks * chunk_len);
        let (left, right) = join_spinning(
            || split(left, first, chunk_len, f),
            || split(right, first + left_chunks, chunk_len, f),
        );
        left.and(right)
    }
    assert!(chunk_len > 0, "chunks must hold at least one element");
    pool().install(|| split(data, 0, chunk_len, f))
}

/// Sets its flag when dropped, also when the code it guards panics.
struct Flag<'a>(&'a AtomicBool);

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Lets the spinning workers of [`busy`] go when dropped, also when `body` panics.
struct Release(Arc<AtomicBool>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
