//! The grid of a study: which runs it makes, and the settings shared by all of them.
//!
//! Every run of a study is built here, by the same functions the findings use to look the
//! results up, so a finding can never read a run made with other settings.
//!
//! | group | runs | findings |
//! |---|---|---|
//! | probes at initialization | pre-ln, post-ln, no-residual × `probe_depths`, GPT-2 init; pre-ln, post-ln × `probe_depths`, unscaled init | 1, 2, 5 |
//! | standard training | every placement at `train_depth`, LayerNorm; pre-ln with RMSNorm | loss curves, 6 |
//! | warm-up | pre-ln, post-ln at `train_depth`, `high_lr`, with and without warm-up | 3 |
//! | deep stacks | pre-ln, post-ln, deep-norm, re-zero, no-norm, no-residual at `deep_depth` | 1, 4, 7 |
//! | norm timing | LayerNorm and RMSNorm at the model's shape | 6 |
//! | today's LLM placements | Llama-family pre-ln, peri-ln, reordered (+QK-norm): probes × `probe_depths`; training at `deep_depth`, `high_lr` | 8, 9, 10 |
//!
//! ```
//! use resnorm::study::{Plan, Preset};
//! let plan = Plan::preset(Preset::Quick);
//! assert_eq!(plan.probe_depths, vec![6, 12, 24, 48]);
//! let specs = plan.specs();
//! assert!(specs.len() > 30);
//! assert!(plan.probe_specs().len() < specs.len());
//! ```

use super::model::LlamaSpec;
use super::spec::{ModelSpec, NormTimingSpec, ProbeSpec, RunSpec, TrainSpec};
use crate::kernels::NormKind;
use crate::models::gpt::Placement;
use crate::models::llama::LlamaPlacement;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A ready-made study size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// A few minutes on two cores; the tests use its probes.
    Quick,
    /// Under an hour on two cores: longer runs, deeper stacks.
    Full,
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Quick => "quick",
            Preset::Full => "full",
        })
    }
}

impl FromStr for Preset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "quick" => Ok(Preset::Quick),
            "full" => Ok(Preset::Full),
            _ => Err(Error::Config(format!(
                "unknown preset '{s}'; expected quick or full"
            ))),
        }
    }
}

/// All settings of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The preset it came from.
    pub preset: Preset,
    /// Residual-stream width of every model.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Tokens per batch row.
    pub context: usize,
    /// Rows per training batch.
    pub batch: usize,
    /// Seed of every model and data order.
    pub seed: u64,
    /// Batches averaged by each probe.
    pub probe_batches: usize,
    /// Depths `L` of the probes.
    pub probe_depths: Vec<usize>,
    /// Depth of the standard and warm-up training runs.
    pub train_depth: usize,
    /// Steps of the standard and warm-up runs.
    pub train_steps: u64,
    /// Peak learning rate of the standard runs.
    pub lr: f32,
    /// Warm-up steps of the standard runs (and the warmed-up warm-up runs).
    pub warmup: u64,
    /// Peak learning rate of the warm-up comparison.
    pub high_lr: f32,
    /// Depth of the deep-stack runs.
    pub deep_depth: usize,
    /// Steps of the deep-stack runs.
    pub deep_steps: u64,
    /// Peak learning rate of the deep-stack runs.
    pub deep_lr: f32,
    /// Diagnostics every this many steps.
    pub diagnostics_every: u64,
    /// Validation windows per final evaluation.
    pub eval_windows: usize,
    /// Gradient clipping threshold.
    pub clip: f32,
    /// Repeats of the norm timing.
    pub norm_timing_repeats: usize,
}

/// Placements probed at initialization with GPT-2's initialization.
pub const PROBED_GPT2: [Placement; 3] =
    [Placement::PreLn, Placement::PostLn, Placement::NoResidual];
/// Placements probed in Xiong et al.'s setting (no residual scaling).
pub const PROBED_UNSCALED: [Placement; 2] = [Placement::PreLn, Placement::PostLn];
/// Placements of the deep-stack runs.
pub const DEEP: [Placement; 6] = [
    Placement::PreLn,
    Placement::PostLn,
    Placement::DeepNorm,
    Placement::ReZero,
    Placement::NoNorm,
    Placement::NoResidual,
];
/// Placements of the warm-up comparison.
pub const WARMUP_COMPARED: [Placement; 2] = [Placement::PostLn, Placement::PreLn];

impl Plan {
    /// The settings of `preset`.
    pub fn preset(preset: Preset) -> Plan {
        let quick = Plan {
            preset,
            width: 32,
            heads: 2,
            context: 32,
            batch: 8,
            seed: 1,
            probe_batches: 2,
            probe_depths: vec![6, 12, 24, 48],
            train_depth: 6,
            train_steps: 200,
            lr: 3e-3,
            warmup: 50,
            high_lr: 1e-2,
            deep_depth: 24,
            deep_steps: 120,
            deep_lr: 3e-3,
            diagnostics_every: 20,
            eval_windows: 64,
            clip: 1.0,
            norm_timing_repeats: 200,
        };
        match preset {
            Preset::Quick => quick,
            Preset::Full => Plan {
                width: 64,
                heads: 4,
                context: 64,
                probe_batches: 4,
                probe_depths: vec![6, 12, 24, 48, 96],
                train_steps: 600,
                warmup: 100,
                deep_depth: 48,
                deep_steps: 300,
                eval_windows: 128,
                diagnostics_every: 50,
                ..quick
            },
        }
    }

    fn model(
        &self,
        placement: Placement,
        norm: NormKind,
        layers: usize,
        scaled: bool,
    ) -> ModelSpec {
        ModelSpec {
            placement,
            norm,
            layers,
            width: self.width,
            heads: self.heads,
            context: self.context,
            residual_scaling: scaled,
            seed: self.seed,
        }
    }

