//! Grouped-query self-attention with rotary positions and optional QK-norm: the Llama
//! family's attention sublayer, around [`crate::kernels::attention`].
//!
//! ```text
//! q = x·W_q (+b)   k = x·W_k (+b)   v = x·W_v (+b)        [rows, H·d], [rows, H_kv·d] ×2
//! q, k = QkNorm(q), QkNorm(k)                             (OLMo 2: whole rows; Qwen3: per head)
//! q, k = RoPE(q, p), RoPE(k, p)                           (rope.rs; p the position in the sequence)
//! y = softmax(scale · q kᵀ + causal mask) v               query head h reads kv head h / (H/H_kv)
//! F = y·W_o (+b)
//! ```
//! Backward runs the same steps in reverse: `o`, the kernel's backward into the packed
//! `[q | k | v]` gradient, RoPE's transpose, the norms' backward, then the three projections,
//! whose input gradients are summed.
//!
//! Each layer keeps only what its backward reads ([`AttnActs`]): the rotated `[q | k | v]`,
//! the probabilities, `y`, and with QK-norm the norms' inputs. The projections before
//! rotation live in the scratch shared by every layer ([`AttnScratch`]).
//!
//! ```
//! use resnorm::models::llama::{
//!     AttnActs, AttnScratch, LlamaAttention, LlamaConfig, LlamaPlacement, RopeTable,
//! };
//! let config = LlamaConfig::tiny(LlamaPlacement::PreLn);
//! let attn = LlamaAttention::new(0, &config).unwrap();
//! let (mut acts, mut scratch) = (AttnActs::new(&config, 1, 3), AttnScratch::new(&config, 3));
//! let mut rope = RopeTable::new(config.head_dim, config.rope_theta, 3);
//! rope.fill(0);
//! let x = vec![0.5; 3 * config.width];
//! let mut out = vec![0.0; x.len()];
//! attn.forward(&x, &mut out, &mut acts, &mut scratch, &rope, (1, 3)).unwrap();
//! assert!(out.iter().all(|&v| v == 0.0)); // the projections start at zero
//! ```

use super::config::{LlamaConfig, QkNorm};
use super::linear::linear_backward;
use super::rms::RmsNorm;
use super::rope::RopeTable;
use crate::kernels::attention::{
    attention_backward, attention_forward, AttentionShape, GradTarget, Grads, Rows,
};
use crate::nn::{Linear, Param};
use crate::AlignedVec;
use crate::Result;

/// The attention sublayer of block `i`: `layers.{i}.self_attn.{q,k,v,o}_proj` and the
/// optional `q_norm`, `k_norm`.
#[derive(Clone, Debug)]
pub struct LlamaAttention {
    /// `[C, H·d]`.
    pub q: Linear,
    /// `[C, H_kv·d]`.
    pub k: Linear,
    /// `[C, H_kv·d]`.
    pub v: Linear,
    /// `[H·d, C]`.
    pub o: Linear,
    /// QK-norm of the queries.
    pub q_norm: Option<RmsNorm>,
    /// QK-norm of the keys.
    pub k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

/// What the attention's backward reads, for `rows = batch·seq` rows.
#[derive(Clone, Debug)]
pub struct AttnActs {
    /// The QK-norms' inputs, `x·W_q` and `x·W_k` (empty without QK-norm).
    q_raw: AlignedVec,
    k_raw: AlignedVec,
    q_rstd: Vec<f32>,
    k_rstd: Vec<f32>,
    /// Rotated queries and keys and the values, `[rows, H·d + 2·H_kv·d]`.
    qkv: AlignedVec,
    probs: AlignedVec,
    /// The kernel's output, `o`'s input, `[rows, H·d]`.
    y: AlignedVec,
}

impl AttnActs {
    /// Buffers for `batch` sequences of `seq` positions.
    pub fn new(config: &LlamaConfig, batch: usize, seq: usize) -> Self {
        let rows = batch * seq;
        let (qw, kw) = (config.q_width(), config.kv_width());
        let (normed, rstd) = match config.qk_norm {
            QkNorm::Off => ((0, 0), (0, 0)),
            QkNorm::Whole => ((qw, kw), (1, 1)),
            QkNorm::PerHead => ((qw, kw), (config.heads, config.kv_heads)),
        };
        AttnActs {
            q_raw: AlignedVec::zeros(rows * normed.0),
            k_raw: AlignedVec::zeros(rows * normed.1),
            q_rstd: vec![0.0; rows * rstd.0],
            k_rstd: vec![0.0; rows * rstd.1],
            qkv: AlignedVec::zeros(rows * (qw + 2 * kw)),
            probs: AlignedVec::zeros(batch * config.heads * seq * seq),
            y: AlignedVec::zeros(rows * qw),
        }
    }
}

/// The scratch shared by every attention unit: the forward's queries, keys and values
/// before rotation (normalized with QK-norm), then the backward's gradients.
#[derive(Clone, Debug)]
pub struct AttnScratch {
    q: AlignedVec,
    k: AlignedVec,
    v: AlignedVec,
    dy: AlignedVec,
    dqkv: AlignedVec,
    dq: AlignedVec,
    dk: AlignedVec,
    dv: AlignedVec,
    dq_raw: AlignedVec,
    dk_raw: AlignedVec,
    /// `(H·d, H_kv·d)`.
    widths: (usize, usize),
}

impl AttnScratch {
    /// Scratch for `rows` rows.
    pub fn new(config: &LlamaConfig, rows: usize) -> Self {
        let (qw, kw) = (config.q_width(), config.kv_width());
        let normed = config.qk_norm != QkNorm::Off;
        AttnScratch {
            q: AlignedVec::zeros(rows * qw),
            k: AlignedVec::zeros(rows * kw),
            v: AlignedVec::zeros(rows * kw),
            dy: AlignedVec::zeros(rows * qw),
            dqkv: AlignedVec::zeros(rows * (qw + 2 * kw)),
            dq: AlignedVec::zeros(rows * qw),
            dk: AlignedVec::zeros(rows * kw),
            dv: AlignedVec::zeros(rows * kw),
            dq_raw: AlignedVec::zeros(if normed { rows * qw } else { 0 }),
            dk_raw: AlignedVec::zeros(if normed { rows * kw } else { 0 }),
            widths: (qw, kw),
        }
    }

