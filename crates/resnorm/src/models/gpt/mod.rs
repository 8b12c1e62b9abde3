//! A decoder-only GPT (GPT-2 layout) whose residual/normalization wiring is one switch,
//! [`Placement`], with explicit forward and backward passes and no autograd tape.
//!
//! ```text
//! x₀ = wte[tokens] + wpe[positions]
//! x_{k+1} = Unit_k(x_k)            k = 0 .. 2L-1 (attention, MLP, attention, ...), see unit.rs
//! z = ln_f(x_2L)  (pre-ln, sandwich, no-residual)   |   x_2L + ln_f(dual_2L)  (resi-dual)   |   x_2L
//! logits = z · wteᵀ                (head tied to the token embedding; see head.rs)
//! loss = mean cross-entropy(logits, targets)
//! ```
//! Activations and gradients live in buffers allocated once for a `(batch, seq)` and reused
//! until the shape changes. A classifier runs the body alone: [`Gpt::forward_hidden`] stops
//! at `z` (no logits are allocated) and [`Gpt::backward_hidden`] starts from `∂L/∂z`.
//!
//! ```
//! use resnorm::models::gpt::{Gpt, GptConfig, Placement};
//! let config = GptConfig { layers: 2, heads: 2, width: 8, context: 5, vocab: 11, placement: Placement::PostLn, ..GptConfig::default() };
//! let mut model = Gpt::new(config, 42).unwrap();
//! let tokens = [1, 2, 3, 4, 5, 6, 7, 8];
//! let targets = [2, 3, 4, 0, 6, 7, 8, 9];
//! let loss = model.forward(&tokens, 2, Some(&targets)).unwrap().unwrap();
//! assert!((loss - 11f32.ln()).abs() < 0.5); // about uniform at initialization
//! model.backward().unwrap();
//! let mut grad_norm = 0.0;
//! model.visit_params(&mut |p| grad_norm += p.grad.iter().map(|g| g * g).sum::<f32>());
//! assert!(grad_norm > 0.0);
//! ```

mod config;
mod decode;
mod head;
pub mod init;
mod placement;
pub mod stream_stats;
mod sublayer;
mod unit;

pub use config::{GptConfig, MAX_CONTEXT, MAX_LAYERS, MAX_VOCAB};
pub use decode::{generate, Decoder, Sampling};
pub use placement::Placement;
pub use sublayer::{Sublayer, SublayerActs, SublayerScratch};
pub use unit::{ResidualUnit, Transform, UnitActs, UnitScratch, UnitShared};

use crate::kernels::residual::residual_add_assign;
use crate::kernels::{cross_entropy_backward_in_place, cross_entropy_forward};
use crate::nn::embedding::Embedding;
use crate::nn::norm::Norm;
use crate::nn::Param;
use crate::AlignedVec;
use crate::{Error, Result};
use head::HeadActs;
use rayon::prelude::*;
use stream_stats::{l2_norm, mean_row_cosine, rms, StreamStats};

/// Elements per task when clearing the gradients.
const ZERO_CHUNK: usize = 1 << 16;

/// The model: embeddings, `2L` residual units, an optional final norm, a tied head.
#[derive(Clone, Debug)]
pub struct Gpt {
    config: GptConfig,
    /// `wte.weight [V, C]` (also the head) and `wpe.weight [T, C]`.
    pub embedding: Embedding,
    /// Units `2i` (attention) and `2i + 1` (MLP) form block `i`.
    pub units: Vec<ResidualUnit>,
    /// `ln_f`, present when the placement has a final norm.
    pub ln_f: Option<Norm>,
    state: Option<State>,
    /// Residual-stream measurements, when recording is on.
    stream_stats: Option<StreamStats>,
}

