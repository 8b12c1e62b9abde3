//! The translation preset's grid: which encoder-decoder runs it makes, and the settings they
//! share. Every run is a complete [`TranslateConfig`] built here, by the same functions the
//! findings use to look the results up, so a finding never reads a run made otherwise.
//!
//! | group | runs | findings |
//! |---|---|---|
//! | warm-up | post-ln, pre-ln at `layers`+`layers`, `high_lr`, without and with `warmup` steps | 8, 9 |
//! | deep stacks | post-ln, pre-ln, deep-norm at `deep_layers`+`deep_layers`, `deep_lr`, with warm-up | 10 |
//!
//! ```
//! use resnorm::models::gpt::Placement;
//! use resnorm::study::TranslationPlan;
//! let plan = TranslationPlan::preset("../shared/data/translation".as_ref());
//! assert_eq!(plan.specs().len(), 7);
//! assert_eq!(plan.warmup_run(Placement::PostLn, false).warmup, 0);
//! assert_eq!(plan.deep(Placement::DeepNorm).encoder_layers, plan.deep_layers);
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kernels::NormKind;
use crate::models::gpt::Placement;
use crate::study::MIN_LR_FRACTION;
use crate::translate::config::TranslateConfig;

/// Placements of the warm-up comparison (Xiong et al. 2020).
pub const TRANSLATION_WARMUP_COMPARED: [Placement; 2] = [Placement::PostLn, Placement::PreLn];
/// Placements of the deep-stack runs (DeepNet, Wang et al. 2022).
pub const TRANSLATION_DEEP: [Placement; 3] =
    [Placement::PostLn, Placement::PreLn, Placement::DeepNorm];

/// All settings of the translation study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslationPlan {
    /// Folder with `train.SRC`, `train.TGT`, `valid.SRC`, `valid.TGT`.
    pub data: PathBuf,
    /// Source language suffix.
    pub src: String,
    /// Target language suffix.
    pub tgt: String,
    /// Joint BPE vocabulary size.
    pub vocab: usize,
    /// Width of both residual streams.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder and decoder layers of the warm-up runs.
    pub layers: usize,
    /// Encoder and decoder layers of the deep-stack runs.
    pub deep_layers: usize,
    /// Longest sentence in ids; longer training pairs are skipped.
    pub max_len: usize,
    /// Padded tokens per batch.
    pub max_tokens: usize,
    /// Steps of the warm-up runs.
    pub steps: u64,
    /// Steps of the deep-stack runs.
    pub deep_steps: u64,
    /// Peak learning rate of the warm-up comparison.
    pub high_lr: f32,
    /// Warm-up steps of the warmed-up runs (warm-up and deep groups).
    pub warmup: u64,
    /// Peak learning rate of the deep-stack runs.
    pub deep_lr: f32,
    /// Global gradient-norm clipping threshold.
    pub clip: f32,
    /// Seed of the weights, the BPE batches and their order.
    pub seed: u64,
    /// Validation loss and per-stack gradient norms every this many steps.
    pub eval_every: u64,
    /// Validation pairs kept (the first ones of the split).
    pub valid_sentences: usize,
    /// Of those, sentences translated greedily for BLEU and chrF.
    pub bleu_sentences: usize,
}

impl TranslationPlan {
    /// The `--preset translation` settings on the corpus in `data`: small enough that all
    /// seven runs finish in well under an hour on two cores.
    pub fn preset(data: &Path) -> TranslationPlan {
        TranslationPlan {
            data: data.to_path_buf(),
            src: "en".into(),
            tgt: "es".into(),
            vocab: 2000,
            width: 64,
            heads: 4,
            layers: 3,
            deep_layers: 6,
            max_len: 96,
            max_tokens: 1024,
            steps: 400,
            deep_steps: 400,
            high_lr: 3e-3,
            warmup: 80,
            deep_lr: 3e-3,
            clip: 1.0,
            seed: 1,
            eval_every: 50,
            valid_sentences: 200,
            bleu_sentences: 100,
        }
    }

    fn config(
        &self,
        placement: Placement,
        layers: usize,
        steps: u64,
        lr: f32,
        warmup: u64,
    ) -> TranslateConfig {
        TranslateConfig {
            data: self.data.clone(),
            src: self.src.clone(),
            tgt: self.tgt.clone(),
            vocab: self.vocab,
            width: self.width,
            heads: self.heads,
            encoder_layers: layers,
            decoder_layers: layers,
            max_len: self.max_len,
            placement,
            norm: NormKind::Layer,
            max_tokens: self.max_tokens,
            steps,
            lr,
            min_lr: lr * MIN_LR_FRACTION,
            warmup,
            grad_clip: self.clip,
            seed: self.seed,
            eval_every: self.eval_every,
            save_every: 0,
            bleu_sentences: self.bleu_sentences,
            ..TranslateConfig::default()
        }
    }

    /// The warm-up comparison run of `placement` at `high_lr`, with warm-up or without.
    pub fn warmup_run(&self, placement: Placement, warmup: bool) -> TranslateConfig {
        let steps = if warmup { self.warmup } else { 0 };
        self.config(placement, self.layers, self.steps, self.high_lr, steps)
    }

    /// The deep-stack run of `placement`, warmed up.
    pub fn deep(&self, placement: Placement) -> TranslateConfig {
        let warmup = self.warmup.min(self.deep_steps / 4);
        self.config(
            placement,
            self.deep_layers,
            self.deep_steps,
            self.deep_lr,
            warmup,
        )
    }

    /// The settings the data is loaded with (vocabulary, lengths, batches, seed), which every
    /// run shares.
    pub fn data_config(&self) -> TranslateConfig {
        self.warmup_run(Placement::PreLn, true)
    }

    /// Every run, each once, shallow ones first.
    pub fn specs(&self) -> Vec<TranslateConfig> {
        let mut specs = Vec::new();
        for p in TRANSLATION_WARMUP_COMPARED {
            for warmup in [false, true] {
                specs.push(self.warmup_run(p, warmup));
            }
        }
        for p in TRANSLATION_DEEP {
            specs.push(self.deep(p));
        }
        let mut unique: Vec<TranslateConfig> = Vec::with_capacity(specs.len());
        for spec in specs {
            if !unique.contains(&spec) {
                unique.push(spec);
            }
        }
        unique
    }
}
