//! The encoder body of a sentence classifier: tokens, embedded with sinusoidal positions, run
//! through the bidirectional Transformer encoder of `models/seq2seq`, optionally behind a
//! prepended [CLS] token.
//!
//! ```text
//! tokens'  = [CLS] ++ tokens  (with a [CLS] token, id V: one more row of E; lengths + 1)
//! x₀       = √C·E[tokens'] + P                     P sinusoidal (seq2seq's TokenEmbedding)
//! h        = Encoder(x₀; keys < len_b)             every placement × LayerNorm/RMSNorm
//! backward: dx₀ = Encoder'ᵀ dh;  dE[tokens'[b, t]] += √C·dx₀[b, t]
//! training: x₀, every unit's F(h), every MLP activation and every attention's
//!           probabilities dropped out at one rate (EncoderBody::forward_dropped, the
//!           seq2seq encoder's masks)
//! ```
//! Positions are the seq2seq model's fixed sinusoids rather than a learned table: they have
//! no parameters to fit on a few thousand sentences and `torch.nn.TransformerEncoder`'s
//! twin reproduces them exactly. DeepNorm takes DeepNet's encoder-only constants, which are
//! the GPT's (`α = (2N)^¼`, `β = (8N)^(-¼)`), not the encoder-decoder ones.
//!
//! ```
//! use resnorm::classify::EncoderBody;
//! use resnorm::classify::EncoderConfig;
//! let config = EncoderConfig { vocab: 10, layers: 1, heads: 2, width: 8, context: 4, cls: true, ..EncoderConfig::default() };
//! let mut body = EncoderBody::new(config, 1).unwrap();
//! let h = body.forward(&[1, 2, 3, 0, 4, 5, 0, 0], &[3, 2], 2).unwrap();
//! assert_eq!(h.len(), 2 * 5 * 8); // the [CLS] token makes 5 positions per row
//! let dx = vec![0.1; h.len()];
//! body.backward(&dx).unwrap();
//! ```

use serde::{Deserialize, Serialize};

use crate::kernels::NormKind;
use crate::models::gpt::{GptConfig, Placement};
use crate::models::seq2seq::init::init_stack;
use crate::models::seq2seq::{Dropout, Encoder, Seq2SeqConfig, TokenEmbedding};
use crate::nn::Param;
use crate::rng::Rng;
use crate::AlignedVec;
use crate::{Error, Result};

/// The size and wiring of an encoder body (`config.json` of its checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// The tokenizer's ids `V` (the [CLS] token, when present, is id `V`).
    pub vocab: usize,
    /// Encoder layers `N`.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Width `C` (even: the sinusoids come in pairs).
    pub width: usize,
    /// Tokens per sentence, not counting the [CLS] token.
    pub context: usize,
    /// Residual/normalization wiring.
    pub placement: Placement,
    /// LayerNorm or RMSNorm.
    pub norm: NormKind,
    /// Added to the variance in every norm.
    pub eps: f32,
    /// Prepend a [CLS] token.
    pub cls: bool,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            vocab: 256,
            layers: 2,
            heads: 4,
            width: 64,
            context: 64,
            placement: Placement::PreLn,
            norm: NormKind::Layer,
            eps: 1e-5,
            cls: false,
        }
    }
}

impl EncoderConfig {
    /// Positions in front of the sentence: 1 with a [CLS] token, else 0.
    pub fn prefix(&self) -> usize {
        usize::from(self.cls)
    }

    /// The encoder-decoder configuration whose encoder this body runs (its decoder unused).
    fn seq2seq(&self) -> Seq2SeqConfig {
        Seq2SeqConfig {
            vocab: self.vocab + self.prefix(),
            width: self.width,
            heads: self.heads,
            encoder_layers: self.layers,
            decoder_layers: 1,
            max_len: self.context + self.prefix(),
            placement: self.placement,
            norm: self.norm,
            eps: self.eps,
        }
    }

    /// Checks every size before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        if !self.width.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "encoder: width {} must be even (the sinusoidal positions come in pairs)",
                self.width
            )));
        }
        self.seq2seq().validate()
    }

    /// The parameters of the body: each layer has exactly a GPT block's, and the embedding
    /// `(V + prefix)·C` with no position table.
    pub fn num_params(&self) -> Result<u64> {
        GptConfig {
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            context: 0,
            vocab: self.vocab + self.prefix(),
            placement: self.placement,
            norm: self.norm,
            ..GptConfig::default()
        }
        .num_params()
    }
}

/// Embedding and encoder, with the buffers of the last batch.
#[derive(Clone, Debug)]
pub struct EncoderBody {
    config: EncoderConfig,
    /// `embed.weight [V (+1), C]` and the sinusoids.
    pub embed: TokenEmbedding,
    /// `encoder.{i}.*`, `encoder.ln_f`.
    pub encoder: Encoder,
    tokens: Vec<u32>,
    lengths: Vec<usize>,
    x: AlignedVec,
}

