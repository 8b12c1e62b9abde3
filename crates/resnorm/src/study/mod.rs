//! `resnorm study`: experiments that show why residual connections and normalization work,
//! and check the published findings about them.
//!
//! A [`Plan`] (from a [`Preset`]) lists the runs ([`RunSpec`]): measurements at
//! initialization ([`run_probe`]), short training runs ([`run_train`], the trainer's step)
//! and a norm timing ([`run_norm_timing`]). [`run_study`] makes them in sequence on a
//! [`StudyData`], caching each, and [`evaluate`] turns the [`Results`] into [`Finding`]s
//! with PASS/FAIL verdicts. The command-line tool draws the report. The translation preset
//! ([`TranslationPlan`]) makes encoder-decoder runs instead, with the translation trainer.
//!
//! ```no_run
//! use resnorm::study::{evaluate, run_study, Plan, Preset, StudyData};
//! let plan = Plan::preset(Preset::Quick);
//! let data = StudyData::built_in(1, 200_000).unwrap();
//! let results = run_study(&plan.specs(), &data, "out/runs".as_ref(), &mut |_| {}).unwrap();
//! for finding in evaluate(&plan, &results, data.vocab()) {
//!     println!("{} {}", finding.id, finding.status.label());
//! }
//! ```

mod data;
mod findings;
mod fit;
mod llm_findings;
mod model;
mod norm_timing;
mod plan;
mod probe;
mod runner;
mod spec;
mod train;
mod translation;

pub use data::StudyData;
pub use findings::{
    evaluate, gradient_ratio, last_block_gradients, rms_profile, Check, Finding, Status,
    CLEARLY_WORSE_NATS, FAR_WORSE_NATS, FLAT_SLOPE, INSENSITIVE_NATS, LINEAR_VARIANCE_R2,
    PRE_LN_SLOPE_RANGE, RMSNORM_MARGIN_NATS, TRAINED_NATS, UNIT_RMS_TOLERANCE, VANISHING_RATIO,
};
pub use fit::{fit_line, log_log_slope, LineFit};
pub use llm_findings::{
    last_stream_growth, llm_last_stream_rms, spread, training_gradient_spread, AS_WELL_NATS,
    STREAM_GROWTH_MARGIN,
};
pub use model::{LlamaSpec, StudyModel, StudyModelSpec};
pub use norm_timing::{run_norm_timing, NormTimingResult};
pub use plan::{Plan, Preset, DEEP, LLM_PLACEMENTS, PROBED_GPT2, PROBED_UNSCALED, WARMUP_COMPARED};
pub use probe::{run_probe, ProbeResult};
pub use runner::{
    run_study, work_units, write_atomically, Progress, Results, RunRecord, RunResult,
};
pub use spec::{fnv1a, ModelSpec, NormTimingSpec, ProbeSpec, RunSpec, TrainSpec};
pub use train::{run_train, train_step, StepOutcome, TrainResult, MIN_LR_FRACTION, WEIGHT_DECAY};
pub use translation::{
    evaluate_translation, run_translation, run_translation_study, translation_key, PartGradNorms,
    TranslationPlan, TranslationProgress, TranslationRecord, TranslationResults,
    TranslationRunResult, TranslationStudyData, TRANSLATION_DEEP, TRANSLATION_WARMUP_COMPARED,
};
