//! The two transforms `F` that a residual unit wraps: causal self-attention and the MLP.
//!
//! ```text
//! attention: qkv = h·W_attn + b_attn;  y = softmax(q·kᵀ/√d + causal mask)·v per head;
//!            F(h) = y·W_proj + b_proj
//! MLP:       u = h·W_fc + b_fc;  a = GELU_tanh(u);  F(h) = a·W_proj + b_proj   (4C hidden)
//! ```
//! Backward runs the same path reversed, each linear layer adding into its own gradients.
//!
//! The first linear layer's bias is added, and its gradient summed, by the kernel after it:
//! the MLP's `b_fc` by the GELU as it reads `h·W_fc` and by the GELU's backward as it writes
//! `du` ([`bias_gelu_forward_keeping_slope`], [`bias_gelu_backward_from_slope`]); `b_attn`
//! by the attention as each head reads its columns of `qkv` and sums those of `dqkv`
//! ([`CausalSelfAttention::forward_adding_bias`]). The `[rows, 4C]` and `[rows, 3C]`
//! products are then read and written once a pass instead of twice. 6-layer width-384 GPT,
//! 2 threads, a scratch program switching step by step between this and the layers adding
//! their own biases, eight runs each: the MLP's fusion made the step faster in all eight, by
//! 7-44 ms (median 17, of a ~600 ms step); the attention's in six of eight (median 5 ms).

use super::unit::Transform;
use crate::kernels::gelu::{
    bias_gelu_backward_from_slope, bias_gelu_forward_keeping_slope, gelu_backward_from_slope,
    gelu_forward_keeping_slope,
};
use crate::nn::attention::CausalSelfAttention;
use crate::nn::linear::Linear;
use crate::nn::Param;
use crate::AlignedVec;
use crate::Result;

/// `F` of one residual unit.
#[derive(Clone, Debug)]
pub enum Sublayer {
    /// Multi-head causal self-attention, `h.{i}.attn.*`.
    Attention {
        /// Input projection to queries, keys and values, `[C, 3C]`.
        c_attn: Linear,
        /// The attention core (no parameters).
        core: CausalSelfAttention,
        /// Output projection, `[C, C]`.
        c_proj: Linear,
    },
    /// Two-layer perceptron with GELU, `h.{i}.mlp.*`.
    Mlp {
        /// Expansion, `[C, 4C]`.
        c_fc: Linear,
        /// Contraction, `[4C, C]`.
        c_proj: Linear,
    },
}

/// Activations a [`Sublayer`] saves for backward, for `rows = batch · seq` tokens.
#[derive(Clone, Debug)]
pub enum SublayerActs {
    /// `qkv [rows, 3C]`, attention probabilities `[B, H, T, T]`, head outputs `y [rows, C]`.
    Attention {
        qkv: AlignedVec,
        att: AlignedVec,
        y: AlignedVec,
    },
    /// `slope [rows, 4C]`: `c_fc`'s product `h·W_fc`, which the GELU then overwrites with
    /// its slope `gelu'(u)` at `u = h·W_fc + b_fc`, all the backward needs of it; and the
    /// activation `a [rows, 4C]`.
    Mlp { slope: AlignedVec, act: AlignedVec },
}

/// Gradient buffers shared by every sublayer of a model (used one sublayer at a time).
#[derive(Clone, Debug)]
pub struct SublayerScratch {
    dqkv: AlignedVec,
    dy: AlignedVec,
    dpre: AlignedVec,
    dact: AlignedVec,
}

impl SublayerScratch {
    /// Buffers for `rows` tokens of width `width`.
    pub fn new(rows: usize, width: usize) -> Self {
        SublayerScratch {
            dqkv: AlignedVec::zeros(rows * 3 * width),
            dy: AlignedVec::zeros(rows * width),
            dpre: AlignedVec::zeros(rows * 4 * width),
            dact: AlignedVec::zeros(rows * 4 * width),
        }
    }
}

impl Sublayer {
    /// The attention sublayer of block `layer`.
    pub fn attention(layer: usize, width: usize, heads: usize) -> Result<Self> {
        Sublayer::attention_named(&format!("h.{layer}.attn"), width, heads)
    }

    /// Causal self-attention whose parameters are named `{prefix}.c_attn.*` and
    /// `{prefix}.c_proj.*`.
    pub fn attention_named(prefix: &str, width: usize, heads: usize) -> Result<Self> {
        Ok(Sublayer::Attention {
            c_attn: Linear::new(&format!("{prefix}.c_attn"), width, 3 * width, true)?,
            core: CausalSelfAttention::new(width, heads)?,
            c_proj: Linear::new(&format!("{prefix}.c_proj"), width, width, true)?,
        })
    }

    /// The MLP sublayer of block `layer`.
    pub fn mlp(layer: usize, width: usize) -> Result<Self> {
        Sublayer::mlp_named(&format!("h.{layer}.mlp"), width)
    }