/// Buffers for one `(batch, seq)`.
#[derive(Clone, Debug)]
struct State {
    batch: usize,
    seq: usize,
    /// Only the body's buffers: no logits ([`Gpt::forward_hidden`]).
    hidden_only: bool,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    /// The logits (or, hidden-only, the hidden states) are ready for backward: the last forward had targets and no backward
    /// has overwritten the logits with their gradient yet.
    backward_ready: bool,
    /// Residual stream before each unit and after the last: `2L + 1` tensors `[rows, C]`.
    streams: Vec<AlignedVec>,
    /// resi-dual's un-normalized stream, likewise (empty otherwise).
    duals: Vec<AlignedVec>,
    units: Vec<UnitActs>,
    head: HeadActs,
    /// Logits `[rows, V]`; overwritten by their gradient in backward.
    logits: AlignedVec,
    losses: AlignedVec,
    logsumexp: AlignedVec,
    scratch: UnitScratch,
    d_stream: [AlignedVec; 2],
    d_dual: AlignedVec,
    dz: AlignedVec,
}

impl Gpt {
    /// A model with `config`'s shape, initialized from `seed` (see [`init`] for the rules).
    pub fn new(config: GptConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let GptConfig {
            layers,
            heads,
            width,
            context,
            vocab,
            placement,
            norm,
            eps,
            residual_scaling: _, // init's business
        } = config.clone();
        let mut units = Vec::with_capacity(2 * layers);
        for i in 0..layers {
            let shape = (norm, width, eps);
            let attn = Sublayer::attention(i, width, heads)?;
            let names = (format!("h.{i}.ln_1"), format!("h.{i}.rezero_attn"));
            units.push(ResidualUnit::new(
                placement,
                attn,
                (&names.0, &names.1),
                shape,
                layers,
            ));
            let mlp = Sublayer::mlp(i, width)?;
            let names = (format!("h.{i}.ln_2"), format!("h.{i}.rezero_mlp"));
            units.push(ResidualUnit::new(
                placement,
                mlp,
                (&names.0, &names.1),
                shape,
                layers,
            ));
        }
        let ln_f = placement
            .has_final_norm()
            .then(|| Norm::new("ln_f", norm, width, eps));
        let mut model = Gpt {
            embedding: Embedding::new(vocab, context, width)?,
            units,
            ln_f,
            config,
            state: None,
            stream_stats: None,
        };
        init::initialize(&mut model, seed);
        Ok(model)
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Total number of parameters (the tied head counted once).
    pub fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.len());
        n
    }

    /// Runs the model on `tokens` (`batch` rows of equal length, row-major). With `targets`
    /// it returns the mean cross-entropy and prepares [`Gpt::backward`]; without, only the
    /// logits are computed ([`Gpt::logits`]).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>> {
        let seq = self.check_tokens("Gpt::forward", tokens, batch)?;
        if let Some(targets) = targets {
            if targets.len() != tokens.len() {
                return Err(Error::shape(
                    "Gpt::forward",
                    format!("{} targets for {} tokens", targets.len(), tokens.len()),
                ));
            }
        }
        let mut state = self.take_state(batch, seq, false);
        let result = self.forward_with(&mut state, tokens, targets);
        self.finish_forward(state, result.is_ok());
        result
    }

    /// Runs the body only (embeddings, units, final norm) on `tokens` (`batch` rows of equal
    /// length) and returns the hidden states `z [batch·seq, C]` that a classifier pools;
    /// prepares [`Gpt::backward_hidden`]. The logits are neither computed nor allocated.
    /// Right-padded rows are fine: causal attention keeps a row's real tokens from seeing
    /// the pads after them.
    pub fn forward_hidden(&mut self, tokens: &[u32], batch: usize) -> Result<&[f32]> {
        let seq = self.check_tokens("Gpt::forward_hidden", tokens, batch)?;
        let mut state = self.take_state(batch, seq, true);
        let result = self.body_forward(&mut state, tokens);
        state.backward_ready = result.is_ok();
        self.finish_forward(state, result.is_ok());
        result?;
        let s = self.state.as_ref().expect("the state was just stored");
        Ok(s.head.z(s.streams.last().expect("2L + 1 streams")))
    }

    /// Backpropagates `dz`, the gradient of a loss with respect to the hidden states of the
    /// last [`Gpt::forward_hidden`], adding into every parameter's gradient except the tied
    /// head's use of `wte` (the token embedding's gradient still comes through the input).
    pub fn backward_hidden(&mut self, dz: &[f32]) -> Result<()> {
        const OP: &str = "Gpt::backward_hidden";
        let mut s = self
            .state
            .take()
            .ok_or_else(|| Error::invalid(OP, "no forward pass to backpropagate"))?;
        let result = if !(s.hidden_only && s.backward_ready) {
            Err(Error::invalid(
                OP,
                "each backward_hidden needs a forward_hidden before it",
            ))
        } else if dz.len() != s.dz.len() {
            Err(Error::shape(
                OP,
                format!("{} gradients for {} hidden values", dz.len(), s.dz.len()),
            ))
        } else {
            s.dz.copy_from_slice(dz);
            let [d_a, _] = &mut s.d_stream;
            self.final_norm_backward(
                &s.dz,
                s.streams.last().expect("2L + 1 streams"),
                s.duals.last().map(|d| &d[..]),
                &s.head,
                d_a,
                &mut s.d_dual,
            )
            .and_then(|()| self.body_backward(&mut s, &mut |_, _| Ok(())))
        };
        s.backward_ready = false;
        self.state = Some(s);
        result
    }

    /// The number of tokens per row, after checking that `tokens` split into `batch` rows
    /// that fit the context.
    fn check_tokens(&self, op: &'static str, tokens: &[u32], batch: usize) -> Result<usize> {
        if batch == 0 || tokens.is_empty() {
            return Err(Error::invalid(op, "the batch is empty"));
        }
        if !tokens.len().is_multiple_of(batch) {
            return Err(Error::shape(
                op,
                format!(
                    "{} tokens do not split into {batch} equal rows",
                    tokens.len()
                ),
            ));
        }
        let seq = tokens.len() / batch;
        if seq > self.config.context {
            return Err(Error::shape(
                op,
                format!(
                    "sequence of {seq} tokens is longer than the context {}",
                    self.config.context
                ),
            ));
        }
        Ok(seq)
    }

    /// The buffers for `(batch, seq)`, reused when the last forward had the same shape.
    fn take_state(&mut self, batch: usize, seq: usize, hidden_only: bool) -> State {
        match self.state.take() {
            Some(s) if s.batch == batch && s.seq == seq && s.hidden_only == hidden_only => s,
            _ => self.new_state(batch, seq, hidden_only),
        }
    }

    /// Stores `state` back and, after a forward that succeeded, the stream measurements.
    fn finish_forward(&mut self, state: State, ok: bool) {
        if let (Some(stats), true) = (&mut self.stream_stats, ok) {
            let width = self.config.width;
            stats.rms = state.streams.iter().map(|x| rms(x)).collect();
            stats.cosine = state
                .streams
                .windows(2)
                .map(|w| mean_row_cosine(&w[0], &w[1], width))
                .collect();
            stats.grad_norm.clear();
        }
        self.state = Some(state);
    }

    /// Turns on (or off) measuring the residual stream in every forward and backward: its
    /// RMS and turning angle per unit, and the gradient norm flowing through it. Costs one
    /// extra read of each stream; see [`stream_stats`].
    pub fn record_stream_stats(&mut self, on: bool) {
        self.stream_stats = on.then(StreamStats::default);
    }

    /// The measurements of the last forward (and backward), when recording is on.
    pub fn stream_stats(&self) -> Option<&StreamStats> {
        self.stream_stats.as_ref()
    }

    fn forward_with(
        &self,
        s: &mut State,
        tokens: &[u32],
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>> {
        let vocab = self.config.vocab;
        s.targets.clear();
        s.targets.extend_from_slice(targets.unwrap_or_default());
        s.backward_ready = targets.is_some();
        self.body_forward(s, tokens)?;
        let last = s.streams.last().expect("2L + 1 streams");
        let dual = s.duals.last().map(|d| &d[..]);
        self.head_forward(last, dual, &mut s.head, &mut s.logits)?;
        match targets {
            Some(t) => Ok(Some(cross_entropy_forward(
                &s.logits,
                t,
                vocab,
                &mut s.losses,
                &mut s.logsumexp,
            )?)),
            None => Ok(None),
        }
    }

    /// Embeddings, every unit and the final norm: the hidden states in `s.head`.
    fn body_forward(&self, s: &mut State, tokens: &[u32]) -> Result<()> {
        let (batch, seq) = (s.batch, s.seq);
        s.tokens.clear();
        s.tokens.extend_from_slice(tokens);
        self.embedding
            .forward(&mut s.streams[0], tokens, batch, seq)?;
        let resi_dual = self.config.placement.has_dual_stream();
        if resi_dual {
            s.duals[0].copy_from_slice(&s.streams[0]);
        }
        for (k, unit) in self.units.iter().enumerate() {
            let (before, after) = s.streams.split_at_mut(k + 1);
            let dual = if resi_dual {
                let (d_before, d_after) = s.duals.split_at_mut(k + 1);
                Some((&d_before[k][..], &mut d_after[0][..]))
            } else {
                None
            };
            unit.forward(
                &before[k],
                &mut after[0],
                dual,
                &mut s.units[k],
                s.scratch.shared(),
                (batch, seq),
            )?;
        }
        let last = s.streams.last().expect("2L + 1 streams");
        let dual = s.duals.last().map(|d| &d[..]);
        self.final_norm_forward(last, dual, &mut s.head)
    }

    /// The logits `[batch·seq, V]` of the last forward (invalid after [`Gpt::backward`],
    /// which overwrites them with their gradient).
    pub fn logits(&self) -> &[f32] {
        self.state.as_ref().map_or(&[], |s| &s.logits[..])
    }

    /// Backpropagates the last forward's loss, adding into every parameter's gradient.
    pub fn backward(&mut self) -> Result<()> {
        self.backward_each(&mut |_, _| Ok(()))
    }

    /// [`Gpt::backward`], calling `unit_done(k, unit)` as soon as unit `k`'s parameter
    /// gradients are final (from the last unit to the first; `ln_f`'s are final before any,
    /// the embedding's only at the end), so that data-parallel training can start summing
    /// a unit's gradients while the units before it still run backward.
    pub fn backward_each(
        &mut self,
        unit_done: &mut dyn FnMut(usize, &ResidualUnit) -> Result<()>,
    ) -> Result<()> {
        let mut s = self
            .state
            .take()
            .ok_or_else(|| Error::invalid("Gpt::backward", "no forward pass to backpropagate"))?;
        let result = self.backward_with(&mut s, unit_done);
        s.backward_ready = false; // the logits now hold gradients: a second backward would be wrong
        self.state = Some(s);
        result
    }

    fn backward_with(
        &mut self,
        s: &mut State,
        unit_done: &mut dyn FnMut(usize, &ResidualUnit) -> Result<()>,
    ) -> Result<()> {
        if !s.backward_ready || s.hidden_only {
            return Err(Error::invalid(
                "Gpt::backward",
                "each backward needs a forward with targets before it",
            ));
        }
        let vocab = self.config.vocab;
        cross_entropy_backward_in_place(&mut s.logits, &s.logsumexp, &s.targets, vocab, 1.0)?;
        let [d_a, _] = &mut s.d_stream;
        self.head_backward(
            &s.logits,
            s.streams.last().expect("2L + 1 streams"),
            s.duals.last().map(|d| &d[..]),
            &s.head,
            &mut s.dz,
            d_a,
            &mut s.d_dual,
        )?;
        self.body_backward(s, unit_done)
    }

    /// Backward through every unit and the embeddings from the gradient of the last stream
    /// in `s.d_stream[0]` (and resi-dual's in `s.d_dual`), calling `unit_done` after each unit.
    fn body_backward(
        &mut self,
        s: &mut State,
        unit_done: &mut dyn FnMut(usize, &ResidualUnit) -> Result<()>,
    ) -> Result<()> {
        let (batch, seq) = (s.batch, s.seq);
        let resi_dual = self.config.placement.has_dual_stream();
        let [d_a, d_b] = &mut s.d_stream;
        let (mut d_out, mut d_in) = (d_a, d_b);
        let mut grad_norms = self.stream_stats.as_ref().map(|_| vec![l2_norm(d_out)]);
        for (k, unit) in self.units.iter_mut().enumerate().rev() {
            let d_dual = resi_dual.then_some(&s.d_dual[..]);
            let acts = &s.units[k];
            unit.backward(
                d_out,
                d_dual,
                &s.streams[k],
                d_in,
                acts,
                &mut s.scratch,
                (batch, seq),
            )?;
            unit_done(k, unit)?;
            std::mem::swap(&mut d_out, &mut d_in);
            if let Some(norms) = &mut grad_norms {
                norms.push(l2_norm(d_out));
            }
        }
        if resi_dual {
            residual_add_assign(d_out, &s.d_dual)?; // x₀ feeds both streams
            if let Some(norms) = &mut grad_norms {
                *norms.last_mut().expect("one norm per stream") = l2_norm(d_out);
            }
        }
        if let (Some(stats), Some(mut norms)) = (&mut self.stream_stats, grad_norms) {
            norms.reverse();
            stats.grad_norm = norms;
        }
        self.embedding.backward(d_out, &s.tokens, batch, seq)
    }

    fn new_state(&self, batch: usize, seq: usize, hidden_only: bool) -> State {
        let GptConfig {
            layers,
            width,
            vocab,
            placement,
            ..
        } = self.config;
        let rows = batch * seq;
        let n = rows * width;
        let resi_dual = placement.has_dual_stream();
        let logit_rows = if hidden_only { 0 } else { rows };
        State {
            batch,
            seq,
            hidden_only,
            tokens: Vec::with_capacity(rows),
            targets: Vec::with_capacity(rows),
            backward_ready: false,
            streams: (0..2 * layers + 1).map(|_| AlignedVec::zeros(n)).collect(),
            duals: if resi_dual {
                (0..2 * layers + 1).map(|_| AlignedVec::zeros(n)).collect()
            } else {
                Vec::new()
            },
            units: self
                .units
                .iter()
                .map(|u| u.new_acts(batch, seq, width))
                .collect(),
            head: HeadActs::new(&self.config, rows),
            logits: AlignedVec::zeros(logit_rows * vocab),
            losses: AlignedVec::zeros(logit_rows),
            logsumexp: AlignedVec::zeros(logit_rows),
            scratch: UnitScratch::new(rows, width, SublayerScratch::new(rows, width)),
            d_stream: [AlignedVec::zeros(n), AlignedVec::zeros(n)],
            d_dual: AlignedVec::zeros(if resi_dual { n } else { 0 }),
            dz: AlignedVec::zeros(n),
        }
    }

    /// Clears every parameter's gradient, chunks of all of them in parallel: tens of MB for
    /// the 6-layer width-384 model, too much for one thread.
    pub fn zero_grad(&mut self) {
        let mut params = self.params_mut();
        crate::threads::pool().install(|| {
            params
                .par_iter_mut()
                .flat_map(|p| p.grad.par_chunks_mut(ZERO_CHUNK))
                .for_each(|chunk| chunk.fill(0.0))
        });
    }

    /// Hands every parameter to `f` in a fixed order: embeddings, then block by block, then `ln_f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        self.embedding.visit_params(f);
        for unit in &self.units {
            unit.visit_params(f);
        }
        if let Some(ln_f) = &self.ln_f {
            ln_f.visit_params(f);
        }
    }

    /// Every parameter, in [`Gpt::visit_params`] order, as the `&mut [&mut Param]` slice
    /// that optimizers, gradient clipping and checkpoint loading take.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out: Vec<&mut Param> = vec![&mut self.embedding.wte, &mut self.embedding.wpe];
        for unit in &mut self.units {
            unit.params_mut(&mut out);
        }
        if let Some(ln_f) = &mut self.ln_f {
            out.push(&mut ln_f.weight);
            out.extend(ln_f.bias.as_mut());
        }
        out
    }

    /// Hands every parameter to `f` for updating, in [`Gpt::visit_params`] order.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for p in self.params_mut() {
            f(p);
        }
    }
}
