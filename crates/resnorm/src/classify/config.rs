//! Every setting of a classification run, stored with each checkpoint (`classify.json`).
//!
//! The defaults train a 2-layer width-64 pre-LN GPT body on GPT-2 BPE tokens (64 per
//! sentence), mean-pooled, in about four minutes on two cores (the VADER set's binary task,
//! see docs/benchmarks.md: words as tokens beat bytes there by 16 points). With `init`
//! the body, its size and its tokenizer come from a `resnorm train` run instead. With
//! `body: encoder` the same sizes describe a Transformer encoder (bidirectional attention)
//! trained from scratch, pooled by mean or by a prepended [CLS] token (`pooling: cls`).
//!
//! ```
//! use resnorm::classify::{BodyKind, ClassifyConfig, Pooling, TableSpec};
//! let config = ClassifyConfig {
//!     table: TableSpec { label_column: Some("label".into()), ..TableSpec::new("text") },
//!     ..ClassifyConfig::default()
//! };
//! config.validate().unwrap();
//! assert_eq!((config.pooling, config.gpt_config(50257).context), (Pooling::Mean, 64));
//! assert!(ClassifyConfig { steps: 0, ..config.clone() }.validate().is_err());
//! let encoder = ClassifyConfig { body: BodyKind::Encoder, pooling: Pooling::Cls, ..config };
//! assert!(encoder.encoder_config(100).cls);
//! assert!(ClassifyConfig { body: BodyKind::Gpt, ..encoder }.validate().is_err());
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::kernels::NormKind;
use crate::lm::TokenizerKind;
use crate::models::gpt::{GptConfig, Placement};
use crate::optim::{AdamWConfig, WarmupCosine};
use crate::{Error, Result};

use super::data::TableSpec;
use super::encoder::EncoderConfig;
use super::pooling::Pooling;

/// Which network reads the sentence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyKind {
    /// A decoder-only GPT (causal attention), from scratch or from a `resnorm train` run.
    #[default]
    Gpt,
    /// A Transformer encoder (bidirectional attention), from scratch.
    Encoder,
}

impl fmt::Display for BodyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyKind::Gpt => "gpt",
            BodyKind::Encoder => "encoder",
        })
    }
}

impl FromStr for BodyKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gpt" => Ok(BodyKind::Gpt),
            "encoder" => Ok(BodyKind::Encoder),
            _ => Err(Error::Config(format!(
                "unknown body '{s}'; expected gpt or encoder"
            ))),
        }
    }
}

/// The settings of one classification run; see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyConfig {
    /// The TSV or CSV file.
    pub data: PathBuf,
    /// Its columns.
    pub table: TableSpec,
    /// Fraction of each class held out for validation.
    pub valid_fraction: f64,
    /// Fraction of each class held out for the test.
    pub test_fraction: f64,
    /// Seeds the split.
    pub split_seed: u64,
    /// The network under the head (runs saved before the field existed read as a GPT).
    #[serde(default)]
    pub body: BodyKind,
    /// A `resnorm train` run whose GPT is fine-tuned (body, size and tokenizer from it);
    /// `None` trains from scratch.
    pub init: Option<PathBuf>,
    /// Blocks `L` (from scratch).
    pub layers: usize,
    /// Attention heads per block (from scratch).
    pub heads: usize,
    /// Width `C` (from scratch).
    pub width: usize,
    /// Tokens per sentence: longer ones are cut (from scratch; else the checkpoint's context).
    pub context: usize,
    /// Residual/normalization wiring (from scratch).
    pub placement: Placement,
    /// LayerNorm or RMSNorm (from scratch).
    pub norm: NormKind,
    /// The tokenizer (from scratch; a character vocabulary is taken from the training split).
    pub tokenizer: TokenizerKind,
    /// [CLS] token (encoder only), last real token or mean over the real tokens.
    pub pooling: Pooling,
    /// Probability of dropping each pooled feature before the head while training (runs
    /// saved before the field existed read as 0).
    #[serde(default)]
    pub dropout: f32,
    /// The encoder body's own dropout rate (embedding, sublayer outputs, MLP activations,
    /// attention probabilities) while training (runs saved before the field existed read as 0).
    #[serde(default)]
    pub encoder_dropout: f32,
    /// Train the head only.
    pub freeze_body: bool,
    /// Sentences per step.
    pub batch: usize,
    /// Optimizer steps of the whole run.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// Steps of linear warm-up (cut to `steps`).
    pub warmup: u64,
    /// AdamW's decoupled weight decay (matrices only).
    pub weight_decay: f32,
    /// Largest global gradient norm; 0 turns clipping off.
    pub grad_clip: f32,
    /// Seeds the weights (from scratch), the head and the order of training sentences.
    pub seed: u64,
    /// Steps between validation evaluations; 0 = only at the end.
    pub eval_every: u64,
    /// Steps between checkpoints; 0 = only at the end.
    pub save_every: u64,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            data: PathBuf::new(),
            table: TableSpec::new("text"),
            valid_fraction: 0.1,
            test_fraction: 0.1,
            split_seed: 0,
            body: BodyKind::Gpt,
            init: None,
            layers: 2,
            heads: 4,
            width: 64,
            context: 64,
            placement: Placement::PreLn,
            norm: NormKind::Layer,
            tokenizer: TokenizerKind::Gpt2,
            pooling: Pooling::Mean,
            dropout: 0.0,
            encoder_dropout: 0.0,
            freeze_body: false,
            batch: 32,
            steps: 1000,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 50,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 0,
            eval_every: 250,
            save_every: 0,
        }
    }
}

