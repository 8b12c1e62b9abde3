//! The transforms `F` of the encoder-decoder's residual units: the GPT's causal
//! self-attention and MLP ([`GptSublayer`]), bidirectional self-attention over padded
//! sequences, and cross-attention from the decoder stream to the encoder's output.
//!
//! ```text
//! bidirectional:  qkv = h·W_attn + b_attn;  y = softmax(q·kᵀ/√d, keys < len_b)·v per head;
//!                 F(h) = y·W_proj + b_proj
//! cross:          q = h·W_q + b_q;  [k | v] = m·W_kv + b_kv   (m: the encoder's output)
//!                 y = softmax(q·kᵀ/√d, keys < src_len_b)·v;  F(h) = y·W_proj + b_proj
//! ```
//! In training each output is dropped out before it joins the stream, the MLP's
//! activation and every attention's probabilities too ([`super::Dropout`]); backward
//! regenerates the same masks.
//!
//! Backward runs the same path reversed; cross-attention also adds `∂L/∂m = dkv·W_kvᵀ` into
//! the gradient of the encoder's output, which every decoder layer reads. The projections'
//! biases are added as the attention reads its operands and their gradients summed as it
//! writes them, as in the GPT.

use super::dropout::UnitMasks;
use crate::kernels::attention::{
    attention_backward, attention_forward, AttentionShape, GradTarget, Grads, Rows,
};
use crate::kernels::dropout::{dropout_backward, dropout_forward, DropoutMask};
use crate::kernels::gelu::{bias_gelu_backward_from_slope, bias_gelu_forward_keeping_slope};
use crate::kernels::residual::residual_add_assign;
use crate::models::gpt::Transform;
use crate::models::gpt::{Sublayer as GptSublayer, SublayerActs as GptActs, SublayerScratch};
use crate::nn::{Linear, Param};
use crate::AlignedVec;
use crate::{Error, Result};

/// What attention reads besides a unit's input: the sizes, the valid length of each
/// sequence of this stream, and for the decoder the encoder's output.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Sequences `B`.
    pub batch: usize,
    /// Positions per sequence of this stream (padded).
    pub seq: usize,
    /// Valid positions of each sequence (right padding); `None`: all `seq`.
    pub lengths: Option<&'a [usize]>,
    /// The encoder's output, for cross-attention.
    pub memory: Option<Memory<'a>>,
}

/// The encoder's output as cross-attention reads it.
#[derive(Clone, Copy, Debug)]
pub struct Memory<'a> {
    /// `[B·S, C]`.
    pub data: &'a [f32],
    /// Positions `S` per sequence (padded).
    pub seq: usize,
    /// Valid source positions of each sequence; `None`: all `S`.
    pub lengths: Option<&'a [usize]>,
}

/// `F` of one residual unit of the encoder or the decoder.
#[derive(Clone, Debug)]
pub enum Sublayer {
    /// The GPT's causal self-attention (the decoder's first sublayer) or MLP.
    Gpt(GptSublayer),
    /// Self-attention over every valid position (the encoder's), `{prefix}.c_attn`,
    /// `{prefix}.c_proj`.
    Bidirectional {
        /// Queries, keys and values, `[C, 3C]`.
        c_attn: Linear,
        /// Heads `H`.
        heads: usize,
        /// Output projection, `[C, C]`.
        c_proj: Linear,
    },
    /// Queries from the decoder stream, keys and values from the encoder's output.
    Cross {
        /// Queries, `[C, C]`.
        c_q: Linear,
        /// Keys and values, `[C, 2C]`.
        c_kv: Linear,
        /// Heads `H`.
        heads: usize,
        /// Output projection, `[C, C]`.
        c_proj: Linear,
    },
}

/// What a [`Sublayer`] saves for backward.
#[derive(Clone, Debug)]
pub enum SublayerActs {
    /// The GPT sublayer's.
    Gpt(GptActs),
    /// `qkv [rows, 3C]` (without its bias), probabilities `[B, H, T, T]`, heads `y [rows, C]`.
    Bidirectional {
        qkv: AlignedVec,
        att: AlignedVec,
        y: AlignedVec,
    },
    /// `q [rows, C]`, `kv [B·S, 2C]` (without biases), probabilities `[B, H, T, S]`, `y`.
    Cross {
        q: AlignedVec,
        kv: AlignedVec,
        att: AlignedVec,
        y: AlignedVec,
    },
}

