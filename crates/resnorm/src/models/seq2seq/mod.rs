//! The encoder-decoder Transformer of Vaswani et al. 2017, with every residual/norm
//! [`Placement`] of the GPT in both stacks, explicit forward and backward, no autograd tape.
//!
//! ```text
//! m₀ = √C·E[src] + P                      (embed.rs; E shared by source and target)
//! m  = Encoder(m₀; src lengths)            (encoder.rs: N x [bidirectional attention, MLP])
//! y₀ = √C·E[tgt] + P
//! y  = Decoder(y₀; m, src lengths)         (decoder.rs: M x [causal attention, cross-attention, MLP])
//! logits = y · Eᵀ                          (the output projection tied to the embedding)
//! loss = mean cross-entropy over the valid target positions (t < tgt_len_b)
//! ```
//! In training ([`Seq2Seq::forward_training`]) the embeddings, every unit's output and the
//! MLPs' activations are dropped out ([`Dropout`]), and the loss may smooth its labels:
//! `(1-ε)·NLL + ε·mean_j(-log p_j)` (`kernels::cross_entropy`).
//! Each unit is wired by `models/gpt/unit.rs`, the one place a placement becomes code;
//! each stack ends in the final norm its placement has (stack.rs). Padded target positions
//! give no loss and no logits: only the valid rows reach the output projection.
//! Buffers are sized for one `(batch, src_len, tgt_len)`; a batch of another shape rebuilds
//! them from the old ones' allocations (`AlignedVec::recycle`), so the heap does not grow.
//!
//! ```
//! use resnorm::models::seq2seq::{Batch, Seq2Seq, Seq2SeqConfig};
//! let config = Seq2SeqConfig { vocab: 11, width: 8, heads: 2, encoder_layers: 1, decoder_layers: 1, max_len: 6, ..Seq2SeqConfig::default() };
//! let mut model = Seq2Seq::new(config, 1).unwrap();
//! // Two sentences: sources of 3 and 2 tokens, targets of 2 and 3 (right padded with 0).
//! let batch = Batch {
//!     batch: 2,
//!     src: &[4, 5, 6, 7, 8, 0],
//!     src_lengths: &[3, 2],
//!     tgt: &[1, 9, 0, 1, 3, 4],
//!     tgt_lengths: &[2, 3],
//!     targets: Some(&[9, 2, 0, 3, 4, 2]),
//! };
//! let loss = model.forward(&batch).unwrap().unwrap();
//! assert!((loss - 11f32.ln()).abs() < 1.0);
//! assert_eq!(model.logits().len(), 5 * 11); // five valid target positions
//! model.backward().unwrap();
//! let mut grad_norm = 0.0;
//! model.visit_params(&mut |p| grad_norm += p.grad.iter().map(|g| g * g).sum::<f32>());
//! assert!(grad_norm > 0.0);
//! ```

mod config;
pub mod decode;
mod decoder;
pub(crate) mod dropout;
mod embed;
mod encoder;
pub(crate) mod init;
mod stack;
mod sublayer;

pub use config::Seq2SeqConfig;
pub use decoder::decoder_stack;
pub use dropout::{Dropout, UnitMasks};
pub use embed::TokenEmbedding;
pub use encoder::Encoder;
pub use stack::{Stack, StackActs};
pub use sublayer::{Context, Memory, Sublayer, SublayerActs};

use crate::kernels::{matmul, MatDims, Trans};
use crate::kernels::{smoothed_cross_entropy_backward_in_place, smoothed_cross_entropy_forward};
use crate::models::gpt::Placement;
use crate::nn::Param;
use crate::AlignedVec;
use crate::{Error, Result};
use dropout::DECODER_STACK;
use encoder::check_lengths;

/// One padded batch of sentence pairs, row-major, right padded (any token id below the
/// vocabulary may pad).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Sentences `B`.
    pub batch: usize,
    /// Source tokens `[B, S]`.
    pub src: &'a [u32],
    /// Valid source tokens of each sentence.
    pub src_lengths: &'a [usize],
    /// The decoder's input tokens `[B, T]` (the target shifted right after a start token).
    pub tgt: &'a [u32],
    /// Valid target positions of each sentence.
    pub tgt_lengths: &'a [usize],
    /// The tokens to predict `[B, T]`; positions at or past a sentence's length are ignored.
    pub targets: Option<&'a [u32]>,
}

