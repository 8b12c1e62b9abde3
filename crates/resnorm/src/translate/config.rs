//! The settings of a translation run: data, model, optimizer, schedule and bookkeeping.
//!
//! The defaults are the issue's recipe for two cores: a 3+3-layer encoder-decoder of width
//! 256 with 4 heads on batches of about 2,048 padded tokens and a joint BPE of 8,000 ids.
//! Pre-LN is the default placement because it trains at a high rate with or without warm-up
//! (Xiong et al. 2020); `--placement post-ln` gives Vaswani et al.'s wiring. AdamW warms up
//! linearly, then decays on a cosine to `min_lr`:
//!
//! ```text
//! lr(s) = lr · (s+1)/warmup                                       s < warmup
//!       = min_lr + ½(1 + cos(π (s − warmup)/(steps − warmup)))·(lr − min_lr)   after
//! ```
//!
//! Regularization as fairseq's `transformer_iwslt_de_en` recipe for a corpus of this size
//! (docs/translation.md): residual dropout 0.3 on the embeddings and every sublayer's
//! output, no activation dropout, no attention dropout (the recipe's `--attention-dropout`
//! is left at fairseq's default, 0), label smoothing 0.1. A configuration saved before
//! these settings existed reads them as 0 (the run it describes trained without them).
//!
//! ```
//! use resnorm::translate::config::TranslateConfig;
//! let config = TranslateConfig { steps: 10, warmup: 2, ..TranslateConfig::default() };
//! config.validate().unwrap();
//! assert_eq!(config.seq2seq_config(8000).width, 256);
//! assert!(TranslateConfig { max_tokens: 0, ..config.clone() }.validate().is_err());
//! assert!(TranslateConfig { dropout: 1.0, ..config.clone() }.validate().is_err());
//! assert!(TranslateConfig { attention_dropout: 1.0, ..config }.validate().is_err());
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::kernels::NormKind;
use crate::models::gpt::Placement;
use crate::models::seq2seq::{Dropout, Seq2SeqConfig};
use crate::optim::{AdamWConfig, WarmupCosine};
use crate::{Error, Result};

/// Settings of a translation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateConfig {
    /// Folder holding `train.SRC`, `train.TGT`, `valid.SRC`, `valid.TGT`.
    pub data: PathBuf,
    /// Source language suffix (`en`).
    pub src: String,
    /// Target language suffix (`es`).
    pub tgt: String,
    /// Joint BPE vocabulary size (special tokens included).
    pub vocab: usize,
    /// Width of both residual streams.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Longest sentence in ids (`</s>` included); longer training pairs are skipped.
    pub max_len: usize,
    /// Residual/norm wiring of both stacks.
    pub placement: Placement,
    /// LayerNorm or RMSNorm.
    pub norm: NormKind,
    /// Padded tokens per batch (fairseq's `--max-tokens`).
    pub max_tokens: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate of the cosine decay.
    pub min_lr: f32,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// AdamW's decoupled weight decay (matrices only).
    pub weight_decay: f32,
    /// Global gradient-norm clipping threshold (0 = off).
    pub grad_clip: f32,
    /// Seed of the weights, the batches and their order.
    pub seed: u64,
    /// Steps between validation losses (0 = only at the end).
    pub eval_every: u64,
    /// Steps between checkpoints (0 = only at the end).
    pub save_every: u64,
    /// Validation sentences translated for the closing BLEU (0 = all).
    pub bleu_sentences: usize,
    /// Residual dropout: the embeddings and every sublayer's output, in training.
    #[serde(default)]
    pub dropout: f32,
    /// Dropout after the MLPs' GELU, in training.
    #[serde(default)]
    pub activation_dropout: f32,
    /// Dropout on every attention's probabilities, in training.
    #[serde(default)]
    pub attention_dropout: f32,
    /// Label smoothing `ε` of the training loss (`(1-ε)·NLL + ε·mean_j(-log p_j)`).
    #[serde(default)]
    pub label_smoothing: f32,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        TranslateConfig {
            data: PathBuf::from("../shared/data/translation"),
            src: "en".into(),
            tgt: "es".into(),
            vocab: 8000,
            width: 256,
            heads: 4,
            encoder_layers: 3,
            decoder_layers: 3,
            max_len: 256,
            placement: Placement::PreLn,
            norm: NormKind::Layer,
            max_tokens: 2048,
            steps: 2000,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup: 200,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 1,
            eval_every: 250,
            save_every: 250,
            bleu_sentences: 200,
            dropout: 0.3,
            activation_dropout: 0.0,
            attention_dropout: 0.0,
            label_smoothing: 0.1,
        }
    }
}

impl TranslateConfig {
    /// The model for a vocabulary of `vocab` ids.
    pub fn seq2seq_config(&self, vocab: usize) -> Seq2SeqConfig {
        Seq2SeqConfig {
            vocab,
            width: self.width,
            heads: self.heads,
            encoder_layers: self.encoder_layers,
            decoder_layers: self.decoder_layers,
            max_len: self.max_len,
            placement: self.placement,
            norm: self.norm,
            ..Seq2SeqConfig::default()
        }
    }

    /// The run's dropout, seeded by the run's seed (each step's masks: [`Dropout::for_step`]);
    /// `None` when every rate is 0.
    pub fn dropout(&self) -> Result<Option<Dropout>> {
        let rates = [
            self.dropout,
            self.activation_dropout,
            self.attention_dropout,
        ];
        if rates.iter().all(|&r| r == 0.0) {
            return Ok(None);
        }
        Dropout::new(self.dropout, self.activation_dropout, self.seed)
            .and_then(|d| d.with_attention(self.attention_dropout))
            .map(Some)
            .map_err(|_| {
                Error::Config(format!(
                    "dropout {}, activation_dropout {} and attention_dropout {} must be in \
                     [0, 1)",
                    self.dropout, self.activation_dropout, self.attention_dropout
                ))
            })
    }

    /// AdamW with PyTorch's betas and this run's weight decay.
    pub fn adamw_config(&self) -> AdamWConfig {
        AdamWConfig {
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        }
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Result<WarmupCosine> {
        WarmupCosine::for_run(self.lr, self.min_lr, self.warmup, self.steps)
    }

    /// Checks every setting before any data is read.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::Config(msg));
        if self.steps == 0 {
            return fail("steps must be at least 1".into());
        }
        if self.max_tokens == 0 {
            return fail("max_tokens must be at least 1".into());
        }
        if self.src.is_empty() || self.tgt.is_empty() || self.src == self.tgt {
            return fail(format!(
                "--src `{}` and --tgt `{}` must be two different, nonempty suffixes",
                self.src, self.tgt
            ));
        }
        if self.vocab < 8 {
            return fail(format!("vocab {} must be at least 8", self.vocab));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return fail(format!(
                "grad_clip {} must be 0 or positive",
                self.grad_clip
            ));
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return fail(format!(
                "label_smoothing {} must be in [0, 1]",
                self.label_smoothing
            ));
        }
        self.dropout()?;
        self.seq2seq_config(self.vocab).validate()?;
        crate::optim::AdamW::new(self.adamw_config()).map_err(|e| Error::Config(e.to_string()))?;
        self.schedule().map(|_| ())
    }
}
