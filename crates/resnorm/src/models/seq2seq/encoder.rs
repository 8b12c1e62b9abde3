//! The encoder: `N` layers of bidirectional self-attention and MLP over padded sequences,
//! usable alone (an encoder classifier builds on it) or under the decoder's
//! cross-attention.
//!
//! ```text
//! per layer i:  x = Unit(encoder.{i}.self_attn)(x);  x = Unit(encoder.{i}.mlp)(x)
//! out = the stack's final norm (see stack.rs)
//! ```
//! Sequence `b` has `len_b` valid positions (right padding): no position attends to a
//! padded one, so the valid positions' outputs do not depend on the padding. Padded
//! positions are computed too (they attend to the valid ones) and are to be ignored.
//!
//! ```
//! use resnorm::models::seq2seq::{Encoder, Seq2SeqConfig};
//! let config = Seq2SeqConfig { vocab: 11, width: 8, heads: 2, encoder_layers: 2, ..Seq2SeqConfig::default() };
//! let mut encoder = Encoder::new(&config).unwrap();
//! encoder.visit_params_mut(&mut |p| p.value.iter_mut().enumerate().for_each(|(i, v)| *v += (i as f32 * 0.1).sin()));
//! let (batch, seq) = (2, 3);
//! let x: Vec<f32> = (0..batch * seq * 8).map(|i| (i as f32 * 0.37).cos()).collect();
//! let out = encoder.forward(&x, &[3, 2], batch).unwrap().to_vec();
//! let mut padded = x.clone();
//! padded[(3 + 2) * 8..].fill(9.0); // change sequence 1's padded position
//! let again = encoder.forward(&padded, &[3, 2], batch).unwrap();
//! assert_eq!(&out[..5 * 8], &again[..5 * 8]); // the valid positions do not see it
//! let dx = encoder.backward(&vec![1.0; out.len()]).unwrap();
//! assert_eq!(dx.len(), x.len());
//! ```

use super::dropout::{Dropout, ENCODER_STACK};
use super::stack::{Stack, StackActs};
use super::sublayer::{Context, Sublayer};
use super::Seq2SeqConfig;
use crate::models::gpt::{ResidualUnit, Sublayer as GptSublayer};
use crate::nn::Param;
use crate::{AlignedVec, Error, Result};

/// The encoder stack with its buffers for the last shape it ran on.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// Units `encoder.{i}.self_attn`, `encoder.{i}.mlp`, and `encoder.ln_f`.
    pub stack: Stack,
    state: Option<State>,
}

#[derive(Clone, Debug)]
struct State {
    batch: usize,
    seq: usize,
    lengths: Vec<usize>,
    acts: StackActs,
}

impl Encoder {
    /// The encoder of `config` (its `encoder_layers`), zero-initialized (the model's
    /// `init` draws the weights).
    pub fn new(config: &Seq2SeqConfig) -> Result<Self> {
        config.validate()?;
        let (width, heads, layers) = (config.width, config.heads, config.encoder_layers);
        let shape = (config.norm, width, config.eps);
        let alpha = config.encoder_alpha();
        let mut units = Vec::with_capacity(2 * layers);
        for i in 0..layers {
            let p = format!("encoder.{i}");
            let attn = Sublayer::bidirectional(&format!("{p}.self_attn"), width, heads)?;
            let mlp = Sublayer::Gpt(GptSublayer::mlp_named(&format!("{p}.mlp"), width)?);
            for (sublayer, norm, gate) in
                [(attn, "ln_1", "rezero_self"), (mlp, "ln_2", "rezero_mlp")]
            {
                let names = (format!("{p}.{norm}"), format!("{p}.{gate}"));
                let unit = ResidualUnit::new(
                    config.placement,
                    sublayer,
                    (&names.0, &names.1),
                    shape,
                    layers,
                );
                units.push(unit.with_residual_scale(alpha));
            }
        }
        Ok(Encoder {
            stack: Stack::new(config.placement, units, "encoder", shape),
            state: None,
        })
    }

    /// Encodes `x [batch·seq, C]` (embedded sequences padded to `seq`, `lengths[b]` valid
    /// positions each) and returns the output `[batch·seq, C]`.
    pub fn forward(&mut self, x: &[f32], lengths: &[usize], batch: usize) -> Result<&[f32]> {
        self.forward_dropped(x, lengths, batch, None)
    }

