//! The models a study can probe and train: resnorm's GPT with its placements ([`ModelSpec`])
//! and the Llama-family decoder with today's LLM placements ([`LlamaSpec`]: pre-ln as Llama,
//! peri-ln as Gemma 2, reordered with QK-norm as OLMo 2). The probe and the training run are
//! written once, against [`StudyModelSpec`] and [`StudyModel`].
//!
//! A [`LlamaSpec`] changes only the placement (and OLMo 2's QK-norm) between its runs: every
//! other option is Llama's (SwiGLU, rotary positions, grouped-query attention, RMSNorm with
//! gain `w`, tied head), so a difference in the measurements is the placement's.
//!
//! ```
//! use resnorm::models::llama::{LlamaPlacement, QkNorm};
//! use resnorm::study::{LlamaSpec, StudyModel, StudyModelSpec};
//! let spec = LlamaSpec::new(LlamaPlacement::Reordered, 2, 16, 2, 8, 1);
//! assert_eq!(spec.qk_norm, QkNorm::Whole);
//! assert_eq!(spec.label(), "llama-reordered-qk-L2");
//! let mut model = spec.build(11).unwrap();
//! model.record_stream_stats(true);
//! let loss = model.forward(&[1, 2, 3, 4], 1, Some(&[2, 3, 4, 5])).unwrap().unwrap();
//! assert!((loss - 11f32.ln()).abs() < 0.5);
//! ```

use super::spec::{ModelSpec, ProbeSpec, RunSpec, TrainSpec};
use crate::diagnostics::DiagnosedModel;
use crate::models::gpt::Gpt;
use crate::models::llama::{Activation, Llama, LlamaConfig, LlamaPlacement, QkNorm};
use crate::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A model the study can probe and train: a language model with explicit forward and
/// backward that measures its residual stream when asked (`Send`: a step runs on the pool).
pub trait StudyModel: DiagnosedModel + Send {
    /// Mean cross-entropy of `tokens` (`batch` equal rows) against `targets`, when given.
    fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>>;
    /// Backpropagates the last forward's loss into the parameters' gradients.
    fn backward(&mut self) -> Result<()>;
    /// Clears every gradient.
    fn zero_grad(&mut self);
    /// Turns measuring the residual stream on or off.
    fn record_stream_stats(&mut self, on: bool);
}

impl StudyModel for Gpt {
    fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>> {
        Gpt::forward(self, tokens, batch, targets)
    }

    fn backward(&mut self) -> Result<()> {
        Gpt::backward(self)
    }

    fn zero_grad(&mut self) {
        Gpt::zero_grad(self)
    }

    fn record_stream_stats(&mut self, on: bool) {
        Gpt::record_stream_stats(self, on)
    }
}

impl StudyModel for Llama {
    fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>> {
        Llama::forward(self, tokens, batch, targets)
    }

    fn backward(&mut self) -> Result<()> {
        Llama::backward(self)
    }

    fn zero_grad(&mut self) {
        Llama::zero_grad(self)
    }

    fn record_stream_stats(&mut self, on: bool) {
        Llama::record_stream_stats(self, on)
    }
}

/// The settings of a study model: what it builds, and how its runs are named and cached.
pub trait StudyModelSpec:
    Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned
{
    /// The model built.
    type Model: StudyModel;
    /// The model, initialized from [`StudyModelSpec::seed`], for `vocab` tokens.
    fn build(&self, vocab: usize) -> Result<Self::Model>;
    /// Blocks `L` (`2L` residual units).
    fn layers(&self) -> usize;
    /// Tokens per batch row.
    fn context(&self) -> usize;
    /// Seed of the weights and of the data order.
    fn seed(&self) -> u64;
    /// A readable, file-name-safe name, e.g. `pre-ln-layer-L6`.
    fn label(&self) -> String;
    /// `spec` as a run of the study.
    fn probe_run(spec: ProbeSpec<Self>) -> RunSpec;
    /// `spec` as a run of the study.
    fn train_run(spec: TrainSpec<Self>) -> RunSpec;
}

impl StudyModelSpec for ModelSpec {
    type Model = Gpt;

    fn build(&self, vocab: usize) -> Result<Gpt> {
        ModelSpec::build(self, vocab)
    }

    fn layers(&self) -> usize {
        self.layers
    }

    fn context(&self) -> usize {
        self.context
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn label(&self) -> String {
        format!("{}-{}-L{}", self.placement, self.norm, self.layers)
    }

    fn probe_run(spec: ProbeSpec<Self>) -> RunSpec {
        RunSpec::Probe(spec)
    }

    fn train_run(spec: TrainSpec<Self>) -> RunSpec {
        RunSpec::Train(spec)
    }
}

/// A Llama-family decoder of a study: Llama's options, one of the three placements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaSpec {
    /// Where the RMSNorms sit.
    pub placement: LlamaPlacement,
    /// Norms of the queries and keys (OLMo 2 with `reordered`).
    pub qk_norm: QkNorm,
    /// Blocks `L`.
    pub layers: usize,
    /// Residual-stream width `C`.
    pub width: usize,
    /// Query heads (`C / heads` features each).
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Hidden width of the SwiGLU MLP.
    pub mlp_width: usize,
    /// Sequence length of every batch row.
    pub context: usize,
    /// Seed of the weights (the data order uses it too).
    pub seed: u64,
}

impl LlamaSpec {
    /// The study's model of `placement`: QK-norm over the whole projection with `reordered`
    /// (as OLMo 2), half as many key/value heads as heads (at least 1), an MLP of `8C/3`
    /// rounded up to a multiple of 8 (Llama's ratio).
    pub fn new(
        placement: LlamaPlacement,
        layers: usize,
        width: usize,
        heads: usize,
        context: usize,
        seed: u64,
    ) -> Self {
        LlamaSpec {
            placement,
            qk_norm: match placement {
                LlamaPlacement::Reordered => QkNorm::Whole,
                _ => QkNorm::Off,
            },
            layers,
            width,
            heads,
            kv_heads: (heads / 2).max(1),
            mlp_width: (8 * width).div_ceil(3).div_ceil(8) * 8,
            context,
            seed,
        }
    }

    /// The decoder's configuration for `vocab` tokens.
    pub fn config(&self, vocab: usize) -> LlamaConfig {
        let head_dim = self.width / self.heads.max(1);
        LlamaConfig {
            layers: self.layers,
            width: self.width,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim,
            mlp_width: self.mlp_width,
            vocab,
            context: self.context,
            eps: 1e-6,
            rope_theta: 10_000.0,
            placement: self.placement,
            qk_norm: self.qk_norm,
            norm_offset: 0.0,
            activation: Activation::Silu,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            tied: true,
            embed_scale: false,
            attn_scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            final_softcap: None,
        }
    }
}

impl StudyModelSpec for LlamaSpec {
    type Model = Llama;

    fn build(&self, vocab: usize) -> Result<Llama> {
        Llama::new(self.config(vocab), self.seed)
    }

    fn layers(&self) -> usize {
        self.layers
    }

    fn context(&self) -> usize {
        self.context
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn label(&self) -> String {
        let qk = if self.qk_norm == QkNorm::Off {
            ""
        } else {
            "-qk"
        };
        format!("llama-{}{qk}-L{}", self.placement, self.layers)
    }

    fn probe_run(spec: ProbeSpec<Self>) -> RunSpec {
        RunSpec::LlamaProbe(spec)
    }

    fn train_run(spec: TrainSpec<Self>) -> RunSpec {
        RunSpec::LlamaTrain(spec)
    }
}
