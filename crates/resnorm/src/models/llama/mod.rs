//! A Llama-family decoder (Llama, Mistral, Qwen2, Qwen3, Gemma 2, OLMo 2) with explicit
//! forward and backward passes: RMSNorm, the gated MLP, rotary positions, grouped-query
//! attention, and three norm placements ([`LlamaPlacement`]).
//!
//! ```text
//! x₀      = E[tokens] (· √C with embed_scale)
//! x_{k+1} = x_k + Post(F_k(Pre(x_k)))          k = 0 .. 2L-1, attention then MLP (unit.rs)
//! z       = norm(x_2L)
//! logits  = z · Wᵀ                             W = E (tied) or lm_head
//!         = cap · tanh(logits / cap)           (final_softcap)
//! loss    = mean cross-entropy(logits, targets)
//! ```
//! Parameter names are Hugging Face's without the `model.` prefix (`embed_tokens.weight`,
//! `layers.{i}.self_attn.q_proj.weight`, ..., `norm.weight`, `lm_head.weight`); linear
//! weights are stored input-major (`[in, out]`, as GPT-2's `Conv1D`), the transpose of
//! `torch.nn.Linear`'s. Buffers are allocated once per `(batch, seq)`. When asked
//! ([`Llama::record_stream_stats`]) it measures the residual streams `x_0 .. x_2L` in forward
//! and their gradients in backward, as the GPT does, for [`crate::diagnostics`] and the study.
//!
//! ```
//! use resnorm::models::llama::{Llama, LlamaConfig, LlamaPlacement};
//! let mut model = Llama::new(LlamaConfig::tiny(LlamaPlacement::Reordered), 1).unwrap();
//! let tokens = [1, 2, 3, 4, 5, 6];
//! let loss = model.forward(&tokens, 2, Some(&[2, 3, 4, 5, 6, 7])).unwrap().unwrap();
//! assert!((loss - 11f32.ln()).abs() < 0.5);
//! model.backward().unwrap();
//! let mut grad = 0.0;
//! model.visit_params(&mut |p| grad += p.grad.iter().map(|g| g * g).sum::<f32>());
//! assert!(grad > 0.0);
//! ```

mod attention;
mod config;
mod decode;
mod linear;
mod mlp;
mod rms;
mod rope;
mod sample;
mod unit;

pub use attention::{AttnActs, AttnScratch, LlamaAttention};
pub use config::{Activation, LlamaConfig, LlamaPlacement, QkNorm};
pub use decode::{greedy, LlamaDecoder};
pub use linear::linear_backward;
pub use mlp::{GatedMlp, MlpActs, MlpScratch};
pub use rms::RmsNorm;
pub use rope::RopeTable;
pub use sample::generate;
pub use unit::{NormActs, NormScratch, Sublayer, Unit, UnitActs, UnitScratch};

use crate::kernels::{cross_entropy_backward_in_place, cross_entropy_forward};
use crate::kernels::{matmul, MatDims, Trans};
use crate::models::gpt::stream_stats::{l2_norm, mean_row_cosine, rms, StreamStats};
use crate::nn::{Param, ParamKind};
use crate::rng::Rng;
use crate::AlignedVec;
use crate::{Error, Result};

/// The model: token embedding, `2L` residual units, the final norm, the head.
#[derive(Clone, Debug)]
pub struct Llama {
    config: LlamaConfig,
    /// `embed_tokens.weight [V, C]` (also the head when tied).
    pub embed: Param,
    /// Units `2i` (attention) and `2i + 1` (MLP) form block `i`.
    pub units: Vec<Unit>,
    /// `norm`, before the head.
    pub norm: RmsNorm,
    /// `lm_head.weight [V, C]` when the head is not tied.
    pub lm_head: Option<Param>,
    state: Option<State>,
    stream_stats: Option<StreamStats>,
}

/// Buffers for one `(batch, seq)`.
#[derive(Clone, Debug)]
struct State {
    batch: usize,
    seq: usize,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    backward_ready: bool,
    rope: RopeTable,
    /// The stream before each unit and after the last, `[rows, C]` each.
    streams: Vec<AlignedVec>,
    units: Vec<UnitActs>,
    head: HeadActs,
    losses: AlignedVec,
    logsumexp: AlignedVec,
    /// Boxed, so that the model stays about the GPT's size inline (`CausalLm` holds either).
    scratch: Box<UnitScratch>,
    d_stream: [AlignedVec; 2],
}