/// The model: shared embedding, encoder, decoder, tied output projection.
#[derive(Clone, Debug)]
pub struct Seq2Seq {
    config: Seq2SeqConfig,
    /// `embed.weight [V, C]`, also the output projection.
    pub embed: TokenEmbedding,
    /// The encoder stack.
    pub encoder: Encoder,
    /// The decoder stack.
    pub decoder: Stack,
    state: Option<State>,
}

/// Buffers for one `(batch, src_len, tgt_len)`.
#[derive(Clone, Debug)]
struct State {
    batch: usize,
    src_seq: usize,
    tgt_seq: usize,
    src: Vec<u32>,
    tgt: Vec<u32>,
    src_lengths: Vec<usize>,
    /// The valid decoder rows `b·T + t`, in order: the rows of the logits.
    rows: Vec<usize>,
    /// The targets of those rows.
    targets: Vec<u32>,
    backward_ready: bool,
    /// The label smoothing `ε` of the last forward's loss.
    smoothing: f32,
    x_src: AlignedVec,
    decoder: StackActs,
    /// The decoder's output at the valid rows, `[rows, C]`.
    z: AlignedVec,
    logits: AlignedVec,
    losses: AlignedVec,
    logsumexp: AlignedVec,
    dz: AlignedVec,
    d_output: AlignedVec,
    d_memory: AlignedVec,
}