/// Gradient buffers shared by the sublayers of one stack (used one at a time).
#[derive(Clone, Debug)]
pub struct Scratch {
    gpt: SublayerScratch,
    /// `dqkv [rows, 3C]` (bidirectional) or `dq [rows, C]` (cross).
    dq: AlignedVec,
    dy: AlignedVec,
    dkv: AlignedVec,
    dmemory: AlignedVec,
    /// `∂L/∂F` through the output's dropout mask `[rows, C]`.
    d_out: AlignedVec,
    /// The MLP's `∂L/∂a` and `∂L/∂u` under activation dropout, `[rows, 4C]` each.
    d_act: AlignedVec,
    d_pre: AlignedVec,
}

impl Scratch {
    /// Buffers for `rows` positions of width `width`, `memory_rows` encoder positions
    /// (0 in the encoder).
    pub fn new(rows: usize, width: usize, memory_rows: usize) -> Self {
        Scratch {
            gpt: SublayerScratch::new(rows, width),
            dq: AlignedVec::zeros(rows * 3 * width),
            dy: AlignedVec::zeros(rows * width),
            dkv: AlignedVec::zeros(memory_rows * 2 * width),
            dmemory: AlignedVec::zeros(memory_rows * width),
            d_out: AlignedVec::zeros(rows * width),
            d_act: AlignedVec::zeros(rows * 4 * width),
            d_pre: AlignedVec::zeros(rows * 4 * width),
        }
    }
}

/// A linear layer's bias, which every layer here has.
fn bias(linear: &Linear) -> &[f32] {
    &linear.bias.as_ref().expect("built with a bias").value
}

/// A linear layer's bias and its gradient, borrowed apart.
fn split_bias(linear: &mut Linear) -> (&[f32], &mut [f32]) {
    let bias = linear.bias.as_mut().expect("built with a bias");
    (&bias.value, &mut bias.grad)
}

impl Sublayer {
    /// Bidirectional self-attention named `{prefix}.c_attn`, `{prefix}.c_proj`.
    pub fn bidirectional(prefix: &str, width: usize, heads: usize) -> Result<Self> {
        check_heads(width, heads)?;
        Ok(Sublayer::Bidirectional {
            c_attn: Linear::new(&format!("{prefix}.c_attn"), width, 3 * width, true)?,
            heads,
            c_proj: Linear::new(&format!("{prefix}.c_proj"), width, width, true)?,
        })
    }

    /// Cross-attention named `{prefix}.c_q`, `{prefix}.c_kv`, `{prefix}.c_proj`.
    pub fn cross(prefix: &str, width: usize, heads: usize) -> Result<Self> {
        check_heads(width, heads)?;
        Ok(Sublayer::Cross {
            c_q: Linear::new(&format!("{prefix}.c_q"), width, width, true)?,
            c_kv: Linear::new(&format!("{prefix}.c_kv"), width, 2 * width, true)?,
            heads,
            c_proj: Linear::new(&format!("{prefix}.c_proj"), width, width, true)?,
        })
    }