/// The final norm's and the head's buffers for `rows` rows.
#[derive(Clone, Debug)]
pub(crate) struct HeadActs {
    z: AlignedVec,
    z_rstd: Vec<f32>,
    /// Logits `[rows, V]`; overwritten by their gradient in backward.
    logits: AlignedVec,
    /// `tanh(raw / cap)` with a soft-cap (empty otherwise).
    capped: AlignedVec,
    dz: AlignedVec,
}

impl HeadActs {
    pub(crate) fn new(config: &LlamaConfig, rows: usize) -> Self {
        let n = rows * config.width;
        let capped = config.final_softcap.map_or(0, |_| rows * config.vocab);
        HeadActs {
            z: AlignedVec::zeros(n),
            z_rstd: vec![0.0; rows],
            logits: AlignedVec::zeros(rows * config.vocab),
            capped: AlignedVec::zeros(capped),
            dz: AlignedVec::zeros(n),
        }
    }

    /// The logits of the last forward.
    pub(crate) fn logits(&self) -> &[f32] {
        &self.logits
    }
}

impl Llama {
    /// A model of `config`'s shape, weights drawn from `N(0, 0.02²)` (Hugging Face's
    /// `initializer_range`) with `seed`, norm gains 1, biases 0.
    pub fn new(config: LlamaConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut units = Vec::with_capacity(2 * config.layers);
        for i in 0..config.layers {
            units.push(Unit::attention(i, &config)?);
            units.push(Unit::mlp(i, &config)?);
        }
        let (v, c) = (config.vocab, config.width);
        let mut model = Llama {
            embed: Param::zeros("embed_tokens.weight", vec![v, c], ParamKind::Embedding),
            units,
            norm: RmsNorm::new("norm", c, config.eps, config.norm_offset),
            lm_head: (!config.tied)
                .then(|| Param::zeros("lm_head.weight", vec![v, c], ParamKind::Weight)),
            config,
            state: None,
            stream_stats: None,
        };
        let mut rng = Rng::new(seed);
        model.visit_params_mut(&mut |p| {
            if matches!(p.kind, ParamKind::Weight | ParamKind::Embedding) {
                rng.fill_normal(&mut p.value, 0.0, 0.02);
            }
        });
        Ok(model)
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Total number of parameters (a tied head counted once).
    pub fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.len());
        n
    }

    /// Runs the model on `tokens` (`batch` rows of equal length). With `targets` it returns
    /// the mean cross-entropy and prepares [`Llama::backward`]; without, only the logits.
    pub fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>> {
        const OP: &str = "Llama::forward";
        if batch == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(batch) {
            return Err(Error::shape(
                OP,
                format!(
                    "{} tokens do not split into {batch} equal rows",
                    tokens.len()
                ),
            ));
        }
        let seq = tokens.len() / batch;
        if seq > self.config.context {
            return Err(Error::shape(
                OP,
                format!(
                    "{seq} tokens is longer than the context {}",
                    self.config.context
                ),
            ));
        }
        if targets.is_some_and(|t| t.len() != tokens.len()) {
            return Err(Error::shape(OP, "targets and tokens differ in length"));
        }
        self.check_tokens(OP, tokens)?;
        self.sync();
        let mut s = match self.state.take() {
            Some(s) if s.batch == batch && s.seq == seq => s,
            _ => self.new_state(batch, seq),
        };
        let result = self.forward_with(&mut s, tokens, targets);
        if let (Some(stats), true) = (&mut self.stream_stats, result.is_ok()) {
            let width = self.config.width;
            stats.rms = s.streams.iter().map(|x| rms(x)).collect();
            stats.cosine = s
                .streams
                .windows(2)
                .map(|w| mean_row_cosine(&w[0], &w[1], width))
                .collect();
            stats.grad_norm.clear();
        }
        self.state = Some(s);
        result
    }

    /// Turns on (or off) measuring the residual stream in every forward and backward, as
    /// [`crate::models::gpt::Gpt::record_stream_stats`] does: its RMS and turning angle per
    /// unit, and the gradient norm flowing through it (one extra read of each stream).
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
        s.tokens.clear();
        s.tokens.extend_from_slice(tokens);
        s.targets.clear();
        s.targets.extend_from_slice(targets.unwrap_or_default());
        s.backward_ready = targets.is_some();
        self.embed_forward(tokens, &mut s.streams[0]);
        for (k, unit) in self.units.iter().enumerate() {
            let (before, after) = s.streams.split_at_mut(k + 1);
            let shape = (s.batch, s.seq);
            let (acts, scratch) = (&mut s.units[k], &mut s.scratch);
            unit.forward(&before[k], &mut after[0], acts, scratch, &s.rope, shape)?;
        }
        self.head_forward(s.streams.last().expect("2L + 1 streams"), &mut s.head)?;
        match targets {
            Some(t) => Ok(Some(cross_entropy_forward(
                &s.head.logits,
                t,
                self.config.vocab,
                &mut s.losses,
                &mut s.logsumexp,
            )?)),
            None => Ok(None),
        }
    }

    /// The logits `[batch·seq, V]` of the last forward (invalid after a backward).
    pub fn logits(&self) -> &[f32] {
        self.state.as_ref().map_or(&[], |s| &s.head.logits[..])
    }

    /// Backpropagates the last forward's loss, adding into every parameter's gradient.
    pub fn backward(&mut self) -> Result<()> {
        const OP: &str = "Llama::backward";
        let mut s = self
            .state
            .take()
            .ok_or_else(|| Error::invalid(OP, "no forward pass to backpropagate"))?;
        let result = if s.backward_ready {
            self.backward_with(&mut s)
        } else {
            Err(Error::invalid(
                OP,
                "each backward needs a forward with targets",
            ))
        };
        s.backward_ready = false;
        self.state = Some(s);
        result
    }

    fn backward_with(&mut self, s: &mut State) -> Result<()> {
        let vocab = self.config.vocab;
        let head = &mut s.head;
        cross_entropy_backward_in_place(&mut head.logits, &s.logsumexp, &s.targets, vocab, 1.0)?;
        let [d_a, d_b] = &mut s.d_stream;
        self.head_backward(s.streams.last().expect("2L + 1 streams"), head, d_a)?;
        let (mut d_out, mut d_in) = (d_a, d_b);
        let shape = (s.batch, s.seq);
        let mut grad_norms = self.stream_stats.as_ref().map(|_| vec![l2_norm(d_out)]);
        for (k, unit) in self.units.iter_mut().enumerate().rev() {
            let acts = &s.units[k];
            unit.backward(
                d_out,
                &s.streams[k],
                acts,
                &mut s.scratch,
                &s.rope,
                shape,
                d_in,
            )?;
            std::mem::swap(&mut d_out, &mut d_in);
            if let Some(norms) = &mut grad_norms {
                norms.push(l2_norm(d_out));
            }
        }
        if let (Some(stats), Some(mut norms)) = (&mut self.stream_stats, grad_norms) {
            norms.reverse();
            stats.grad_norm = norms;
        }
        self.embed_backward(&s.tokens, d_out);
        Ok(())
    }

    fn check_tokens(&self, op: &'static str, tokens: &[u32]) -> Result<()> {
        match tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            Some(t) => Err(Error::invalid(
                op,
                format!(
                    "token {t} is outside the vocabulary of {}",
                    self.config.vocab
                ),
            )),
            None => Ok(()),
        }
    }

    /// `√C` with `embed_scale`, else 1 (Gemma rounds `√C` to the weights' precision first).
    fn embed_scale(&self) -> f32 {
        match self.config.embed_scale {
            true => (self.config.width as f32).sqrt(),
            false => 1.0,
        }
    }

    /// `x[r] = E[tokens[r]] · scale`.
    pub(crate) fn embed_forward(&self, tokens: &[u32], x: &mut [f32]) {
        let (c, scale) = (self.config.width, self.embed_scale());
        for (row, &t) in x.chunks_exact_mut(c).zip(tokens) {
            let e = &self.embed.value[t as usize * c..][..c];
            for (x, e) in row.iter_mut().zip(e) {
                *x = e * scale;
            }
        }
    }

    fn embed_backward(&mut self, tokens: &[u32], dx: &[f32]) {
        let (c, scale) = (self.config.width, self.embed_scale());
        for (row, &t) in dx.chunks_exact(c).zip(tokens) {
            let de = &mut self.embed.grad[t as usize * c..][..c];
            for (d, g) in de.iter_mut().zip(row) {
                *d += g * scale;
            }
        }
    }

    /// The head's weight `[V, C]`.
    fn head_weight(&self) -> &Param {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The final norm, the head and the soft-cap of the last stream `x`, into `acts.logits`.
    pub(crate) fn head_forward(&self, x: &[f32], acts: &mut HeadActs) -> Result<()> {
        let c = self.config.width;
        let rows = x.len() / c;
        let (z, logits) = (
            &mut acts.z[..rows * c],
            &mut acts.logits[..rows * self.config.vocab],
        );
        self.norm.forward(x, z, &mut acts.z_rstd[..rows])?;
        let dims = MatDims {
            m: rows,
            k: c,
            n: self.config.vocab,
        };
        let trans = Trans { a: false, b: true };
        matmul(logits, z, &self.head_weight().value, dims, trans, false)?;
        if let Some(cap) = self.config.final_softcap {
            for (l, t) in logits.iter_mut().zip(acts.capped.iter_mut()) {
                *t = (*l / cap).tanh();
                *l = cap * *t;
            }
        }
        Ok(())
    }

    /// Backward of [`Llama::head_forward`] from the logits' gradient in `acts.logits`:
    /// writes `dx`, adds into the head's and the norm's gradients.
    fn head_backward(&mut self, x: &[f32], acts: &mut HeadActs, dx: &mut [f32]) -> Result<()> {
        let (c, vocab) = (self.config.width, self.config.vocab);
        let rows = x.len() / c;
        if self.config.final_softcap.is_some() {
            for (d, t) in acts.logits.iter_mut().zip(acts.capped.iter()) {
                *d *= 1.0 - t * t;
            }
        }
        let head = self.lm_head.as_mut().unwrap_or(&mut self.embed);
        let dims = MatDims {
            m: rows,
            k: vocab,
            n: c,
        };
        matmul(
            &mut acts.dz,
            &acts.logits,
            &head.value,
            dims,
            Trans::NONE,
            false,
        )?;
        let dims = MatDims {
            m: vocab,
            k: rows,
            n: c,
        };
        let trans = Trans { a: true, b: false };
        matmul(&mut head.grad, &acts.logits, &acts.z, dims, trans, true)?;
        self.norm.backward(&acts.dz, x, &acts.z_rstd, dx)
    }

    fn new_state(&self, batch: usize, seq: usize) -> State {
        let config = &self.config;
        let rows = batch * seq;
        let n = rows * config.width;
        let mut rope = RopeTable::new(config.head_dim, config.rope_theta, seq);
        rope.fill(0);
        State {
            batch,
            seq,
            tokens: Vec::with_capacity(rows),
            targets: Vec::with_capacity(rows),
            backward_ready: false,
            rope,
            streams: (0..=self.units.len())
                .map(|_| AlignedVec::zeros(n))
                .collect(),
            units: self
                .units
                .iter()
                .map(|u| u.new_acts(config, batch, seq))
                .collect(),
            head: HeadActs::new(config, rows),
            losses: AlignedVec::zeros(rows),
            logsumexp: AlignedVec::zeros(rows),
            scratch: Box::new(UnitScratch::new(config, rows)),
            d_stream: [AlignedVec::zeros(n), AlignedVec::zeros(n)],
        }
    }

    /// Refreshes every norm's gain from its weight: [`Llama::forward`] and the decoder call
    /// it, so updates and loads are always seen.
    pub fn sync(&mut self) {
        for unit in &mut self.units {
            unit.sync();
        }
        self.norm.sync();
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |p| p.zero_grad());
    }

    /// Hands every parameter to `f`: the embedding, block by block, `norm`, `lm_head`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        f(&self.embed);
        for unit in &self.units {
            unit.visit_params(f);
        }
        f(&self.norm.weight);
        if let Some(head) = &self.lm_head {
            f(head);
        }
    }

    /// Every parameter, in [`Llama::visit_params`] order, for writing.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = vec![&mut self.embed];
        for unit in &mut self.units {
            unit.params_mut(&mut out);
        }
        out.push(&mut self.norm.weight);
        out.extend(self.lm_head.as_mut());
        out
    }

    /// Hands every parameter to `f` for writing, in [`Llama::visit_params`] order.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for p in self.params_mut() {
            f(p);
        }
    }
}
