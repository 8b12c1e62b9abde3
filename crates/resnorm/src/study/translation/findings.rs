//! The translation preset's findings (8 to 10), Xiong et al.'s (2020) warm-up finding and
//! DeepNet's (Wang et al. 2022) depth finding on the encoder-decoder they were made on. The
//! thresholds are the GPT study's named constants, so both reports judge alike:
//! a run "fails" when it diverges or ends at least [`FAR_WORSE_NATS`] above the run it is
//! compared with; it "trains" when its validation loss ends at least [`TRAINED_NATS`] below
//! `ln V`; Pre-LN "needs no warm-up" when its loss without warm-up is at most
//! [`INSENSITIVE_NATS`] above its loss with.

use crate::models::gpt::Placement;
use crate::study::findings::{check, not_run, Check, Finding};
use crate::study::{FAR_WORSE_NATS, INSENSITIVE_NATS, TRAINED_NATS};

use super::plan::TranslationPlan;
use super::run::{TranslationResults, TranslationRunResult};

/// Validation loss of a run (infinite when it diverged).
fn val(run: &TranslationRunResult) -> f64 {
    run.val_loss.unwrap_or(f64::INFINITY)
}

fn describe(run: &TranslationRunResult) -> String {
    match (run.diverged_at, run.val_loss, run.bleu) {
        (Some(step), _, _) => format!("diverged at step {step}"),
        (None, Some(loss), Some(bleu)) => format!("{loss:.3} (BLEU {bleu:.2})"),
        _ => "not measured".into(),
    }
}

/// Evaluates findings 8 to 10 on `results` of `plan`, for a vocabulary of `vocab` ids.
pub fn evaluate_translation(
    plan: &TranslationPlan,
    results: &TranslationResults,
    vocab: usize,
) -> Vec<Finding> {
    vec![
        post_ln_warmup(plan, results),
        pre_ln_warmup(plan, results, vocab),
        deep(plan, results, vocab),
    ]
}

fn post_ln_warmup(plan: &TranslationPlan, results: &TranslationResults) -> Finding {
    let claim = "Encoder-decoder: Post-LN without learning-rate warm-up at a high peak rate fails or trains much worse than with warm-up (Xiong et al. 2020).";
    let runs = (
        results.get(&plan.warmup_run(Placement::PostLn, false)),
        results.get(&plan.warmup_run(Placement::PostLn, true)),
    );
    let check = match runs {
        (Some(cold), Some(warm)) => check(
            format!(
                "Post-LN {l}+{l} at lr {} for {} steps: validation loss without warm-up {}, with {} warm-up steps {} (fails: diverges or ends at least {FAR_WORSE_NATS} nats worse).",
                plan.high_lr, plan.steps, describe(cold), plan.warmup, describe(warm), l = plan.layers
            ),
            val(cold) >= val(warm) + FAR_WORSE_NATS,
            &[("post_ln_no_warmup_val", val(cold)), ("post_ln_warmup_val", val(warm))],
        ),
        _ => not_run("Post-LN warm-up runs"),
    };
    Finding::new(8, claim, vec![check])
}

fn trains(run: &TranslationRunResult, vocab: usize) -> bool {
    val(run) <= (vocab as f64).ln() - TRAINED_NATS
}

fn pre_ln_warmup(plan: &TranslationPlan, results: &TranslationResults, vocab: usize) -> Finding {
    let claim =
        "Encoder-decoder: Pre-LN trains at the same high rate without warm-up (Xiong et al. 2020).";
    let runs = (
        results.get(&plan.warmup_run(Placement::PreLn, false)),
        results.get(&plan.warmup_run(Placement::PreLn, true)),
    );
    let check = match runs {
        (Some(cold), Some(warm)) => check(
            format!(
                "Pre-LN {l}+{l} at lr {}: validation loss without warm-up {}, with warm-up {} (needs none: it trains, at least {TRAINED_NATS} below ln V = {:.3}, and ends at most {INSENSITIVE_NATS} nats above the warmed-up run).",
                plan.high_lr, describe(cold), describe(warm), (vocab as f64).ln(), l = plan.layers
            ),
            trains(cold, vocab) && val(cold) <= val(warm) + INSENSITIVE_NATS,
            &[("pre_ln_no_warmup_val", val(cold)), ("pre_ln_warmup_val", val(warm))],
        ),
        _ => not_run("Pre-LN warm-up runs"),
    };
    Finding::new(9, claim, vec![check])
}

fn deep(plan: &TranslationPlan, results: &TranslationResults, vocab: usize) -> Finding {
    let claim = "Encoder-decoder: in deep stacks, DeepNorm and Pre-LN train where Post-LN fails (Wang et al. 2022).";
    let Some(post) = results.get(&plan.deep(Placement::PostLn)) else {
        return Finding::new(10, claim, vec![not_run("deep Post-LN")]);
    };
    let checks: Vec<Check> = [Placement::DeepNorm, Placement::PreLn]
        .into_iter()
        .map(|p| match results.get(&plan.deep(p)) {
            Some(run) => check(
                format!(
                    "{l}+{l} layers, lr {}, {} steps: {p} validation loss {} against Post-LN {} (it trains: at least {TRAINED_NATS} below ln V = {:.3}; Post-LN fails: diverges or ends at least {FAR_WORSE_NATS} nats worse).",
                    plan.deep_lr, plan.deep_steps, describe(run), describe(post), (vocab as f64).ln(), l = plan.deep_layers
                ),
                trains(run, vocab) && val(post) >= val(run) + FAR_WORSE_NATS,
                &[("val", val(run)), ("post_ln_val", val(post))],
            ),
            None => not_run(p.name()),
        })
        .collect();
    Finding::new(10, claim, checks)
}
