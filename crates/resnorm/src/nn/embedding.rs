//! Token plus learned position embedding, GPT-2's input layer (`wte`, `wpe`).
//!
//! For token ids `tok [B, T]`, token table `wte [V, C]` and position table `wpe [T_max, C]`:
//!
//! ```text
//! forward   out[b, t] = wte[tok[b,t]] + wpe[t]            [B, T, C]
//! backward  dwte[tok[b,t]] += dout[b, t]                  for every (b, t)
//!           dwpe[t]        += Σ_b dout[b, t]
//! ```
//!
//! Backward needs only the token ids and `dout`. It runs on the calling thread, in `(b, t)`
//! order, so the gradients are bit-for-bit reproducible (a token seen twice gets its two rows
//! added in that order); it costs `B·T·C` additions, negligible next to any matrix product.
//! A token id `>= V` or a sequence longer than `T_max` is an error, raised before anything
//! is written.
//!
//! ```
//! use resnorm::nn::Embedding;
//! let mut emb = Embedding::new(3, 2, 2).unwrap(); // V = 3, T_max = 2, C = 2
//! emb.wte.value.copy_from_slice(&[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
//! emb.wpe.value.copy_from_slice(&[0.0, 10.0, 0.0, 20.0]);
//! let tokens = [2u32, 1];
//! let mut out = [0.0; 4];
//! emb.forward(&mut out, &tokens, 1, 2).unwrap();
//! assert_eq!(out, [2.0, 12.0, 1.0, 21.0]);
//! emb.backward(&[1.0, 1.0, 1.0, 1.0], &tokens, 1, 2).unwrap();
//! assert_eq!(emb.wte.grad[..], [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
//! assert!(emb.forward(&mut out, &[3, 1], 1, 2).is_err());
//! ```

use crate::nn::{Param, ParamKind};
use crate::rng::Rng;
use crate::{Error, Result};

/// Token table `wte [V, C]` and position table `wpe [T_max, C]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// `wte.weight`, `[vocab, channels]`.
    pub wte: Param,
    /// `wpe.weight`, `[context, channels]`.
    pub wpe: Param,
}

impl Embedding {
    /// Zero tables for `vocab` tokens, sequences up to `context` and width `channels`.
    pub fn new(vocab: usize, context: usize, channels: usize) -> Result<Self> {
        if vocab == 0 || context == 0 || channels == 0 {
            return Err(Error::invalid(
                "Embedding::new",
                format!(
                    "sizes must be positive, got vocab {vocab}, context {context}, \
                     channels {channels}"
                ),
            ));
        }
        Ok(Embedding {
            wte: Param::zeros("wte.weight", vec![vocab, channels], ParamKind::Embedding),
            wpe: Param::zeros("wpe.weight", vec![context, channels], ParamKind::Embedding),
        })
    }

    /// Draws both tables from `N(0, std²)` (GPT-2 uses `std = 0.02`).
    pub fn init(&mut self, rng: &mut Rng, std: f32) {
        rng.fill_normal(&mut self.wte.value, 0.0, std);
        rng.fill_normal(&mut self.wpe.value, 0.0, std);
    }

    /// Number of token ids `V`.
    pub fn vocab(&self) -> usize {
        self.wte.shape[0]
    }

    /// Longest sequence `T_max`.
    pub fn context(&self) -> usize {
        self.wpe.shape[0]
    }

    /// Embedding width `C`.
    pub fn channels(&self) -> usize {
        self.wte.shape[1]
    }

    /// Hands `wte`, then `wpe`, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.wte);
        f(&self.wpe);
    }

    /// Hands `wte`, then `wpe`, to `f` for writing.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.wte);
        f(&mut self.wpe);
    }

    /// `out [B, T, C]` from `tokens [B, T]`.
    pub fn forward(&self, out: &mut [f32], tokens: &[u32], batch: usize, seq: usize) -> Result<()> {
        self.check("Embedding::forward", out.len(), tokens, batch, seq)?;
        let c = self.channels();
        for (i, (row, &tok)) in out.chunks_exact_mut(c).zip(tokens).enumerate() {
            let token = &self.wte.value[tok as usize * c..][..c];
            let position = &self.wpe.value[(i % seq) * c..][..c];
            for ((o, &te), &pe) in row.iter_mut().zip(token).zip(position) {
                *o = te + pe;
            }
        }
        Ok(())
    }

    /// Adds `dout [B, T, C]` into the rows of `wte` and `wpe` that the forward read.
    pub fn backward(
        &mut self,
        dout: &[f32],
        tokens: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        self.check("Embedding::backward", dout.len(), tokens, batch, seq)?;
        let c = self.channels();
        for (i, (row, &tok)) in dout.chunks_exact(c).zip(tokens).enumerate() {
            let token = &mut self.wte.grad[tok as usize * c..][..c];
            token.iter_mut().zip(row).for_each(|(g, &d)| *g += d);
            let position = &mut self.wpe.grad[(i % seq) * c..][..c];
            position.iter_mut().zip(row).for_each(|(g, &d)| *g += d);
        }
        Ok(())
    }

    /// Sizes and token range, checked before any element is touched.
    fn check(
        &self,
        op: &'static str,
        activation_len: usize,
        tokens: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        if seq > self.context() {
            return Err(Error::invalid(
                op,
                format!(
                    "sequence of {seq} tokens is longer than the context {}",
                    self.context()
                ),
            ));
        }
        let rows = batch.checked_mul(seq);
        let want = rows.and_then(|r| r.checked_mul(self.channels()));
        if rows != Some(tokens.len()) || want != Some(activation_len) {
            return Err(Error::shape(
                op,
                format!(
                    "batch {batch} x seq {seq} needs {rows:?} tokens and {want:?} activations, \
                     got {} and {activation_len}",
                    tokens.len()
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