    /// The queries, keys and values of the last [`LlamaAttention::project`], ready for
    /// rotation: `(q, k, v)` `[rows, ·]` each.
    pub(super) fn unrotated(&self, rows: usize) -> (&[f32], &[f32], &[f32]) {
        let (qw, kw) = self.widths;
        (
            &self.q[..rows * qw],
            &self.k[..rows * kw],
            &self.v[..rows * kw],
        )
    }
}

impl LlamaAttention {
    /// Block `layer`'s attention, parameters at zero (norm gains at 1).
    pub fn new(layer: usize, config: &LlamaConfig) -> Result<Self> {
        let name = |p: &str| format!("layers.{layer}.self_attn.{p}");
        let (c, qw, kw) = (config.width, config.q_width(), config.kv_width());
        let norm = |p: &str, cols: usize| RmsNorm::new(&name(p), cols, config.eps, 0.0);
        let (q_norm, k_norm) = match config.qk_norm {
            QkNorm::Off => (None, None),
            QkNorm::Whole => (Some(norm("q_norm", qw)), Some(norm("k_norm", kw))),
            QkNorm::PerHead => (
                Some(norm("q_norm", config.head_dim)),
                Some(norm("k_norm", config.head_dim)),
            ),
        };
        Ok(LlamaAttention {
            q: Linear::new(&name("q_proj"), c, qw, config.qkv_bias)?,
            k: Linear::new(&name("k_proj"), c, kw, config.qkv_bias)?,
            v: Linear::new(&name("v_proj"), c, kw, config.qkv_bias)?,
            o: Linear::new(&name("o_proj"), qw, c, config.o_bias)?,
            q_norm,
            k_norm,
            heads: config.heads,
            kv_heads: config.kv_heads,
            head_dim: config.head_dim,
            scale: config.attn_scale,
        })
    }

    /// The kernel's shape for `batch` sequences of `q_len` queries over `kv_len` keys.
    pub(super) fn shape(&self, batch: usize, q_len: usize, kv_len: usize) -> AttentionShape {
        AttentionShape::new(batch, self.heads, q_len, kv_len, self.head_dim)
            .causal()
            .grouped(self.kv_heads)
            .scaled(self.scale)
    }

    /// The projections and QK-norms of `x`'s rows into `scratch` (see
    /// [`AttnScratch::unrotated`]); with QK-norm, the norms' inputs and `rstd` into `acts`.
    pub(super) fn project(
        &self,
        x: &[f32],
        acts: &mut AttnActs,
        scratch: &mut AttnScratch,
    ) -> Result<()> {
        let rows = x.len() / self.q.in_features();
        let (qw, kw) = (self.q.out_features(), self.k.out_features());
        let (q, k) = (&mut scratch.q[..rows * qw], &mut scratch.k[..rows * kw]);
        self.v.forward(&mut scratch.v[..rows * kw], x)?;
        match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => {
                let q_raw = &mut acts.q_raw[..rows * qw];
                let k_raw = &mut acts.k_raw[..rows * kw];
                self.q.forward(q_raw, x)?;
                self.k.forward(k_raw, x)?;
                let q_rows = rows * qw / qn.weight.len();
                let k_rows = rows * kw / kn.weight.len();
                qn.forward(q_raw, q, &mut acts.q_rstd[..q_rows])?;
                kn.forward(k_raw, k, &mut acts.k_rstd[..k_rows])
            }
            _ => {
                self.q.forward(q, x)?;
                self.k.forward(k, x)
            }
        }
    }

