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

/// The norms' side of a unit's activations, for `rows` rows.
#[derive(Clone, Debug)]
pub struct NormActs {
    /// `Pre(x)` (empty without `Pre`).
    h: AlignedVec,
    pre_rstd: Vec<f32>,
    /// `F(h)`.
    f: AlignedVec,
    /// `Post(F)` (empty without `Post`).
    post_out: AlignedVec,
    post_rstd: Vec<f32>,
}

impl NormActs {
    /// Buffers for `rows` rows of `unit`.
    pub fn new(unit: &Unit, rows: usize, width: usize) -> Self {
        let (pre, post) = (unit.pre.is_some(), unit.post.is_some());
        let n = rows * width;
        NormActs {
            h: AlignedVec::zeros(if pre { n } else { 0 }),
            pre_rstd: vec![0.0; if pre { rows } else { 0 }],
            f: AlignedVec::zeros(n),
            post_out: AlignedVec::zeros(if post { n } else { 0 }),
            post_rstd: vec![0.0; if post { rows } else { 0 }],
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

/// The backward's scratch, shared by every unit.
#[derive(Clone, Debug)]
pub struct UnitScratch {
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
            norms: NormActs::new(self, rows, config.width),
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
        run: impl FnOnce(&Sublayer, &[f32], &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let n = x.len();
        let h = match &self.pre {
            Some(pre) => {
                let rows = n / pre.weight.len();
                pre.forward(x, &mut acts.h[..n], &mut acts.pre_rstd[..rows])?;
                &acts.h[..n]
            }
            None => x,
        };
        run(&self.sublayer, h, &mut acts.f[..n])?;
        match &self.post {
            Some(post) => {
                let rows = n / post.weight.len();
                let post_out = &mut acts.post_out[..n];
                post.forward(&acts.f[..n], post_out, &mut acts.post_rstd[..rows])?;
                residual_add(x, post_out, out)
            }
            None => residual_add(x, &acts.f[..n], out),
        }
    }

    /// The training forward over `batch` sequences of `seq` positions.
    pub fn forward(
        &self,
        x: &[f32],
        out: &mut [f32],
        acts: &mut UnitActs,
        rope: &RopeTable,
        shape: (usize, usize),
    ) -> Result<()> {
        let sub = &mut acts.sub;
        self.forward_with(x, out, &mut acts.norms, |sublayer, h, f| {
            match (sublayer, sub) {
                (Sublayer::Attention(attn), SubActs::Attention(a)) => {
                    attn.forward(h, f, a, rope, shape)
                }
                (Sublayer::Mlp(mlp), SubActs::Mlp(a)) => mlp.forward(h, f, a),
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
        let h: &[f32] = if self.pre.is_some() { &norms.h } else { x };
        match (&mut self.sublayer, &acts.sub) {
            (Sublayer::Attention(attn), SubActs::Attention(a)) => {
                attn.backward(df, h, a, attn_scratch, rope, shape, d_h)?
            }
            (Sublayer::Mlp(mlp), SubActs::Mlp(a)) => mlp.backward(df, h, a, mlp_scratch, d_h)?,
            _ => unreachable!("a unit's activations are built for its sublayer"),
        }
        match &mut self.pre {
            Some(pre) => {
                pre.backward(d_h, x, &norms.pre_rstd, d_pre)?;
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
