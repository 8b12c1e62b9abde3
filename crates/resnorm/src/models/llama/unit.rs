//! **The one place a Llama-family placement becomes wiring**: a residual unit
//! `x' = x + Post(F(Pre(x)))`, with `Pre` and `Post` each an RMSNorm or absent, forward and
//! backward side by side.
//!
//! | placement | forward | backward (`dy = ∂L/∂x'`) |
//! |---|---|---|
//! | `pre-ln` | `x' = x + F(N(x))` | `dx = dy + N'ᵀF'ᵀdy` |
//! | `peri-ln` | `x' = x + N₂(F(N₁(x)))` | `dx = dy + N₁'ᵀF'ᵀN₂'ᵀdy` |
//! | `reordered` | `x' = x + N(F(x))` | `dx = dy + F'ᵀN'ᵀdy` |
//!
//! Norm names follow Hugging Face: the attention unit's `Pre` is `input_layernorm` and its
//! `Post` `post_attention_layernorm`; the MLP unit's `Pre` is `post_attention_layernorm` in
//! `pre-ln` (Llama's name for the norm before the MLP) and `pre_feedforward_layernorm` in
//! `peri-ln`, its `Post` `post_feedforward_layernorm`. The decoder runs the same wiring
//! ([`Unit::forward_with`]) around its cached attention.
//!
//! A unit keeps only what its backward cannot recompute cheaply ([`UnitActs`]); `Pre(x)` is
//! computed again in backward from the stream `x`, which the model keeps anyway (the same
//! kernel on the same input: the same bits), and the sublayer's output on its way into the
//! stream lives in scratch shared by every unit ([`NormScratch`]).
//!
//! ```
//! use resnorm::models::llama::{LlamaConfig, LlamaPlacement, Unit};
//! let config = LlamaConfig::tiny(LlamaPlacement::PeriLn);
//! let unit = Unit::mlp(0, &config).unwrap();
//! assert_eq!(unit.pre.as_ref().unwrap().weight.name, "layers.0.pre_feedforward_layernorm.weight");
//! assert_eq!(unit.post.as_ref().unwrap().weight.name, "layers.0.post_feedforward_layernorm.weight");
//! ```

use super::attention::{AttnActs, AttnScratch, LlamaAttention};
use super::config::{LlamaConfig, LlamaPlacement};
use super::mlp::{GatedMlp, MlpActs, MlpScratch};
use super::rms::RmsNorm;
use super::rope::RopeTable;
use crate::kernels::residual::residual_add;
use crate::nn::Param;
use crate::AlignedVec;
use crate::Result;

/// The transform `F` of a unit (built once per unit: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Sublayer {
    /// Self-attention.
    Attention(LlamaAttention),
    /// The gated MLP.
    Mlp(GatedMlp),
}

/// One residual unit: `x' = x + Post(F(Pre(x)))`.
#[derive(Clone, Debug)]
pub struct Unit {
    /// The norm of the unit's input, if the placement has one.
    pub pre: Option<RmsNorm>,
    /// `F`.
    pub sublayer: Sublayer,
    /// The norm of `F`'s output, if the placement has one.
    pub post: Option<RmsNorm>,
}

/// The norms' side of a unit's activations, for `rows` rows: `Post`'s input and `rstd`
/// (empty without `Post`).
#[derive(Clone, Debug)]
pub struct NormActs {
    /// `F(h)`.
    f: AlignedVec,
    post_rstd: Vec<f32>,
}

impl NormActs {
    /// Buffers for `rows` rows of a unit of `config`'s placement.
    pub fn new(config: &LlamaConfig, rows: usize) -> Self {
        let post = config.placement.norms().1;
        NormActs {
            f: AlignedVec::zeros(if post { rows * config.width } else { 0 }),
            post_rstd: vec![0.0; if post { rows } else { 0 }],
        }
    }
}

/// The norms' scratch shared by every unit, for `rows` rows: `h = Pre(x)` and its `rstd`
/// (forward, and again in backward), and what the unit adds to the stream (forward).
#[derive(Clone, Debug)]
pub struct NormScratch {
    /// `Pre(x)` (empty without `Pre`).
    h: AlignedVec,
    pre_rstd: Vec<f32>,
    /// `Post(F(h))`, or `F(h)` without `Post`.
    added: AlignedVec,
}