    /// The linear layers, input side first.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Sublayer::Gpt(gpt) => gpt.linears_mut().into(),
            Sublayer::Bidirectional { c_attn, c_proj, .. } => vec![c_attn, c_proj],
            Sublayer::Cross {
                c_q, c_kv, c_proj, ..
            } => vec![c_q, c_kv, c_proj],
        }
    }

    /// Activation buffers for `batch` sequences of `seq` positions (`memory_seq` encoder
    /// positions for cross-attention).
    pub fn new_acts(&self, batch: usize, seq: usize, memory_seq: usize) -> SublayerActs {
        let rows = batch * seq;
        let zeros = AlignedVec::zeros;
        match self {
            Sublayer::Gpt(gpt) => SublayerActs::Gpt(gpt.new_acts(batch, seq)),
            Sublayer::Bidirectional { c_proj, heads, .. } => {
                let c = c_proj.in_features();
                SublayerActs::Bidirectional {
                    qkv: zeros(rows * 3 * c),
                    att: zeros(rows * heads * seq),
                    y: zeros(rows * c),
                }
            }
            Sublayer::Cross { c_proj, heads, .. } => {
                let c = c_proj.in_features();
                SublayerActs::Cross {
                    q: zeros(rows * c),
                    kv: zeros(batch * memory_seq * 2 * c),
                    att: zeros(rows * heads * memory_seq),
                    y: zeros(rows * c),
                }
            }
        }
    }

    /// `out = F(h)` for `h [B·T, C]`.
    pub fn forward(
        &self,
        h: &[f32],
        acts: &mut SublayerActs,
        out: &mut [f32],
        ctx: &Context<'_>,
    ) -> Result<()> {
        self.forward_masked(h, acts, out, ctx, None)
    }

    /// [`Sublayer::forward`] with the output (and an MLP's activation or an attention's
    /// probabilities) dropped out by `masks`, when given.
    pub(crate) fn forward_masked(
        &self,
        h: &[f32],
        acts: &mut SublayerActs,
        out: &mut [f32],
        ctx: &Context<'_>,
        masks: Option<UnitMasks>,
    ) -> Result<()> {
        let activation = masks.map(|m| m.activation).filter(|m| !m.is_identity());
        let attention = masks.map(|m| m.attention).filter(|m| !m.is_identity());
        match (self, acts, activation) {
            (
                Sublayer::Gpt(GptSublayer::Mlp { c_fc, c_proj }),
                SublayerActs::Gpt(GptActs::Mlp { slope, act }),
                Some(mask),
            ) => {
                c_fc.forward_without_bias(slope, h)?;
                bias_gelu_forward_keeping_slope(act, slope, bias(c_fc))?;
                dropout_forward(act, &mask, 0);
                c_proj.forward(out, act)?;
            }
            (sublayer, acts, _) => sublayer.forward_attending(h, acts, out, ctx, attention)?,
        }
        if let Some(masks) = masks {
            dropout_forward(out, &masks.output, 0);
        }
        Ok(())
    }

    /// `out = F(h)` with the attention's probabilities dropped out by `attention`, if given
    /// (never an identity mask).
    fn forward_attending(
        &self,
        h: &[f32],
        acts: &mut SublayerActs,
        out: &mut [f32],
        ctx: &Context<'_>,
        attention: Option<DropoutMask>,
    ) -> Result<()> {
        let (batch, seq) = (ctx.batch, ctx.seq);
        match (self, acts, attention) {
            (
                Sublayer::Gpt(GptSublayer::Attention {
                    c_attn,
                    core,
                    c_proj,
                }),
                SublayerActs::Gpt(GptActs::Attention { qkv, att, y }),
                Some(mask),
            ) => {
                c_attn.forward_without_bias(qkv, h)?;
                let operands = (&qkv[..], bias(c_attn));
                core.forward_adding_bias_dropped((y, att), operands, &mask, batch, seq)?;
                c_proj.forward(out, y)
            }
            (Sublayer::Gpt(gpt), SublayerActs::Gpt(acts), _) => {
                gpt.forward(h, acts, out, batch, seq)
            }
            (
                Sublayer::Bidirectional {
                    c_attn,
                    heads,
                    c_proj,
                },
                SublayerActs::Bidirectional { qkv, att, y },
                _,
            ) => {
                c_attn.forward_without_bias(qkv, h)?;
                let c = c_proj.in_features();
                let shape = dropped(
                    AttentionShape::new(batch, *heads, seq, seq, c / heads),
                    attention,
                );
                let view = |column| Rows::new(qkv, 3 * c, column, seq).with_bias(bias(c_attn));
                let operands = (view(0), view(c), view(2 * c));
                attention_forward(y, att, operands, &shape, ctx.lengths)?;
                c_proj.forward(out, y)
            }
            (
                Sublayer::Cross {
                    c_q,
                    c_kv,
                    heads,
                    c_proj,
                },
                SublayerActs::Cross { q, kv, att, y },
                _,
            ) => {
                let memory = ctx.memory.ok_or_else(no_memory)?;
                c_q.forward_without_bias(q, h)?;
                c_kv.forward_without_bias(kv, memory.data)?;
                let operands = cross_operands((q, bias(c_q)), (kv, bias(c_kv)), seq, memory.seq);
                let shape = dropped(cross_shape(c_proj, *heads, ctx, memory), attention);
                attention_forward(y, att, operands, &shape, memory.lengths)?;
                c_proj.forward(out, y)
            }
            _ => unreachable!("activations are always built by the same sublayer"),
        }
    }

    /// `dh = F'(h)ᵀ dout` (overwritten); adds into the sublayer's parameter gradients and,
    /// for cross-attention, `∂L/∂memory` into `d_memory`. `masks` are the forward's.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dout: &[f32],
        h: &[f32],
        acts: &SublayerActs,
        scratch: &mut Scratch,
        dh: &mut [f32],
        (ctx, masks): (&Context<'_>, Option<UnitMasks>),
        d_memory: Option<&mut [f32]>,
    ) -> Result<()> {
        let Some(masks) = masks else {
            return self.backward_attending(dout, h, acts, scratch, dh, (ctx, None), d_memory);
        };
        let attention = Some(masks.attention).filter(|m| !m.is_identity());
        // The output's mask first: `∂L/∂F = dout · m / (1 - p)`.
        let mut d_out = std::mem::take(&mut scratch.d_out);
        let d_f = &mut d_out[..dout.len()];
        d_f.copy_from_slice(dout);
        dropout_backward(d_f, &masks.output, 0);
        let result = match (&mut *self, acts) {
            (
                Sublayer::Gpt(GptSublayer::Mlp { c_fc, c_proj }),
                SublayerActs::Gpt(GptActs::Mlp { slope, act }),
            ) if !masks.activation.is_identity() => {
                let buffers = (&mut scratch.d_act[..], &mut scratch.d_pre[..]);
                mlp_backward_dropped((c_fc, c_proj), (slope, act), (d_f, h, dh), buffers, masks)
            }
            (sublayer, acts) => {
                let ctx = (ctx, attention);
                sublayer.backward_attending(d_f, h, acts, scratch, dh, ctx, d_memory)
            }
        };
        scratch.d_out = d_out;
        result
    }

    /// The backward of [`Sublayer::forward_attending`], given the same `attention` mask.
    #[allow(clippy::too_many_arguments)]
    fn backward_attending(
        &mut self,
        dout: &[f32],
        h: &[f32],
        acts: &SublayerActs,
        scratch: &mut Scratch,
        dh: &mut [f32],
        (ctx, attention): (&Context<'_>, Option<DropoutMask>),
        d_memory: Option<&mut [f32]>,
    ) -> Result<()> {
        let (batch, seq) = (ctx.batch, ctx.seq);
        match (self, acts, attention) {
            (
                Sublayer::Gpt(GptSublayer::Attention {
                    c_attn,
                    core,
                    c_proj,
                }),
                SublayerActs::Gpt(GptActs::Attention { qkv, att, y }),
                Some(mask),
            ) => {
                c_proj.backward(&mut scratch.dy, y, dout)?;
                let dqkv = &mut scratch.dq[..qkv.len()];
                let (b, db) = split_bias(c_attn);
                let (grads, operands) = ((dqkv, db), (&qkv[..], b));
                core.backward_adding_bias_dropped(
                    grads,
                    &scratch.dy,
                    att,
                    operands,
                    &mask,
                    batch,
                    seq,
                )?;
                c_attn.backward_without_bias(dh, h, &scratch.dq[..qkv.len()])
            }
            (Sublayer::Gpt(gpt), SublayerActs::Gpt(acts), _) => {
                gpt.backward(dout, h, acts, &mut scratch.gpt, dh, batch, seq)
            }
            (
                Sublayer::Bidirectional {
                    c_attn,
                    heads,
                    c_proj,
                },
                SublayerActs::Bidirectional { qkv, att, y },
                _,
            ) => {
                let c = c_proj.in_features();
                c_proj.backward(&mut scratch.dy, y, dout)?;
                let shape = AttentionShape::new(batch, *heads, seq, seq, c / *heads);
                let shape = dropped(shape, attention);
                let dqkv = &mut scratch.dq[..qkv.len()];
                {
                    let (b, db) = split_bias(c_attn);
                    let view = |column| Rows::new(qkv, 3 * c, column, seq).with_bias(b);
                    let operands = (view(0), view(c), view(2 * c));
                    let grads = Grads::Packed(GradTarget::with_bias(dqkv, db));
                    attention_backward(grads, &scratch.dy, att, operands, &shape, ctx.lengths)?;
                }
                c_attn.backward_without_bias(dh, h, &scratch.dq[..qkv.len()])
            }
            (
                Sublayer::Cross {
                    c_q,
                    c_kv,
                    heads,
                    c_proj,
                },
                SublayerActs::Cross { q, kv, att, y },
                _,
            ) => {
                let memory = ctx.memory.ok_or_else(no_memory)?;
                let d_memory = d_memory.ok_or_else(no_memory)?;
                c_proj.backward(&mut scratch.dy, y, dout)?;
                let shape = dropped(cross_shape(c_proj, *heads, ctx, memory), attention);
                let (dq, dkv) = (&mut scratch.dq[..q.len()], &mut scratch.dkv[..kv.len()]);
                {
                    let (bq, dbq) = split_bias(c_q);
                    let (bkv, dbkv) = split_bias(c_kv);
                    let operands = cross_operands((q, bq), (kv, bkv), seq, memory.seq);
                    let grads = Grads::Split {
                        dq: GradTarget::with_bias(dq, dbq),
                        dkv: GradTarget::with_bias(dkv, dbkv),
                    };
                    attention_backward(grads, &scratch.dy, att, operands, &shape, memory.lengths)?;
                }
                c_q.backward_without_bias(dh, h, &scratch.dq[..q.len()])?;
                let dmemory = &mut scratch.dmemory[..memory.data.len()];
                c_kv.backward_without_bias(dmemory, memory.data, &scratch.dkv[..kv.len()])?;
                residual_add_assign(d_memory, dmemory)
            }
            _ => unreachable!("activations are always built by the same sublayer"),
        }
    }
}