impl EncoderBody {
    /// A body of `config`, weights drawn from `seed`: `embed.weight` normal(0, C^(-½)) so
    /// that `√C·E` has unit scale, linear weights Xavier-normal (seq2seq's initialization).
    pub fn new(config: EncoderConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let s2s = config.seq2seq();
        let mut embed = TokenEmbedding::new(s2s.vocab, s2s.width, s2s.max_len)?;
        let mut encoder = Encoder::new(&s2s)?;
        let alpha = config.placement.residual_scale(config.layers);
        encoder.stack.units = std::mem::take(&mut encoder.stack.units)
            .into_iter()
            .map(|u| u.with_residual_scale(alpha))
            .collect();
        let mut rng = Rng::new(seed);
        rng.fill_normal(
            &mut embed.weight.value,
            0.0,
            (config.width as f32).powf(-0.5),
        );
        let beta = config
            .placement
            .deep_norm_beta(config.layers)
            .unwrap_or(1.0);
        init_stack(&mut encoder.stack, &mut rng, beta);
        Ok(EncoderBody {
            config,
            embed,
            encoder,
            tokens: Vec::new(),
            lengths: Vec::new(),
            x: AlignedVec::zeros(0),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The hidden states `[B, prefix + seq, C]` of right-padded `tokens` (`batch` rows of
    /// `seq`) with `lengths` real tokens each.
    pub fn forward(&mut self, tokens: &[u32], lengths: &[usize], batch: usize) -> Result<&[f32]> {
        self.forward_dropped(tokens, lengths, batch, None)
    }

    /// [`EncoderBody::forward`] in training: with `Some(dropout)`, the embedding, every
    /// unit's output, every MLP activation and every attention's probabilities are dropped
    /// out as in the encoder of `models/seq2seq` (`torch.nn.TransformerEncoderLayer`'s
    /// places); the next
    /// [`EncoderBody::backward`] regenerates the same masks.
    pub fn forward_dropped(
        &mut self,
        tokens: &[u32],
        lengths: &[usize],
        batch: usize,
        dropout: Option<Dropout>,
    ) -> Result<&[f32]> {
        const OP: &str = "EncoderBody::forward";
        if batch == 0 || lengths.len() != batch || !tokens.len().is_multiple_of(batch) {
            return Err(Error::shape(
                OP,
                format!(
                    "{} tokens, {} lengths for {batch} rows",
                    tokens.len(),
                    lengths.len()
                ),
            ));
        }
        let (prefix, width) = (self.config.prefix(), self.config.width);
        let seq = tokens.len() / batch + prefix;
        self.tokens.clear();
        for row in tokens.chunks_exact(seq - prefix) {
            if prefix == 1 {
                self.tokens.push(self.config.vocab as u32);
            }
            self.tokens.extend_from_slice(row);
        }
        self.lengths.clear();
        self.lengths.extend(lengths.iter().map(|&n| n + prefix));
        if self.x.len() != self.tokens.len() * width {
            self.x = AlignedVec::zeros(self.tokens.len() * width);
        }
        self.embed.forward(&mut self.x, &self.tokens, seq)?;
        self.encoder
            .forward_dropped(&self.x, &self.lengths, batch, dropout)
    }

    /// Backpropagates `d_hidden` (`[B, prefix + seq, C]`) of the last forward into every
    /// parameter's gradient.
    pub fn backward(&mut self, d_hidden: &[f32]) -> Result<()> {
        let seq = self.tokens.len() / self.lengths.len().max(1);
        let dx = self.encoder.backward(d_hidden)?;
        self.embed.backward(dx, &self.tokens, seq)
    }

    /// Hands every parameter to `f`: `embed.weight`, the layers, `encoder.ln_f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.embed.weight);
        self.encoder.visit_params(f);
    }

    /// Every parameter, in [`EncoderBody::visit_params`] order.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut params = vec![&mut self.embed.weight];
        self.encoder.stack.params_mut(&mut params);
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_params_counts_every_parameter() {
        for placement in Placement::ALL {
            for (norm, cls) in [(NormKind::Layer, true), (NormKind::Rms, false)] {
                let config = EncoderConfig {
                    vocab: 7,
                    layers: 2,
                    heads: 2,
                    width: 8,
                    context: 5,
                    placement,
                    norm,
                    cls,
                    ..EncoderConfig::default()
                };
                let body = EncoderBody::new(config.clone(), 0).unwrap();
                let mut n = 0u64;
                body.visit_params(&mut |p| n += p.len() as u64);
                assert_eq!(n, config.num_params().unwrap(), "{placement} {norm}");
            }
        }
    }

    #[test]
    fn padding_does_not_reach_the_real_positions() {
        let config = EncoderConfig {
            vocab: 9,
            layers: 1,
            heads: 2,
            width: 8,
            context: 4,
            cls: true,
            ..EncoderConfig::default()
        };
        let mut body = EncoderBody::new(config, 3).unwrap();
        let a = body.forward(&[1, 2, 0, 0], &[2], 1).unwrap()[..3 * 8].to_vec();
        let b = body.forward(&[1, 2, 7, 5], &[2], 1).unwrap()[..3 * 8].to_vec();
        assert_eq!(a, b);
    }
}
