//! The one token embedding of source and target, scaled by `√C` as Vaswani et al. do, plus
//! fixed sinusoidal positions; the same matrix is the output projection (see `mod.rs`).
//!
//! ```text
//! x[b, t] = √C · E[token[b, t]] + P[t]
//! P[t, 2i] = sin(t / 10000^(2i/C)),   P[t, 2i+1] = cos(t / 10000^(2i/C))
//! backward: dE[token[b, t]] += √C · dx[b, t]        (P has no parameters)
//! ```
//!
//! ```
//! use resnorm::models::seq2seq::TokenEmbedding;
//! let mut embed = TokenEmbedding::new(5, 4, 3).unwrap(); // V = 5, C = 4, 3 positions
//! embed.weight.value.fill(0.5);
//! let mut x = vec![0.0; 2 * 4];
//! embed.forward(&mut x, &[1, 2], 2).unwrap();
//! assert_eq!(&x[..4], &[1.0, 2.0, 1.0, 2.0]); // √4 · 0.5 + (sin 0, cos 0, sin 0, cos 0)
//! assert!(embed.forward(&mut x, &[1, 5], 2).is_err()); // token 5 is past the vocabulary
//! ```

use crate::nn::{Param, ParamKind};
use crate::AlignedVec;
use crate::{Error, Result};

/// `embed.weight [V, C]` and the sinusoidal position table `[max_len, C]`.
#[derive(Clone, Debug)]
pub struct TokenEmbedding {
    /// `embed.weight`, `[V, C]`.
    pub weight: Param,
    positions: AlignedVec,
}

impl TokenEmbedding {
    /// A zeroed embedding of `vocab` tokens of width `width`, positions up to `max_len`.
    pub fn new(vocab: usize, width: usize, max_len: usize) -> Result<Self> {
        if vocab == 0 || width == 0 || !width.is_multiple_of(2) {
            return Err(Error::invalid(
                "TokenEmbedding::new",
                format!("vocab {vocab} must be positive and width {width} positive and even"),
            ));
        }
        let mut positions = AlignedVec::zeros(max_len * width);
        for (t, row) in positions.chunks_exact_mut(width).enumerate() {
            for (i, pair) in row.chunks_exact_mut(2).enumerate() {
                let angle = t as f64 * (-(10000f64.ln()) * (2 * i) as f64 / width as f64).exp();
                pair[0] = angle.sin() as f32;
                pair[1] = angle.cos() as f32;
            }
        }
        Ok(TokenEmbedding {
            weight: Param::zeros("embed.weight", vec![vocab, width], ParamKind::Embedding),
            positions,
        })
    }

    /// Width `C`.
    pub fn width(&self) -> usize {
        self.weight.shape[1]
    }

    /// Tokens `V`.
    pub fn vocab(&self) -> usize {
        self.weight.shape[0]
    }

    /// The longest sequence the position table covers.
    pub fn max_len(&self) -> usize {
        self.positions.len() / self.width()
    }

    fn scale(&self) -> f32 {
        (self.width() as f32).sqrt()
    }

    /// `out [rows, C]` for `tokens` (`rows` of them, sequences of `seq` positions each).
    pub fn forward(&self, out: &mut [f32], tokens: &[u32], seq: usize) -> Result<()> {
        self.check("TokenEmbedding::forward", out.len(), tokens, seq)?;
        let (c, scale) = (self.width(), self.scale());
        for (i, (row, &tok)) in out.chunks_exact_mut(c).zip(tokens).enumerate() {
            let token = &self.weight.value[tok as usize * c..][..c];
            let position = &self.positions[(i % seq) * c..][..c];
            for ((o, &e), &p) in row.iter_mut().zip(token).zip(position) {
                *o = scale * e + p;
            }
        }
        Ok(())
    }

    /// The position `t` row of one token, for decoding one position at a time.
    pub fn forward_at(&self, out: &mut [f32], tokens: &[u32], position: usize) -> Result<()> {
        let c = self.width();
        self.check("TokenEmbedding::forward_at", out.len(), tokens, 1)?;
        if position >= self.max_len() {
            return Err(Error::invalid(
                "TokenEmbedding::forward_at",
                format!(
                    "position {position} is past the {} positions",
                    self.max_len()
                ),
            ));
        }
        let (scale, p) = (self.scale(), &self.positions[position * c..][..c]);
        for (row, &tok) in out.chunks_exact_mut(c).zip(tokens) {
            let token = &self.weight.value[tok as usize * c..][..c];
            for ((o, &e), &p) in row.iter_mut().zip(token).zip(p) {
                *o = scale * e + p;
            }
        }
        Ok(())
    }

    /// Adds `√C · dout` into the rows of `embed.weight` that the forward read.
    pub fn backward(&mut self, dout: &[f32], tokens: &[u32], seq: usize) -> Result<()> {
        self.check("TokenEmbedding::backward", dout.len(), tokens, seq)?;
        let (c, scale) = (self.width(), self.scale());
        for (row, &tok) in dout.chunks_exact(c).zip(tokens) {
            let grad = &mut self.weight.grad[tok as usize * c..][..c];
            grad.iter_mut().zip(row).for_each(|(g, &d)| *g += scale * d);
        }
        Ok(())
    }

    fn check(&self, op: &'static str, len: usize, tokens: &[u32], seq: usize) -> Result<()> {
        if seq == 0 || seq > self.max_len() || !tokens.len().is_multiple_of(seq) {
            return Err(Error::invalid(
                op,
                format!(
                    "{} tokens in sequences of {seq} (1..={} positions)",
                    tokens.len(),
                    self.max_len()
                ),
            ));
        }
        if len != tokens.len() * self.width() {
            return Err(Error::shape(
                op,
                format!(
                    "{len} activations for {} tokens of width {}",
                    tokens.len(),
                    self.width()
                ),
            ));
        }
        if let Some((i, &t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.vocab())
        {
            return Err(Error::invalid(
                op,
                format!(
                    "token {t} at position {i} is not below vocab {}",
                    self.vocab()
                ),
            ));
        }
        Ok(())
    }
}
