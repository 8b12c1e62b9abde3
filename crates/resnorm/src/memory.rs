//! How much memory a model and a batch need, estimated from their sizes alone, before
//! anything is allocated.
//!
//! Sizes come from flags and files, and multiplied out they can exceed what a machine has,
//! or even 2^64. Every estimate is computed with checked arithmetic ([`product`], [`sum`]): an
//! overflow is an [`Error::Config`] naming the sizes, never a panic or an abort in the
//! allocator. A caller compares [`MemoryEstimate::total_bytes`] with the memory it has (the
//! command-line tool reads `/proc/meminfo`) before it builds anything.
//!
//! ```text
//! total = 4 bytes · (parameters · buffers_per_parameter + activation_floats)
//! ```
//! where a parameter has a value and a gradient, plus the optimizer's buffers when training
//! (AdamW's two moments, SGD's momentum), and the activations are every buffer that a forward
//! and backward pass over one batch keep, counted from the models' code as an upper bound.
//!
//! ```
//! use resnorm::memory::Workload;
//! use resnorm::models::gpt::GptConfig;
//! let small = GptConfig::default().memory_estimate(16, Workload::Train).unwrap();
//! assert!(small.total_bytes() < 1 << 30);
//! assert!(small.to_string().starts_with("about "));
//! let huge = GptConfig { width: 1 << 40, ..GptConfig::default() };
//! let error = huge.memory_estimate(16, Workload::Train).unwrap_err();
//! assert!(error.to_string().contains("overflow"));
//! ```

use std::fmt;

use crate::{Error, Result};

/// Bytes of one `f32`.
const FLOAT_BYTES: u64 = 4;

/// What the memory is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Forward passes only: values and gradients (allocated with the model), activations.
    Evaluate,
    /// Training: also the optimizer's buffers.
    Train,
}

/// The memory a model needs for one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trainable values of the model.
    pub parameters: u64,
    /// Bytes of the parameters, their gradients and (training) the optimizer's buffers.
    pub weight_bytes: u64,
    /// Bytes of the activations and scratch buffers of one batch.
    pub activation_bytes: u64,
}

impl MemoryEstimate {
    /// `parameters` with `floats_per_parameter` values each, and `activation_floats`; an
    /// error if the bytes overflow 64 bits.
    pub fn new(parameters: u64, floats_per_parameter: u64, activation_floats: u64) -> Result<Self> {
        let estimate = MemoryEstimate {
            parameters,
            weight_bytes: product(
                "weight bytes",
                &[parameters, floats_per_parameter, FLOAT_BYTES],
            )?,
            activation_bytes: product("activation bytes", &[activation_floats, FLOAT_BYTES])?,
        };
        sum(
            "total bytes",
            &[estimate.weight_bytes, estimate.activation_bytes],
        )?;
        Ok(estimate)
    }

    /// Weights and activations together (never overflows: checked by [`MemoryEstimate::new`]).
    pub fn total_bytes(&self) -> u64 {
        self.weight_bytes.saturating_add(self.activation_bytes)
    }
}

impl fmt::Display for MemoryEstimate {
    /// `about 2.1 GiB (weights 0.5 GiB, activations 1.6 GiB)`; `about 2.1 GiB` without weights.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight_bytes == 0 {
            return write!(f, "about {}", gib(self.total_bytes()));
        }
        write!(
            f,
            "about {} (weights {}, activations {})",
            gib(self.total_bytes()),
            gib(self.weight_bytes),
            gib(self.activation_bytes)
        )
    }
}

/// `bytes` in GiB with one decimal, or in MiB below 100 MiB.
pub fn gib(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mib = bytes as f64 / MIB;
    if mib < 100.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{:.1} GiB", mib / 1024.0)
    }
}

/// The product of `factors`, or an [`Error::Config`] saying that `what` overflows.
pub fn product(what: &str, factors: &[u64]) -> Result<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| overflow(what, factors))
}

/// The sum of `terms`, or an [`Error::Config`] saying that `what` overflows.
pub fn sum(what: &str, terms: &[u64]) -> Result<u64> {
    terms
        .iter()
        .try_fold(0u64, |acc, &t| acc.checked_add(t))
        .ok_or_else(|| overflow(what, terms))
}

fn overflow(what: &str, values: &[u64]) -> Error {
    Error::Config(format!(
        "computing the {what} overflows 64 bits (from the sizes {values:?}): far beyond any machine"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert_eq!(product("x", &[3, 5, 7]).unwrap(), 105);
        assert!(product("x", &[1 << 40, 1 << 40]).is_err());
        assert!(sum("x", &[u64::MAX, 1]).is_err());
        assert!(MemoryEstimate::new(u64::MAX / 4, 1, 1).is_err());
        let small = MemoryEstimate::new(1000, 4, 250).unwrap();
        assert_eq!((small.weight_bytes, small.total_bytes()), (16_000, 17_000));
        assert_eq!(gib(3 << 30), "3.0 GiB");
        assert_eq!(gib(5 << 20), "5.0 MiB");
    }
}
