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
use crate::memory::{product, sum, MemoryEstimate, Workload};
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
        self.memory_estimate(1, Workload::Evaluate).map(|_| ())
    }

    /// Exactly the number of parameters [`super::Gpt::new`] allocates, or an error when it
    /// overflows 64 bits.
    pub fn num_params(&self) -> Result<u64> {
        let [l, c, t, v] = [self.layers, self.width, self.context, self.vocab].map(|x| x as u64);
        let what = "model's parameters";
        let norm = match self.norm {
            NormKind::Layer => product(what, &[2, c])?,
            NormKind::Rms => c,
        };
        let norms_per_unit = match self.placement {
            Placement::Sandwich => 2,
            Placement::ReZero | Placement::NoNorm => 0,
            _ => 1,
        };
        let gates_per_unit = u64::from(self.placement == Placement::ReZero);
        // c_attn 3C² + 3C, attn.c_proj C² + C, c_fc 4C² + 4C, mlp.c_proj 4C² + C.
        let matrices = product(what, &[12, c, c])?;
        let per_layer = sum(
            what,
            &[
                matrices,
                product(what, &[9, c])?,
                product(what, &[2, norms_per_unit, norm])?,
                2 * gates_per_unit,
            ],
        )?;
        let final_norm = if self.placement.has_final_norm() {
            norm
        } else {
            0
        };
        sum(
            what,
            &[
                product(what, &[l, per_layer])?,
                product(what, &[sum(what, &[v, t])?, c])?,
                final_norm,
            ],
        )
    }

    /// The memory a forward and backward pass over `batch` windows of `context` tokens
    /// need, with AdamW's two moments per parameter when training. Every buffer is counted
    /// (an upper bound: norms and dual streams as if present); see [`crate::memory`].
    pub fn memory_estimate(&self, batch: usize, workload: Workload) -> Result<MemoryEstimate> {
        let [l, h, c, t, v, b] = [
            self.layers,
            self.heads,
            self.width,
            self.context,
            self.vocab,
            batch,
        ]
        .map(|x| x as u64);
        let what = "activation sizes";
        // Per token: 2L+1 streams (twice for resi-dual); per layer the units' inputs, outputs
        // and norm statistics (6C + 8), attention's qkv, y and scores (4C + H·T), the MLP's
        // two 4C buffers; the logits; the shared gradient scratch and the head (21C + 8).
        let streams = product(what, &[2, sum(what, &[product(what, &[2, l])?, 1])?, c])?;
        let per_layer = sum(
            what,
            &[product(what, &[18, c])?, product(what, &[h, t])?, 8],
        )?;
        let per_token = sum(
            what,
            &[
                streams,
                product(what, &[l, per_layer])?,
                v,
                product(what, &[21, c])?,
                8,
            ],
        )?;
        let activations = product(what, &[b, t, per_token])?;
        let per_parameter = match workload {
            Workload::Evaluate => 2,
            Workload::Train => 4,
        };
        MemoryEstimate::new(self.num_params()?, per_parameter, activations)
    }
}
