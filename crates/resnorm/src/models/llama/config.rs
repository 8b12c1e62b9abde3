//! The size and wiring of a Llama-family decoder: one struct covers Llama, Mistral, Qwen2,
//! Qwen3, Gemma 2 and OLMo 2, whose differences are named options.
//!
//! | family | `placement` | `qk_norm` | norm gain | MLP | other |
//! |---|---|---|---|---|---|
//! | Llama, Mistral | `pre-ln` | off | `w` | SwiGLU | |
//! | Qwen2 | `pre-ln` | off | `w` | SwiGLU | q/k/v biases |
//! | Qwen3 | `pre-ln` | per head | `w` | SwiGLU | |
//! | Gemma 2 | `peri-ln` | off | `1 + w` | GeGLU (tanh) | embeddings · √C, scale `s^-½`, final soft-cap |
//! | OLMo 2 | `reordered` | whole projection | `w` | SwiGLU | |
//!
//! ```
//! use resnorm::models::llama::{LlamaConfig, LlamaPlacement};
//! let config = LlamaConfig::tiny(LlamaPlacement::PeriLn);
//! config.validate().unwrap();
//! let bad = LlamaConfig { kv_heads: 3, ..config };
//! assert!(bad.validate().unwrap_err().to_string().contains("key/value heads"));
//! ```

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where each sublayer's norms sit around the residual connection `x' = x + Post(F(Pre(x)))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LlamaPlacement {
    /// `x' = x + F(N(x))`: Llama, Mistral, Qwen2, Qwen3.
    PreLn,
    /// `x' = x + N₂(F(N₁(x)))`, a norm before and after each sublayer: Gemma 2 and 3.
    PeriLn,
    /// `x' = x + N(F(x))`, the norm on the sublayer's output inside the residual: OLMo 2.
    Reordered,
}

impl LlamaPlacement {
    /// Every placement, in a fixed order.
    pub const ALL: [LlamaPlacement; 3] = [
        LlamaPlacement::PreLn,
        LlamaPlacement::PeriLn,
        LlamaPlacement::Reordered,
    ];

    /// Whether a unit normalizes its input `(Pre)` and its sublayer's output `(Post)`.
    pub fn norms(self) -> (bool, bool) {
        match self {
            LlamaPlacement::PreLn => (true, false),
            LlamaPlacement::PeriLn => (true, true),
            LlamaPlacement::Reordered => (false, true),
        }
    }
}

impl fmt::Display for LlamaPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LlamaPlacement::PreLn => "pre-ln",
            LlamaPlacement::PeriLn => "peri-ln",
            LlamaPlacement::Reordered => "reordered",
        })
    }
}

/// RMSNorm of the queries and keys after their projections, before the rotary embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QkNorm {
    /// None (Llama, Mistral, Qwen2, Gemma 2).
    Off,
    /// Over the whole projection, `H·d` (keys `H_kv·d`) features: OLMo 2.
    Whole,
    /// Over each head's `d` features, one gain shared by the heads: Qwen3.
    PerHead,
}

/// The gate's nonlinearity in the gated MLP `down(act(gate(x)) ⊙ up(x))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `x·σ(x)` (SwiGLU): Llama, Mistral, Qwen, OLMo 2.
    Silu,
    /// GELU, tanh form (GeGLU): Gemma 2.
    GeluTanh,
}

/// Hyperparameters of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Blocks `L` (each an attention unit then an MLP unit).
    pub layers: usize,
    /// Width `C` of the residual stream.
    pub width: usize,
    /// Query heads `H`.
    pub heads: usize,
    /// Key/value heads; divides `heads`.
    pub kv_heads: usize,
    /// Features per head `d` (even: the rotary embedding turns pairs).
    pub head_dim: usize,
    /// Hidden width of the MLP.
    pub mlp_width: usize,
    /// Vocabulary size `V`.
    pub vocab: usize,
    /// Longest sequence the model is used on.
    pub context: usize,
    /// RMSNorm's epsilon, for every norm.
    pub eps: f32,
    /// Base of the rotary embedding's frequencies.
    pub rope_theta: f64,
    /// Where the norms sit.
    pub placement: LlamaPlacement,
    /// Norms of the queries and keys.
    pub qk_norm: QkNorm,
    /// Added to every norm's stored weight to give its gain: 0, or 1 for Gemma (`1 + w`).
    pub norm_offset: f32,
    /// The MLP gate's nonlinearity.
    pub activation: Activation,
    /// Biases on the query, key and value projections (Qwen2, Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the output projection (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP's projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// The head is the token embedding (`tie_word_embeddings`).
    pub tied: bool,
    /// Multiply the embeddings by `√C` (Gemma).
    pub embed_scale: bool,
    /// Multiplies the attention scores: `1/√d`, or Gemma 2's `query_pre_attn_scalar^-½`.
    pub attn_scale: f32,
    /// `logits = cap · tanh(logits / cap)` (Gemma 2's `final_logit_softcapping`).
    pub final_softcap: Option<f32>,
}

impl LlamaConfig {
    /// A tiny model with the options of the family `placement` stands for (Llama, Gemma 2,
    /// OLMo 2): for examples and tests.
    pub fn tiny(placement: LlamaPlacement) -> Self {
        let gemma = placement == LlamaPlacement::PeriLn;
        LlamaConfig {
            layers: 2,
            width: 8,
            heads: 4,
            kv_heads: 2,
            head_dim: 4,
            mlp_width: 12,
            vocab: 11,
            context: 8,
            eps: 1e-6,
            rope_theta: 10_000.0,
            placement,
            qk_norm: match placement {
                LlamaPlacement::Reordered => QkNorm::Whole,
                _ => QkNorm::Off,
            },
            norm_offset: if gemma { 1.0 } else { 0.0 },
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            tied: gemma,
            embed_scale: gemma,
            attn_scale: 0.5,
            final_softcap: gemma.then_some(30.0),
        }
    }

    /// Width of the query projection, `H·d`.
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of the key (and of the value) projection, `H_kv·d`.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Checks that the model can be built.
    pub fn validate(&self) -> Result<()> {
        let fail = |detail: String| Err(Error::Config(detail));
        let sizes = [
            ("layers", self.layers),
            ("width", self.width),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("mlp_width", self.mlp_width),
            ("vocab", self.vocab),
            ("context", self.context),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return fail(format!("{name} must be at least 1"));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return fail(format!(
                "{} key/value heads must divide the {} heads",
                self.kv_heads, self.heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return fail(format!(
                "head_dim {} must be even (the rotary embedding turns pairs)",
                self.head_dim
            ));
        }
        if u32::try_from(self.vocab).is_err() {
            return fail(format!("vocabulary {} does not fit token ids", self.vocab));
        }
        let positive = [
            ("eps", self.eps as f64),
            ("rope_theta", self.rope_theta),
            ("attn_scale", self.attn_scale as f64),
            ("final_softcap", self.final_softcap.unwrap_or(1.0) as f64),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
            return fail(format!("{name} {v} must be finite and positive"));
        }
        if !self.norm_offset.is_finite() {
            return fail(format!("norm_offset {} must be finite", self.norm_offset));
        }
        Ok(())
    }
}
