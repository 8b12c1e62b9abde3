//! The size and wiring of a GPT model, as stored next to every checkpoint.
//!
//! ```
//! use resnorm::models::gpt::{GptConfig, Placement};
//! let config = GptConfig { layers: 2, heads: 2, width: 8, context: 5, vocab: 11, ..GptConfig::default() };
//! config.validate().unwrap();
//! assert_eq!(config.placement, Placement::PreLn);
//! let bad = GptConfig { width: 9, ..config.clone() };
//! assert!(bad.validate().unwrap_err().to_string().contains("divisible"));
//! ```

use super::Placement;
use crate::kernels::NormKind;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Largest context window accepted (attention memory grows with its square).
pub const MAX_CONTEXT: usize = 1 << 16;
/// Largest vocabulary accepted (token ids are `u32`; GPT-2 has 50,257).
pub const MAX_VOCAB: usize = 1 << 20;
/// Largest number of blocks accepted.
pub const MAX_LAYERS: usize = 4096;

/// Hyperparameters of a decoder-only Transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Number of blocks `L`.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Width `C` of the residual stream.
    pub width: usize,
    /// Longest sequence `T` (the size of the position table).
    pub context: usize,
    /// Vocabulary size `V`.
    pub vocab: usize,
    /// Where residual connections and norms sit.
    pub placement: Placement,
    /// LayerNorm or RMSNorm, for every norm of the model.
    pub norm: NormKind,
    /// The norms' epsilon.
    pub eps: f32,
    /// GPT-2's residual scaling: the projections that write into the residual stream start
    /// at `N(0, 0.02/√(2L))` instead of `N(0, 0.02)` (see [`super::init`]); deep-norm has its
    /// own rule and ignores it. Configs written before it existed read as `true`.
    #[serde(default = "residual_scaling_default")]
    pub residual_scaling: bool,
}

/// The value of [`GptConfig::residual_scaling`] missing from a config: GPT-2's.
fn residual_scaling_default() -> bool {
    true
}

impl Default for GptConfig {
    /// GPT-2 small's wiring at a size that trains in minutes on two cores.
    fn default() -> Self {
        GptConfig {
            layers: 4,
            heads: 4,
            width: 128,
            context: 64,
            vocab: 256,
            placement: Placement::PreLn,
            norm: NormKind::Layer,
            eps: 1e-5,
            residual_scaling: true,
        }
    }
}

impl GptConfig {
    /// Checks that the model can be built; the error says which value is wrong and why.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return fail(format!(
                "layers must be in 1..={MAX_LAYERS}, got {}",
                self.layers
            ));
        }
        if self.heads == 0 || self.width == 0 {
            return fail(format!(
                "heads and width must be nonzero, got {} and {}",
                self.heads, self.width
            ));
        }
        if !self.width.is_multiple_of(self.heads) {
            return fail(format!(
                "width {} must be divisible by heads {}",
                self.width, self.heads
            ));
        }
        if self.context == 0 || self.context > MAX_CONTEXT {
            return fail(format!(
                "context must be in 1..={MAX_CONTEXT}, got {}",
                self.context
            ));
        }
        if self.vocab == 0 || self.vocab > MAX_VOCAB {
            return fail(format!(
                "vocab must be in 1..={MAX_VOCAB}, got {}",
                self.vocab
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return fail(format!("eps must be finite and positive, got {}", self.eps));
        }
        Ok(())
    }
}
