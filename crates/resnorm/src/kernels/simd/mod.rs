//! The instruction sets the kernels are compiled for, and the one run-time choice among them.
//!
//! Every hand-vectorized kernel exists in one copy per [`Level`]: AVX-512 (16 lanes in one
//! register, masked loads), AVX2 with FMA (two 256-bit registers; every x86-64 CPU since
//! 2013 and every AMD EPYC has it), and scalar (the target's baseline: SSE2 registers on
//! x86-64, plain arrays that the compiler vectorizes elsewhere). [`level`] picks the widest
//! one the CPU runs, once per process.
//!
//! The environment variable `RESNORM_SIMD` (`avx512`, `avx2` or `scalar`) caps that choice,
//! so that one machine can run, test and measure every path: the test suite runs under each
//! cap in CI. A cap above what the CPU has is lowered to what it has; any other value is
//! ignored with a warning on standard error (a kernel library has no better place to say it).
//!
//! The layer, one concept per file: the vector type every hand-vectorized kernel is written
//! over (`vector`, with its x86-64 registers in `x86`), the one run-time dispatch to a copy
//! compiled for the level (`dispatch!`; the 3x3 convolution alone keeps per-level wrappers of
//! its own, written by one macro in `conv3x3/kernels.rs`, as `dispatch!` made it slower: see
//! docs/benchmarks.md), the one split of rows into blocks per thread
//! (`blocks`), and the cache hints (`cache`).
//!
//! ```
//! use resnorm::kernels::simd::{level, Level};
//! // Whatever the CPU, the level is one of the three, and never above what it detects.
//! assert!(level() <= Level::detected());
//! assert_eq!("avx2".parse::<Level>(), Ok(Level::Avx2));
//! ```

use std::sync::OnceLock;

mod blocks;
mod cache;
mod dispatch;
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use blocks::run_blocks;
pub use blocks::{rows_per_block, ONE_BLOCK_PER_THREAD, ROW_KERNEL_BLOCKS_PER_THREAD};
pub(crate) use cache::{prefetch, prefetch_lines, streaming_fence, LINE_BYTES};
#[cfg(test)]
pub(crate) use dispatch::each_level;
pub(crate) use dispatch::{dispatch, Kernel};
#[cfg(not(target_arch = "x86_64"))]
pub(crate) use vector::Scalar;
pub(crate) use vector::{Vector, LANES};
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512, Scalar};

/// The name of the environment variable that caps [`level`].
pub const CAP_VARIABLE: &str = "RESNORM_SIMD";

/// An instruction set the kernels are compiled for, ordered from narrowest to widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain arrays, vectorized by the compiler for the target's baseline (SSE2 on x86-64).
    Scalar,
    /// AVX2 and FMA: 256-bit registers with fused multiply-add.
    Avx2,
    /// AVX-512F: 512-bit registers, masked loads and stores.
    Avx512,
}

impl Level {
    /// Every level, narrowest first.
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    /// The widest level this CPU runs, ignoring any cap.
    pub fn detected() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Level::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }

    /// The name `RESNORM_SIMD` takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown SIMD level {s:?}: expected avx512, avx2 or scalar"))
    }
}

/// The level every kernel runs at: the widest the CPU has, capped by `RESNORM_SIMD`. Read
/// once and kept, so that a process never mixes levels (results may differ in the last bit
/// between levels, never within one).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = Level::detected();
        match std::env::var(CAP_VARIABLE) {
            Err(_) => detected,
            Ok(cap) => match cap.parse::<Level>() {
                Ok(cap) => cap.min(detected),
                Err(why) => {
                    eprintln!("warning: {CAP_VARIABLE}: {why}; using {detected}");
                    detected
                }
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_from_narrow_to_wide() {
        for level in Level::ALL {
            assert_eq!(level.name().parse::<Level>(), Ok(level));
            assert_eq!(level.to_string().to_uppercase().parse::<Level>(), Ok(level));
        }
        assert!(Level::Scalar < Level::Avx2 && Level::Avx2 < Level::Avx512);
        assert!("sse".parse::<Level>().is_err());
    }

    #[test]
    fn the_level_in_force_honours_the_cap() {
        let cap = std::env::var(CAP_VARIABLE)
            .ok()
            .and_then(|cap| cap.parse::<Level>().ok());
        let want = cap.map_or(Level::detected(), |cap| cap.min(Level::detected()));
        assert_eq!(level(), want);
    }
}