/// The MLP's backward under activation dropout: `d_a = m ⊙ (∂L/∂F·W_projᵀ) / (1 - p)`,
/// then GELU's and `c_fc`'s backward as the GPT's MLP has them.
fn mlp_backward_dropped(
    (c_fc, c_proj): (&mut Linear, &mut Linear),
    (slope, act): (&[f32], &[f32]),
    (d_f, h, dh): (&[f32], &[f32], &mut [f32]),
    (d_act, d_pre): (&mut [f32], &mut [f32]),
    masks: UnitMasks,
) -> Result<()> {
    let (d_act, d_pre) = (&mut d_act[..act.len()], &mut d_pre[..act.len()]);
    c_proj.backward(d_act, act, d_f)?;
    dropout_backward(d_act, &masks.activation, 0);
    let (_, bias_grad) = split_bias(c_fc);
    bias_gelu_backward_from_slope(d_pre, slope, d_act, bias_grad)?;
    c_fc.backward_without_bias(dh, h, d_pre)
}

/// The attention of `heads` heads from `ctx`'s queries to `memory`'s keys.
pub(super) fn cross_shape(
    c_proj: &Linear,
    heads: usize,
    ctx: &Context<'_>,
    memory: Memory<'_>,
) -> AttentionShape {
    let c = c_proj.in_features();
    AttentionShape::new(ctx.batch, heads, ctx.seq, memory.seq, c / heads)
}