    /// The probe of `placement` at depth `layers`; `scaled`: GPT-2's residual scaling.
    pub fn probe(&self, placement: Placement, layers: usize, scaled: bool) -> ProbeSpec {
        ProbeSpec {
            model: self.model(placement, NormKind::Layer, layers, scaled),
            batch: self.batch / 2,
            batches: self.probe_batches,
        }
    }

    fn train(&self, model: ModelSpec, steps: u64, lr: f32, warmup: u64) -> TrainSpec {
        TrainSpec {
            model,
            batch: self.batch,
            steps,
            lr,
            warmup,
            clip: self.clip,
            diagnostics_every: self.diagnostics_every,
            eval_windows: self.eval_windows,
        }
    }

    /// The standard run of `placement` with `norm` at `train_depth`.
    pub fn standard(&self, placement: Placement, norm: NormKind) -> TrainSpec {
        let model = self.model(placement, norm, self.train_depth, true);
        self.train(model, self.train_steps, self.lr, self.warmup)
    }

    /// The warm-up comparison run of `placement` at `high_lr`, with warm-up or without.
    pub fn warmup_run(&self, placement: Placement, warmup: bool) -> TrainSpec {
        let model = self.model(placement, NormKind::Layer, self.train_depth, true);
        let steps = if warmup { self.warmup } else { 0 };
        self.train(model, self.train_steps, self.high_lr, steps)
    }

    /// The deep-stack run of `placement`.
    pub fn deep(&self, placement: Placement) -> TrainSpec {
        let model = self.model(placement, NormKind::Layer, self.deep_depth, true);
        let warmup = self.warmup.min(self.deep_steps / 4);
        self.train(model, self.deep_steps, self.deep_lr, warmup)
    }

    /// The norm timing at the models' shape.
    pub fn norm_timing(&self) -> NormTimingSpec {
        NormTimingSpec {
            width: self.width,
            rows: self.batch * self.context,
            repeats: self.norm_timing_repeats,
        }
    }

    /// The probes only (findings 1, 2 and 5 at initialization): cheap.
    pub fn probe_specs(&self) -> Vec<RunSpec> {
        let mut specs = Vec::new();
        for &layers in &self.probe_depths {
            for p in PROBED_GPT2 {
                specs.push(RunSpec::Probe(self.probe(p, layers, true)));
            }
            for p in PROBED_UNSCALED {
                specs.push(RunSpec::Probe(self.probe(p, layers, false)));
            }
        }
        specs
    }

    /// Every run of the study, each once, cheapest groups first.
    pub fn specs(&self) -> Vec<RunSpec> {
        let mut specs = self.probe_specs();
        specs.push(RunSpec::NormTiming(self.norm_timing()));
        for p in Placement::ALL {
            specs.push(RunSpec::Train(self.standard(p, NormKind::Layer)));
        }
        specs.push(RunSpec::Train(
            self.standard(Placement::PreLn, NormKind::Rms),
        ));
        for p in WARMUP_COMPARED {
            for warmup in [false, true] {
                specs.push(RunSpec::Train(self.warmup_run(p, warmup)));
            }
        }
        for p in DEEP {
            specs.push(RunSpec::Train(self.deep(p)));
        }
        specs.extend(self.llm_specs());
        let mut unique: Vec<RunSpec> = Vec::with_capacity(specs.len());
        for spec in specs {
            if !unique.contains(&spec) {
                unique.push(spec);
            }
        }
        unique
    }
}

/// The Llama-family placements of today's open LLMs the study compares: pre-ln (Llama),
/// peri-ln (Gemma 2), reordered with QK-norm (OLMo 2).
pub const LLM_PLACEMENTS: [LlamaPlacement; 3] = LlamaPlacement::ALL;

/// The runs of today's LLM placements (findings 11 to 13): the preset's width, heads and
/// context, Llama's other options ([`LlamaSpec::new`]).
impl Plan {
    /// The Llama-family decoder of `placement` with `layers` blocks.
    pub fn llm_model(&self, placement: LlamaPlacement, layers: usize) -> LlamaSpec {
        LlamaSpec::new(
            placement,
            layers,
            self.width,
            self.heads,
            self.context,
            self.seed,
        )
    }

    /// The probe of `placement` at depth `layers` (Hugging Face's N(0, 0.02) initialization).
    pub fn llm_probe(&self, placement: LlamaPlacement, layers: usize) -> ProbeSpec<LlamaSpec> {
        ProbeSpec {
            model: self.llm_model(placement, layers),
            batch: self.batch / 2,
            batches: self.probe_batches,
        }
    }

    /// The training run of `placement` at depth: `deep_depth` blocks, `deep_steps` steps at
    /// the high rate `high_lr`, with the deep runs' warm-up.
    pub fn llm_train(&self, placement: LlamaPlacement) -> TrainSpec<LlamaSpec> {
        TrainSpec {
            model: self.llm_model(placement, self.deep_depth),
            batch: self.batch,
            steps: self.deep_steps,
            lr: self.high_lr,
            warmup: self.warmup.min(self.deep_steps / 4),
            clip: self.clip,
            diagnostics_every: self.diagnostics_every,
            eval_windows: self.eval_windows,
        }
    }

    /// The Llama-family runs: every placement's probes, then its training run.
    pub fn llm_specs(&self) -> Vec<RunSpec> {
        let mut specs = Vec::new();
        for &layers in &self.probe_depths {
            for p in LLM_PLACEMENTS {
                specs.push(RunSpec::LlamaProbe(self.llm_probe(p, layers)));
            }
        }
        for p in LLM_PLACEMENTS {
            specs.push(RunSpec::LlamaTrain(self.llm_train(p)));
        }
        specs
    }
}