impl NormScratch {
    /// Scratch for `rows` rows of units of `config`'s placement.
    pub fn new(config: &LlamaConfig, rows: usize) -> Self {
        let pre = config.placement.norms().0;
        let n = rows * config.width;
        NormScratch {
            h: AlignedVec::zeros(if pre { n } else { 0 }),
            pre_rstd: vec![0.0; if pre { rows } else { 0 }],
            added: AlignedVec::zeros(n),
        }
    }
}

/// A unit's activations: its norms' and its sublayer's.
#[derive(Clone, Debug)]
pub struct UnitActs {
    norms: NormActs,
    sub: SubActs,
}

#[derive(Clone, Debug)]
enum SubActs {
    Attention(AttnActs),
    Mlp(MlpActs),
}

/// The scratch shared by every unit, forward and backward.
#[derive(Clone, Debug)]
pub struct UnitScratch {
    norm: NormScratch,
    d_f: AlignedVec,
    d_h: AlignedVec,
    d_pre: AlignedVec,
    attn: AttnScratch,
    mlp: MlpScratch,
}

impl UnitScratch {
    /// Scratch for `rows` rows.
    pub fn new(config: &LlamaConfig, rows: usize) -> Self {
        let n = rows * config.width;
        UnitScratch {
            norm: NormScratch::new(config, rows),
            d_f: AlignedVec::zeros(n),
            d_h: AlignedVec::zeros(n),
            d_pre: AlignedVec::zeros(n),
            attn: AttnScratch::new(config, rows),
            mlp: MlpScratch::new(rows, config.mlp_width),
        }
    }
}

impl Unit {
    /// Block `layer`'s attention unit.
    pub fn attention(layer: usize, config: &LlamaConfig) -> Result<Self> {
        let attn = LlamaAttention::new(layer, config)?;
        Ok(Self::wired(
            layer,
            config,
            Sublayer::Attention(attn),
            ("input_layernorm", "post_attention_layernorm"),
        ))
    }

    /// Block `layer`'s MLP unit.
    pub fn mlp(layer: usize, config: &LlamaConfig) -> Result<Self> {
        let mlp = GatedMlp::new(
            layer,
            config.width,
            config.mlp_width,
            config.mlp_bias,
            config.activation,
        )?;
        let pre = match config.placement {
            LlamaPlacement::PreLn => "post_attention_layernorm",
            _ => "pre_feedforward_layernorm",
        };
        Ok(Self::wired(
            layer,
            config,
            Sublayer::Mlp(mlp),
            (pre, "post_feedforward_layernorm"),
        ))
    }

    fn wired(
        layer: usize,
        config: &LlamaConfig,
        sublayer: Sublayer,
        (pre, post): (&str, &str),
    ) -> Self {
        let (has_pre, has_post) = config.placement.norms();
        let norm = |name: &str| {
            let name = format!("layers.{layer}.{name}");
            RmsNorm::new(&name, config.width, config.eps, config.norm_offset)
        };
        Unit {
            pre: has_pre.then(|| norm(pre)),
            sublayer,
            post: has_post.then(|| norm(post)),
        }
    }

    /// Activation buffers for `batch` sequences of `seq` positions.
    pub fn new_acts(&self, config: &LlamaConfig, batch: usize, seq: usize) -> UnitActs {
        let rows = batch * seq;
        UnitActs {
            norms: NormActs::new(config, rows),
            sub: match self.sublayer {
                Sublayer::Attention(_) => SubActs::Attention(AttnActs::new(config, batch, seq)),
                Sublayer::Mlp(_) => SubActs::Mlp(MlpActs::new(rows, config.mlp_width)),
            },
        }
    }

