//! The size and wiring of an encoder-decoder Transformer, and DeepNet's encoder-decoder
//! constants.
//!
//! With `N` encoder and `M` decoder layers, DeepNorm (Wang et al. 2022, encoder-decoder
//! rule) scales the skip path by `α` and the value, output and MLP weights at
//! initialization by `β`:
//!
//! ```text
//! encoder  α = 0.81 (N⁴M)^(1/16)    β = 0.87 (N⁴M)^(-1/16)
//! decoder  α = (3M)^(1/4)           β = (12M)^(-1/4)
//! ```
//!
//! ```
//! use resnorm::models::seq2seq::Seq2SeqConfig;
//! let config = Seq2SeqConfig { encoder_layers: 6, decoder_layers: 6, ..Seq2SeqConfig::default() };
//! config.validate().unwrap();
//! assert!((config.encoder_alpha() - 0.81 * (6f32.powi(5)).powf(1.0 / 16.0)).abs() < 1e-6);
//! assert!((config.decoder_beta() - 72f32.powf(-0.25)).abs() < 1e-6);
//! assert!(Seq2SeqConfig { width: 30, heads: 4, ..config }.validate().is_err());
//! ```

use crate::kernels::NormKind;
use crate::models::gpt::{Placement, MAX_CONTEXT, MAX_LAYERS, MAX_VOCAB};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Hyperparameters of an encoder-decoder Transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seq2SeqConfig {
    /// Size `V` of the one vocabulary shared by source and target.
    pub vocab: usize,
    /// Width `C` of both residual streams.
    pub width: usize,
    /// Attention heads of every attention sublayer.
    pub heads: usize,
    /// Encoder layers `N` (self-attention and MLP each).
    pub encoder_layers: usize,
    /// Decoder layers `M` (self-attention, cross-attention and MLP each).
    pub decoder_layers: usize,
    /// Longest source or target sequence (the size of the position table).
    pub max_len: usize,
    /// Where residual connections and norms sit, in both stacks.
    pub placement: Placement,
    /// LayerNorm or RMSNorm for every norm.
    pub norm: NormKind,
    /// Added to the variance in every norm.
    pub eps: f32,
}

impl Default for Seq2SeqConfig {
    /// Vaswani et al.'s base model's shape at a width that trains on two cores.
    fn default() -> Self {
        Seq2SeqConfig {
            vocab: 8000,
            width: 256,
            heads: 4,
            encoder_layers: 3,
            decoder_layers: 3,
            max_len: 256,
            placement: Placement::PostLn,
            norm: NormKind::Layer,
            eps: 1e-5,
        }
    }
}

impl Seq2SeqConfig {
    /// Checks every size before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let fail = |detail: String| Err(Error::Config(format!("seq2seq: {detail}")));
        if self.width == 0 || self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return fail(format!(
                "width {} must be positive and divisible by the {} heads",
                self.width, self.heads
            ));
        }
        if self.vocab == 0 || self.vocab > MAX_VOCAB {
            return fail(format!("vocab {} must be in 1..={MAX_VOCAB}", self.vocab));
        }
        for (what, layers) in [
            ("encoder", self.encoder_layers),
            ("decoder", self.decoder_layers),
        ] {
            if layers == 0 || layers > MAX_LAYERS {
                return fail(format!("{layers} {what} layers, 1..={MAX_LAYERS} needed"));
            }
        }
        if self.max_len == 0 || self.max_len > MAX_CONTEXT {
            return fail(format!(
                "max_len {} must be in 1..={MAX_CONTEXT}",
                self.max_len
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return fail(format!("eps {} must be finite and positive", self.eps));
        }
        Ok(())
    }

    fn n4m(&self) -> f32 {
        (self.encoder_layers as f32).powi(4) * self.decoder_layers as f32
    }

    /// DeepNorm's encoder `α = 0.81 (N⁴M)^(1/16)`.
    pub fn encoder_alpha(&self) -> f32 {
        0.81 * self.n4m().powf(1.0 / 16.0)
    }

    /// DeepNorm's encoder `β = 0.87 (N⁴M)^(-1/16)`.
    pub fn encoder_beta(&self) -> f32 {
        0.87 * self.n4m().powf(-1.0 / 16.0)
    }

    /// DeepNorm's decoder `α = (3M)^(1/4)`.
    pub fn decoder_alpha(&self) -> f32 {
        (3.0 * self.decoder_layers as f32).powf(0.25)
    }

    /// DeepNorm's decoder `β = (12M)^(-1/4)`.
    pub fn decoder_beta(&self) -> f32 {
        (12.0 * self.decoder_layers as f32).powf(-0.25)
    }
}