impl Seq2Seq {
    /// A model of `config`'s shape, initialized from `seed` (the rules are in init.rs).
    pub fn new(config: Seq2SeqConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut model = Seq2Seq {
            embed: TokenEmbedding::new(config.vocab, config.width, config.max_len)?,
            encoder: Encoder::new(&config)?,
            decoder: decoder_stack(&config)?,
            config,
            state: None,
        };
        init::initialize(&mut model, seed);
        Ok(model)
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &Seq2SeqConfig {
        &self.config
    }

    /// The placement of both stacks.
    pub fn placement(&self) -> Placement {
        self.config.placement
    }

    /// Total number of parameters (the tied projection counted once).
    pub fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.len());
        n
    }

    /// Runs the model on `batch`. With targets it returns the mean cross-entropy over the
    /// valid target positions and prepares [`Seq2Seq::backward`]; without, only the logits
    /// of the valid positions are computed ([`Seq2Seq::logits`]).
    pub fn forward(&mut self, batch: &Batch<'_>) -> Result<Option<f32>> {
        self.forward_training(batch, None, 0.0)
    }

    /// [`Seq2Seq::forward`] of a training step: `dropout` drops out the embeddings, every
    /// unit's output and the MLPs' activations (none: evaluation), and the loss smooths its
    /// labels by `label_smoothing` in `[0, 1]`; [`Seq2Seq::backward`] follows both.
    pub fn forward_training(
        &mut self,
        batch: &Batch<'_>,
        dropout: Option<Dropout>,
        label_smoothing: f32,
    ) -> Result<Option<f32>> {
        let (src_seq, tgt_seq) = check_batch(batch, self.config.max_len)?;
        let b = batch.batch;
        let mut state = match self.state.take() {
            Some(s) if (s.batch, s.src_seq, s.tgt_seq) == (b, src_seq, tgt_seq) => s,
            old => AlignedVec::recycle(old, || self.new_state(b, src_seq, tgt_seq)),
        };
        state.smoothing = label_smoothing;
        let result = self.forward_with(&mut state, batch, dropout);
        self.state = Some(state);
        result
    }

    fn forward_with(
        &mut self,
        s: &mut State,
        batch: &Batch<'_>,
        dropout: Option<Dropout>,
    ) -> Result<Option<f32>> {
        let (c, vocab) = (self.config.width, self.config.vocab);
        s.src.clear();
        s.src.extend_from_slice(batch.src);
        s.tgt.clear();
        s.tgt.extend_from_slice(batch.tgt);
        s.src_lengths.clear();
        s.src_lengths.extend_from_slice(batch.src_lengths);
        s.rows.clear();
        for (b, &len) in batch.tgt_lengths.iter().enumerate() {
            s.rows.extend((0..len).map(|t| b * s.tgt_seq + t));
        }
        s.targets.clear();
        if let Some(targets) = batch.targets {
            s.targets.extend(s.rows.iter().map(|&r| targets[r]));
        }
        s.backward_ready = false;
        self.embed.forward(&mut s.x_src, &s.src, s.src_seq)?;
        let memory = (self.encoder).forward_dropped(&s.x_src, &s.src_lengths, s.batch, dropout)?;
        self.embed
            .forward(s.decoder.input_mut(), &s.tgt, s.tgt_seq)?;
        let ctx = decoder_context((s.batch, s.src_seq, s.tgt_seq), &s.src_lengths, memory);
        let dropout = dropout.map(|d| (d, DECODER_STACK));
        self.decoder
            .forward_dropped(&mut s.decoder, &ctx, dropout)?;
        let out = s.decoder.output();
        let n = s.rows.len();
        for (z, &r) in s.z.chunks_exact_mut(c).zip(&s.rows) {
            z.copy_from_slice(&out[r * c..][..c]);
        }
        let dims = MatDims {
            m: n,
            k: c,
            n: vocab,
        };
        let trans = Trans { a: false, b: true };
        let logits = &mut s.logits[..n * vocab];
        matmul(
            logits,
            &s.z[..n * c],
            &self.embed.weight.value,
            dims,
            trans,
            false,
        )?;
        if batch.targets.is_none() {
            return Ok(None);
        }
        if n == 0 {
            return Err(Error::invalid(
                "Seq2Seq::forward",
                "no target position to predict",
            ));
        }
        let (losses, lse) = (&mut s.losses[..n], &mut s.logsumexp[..n]);
        let smoothing = s.smoothing;
        let loss =
            smoothed_cross_entropy_forward(logits, &s.targets, vocab, smoothing, losses, lse)?;
        s.backward_ready = true;
        Ok(Some(loss))
    }

    /// Sizes the buffers for the largest batch of at most `max_tokens` padded tokens a side
    /// (`B·max(S, T) ≤ max_tokens`, as `translate::TokenBatches` makes them), so that every
    /// later batch's buffers are carved from these allocations and training never grows
    /// the heap: `B` sentences of `L = min(max_len, max_tokens)` positions, `B·L ≥
    /// max_tokens`, cover every buffer of every such batch.
    pub fn reserve_for_tokens(&mut self, max_tokens: usize) {
        let seq = self.config.max_len.min(max_tokens).max(1);
        let batch = max_tokens.div_ceil(seq).max(1);
        let old = self.state.take();
        self.state = Some(AlignedVec::recycle(old, || self.new_state(batch, seq, seq)));
        self.encoder.reserve(batch, seq);
    }

    /// The logits `[valid target positions, V]` of the last forward, sentence by sentence
    /// (invalid after [`Seq2Seq::backward`], which overwrites them with their gradient).
    pub fn logits(&self) -> &[f32] {
        self.state
            .as_ref()
            .map_or(&[], |s| &s.logits[..s.rows.len() * self.config.vocab])
    }

    /// Backpropagates the last forward's loss, adding into every parameter's gradient.
    pub fn backward(&mut self) -> Result<()> {
        const OP: &str = "Seq2Seq::backward";
        let mut s = self
            .state
            .take()
            .ok_or_else(|| Error::invalid(OP, "no forward pass to backpropagate"))?;
        let result = match s.backward_ready {
            true => self.backward_with(&mut s),
            false => Err(Error::invalid(
                OP,
                "each backward needs a forward with targets before it",
            )),
        };
        s.backward_ready = false; // the logits now hold gradients
        self.state = Some(s);
        result
    }

    fn backward_with(&mut self, s: &mut State) -> Result<()> {
        let (c, vocab, n) = (self.config.width, self.config.vocab, s.rows.len());
        let dlogits = &mut s.logits[..n * vocab];
        let (lse, smoothing) = (&s.logsumexp[..n], s.smoothing);
        smoothed_cross_entropy_backward_in_place(dlogits, lse, &s.targets, vocab, smoothing, 1.0)?;
        let embed = &mut self.embed.weight;
        let dims = MatDims {
            m: n,
            k: vocab,
            n: c,
        };
        matmul(
            &mut s.dz[..n * c],
            dlogits,
            &embed.value,
            dims,
            Trans::NONE,
            false,
        )?;
        let dims = MatDims {
            m: vocab,
            k: n,
            n: c,
        };
        let trans = Trans { a: true, b: false };
        matmul(&mut embed.grad, dlogits, &s.z[..n * c], dims, trans, true)?;
        s.d_output.fill(0.0);
        for (dz, &r) in s.dz.chunks_exact(c).zip(&s.rows) {
            s.d_output[r * c..][..c].copy_from_slice(dz);
        }
        s.d_memory.fill(0.0);
        let sizes = (s.batch, s.src_seq, s.tgt_seq);
        let ctx = decoder_context(sizes, &s.src_lengths, self.encoder.output());
        let d_memory = Some(&mut s.d_memory[..]);
        let d_tgt = self
            .decoder
            .backward(&mut s.decoder, &s.d_output, &ctx, d_memory)?;
        self.embed.backward(d_tgt, &s.tgt, s.tgt_seq)?;
        let d_src = self.encoder.backward(&s.d_memory)?;
        self.embed.backward(d_src, &s.src, s.src_seq)
    }

    fn new_state(&self, batch: usize, src_seq: usize, tgt_seq: usize) -> State {
        let (c, vocab) = (self.config.width, self.config.vocab);
        let (src_rows, tgt_rows) = (batch * src_seq, batch * tgt_seq);
        State {
            batch,
            src_seq,
            tgt_seq,
            src: Vec::with_capacity(src_rows),
            tgt: Vec::with_capacity(tgt_rows),
            src_lengths: Vec::with_capacity(batch),
            rows: Vec::with_capacity(tgt_rows),
            targets: Vec::with_capacity(tgt_rows),
            backward_ready: false,
            smoothing: 0.0,
            x_src: AlignedVec::zeros(src_rows * c),
            decoder: self.decoder.new_acts(batch, tgt_seq, src_seq),
            z: AlignedVec::zeros(tgt_rows * c),
            logits: AlignedVec::zeros(tgt_rows * vocab),
            losses: AlignedVec::zeros(tgt_rows),
            logsumexp: AlignedVec::zeros(tgt_rows),
            dz: AlignedVec::zeros(tgt_rows * c),
            d_output: AlignedVec::zeros(tgt_rows * c),
            d_memory: AlignedVec::zeros(src_rows * c),
        }
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |p| p.zero_grad());
    }

    /// Hands every parameter to `f` in a fixed order: the embedding, the encoder, the decoder.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.embed.weight);
        self.encoder.visit_params(f);
        self.decoder.visit_params(f);
    }

    /// Every parameter, in [`Seq2Seq::visit_params`] order, for optimizers and checkpoints.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = vec![&mut self.embed.weight];
        self.encoder.stack.params_mut(&mut out);
        self.decoder.params_mut(&mut out);
        out
    }

    /// Hands every parameter to `f` for updating, in [`Seq2Seq::visit_params`] order.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for p in self.params_mut() {
            f(p);
        }
    }
}