    /// An MLP whose parameters are named `{prefix}.c_fc.*` and `{prefix}.c_proj.*`.
    pub fn mlp_named(prefix: &str, width: usize) -> Result<Self> {
        Ok(Sublayer::Mlp {
            c_fc: Linear::new(&format!("{prefix}.c_fc"), width, 4 * width, true)?,
            c_proj: Linear::new(&format!("{prefix}.c_proj"), 4 * width, width, true)?,
        })
    }

    /// Activation buffers for this sublayer at `batch · seq` tokens.
    pub fn new_acts(&self, batch: usize, seq: usize) -> SublayerActs {
        let rows = batch * seq;
        match self {
            Sublayer::Attention { core, .. } => SublayerActs::Attention {
                qkv: AlignedVec::zeros(rows * 3 * core.channels()),
                att: AlignedVec::zeros(batch * core.heads() * seq * seq),
                y: AlignedVec::zeros(rows * core.channels()),
            },
            Sublayer::Mlp { c_fc, .. } => SublayerActs::Mlp {
                slope: AlignedVec::zeros(rows * c_fc.out_features()),
                act: AlignedVec::zeros(rows * c_fc.out_features()),
            },
        }
    }

    /// `out = F(h)` for `h [batch·seq, C]`.
    pub fn forward(
        &self,
        h: &[f32],
        acts: &mut SublayerActs,
        out: &mut [f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        match (self, acts) {
            (
                Sublayer::Attention {
                    c_attn,
                    core,
                    c_proj,
                },
                SublayerActs::Attention { qkv, att, y },
            ) => {
                match &c_attn.bias {
                    Some(bias) => {
                        c_attn.forward_without_bias(qkv, h)?;
                        core.forward_adding_bias(y, att, qkv, &bias.value, batch, seq)?;
                    }
                    None => {
                        c_attn.forward(qkv, h)?;
                        core.forward(y, att, qkv, batch, seq)?;
                    }
                }
                c_proj.forward(out, y)
            }
            (Sublayer::Mlp { c_fc, c_proj }, SublayerActs::Mlp { slope, act }) => {
                match &c_fc.bias {
                    Some(bias) => {
                        c_fc.forward_without_bias(slope, h)?;
                        bias_gelu_forward_keeping_slope(act, slope, &bias.value)?;
                    }
                    None => {
                        c_fc.forward(slope, h)?;
                        gelu_forward_keeping_slope(act, slope)?;
                    }
                }
                c_proj.forward(out, act)
            }
            _ => unreachable!("activations are always built by the same sublayer"),
        }
    }

    /// `dh = F'(h)ᵀ dout` (overwritten); adds into the sublayer's parameter gradients.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dout: &[f32],
        h: &[f32],
        acts: &SublayerActs,
        scratch: &mut SublayerScratch,
        dh: &mut [f32],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        match (self, acts) {
            (
                Sublayer::Attention {
                    c_attn,
                    core,
                    c_proj,
                },
                SublayerActs::Attention { qkv, att, y },
            ) => {
                c_proj.backward(&mut scratch.dy, y, dout)?;
                let (dqkv, dy) = (&mut scratch.dqkv, &scratch.dy);
                match &mut c_attn.bias {
                    Some(bias) => {
                        let (qkv, bias_grad) = ((&qkv[..], &bias.value[..]), &mut bias.grad);
                        core.backward_adding_bias(dqkv, bias_grad, dy, att, qkv, batch, seq)?;
                        c_attn.backward_without_bias(dh, h, dqkv)
                    }
                    None => {
                        core.backward(dqkv, dy, att, qkv, batch, seq)?;
                        c_attn.backward(dh, h, dqkv)
                    }
                }
            }
            (Sublayer::Mlp { c_fc, c_proj }, SublayerActs::Mlp { slope, act }) => {
                c_proj.backward(&mut scratch.dact, act, dout)?;
                match &mut c_fc.bias {
                    Some(bias) => {
                        let (dpre, dact) = (&mut scratch.dpre, &scratch.dact);
                        bias_gelu_backward_from_slope(dpre, slope, dact, &mut bias.grad)?;
                        c_fc.backward_without_bias(dh, h, &scratch.dpre)
                    }
                    None => {
                        gelu_backward_from_slope(&mut scratch.dpre, slope, &scratch.dact)?;
                        c_fc.backward(dh, h, &scratch.dpre)
                    }
                }
            }
            _ => unreachable!("activations are always built by the same sublayer"),
        }
    }

    /// The linear layers, input side first.
    pub fn linears_mut(&mut self) -> [&mut Linear; 2] {
        match self {
            Sublayer::Attention { c_attn, c_proj, .. } => [c_attn, c_proj],
            Sublayer::Mlp { c_fc, c_proj } => [c_fc, c_proj],
        }
    }
}

impl Transform for Sublayer {
    fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        match self {
            Sublayer::Attention { c_attn, c_proj, .. } => {
                c_attn.visit_params(f);
                c_proj.visit_params(f);
            }
            Sublayer::Mlp { c_fc, c_proj } => {
                c_fc.visit_params(f);
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
