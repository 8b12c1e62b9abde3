//! Dropout of a training step of the encoder-decoder, as `torch.nn.Transformer` and fairseq
//! place it:
//!
//! ```text
//! x₀ = drop_r(embedding)                          each stack's input (stack.rs)
//! F(h) = drop_r(sublayer(h))                      every unit's output, before it joins the stream
//! MLP: drop_a(GELU(h·W_fc + b_fc))·W_proj + b_proj  activation dropout (sublayer.rs)
//! attention: drop_t(softmax(q·kᵀ/√d))·v           attention dropout, every self- and
//!                                                 cross-attention (kernels::attention)
//! ```
//! `drop_p` is inverted dropout ([`crate::kernels::dropout`]): its mask is a pure function of
//! the step's seed, the site (stack, unit, kind) and the element's index, so the backward
//! regenerates it, and a resumed run draws the same masks. Evaluation and decoding run with
//! no [`Dropout`] at all. Attention dropout (`drop_t`, torch's `MultiheadAttention(dropout=)`,
//! fairseq's `--attention-dropout`) is 0 unless [`Dropout::with_attention`] sets it.
//!
//! ```
//! use resnorm::models::seq2seq::Dropout;
//! let dropout = Dropout::new(0.3, 0.1, 17).unwrap().with_attention(0.1).unwrap();
//! assert_eq!(dropout.for_step(5), dropout.for_step(5));
//! assert_ne!(dropout.for_step(5).seed(), dropout.for_step(6).seed());
//! assert!(Dropout::new(1.0, 0.0, 1).is_err());
//! assert!(dropout.with_attention(1.0).is_err());
//! ```

use crate::kernels::dropout::{hash, DropoutMask};
use crate::Result;

/// The encoder's number in the sites of the masks.
pub(crate) const ENCODER_STACK: u64 = 0;
/// The decoder's.
pub(crate) const DECODER_STACK: u64 = 1;

/// The dropout rates of one forward and the seed its masks are drawn from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Residual dropout: each unit's output and each stack's input.
    residual: f32,
    /// Activation dropout: after the MLP's GELU.
    activation: f32,
    /// Attention dropout: on every attention's probabilities.
    attention: f32,
    /// The seed of every mask of this forward.
    seed: u64,
}

/// The masks of one residual unit: its output's, its MLP activation's and its attention
/// probabilities'.
#[derive(Clone, Copy, Debug)]
pub struct UnitMasks {
    /// On `F(h)`.
    pub output: DropoutMask,
    /// On the MLP's `GELU(u)` (unused by attention sublayers).
    pub activation: DropoutMask,
    /// On the attention's probabilities (unused by MLPs).
    pub attention: DropoutMask,
}

/// Which tensor of a stack a mask drops from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Site {
    /// The stack's input `x₀`.
    Input,
    /// Unit `k`'s output `F(h)`.
    Output(usize),
    /// Unit `k`'s MLP activation.
    Activation(usize),
    /// Unit `k`'s attention probabilities.
    Attention(usize),
}

impl Dropout {
    /// Rates in `[0, 1)` and a seed; no attention dropout.
    pub fn new(residual: f32, activation: f32, seed: u64) -> Result<Self> {
        DropoutMask::new(residual, seed)?;
        DropoutMask::new(activation, seed)?;
        Ok(Dropout {
            residual,
            activation,
            attention: 0.0,
            seed,
        })
    }

    /// The same with attention dropout `attention` in `[0, 1)`.
    pub fn with_attention(self, attention: f32) -> Result<Self> {
        DropoutMask::new(attention, self.seed)?;
        Ok(Dropout { attention, ..self })
    }

    /// The same rates with the seed of training step `step` of a run seeded by
    /// `self.seed`: every step draws new masks, and a resumed run the same ones.
    pub fn for_step(&self, step: u64) -> Self {
        Dropout {
            seed: hash(self.seed, step),
            ..*self
        }
    }

    /// The seed of this forward's masks.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The masks of unit `k` of stack `stack`.
    pub(crate) fn unit(&self, stack: u64, k: usize) -> UnitMasks {
        UnitMasks {
            output: self.mask(stack, Site::Output(k)),
            activation: self.mask(stack, Site::Activation(k)),
            attention: self.mask(stack, Site::Attention(k)),
        }
    }

    /// The mask of `site` in stack `stack` (0: encoder, 1: decoder).
    pub(crate) fn mask(&self, stack: u64, site: Site) -> DropoutMask {
        let (rate, unit, kind) = match site {
            Site::Input => (self.residual, 0, 0),
            Site::Output(k) => (self.residual, k as u64, 1),
            Site::Activation(k) => (self.activation, k as u64, 2),
            Site::Attention(k) => (self.attention, k as u64, 3),
        };
        let site = (stack << 40) | (unit << 2) | kind;
        DropoutMask::new(rate, self.seed)
            .expect("rates checked by Dropout::new")
            .site(site)
    }
}