    /// `out [rows, C]` from `x [rows, C]`, `batch` sequences of `seq` positions whose
    /// rotations `rope` holds from position 0.
    pub fn forward(
        &self,
        x: &[f32],
        out: &mut [f32],
        acts: &mut AttnActs,
        scratch: &mut AttnScratch,
        rope: &RopeTable,
        (batch, seq): (usize, usize),
    ) -> Result<()> {
        self.project(x, acts, scratch)?;
        let (qw, kw) = (self.q.out_features(), self.k.out_features());
        let width = qw + 2 * kw;
        let rows = x.len() / self.q.in_features();
        let (q, k, v) = scratch.unrotated(rows);
        let qkv = &mut acts.qkv;
        let src = q
            .chunks_exact(qw)
            .zip(k.chunks_exact(kw))
            .zip(v.chunks_exact(kw));
        for (r, ((q, k), v)) in src.enumerate() {
            let row = &mut qkv[r * width..][..width];
            let (rq, rest) = row.split_at_mut(qw);
            let (rk, rv) = rest.split_at_mut(kw);
            rope.rotate(q, rq, r % seq, self.heads);
            rope.rotate(k, rk, r % seq, self.kv_heads);
            rv.copy_from_slice(v);
        }
        let shape = self.shape(batch, seq, seq);
        let views = packed_views(&acts.qkv, (qw, kw), seq);
        attention_forward(&mut acts.y, &mut acts.probs, views, &shape, None)?;
        self.o.forward(out, &acts.y)
    }

    /// Writes `dx` from `dout`; `x`, `acts` and `rope` are the forward's. Adds into the
    /// gradients.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dout: &[f32],
        x: &[f32],
        acts: &AttnActs,
        scratch: &mut AttnScratch,
        rope: &RopeTable,
        (batch, seq): (usize, usize),
        dx: &mut [f32],
    ) -> Result<()> {
        let (qw, kw) = (self.q.out_features(), self.k.out_features());
        let width = qw + 2 * kw;
        let s = scratch;
        linear_backward(&mut self.o, &mut s.dy, &acts.y, dout, false)?;
        let shape = self.shape(batch, seq, seq);
        let views = packed_views(&acts.qkv, (qw, kw), seq);
        let grads = Grads::Packed(GradTarget::new(&mut s.dqkv));
        attention_backward(grads, &s.dy, &acts.probs, views, &shape, None)?;
        let dst = s.dq.chunks_exact_mut(qw).zip(s.dk.chunks_exact_mut(kw));
        for (r, ((dq, dk), dv)) in dst.zip(s.dv.chunks_exact_mut(kw)).enumerate() {
            let row = &s.dqkv[r * width..][..width];
            rope.rotate_back(&row[..qw], dq, r % seq, self.heads);
            rope.rotate_back(&row[qw..qw + kw], dk, r % seq, self.kv_heads);
            dv.copy_from_slice(&row[qw + kw..]);
        }
        let (dq, dk) = match (&mut self.q_norm, &mut self.k_norm) {
            (Some(qn), Some(kn)) => {
                qn.backward(&s.dq, &acts.q_raw, &acts.q_rstd, &mut s.dq_raw)?;
                kn.backward(&s.dk, &acts.k_raw, &acts.k_rstd, &mut s.dk_raw)?;
                (&s.dq_raw, &s.dk_raw)
            }
            _ => (&s.dq, &s.dk),
        };
        linear_backward(&mut self.q, dx, x, dq, false)?;
        linear_backward(&mut self.k, dx, x, dk, true)?;
        linear_backward(&mut self.v, dx, x, &s.dv, true)
    }

    /// Hands `q`, `k`, `v`, `o`, then the QK-norms, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        for layer in [&self.q, &self.k, &self.v, &self.o] {
            layer.visit_params(f);
        }
        for norm in [&self.q_norm, &self.k_norm].into_iter().flatten() {
            f(&norm.weight);
        }
    }

    /// Every parameter, in [`LlamaAttention::visit_params`] order, for writing.
    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Param>) {
        for layer in [&mut self.q, &mut self.k, &mut self.v, &mut self.o] {
            out.push(&mut layer.weight);
            out.extend(layer.bias.as_mut());
        }
        for norm in [&mut self.q_norm, &mut self.k_norm].into_iter().flatten() {
            out.push(&mut norm.weight);
        }
    }

    /// Refreshes the QK-norms' gains.
    pub fn sync(&mut self) {
        for norm in [&mut self.q_norm, &mut self.k_norm].into_iter().flatten() {
            norm.sync();
        }
    }
}

/// The `q`, `k`, `v` views of packed `[q | k | v]` rows of `(H·d, H_kv·d)` widths.
fn packed_views(
    qkv: &[f32],
    (qw, kw): (usize, usize),
    seq: usize,
) -> (Rows<'_>, Rows<'_>, Rows<'_>) {
    let width = qw + 2 * kw;
    let view = |column| Rows::new(qkv, width, column, seq);
    (view(0), view(qw), view(qw + kw))
}