/// `shape` with its probabilities dropped out by `mask`, if given.
fn dropped(shape: AttentionShape, mask: Option<DropoutMask>) -> AttentionShape {
    mask.map_or(shape, |mask| shape.dropped(mask))
}

/// Cross-attention's views: queries `[B·T, C]`, keys and values the halves of `[B·S, 2C]`,
/// each with its projection's bias added as it is read.
fn cross_operands<'a>(
    (q, bq): (&'a [f32], &'a [f32]),
    (kv, bkv): (&'a [f32], &'a [f32]),
    seq: usize,
    memory_seq: usize,
) -> (Rows<'a>, Rows<'a>, Rows<'a>) {
    let c = bq.len();
    (
        Rows::new(q, c, 0, seq).with_bias(bq),
        Rows::new(kv, 2 * c, 0, memory_seq).with_bias(bkv),
        Rows::new(kv, 2 * c, c, memory_seq).with_bias(bkv),
    )
}

fn no_memory() -> Error {
    Error::invalid(
        "seq2seq cross-attention",
        "cross-attention needs the encoder's output (and its gradient in backward)",
    )
}

fn check_heads(width: usize, heads: usize) -> Result<()> {
    if heads == 0 || width == 0 || !width.is_multiple_of(heads) {
        return Err(Error::invalid(
            "seq2seq attention",
            format!("{heads} heads must be at least 1 and divide {width} channels (> 0)"),
        ));
    }
    Ok(())
}

impl Transform for Sublayer {
    fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        match self {
            Sublayer::Gpt(gpt) => gpt.visit_params(f),
            Sublayer::Bidirectional { c_attn, c_proj, .. } => {
                c_attn.visit_params(f);
                c_proj.visit_params(f);
            }
            Sublayer::Cross {
                c_q, c_kv, c_proj, ..
            } => {
                c_q.visit_params(f);
                c_kv.visit_params(f);
                c_proj.visit_params(f);
            }
        }
    }

    fn params_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Param>) {
        for linear in self.linears_mut() {
            out.push(&mut linear.weight);
            out.extend(linear.bias.as_mut());
        }
    }
}