    /// `out = x + Post(F(Pre(x)))`, with `F` computed by `run(sublayer, h, f)`.
    pub fn forward_with(
        &self,
        x: &[f32],
        out: &mut [f32],
        acts: &mut NormActs,
        scratch: &mut NormScratch,
        run: impl FnOnce(&Sublayer, &[f32], &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let n = x.len();
        let NormScratch { h, pre_rstd, added } = scratch;
        let h = self.pre_forward(x, h, pre_rstd)?;
        let added = &mut added[..n];
        match &self.post {
            Some(post) => {
                let rows = n / post.weight.len();
                let f = &mut acts.f[..n];
                run(&self.sublayer, h, f)?;
                post.forward(f, added, &mut acts.post_rstd[..rows])?;
            }
            None => run(&self.sublayer, h, added)?,
        }
        residual_add(x, added, out)
    }

    /// `h = Pre(x)` into `h` and `rstd`, or `x` itself without `Pre`: the forward's, and
    /// the backward's recomputation of it.
    fn pre_forward<'a>(
        &self,
        x: &'a [f32],
        h: &'a mut [f32],
        rstd: &mut [f32],
    ) -> Result<&'a [f32]> {
        match &self.pre {
            Some(pre) => {
                let (n, rows) = (x.len(), x.len() / pre.weight.len());
                pre.forward(x, &mut h[..n], &mut rstd[..rows])?;
                Ok(&h[..n])
            }
            None => Ok(x),
        }
    }

    /// The training forward over `batch` sequences of `seq` positions.
    pub fn forward(
        &self,
        x: &[f32],
        out: &mut [f32],
        acts: &mut UnitActs,
        scratch: &mut UnitScratch,
        rope: &RopeTable,
        shape: (usize, usize),
    ) -> Result<()> {
        let sub = &mut acts.sub;
        let UnitScratch {
            norm, attn, mlp, ..
        } = scratch;
        self.forward_with(x, out, &mut acts.norms, norm, |sublayer, h, f| {
            match (sublayer, sub) {
                (Sublayer::Attention(layer), SubActs::Attention(a)) => {
                    layer.forward(h, f, a, attn, rope, shape)
                }
                (Sublayer::Mlp(layer), SubActs::Mlp(a)) => layer.forward(h, f, a, mlp),
                _ => unreachable!("a unit's activations are built for its sublayer"),
            }
        })
    }

    /// Writes `dx = dy + Pre'ᵀ F'ᵀ Post'ᵀ dy` (the norms that are there); adds into every
    /// parameter's gradient. `x` and `acts` are the forward's.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dy: &[f32],
        x: &[f32],
        acts: &UnitActs,
        scratch: &mut UnitScratch,
        rope: &RopeTable,
        shape: (usize, usize),
        dx: &mut [f32],
    ) -> Result<()> {
        let UnitScratch {
            norm,
            d_f,
            d_h,
            d_pre,
            attn: attn_scratch,
            mlp: mlp_scratch,
        } = scratch;
        let norms = &acts.norms;
        let df: &[f32] = match &mut self.post {
            Some(post) => {
                post.backward(dy, &norms.f, &norms.post_rstd, d_f)?;
                d_f
            }
            None => dy,
        };
        let h = self.pre_forward(x, &mut norm.h, &mut norm.pre_rstd)?;
        match (&mut self.sublayer, &acts.sub) {
            (Sublayer::Attention(attn), SubActs::Attention(a)) => {
                attn.backward(df, h, a, attn_scratch, rope, shape, d_h)?
            }
            (Sublayer::Mlp(mlp), SubActs::Mlp(a)) => mlp.backward(df, h, a, mlp_scratch, d_h)?,
            _ => unreachable!("a unit's activations are built for its sublayer"),
        }
        match &mut self.pre {
            Some(pre) => {
                let rows = x.len() / pre.weight.len();
                pre.backward(d_h, x, &norm.pre_rstd[..rows], d_pre)?;
                residual_add(dy, d_pre, dx)
            }
            None => residual_add(dy, d_h, dx),
        }
    }

    /// Hands `Pre`, `F`'s parameters, then `Post`, to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        if let Some(pre) = &self.pre {
            f(&pre.weight);
        }
        match &self.sublayer {
            Sublayer::Attention(attn) => attn.visit_params(f),
            Sublayer::Mlp(mlp) => mlp.visit_params(f),
        }
        if let Some(post) = &self.post {
            f(&post.weight);
        }
    }

    /// Every parameter, in [`Unit::visit_params`] order, for writing.
    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<&'a mut Param>) {
        if let Some(pre) = &mut self.pre {
            out.push(&mut pre.weight);
        }
        match &mut self.sublayer {
            Sublayer::Attention(attn) => attn.params_mut(out),
            Sublayer::Mlp(mlp) => mlp.params_mut(out),
        }
        if let Some(post) = &mut self.post {
            out.push(&mut post.weight);
        }
    }

    /// Refreshes every norm's gain from its weight.
    pub fn sync(&mut self) {
        for norm in [&mut self.pre, &mut self.post].into_iter().flatten() {
            norm.sync();
        }
        if let Sublayer::Attention(attn) = &mut self.sublayer {
            attn.sync();
        }
    }
}
