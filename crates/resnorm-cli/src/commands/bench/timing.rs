//! Timing helpers for benchmarks: medians over repetitions, and the machine's copy bandwidth
//! measured on the same thread pool and at the same working-set size as the kernel it is
//! compared with.

use rayon::prelude::*;
use resnorm::AlignedVec;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// How long to keep repeating a measurement, and how often at least and at most.
pub struct Repetitions {
    pub min_time: Duration,
    pub min_reps: usize,
    pub max_reps: usize,
}

impl Default for Repetitions {
    fn default() -> Self {
        Repetitions {
            min_time: Duration::from_millis(300),
            min_reps: 5,
            max_reps: 200,
        }
    }
}

/// Median wall time of `f` in milliseconds, after two warm-up calls.
pub fn median_ms(reps: &Repetitions, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut times = Vec::with_capacity(reps.max_reps);
    let start = Instant::now();
    while times.len() < reps.min_reps
        || (start.elapsed() < reps.min_time && times.len() < reps.max_reps)
    {
        let t0 = Instant::now();
        f();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    median(&mut times)
}

/// Median of a nonempty list (sorts it).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        0.5 * (values[mid - 1] + values[mid])
    }
}

/// Copy bandwidth in GB/s (bytes read + bytes written per second) of a parallel
/// `dst.copy_from_slice(src)` over `bytes / 2` bytes each, split into one block per thread of
/// resnorm's pool, exactly as the kernels split their rows, between buffers that start on
/// cache lines as the kernels' do.
pub fn copy_gbps(reps: &Repetitions, bytes: usize) -> f64 {
    let len = (bytes / 8).max(1);
    let mut src = AlignedVec::zeros(len);
    src.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
    let mut dst = AlignedVec::zeros(len);
    let pool = resnorm::threads::pool();
    let block = len.div_ceil(pool.current_num_threads()).max(1);
    let ms = median_ms(reps, || {
        pool.install(|| {
            dst.par_chunks_mut(block)
                .zip(src.par_chunks(block))
                .for_each(|(d, s)| d.copy_from_slice(s));
        });
        black_box(&mut dst);
    });
    (2 * len * 4) as f64 / (ms * 1e-3) / 1e9
}

/// GB/s for `bytes` moved in `ms` milliseconds.
pub fn gbps(bytes: usize, ms: f64) -> f64 {
    bytes as f64 / (ms * 1e-3) / 1e9
}
