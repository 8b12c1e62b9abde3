//! `--preset` of `resnorm bench train` and `bench sample`: the shapes of real models, with
//! random weights, and the model a benchmark runs, a GPT or a Llama-family decoder.
//!
//! | preset | model | blocks | width | heads (key/value) | MLP | vocabulary | context |
//! |---|---|---:|---:|---:|---|---:|---:|
//! | `gpt2-124m` | GPT-2 small: LayerNorm, GELU, biases, tied head | 12 | 768 | 12 | 3072 | 50257 | 1024 |
//! | `llama-135m` | SmolLM-135M: RMSNorm, SwiGLU, RoPE θ 10000, tied head | 30 | 576 | 9 (3) | 1536 | 49152 | 2048 |
//!
//! `bench train` trains on windows shorter than the context (the preset's
//! [`Preset::train_context`]), so that a step takes seconds on two cores; a GPT's position
//! table then has that many rows. Explicit flags override any field.

use resnorm::kernels::NormKind;
use resnorm::models::gpt::{Gpt, GptConfig, Placement};
use resnorm::models::llama::{Activation, Llama, LlamaConfig, LlamaPlacement, QkNorm};
use resnorm::nn::Param;
use resnorm::Result;

/// A real model's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// GPT-2 small, 124M parameters.
    #[value(name = "gpt2-124m")]
    Gpt2_124m,
    /// SmolLM-135M, a Llama.
    #[value(name = "llama-135m")]
    Llama135m,
}

impl Preset {
    /// The preset's sizes; `heads` key/value heads and an MLP of 4× the width for a GPT.
    pub fn shape(self) -> Shape {
        match self {
            Preset::Gpt2_124m => Shape {
                llama: false,
                layers: 12,
                width: 768,
                heads: 12,
                kv_heads: 12,
                mlp_width: 3072,
                vocab: 50257,
                context: 1024,
            },
            Preset::Llama135m => Shape {
                llama: true,
                layers: 30,
                width: 576,
                heads: 9,
                kv_heads: 3,
                mlp_width: 1536,
                vocab: 49152,
                context: 2048,
            },
        }
    }

    /// Tokens per training window: 512, one sequence per step (a few seconds on two cores).
    pub fn train_context(self) -> usize {
        512
    }
}

/// The sizes of a benchmark's model; a GPT's MLP is always `4·width` wide.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// A Llama-family decoder (pre-norm RMSNorm, SwiGLU, RoPE), else a GPT.
    pub llama: bool,
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub mlp_width: usize,
    pub vocab: usize,
    pub context: usize,
}

impl Shape {
    /// A GPT of these sizes with the flags' defaults.
    pub fn gpt(layers: usize, heads: usize, width: usize, context: usize, vocab: usize) -> Self {
        Shape {
            llama: false,
            layers,
            width,
            heads,
            kv_heads: heads,
            mlp_width: 4 * width,
            vocab,
            context,
        }
    }

    /// The GPT configuration of these sizes, with the flags' placement and norm.
    pub fn gpt_config(&self, placement: Placement, norm: NormKind) -> GptConfig {
        GptConfig {
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            context: self.context,
            vocab: self.vocab,
            placement,
            norm,
            ..GptConfig::default()
        }
    }

    /// The Llama configuration of these sizes: Llama's options, SmolLM's epsilon and θ.
    fn llama_config(&self) -> Result<LlamaConfig> {
        if self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return Err(resnorm::Error::Config(format!(
                "width {} must be divisible by the {} heads",
                self.width, self.heads
            )));
        }
        let head_dim = self.width / self.heads;
        Ok(LlamaConfig {
            layers: self.layers,
            width: self.width,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim,
            mlp_width: self.mlp_width,
            vocab: self.vocab,
            context: self.context,
            eps: 1e-5,
            rope_theta: 10_000.0,
            placement: LlamaPlacement::PreLn,
            qk_norm: QkNorm::Off,
            norm_offset: 0.0,
            activation: Activation::Silu,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            tied: true,
            embed_scale: false,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            final_softcap: None,
        })
    }
}

/// The model a benchmark runs.
// One per run, so the variants' difference in size (buffer handles) costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Net {
    Gpt(Gpt),
    Llama(Llama),
}

impl Net {
    /// A randomly initialized model of `shape`; a GPT with `placement` and `norm`.
    pub fn new(shape: &Shape, placement: Placement, norm: NormKind, seed: u64) -> Result<Self> {
        Ok(match shape.llama {
            true => Net::Llama(Llama::new(shape.llama_config()?, seed)?),
            false => Net::Gpt(Gpt::new(shape.gpt_config(placement, norm), seed)?),
        })
    }

    /// Clears the gradients, runs forward and backward on `batch` rows of `tokens`.
    pub fn forward_backward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        targets: &[u32],
    ) -> Result<()> {
        match self {
            Net::Gpt(m) => {
                m.zero_grad();
                m.forward(tokens, batch, Some(targets))?;
                m.backward()
            }
            Net::Llama(m) => {
                m.zero_grad();
                m.forward(tokens, batch, Some(targets))?;
                m.backward()
            }
        }
    }

    /// Every parameter, for the optimizer.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Net::Gpt(m) => m.params_mut(),
            Net::Llama(m) => m.params_mut(),
        }
    }

    /// Hands every parameter to `f`.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        match self {
            Net::Gpt(m) => m.visit_params(f),
            Net::Llama(m) => m.visit_params(f),
        }
    }

    /// Total number of parameters (a tied head counted once).
    pub fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.len());
        n
    }
}
