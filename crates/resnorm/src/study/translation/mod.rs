//! `resnorm study --preset translation`: the encoder-decoder of Vaswani et al. (2017) on a
//! parallel corpus, where Xiong et al. (2020) found that Post-LN needs learning-rate warm-up
//! and Pre-LN does not, and where DeepNet (Wang et al. 2022) trains deep stacks that Post-LN
//! cannot.
//!
//! A [`TranslationPlan`] lists the runs (each a complete
//! [`TranslateConfig`](crate::translate::config::TranslateConfig)); [`run_translation_study`]
//! makes them in sequence with the translation trainer's step on a [`TranslationStudyData`],
//! caching each, and [`evaluate_translation`] turns the [`TranslationResults`] into findings
//! 8 to 10 with PASS/FAIL verdicts:
//!
//! ```text
//! 8  Post-LN, no warm-up, lr high:  diverges, or val ≥ val(Post-LN, warm-up) + 0.25
//! 9  Pre-LN,  no warm-up, lr high:  val ≤ ln V − 0.5  and  val ≤ val(Pre-LN, warm-up) + 0.1
//! 10 deep-norm and pre-ln, deep:    val ≤ ln V − 0.5  and  Post-LN diverges or val(Post-LN) ≥ val + 0.25
//! ```
//!
//! ```no_run
//! use resnorm::study::{evaluate_translation, run_translation_study, TranslationPlan, TranslationStudyData};
//! let plan = TranslationPlan::preset("../shared/data/translation".as_ref());
//! let data = TranslationStudyData::load(&plan).unwrap();
//! let results = run_translation_study(&plan.specs(), &data, "out/runs".as_ref(), &mut |_| {}).unwrap();
//! for finding in evaluate_translation(&plan, &results, data.vocab()) {
//!     println!("{} {}", finding.id, finding.status.label());
//! }
//! ```

mod findings;
mod plan;
mod run;

pub use findings::evaluate_translation;
pub use plan::{TranslationPlan, TRANSLATION_DEEP, TRANSLATION_WARMUP_COMPARED};
pub use run::{
    run_translation, run_translation_study, translation_key, PartGradNorms, TranslationProgress,
    TranslationRecord, TranslationResults, TranslationRunResult, TranslationStudyData,
};