    /// [`Encoder::forward`] in training: with `Some(dropout)`, `x` (the embedding) and every
    /// unit's output and MLP activation are dropped out ([`Dropout`]); the next
    /// [`Encoder::backward`] regenerates the same masks. `None` is [`Encoder::forward`].
    pub fn forward_dropped(
        &mut self,
        x: &[f32],
        lengths: &[usize],
        batch: usize,
        dropout: Option<Dropout>,
    ) -> Result<&[f32]> {
        const OP: &str = "Encoder::forward";
        let width = self.width();
        if batch == 0 || x.is_empty() || !x.len().is_multiple_of(batch * width) {
            return Err(Error::shape(
                OP,
                format!(
                    "{} inputs do not split into {batch} sequences of width {width}",
                    x.len()
                ),
            ));
        }
        let seq = x.len() / (batch * width);
        check_lengths(OP, lengths, batch, seq)?;
        self.reserve(batch, seq);
        let mut state = self.state.take().expect("reserved");
        state.lengths.clear();
        state.lengths.extend_from_slice(lengths);
        state.acts.input_mut().copy_from_slice(x);
        let ctx = Context {
            batch,
            seq,
            lengths: Some(&state.lengths),
            memory: None,
        };
        let dropout = dropout.map(|d| (d, ENCODER_STACK));
        let result = self.stack.forward_dropped(&mut state.acts, &ctx, dropout);
        let state = self.state.insert(state);
        result.map(|()| state.acts.output())
    }

    /// Sizes the buffers for `batch` sequences of `seq` positions, from the allocations of
    /// the last shape's (`AlignedVec::recycle`).
    pub(super) fn reserve(&mut self, batch: usize, seq: usize) {
        if let Some(s) = &self.state {
            if (s.batch, s.seq) == (batch, seq) {
                return;
            }
        }
        let old = self.state.take();
        self.state = Some(AlignedVec::recycle(old, || State {
            batch,
            seq,
            lengths: Vec::with_capacity(batch),
            acts: self.stack.new_acts(batch, seq, 0),
        }));
    }

    /// The output of the last forward.
    pub fn output(&self) -> &[f32] {
        self.state.as_ref().map_or(&[], |s| s.acts.output())
    }

    /// Backpropagates `d_output = ∂L/∂output` of the last forward, adding into every
    /// parameter gradient; returns `∂L/∂x`.
    pub fn backward(&mut self, d_output: &[f32]) -> Result<&[f32]> {
        const OP: &str = "Encoder::backward";
        let state = self
            .state
            .as_mut()
            .ok_or_else(|| Error::invalid(OP, "no forward pass to backpropagate"))?;
        if d_output.len() != state.acts.output().len() {
            return Err(Error::shape(
                OP,
                format!(
                    "{} gradients for {} outputs",
                    d_output.len(),
                    state.acts.output().len()
                ),
            ));
        }
        let ctx = Context {
            batch: state.batch,
            seq: state.seq,
            lengths: Some(&state.lengths),
            memory: None,
        };
        self.stack.backward(&mut state.acts, d_output, &ctx, None)
    }

    /// Width `C`.
    pub fn width(&self) -> usize {
        self.stack.width()
    }

    /// Hands every parameter to `f`, layer by layer, then `encoder.ln_f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.stack.visit_params(f);
    }

    /// Hands every parameter to `f` for writing, in [`Encoder::visit_params`] order.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        let mut params = Vec::new();
        self.stack.params_mut(&mut params);
        for p in params {
            f(p);
        }
    }
}

/// Checks `batch` lengths of at most `seq` positions each.
pub(super) fn check_lengths(
    op: &'static str,
    lengths: &[usize],
    batch: usize,
    seq: usize,
) -> Result<()> {
    if lengths.len() != batch {
        return Err(Error::shape(
            op,
            format!("{} lengths for {batch} sequences", lengths.len()),
        ));
    }
    match lengths.iter().enumerate().find(|(_, &l)| l > seq) {
        Some((b, len)) => Err(Error::invalid(
            op,
            format!("sequence {b} has length {len}, more than its {seq} positions"),
        )),
        None => Ok(()),
    }
}