impl ClassifyConfig {
    /// The body these settings describe from scratch, for a vocabulary of `vocab` ids.
    pub fn gpt_config(&self, vocab: usize) -> GptConfig {
        GptConfig {
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            context: self.context,
            vocab,
            placement: self.placement,
            norm: self.norm,
            ..GptConfig::default()
        }
    }

    /// The encoder body these settings describe, for a vocabulary of `vocab` ids; [CLS]
    /// pooling prepends the token.
    pub fn encoder_config(&self, vocab: usize) -> EncoderConfig {
        EncoderConfig {
            vocab,
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            context: self.context,
            placement: self.placement,
            norm: self.norm,
            cls: self.pooling == Pooling::Cls,
            ..EncoderConfig::default()
        }
    }

    /// AdamW's hyperparameters.
    pub fn adamw_config(&self) -> AdamWConfig {
        AdamWConfig {
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        }
    }

    /// Warm-up then cosine decay over `steps`.
    pub fn schedule(&self) -> Result<WarmupCosine> {
        WarmupCosine::for_run(self.lr, self.min_lr, self.warmup, self.steps)
    }

    /// Checks every setting that the model, optimizer and schedule do not check themselves.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.steps == 0 {
            return Err(Error::Config("batch and steps must be at least 1".into()));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(Error::Config(format!(
                "grad_clip must be zero (off) or positive, got {}",
                self.grad_clip
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if !(0.0..1.0).contains(&self.encoder_dropout) {
            return Err(Error::Config(format!(
                "encoder dropout must be in [0, 1), got {}",
                self.encoder_dropout
            )));
        }
        if self.encoder_dropout > 0.0 && self.body != BodyKind::Encoder {
            return Err(Error::Config(
                "encoder dropout applies to the encoder body; a GPT body has none".into(),
            ));
        }
        self.table.validate()?;
        self.schedule()?;
        crate::optim::AdamW::new(self.adamw_config()).map_err(|e| Error::Config(e.to_string()))?;
        match self.body {
            BodyKind::Gpt if self.pooling == Pooling::Cls => Err(Error::Config(
                "cls pooling needs the encoder body (a GPT's first token sees only itself)".into(),
            )),
            BodyKind::Gpt => self.gpt_config(1).validate(),
            BodyKind::Encoder if self.init.is_some() => Err(Error::Config(
                "init fine-tunes a GPT run; the encoder body trains from scratch".into(),
            )),
            BodyKind::Encoder => self.encoder_config(1).validate(),
        }
    }
}