/// The decoder's view of a batch of `batch` sentences of `tgt_seq` positions: the encoder's
/// output `memory` of `src_seq` positions, `src_lengths` of them valid.
fn decoder_context<'a>(
    (batch, src_seq, tgt_seq): (usize, usize, usize),
    src_lengths: &'a [usize],
    memory: &'a [f32],
) -> Context<'a> {
    Context {
        batch,
        seq: tgt_seq,
        lengths: None,
        memory: Some(Memory {
            data: memory,
            seq: src_seq,
            lengths: Some(src_lengths),
        }),
    }
}

/// Checks a batch's sizes and returns `(S, T)`.
fn check_batch(batch: &Batch<'_>, max_len: usize) -> Result<(usize, usize)> {
    const OP: &str = "Seq2Seq::forward";
    let b = batch.batch;
    let split = |what: &str, tokens: &[u32]| -> Result<usize> {
        if b == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(b) {
            return Err(Error::shape(
                OP,
                format!(
                    "{} {what} tokens do not split into {b} sentences",
                    tokens.len()
                ),
            ));
        }
        let seq = tokens.len() / b;
        if seq > max_len {
            return Err(Error::shape(
                OP,
                format!("{what} of {seq} tokens is longer than max_len {max_len}"),
            ));
        }
        Ok(seq)
    };
    let (src_seq, tgt_seq) = (split("source", batch.src)?, split("target", batch.tgt)?);
    check_lengths(OP, batch.src_lengths, b, src_seq)?;
    check_lengths(OP, batch.tgt_lengths, b, tgt_seq)?;
    if let Some(targets) = batch.targets {
        if targets.len() != batch.tgt.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "{} targets for {} target tokens",
                    targets.len(),
                    batch.tgt.len()
                ),
            ));
        }
    }
    Ok((src_seq, tgt_seq))
}
