//! What one run of a study is: its settings, written out completely so that a result
//! cached under [`RunSpec::key`] belongs to exactly one experiment.
//!
//! ```
//! use resnorm::kernels::NormKind;
//! use resnorm::models::gpt::Placement;
//! use resnorm::study::{ModelSpec, ProbeSpec, RunSpec};
//! let model = ModelSpec { placement: Placement::PostLn, norm: NormKind::Layer, layers: 6, width: 32, heads: 2, context: 32, residual_scaling: false, seed: 1 };
//! let spec = RunSpec::Probe(ProbeSpec { model: model.clone(), batch: 4, batches: 2 });
//! assert!(spec.key(7).starts_with("probe-post-ln-layer-L6-"));
//! assert_ne!(spec.key(7), spec.key(8)); // other data, other key
//! let deeper = RunSpec::Probe(ProbeSpec { model: ModelSpec { layers: 12, ..model }, batch: 4, batches: 2 });
//! assert_ne!(spec.key(7), deeper.key(7));
//! ```

use super::model::{LlamaSpec, StudyModelSpec};
use crate::kernels::NormKind;
use crate::models::gpt::{Gpt, GptConfig, Placement};
use crate::Result;
use serde::{Deserialize, Serialize};

/// The model of a run: its wiring, size and initialization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Residual/normalization wiring.
    pub placement: Placement,
    /// LayerNorm or RMSNorm.
    pub norm: NormKind,
    /// Blocks `L`.
    pub layers: usize,
    /// Residual-stream width `C`.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Sequence length of every batch row.
    pub context: usize,
    /// Keep GPT-2's `1/√(2L)` scaling of the output projections at initialization. Without
    /// it every linear weight starts at N(0, 0.02), the setting of Xiong et al. (2020) in
    /// which each unit adds as much variance to the residual stream as the embedding holds.
    pub residual_scaling: bool,
    /// Seed of the weights (the data order uses it too).
    pub seed: u64,
}

impl ModelSpec {
    /// The model, initialized, for a vocabulary of `vocab` tokens.
    pub fn build(&self, vocab: usize) -> Result<Gpt> {
        let config = GptConfig {
            layers: self.layers,
            heads: self.heads,
            width: self.width,
            context: self.context,
            vocab,
            placement: self.placement,
            norm: self.norm,
            residual_scaling: self.residual_scaling,
            ..GptConfig::default()
        };
        Gpt::new(config, self.seed)
    }
}

/// Measurements at initialization, averaged over a few batches; no training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec<M = ModelSpec> {
    /// The model.
    pub model: M,
    /// Rows per batch.
    pub batch: usize,
    /// Batches averaged.
    pub batches: usize,
}

/// A short training run with AdamW and a warm-up/cosine schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec<M = ModelSpec> {
    /// The model.
    pub model: M,
    /// Rows per batch.
    pub batch: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f32,
    /// Linear warm-up steps (0: start at the peak rate).
    pub warmup: u64,
    /// Global gradient-norm clipping threshold.
    pub clip: f32,
    /// Collect [`crate::diagnostics::Diagnostics`] every this many steps (and at the last).
    pub diagnostics_every: u64,
    /// Validation windows averaged for the final validation loss (at most).
    pub eval_windows: usize,
}

/// Time of one norm's forward and backward at a model's shape, LayerNorm and RMSNorm
/// measured alternately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormTimingSpec {
    /// Columns (the model width).
    pub width: usize,
    /// Rows (tokens per batch).
    pub rows: usize,
    /// Measurements per kind; the median is kept.
    pub repeats: usize,
}

/// One run of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RunSpec {
    /// Measurements at initialization.
    Probe(ProbeSpec),
    /// A training run.
    Train(TrainSpec),
    /// LayerNorm against RMSNorm timing.
    NormTiming(NormTimingSpec),
    /// Measurements at initialization of a Llama-family decoder.
    LlamaProbe(ProbeSpec<LlamaSpec>),
    /// A training run of a Llama-family decoder.
    LlamaTrain(TrainSpec<LlamaSpec>),
}

impl RunSpec {
    /// A file-name-safe key: a readable prefix and a hash of every setting and of the data
    /// (`data_fingerprint`), so that any change gives a new key.
    pub fn key(&self, data_fingerprint: u64) -> String {
        let settings = serde_json::to_string(self).expect("specs always serialize");
        let mut bytes = settings.into_bytes();
        bytes.extend_from_slice(&data_fingerprint.to_le_bytes());
        let hash = fnv1a(&bytes);
        let prefix = match self {
            RunSpec::Probe(p) => format!("probe-{}", p.model.label()),
            RunSpec::Train(t) => format!("train-{}-w{}", t.model.label(), t.warmup),
            RunSpec::NormTiming(n) => format!("norm-timing-C{}", n.width),
            RunSpec::LlamaProbe(p) => format!("probe-{}", p.model.label()),
            RunSpec::LlamaTrain(t) => format!("train-{}-w{}", t.model.label(), t.warmup),
        };
        format!("{prefix}-{hash:016x}")
    }

    /// A short description for progress displays.
    pub fn describe(&self) -> String {
        match self {
            RunSpec::Probe(p) => format!("init probe {}", p.model.label()),
            RunSpec::Train(t) => {
                format!("train {} lr {} warm-up {}", t.model.label(), t.lr, t.warmup)
            }
            RunSpec::NormTiming(n) => format!("norm timing {}x{}", n.rows, n.width),
            RunSpec::LlamaProbe(p) => format!("init probe {}", p.model.label()),
            RunSpec::LlamaTrain(t) => {
                format!("train {} lr {} warm-up {}", t.model.label(), t.lr, t.warmup)
            }
        }
    }
}

/// 64-bit FNV-1a: a stable hash (unlike `std`'s, which may change between releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
