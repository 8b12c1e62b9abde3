//! The published findings a study checks, each as sentences with the measured numbers and a
//! verdict. Every threshold is a named constant below, so the report states what it tested.
//!
//! A finding is made of checks; it passes when every check passes, and is `not-run` when a
//! run it needs is missing (the tests evaluate the findings on the probes alone).

use super::fit::{fit_line, log_log_slope};
use super::llm_findings;
use super::plan::{Plan, DEEP, PROBED_UNSCALED};
use super::probe::ProbeResult;
use super::runner::Results;
use super::train::TrainResult;
use crate::kernels::NormKind;
use crate::models::gpt::Placement;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Finding 1: the first block's gradient is below this fraction of the last block's.
pub const VANISHING_RATIO: f64 = 1e-2;
/// Findings 1 and 7: "trains far worse" means a validation loss this much higher (nats).
pub const FAR_WORSE_NATS: f64 = 0.25;
/// Finding 2: the Pre-LN log-log slope must lie in this range (theory: −½).
pub const PRE_LN_SLOPE_RANGE: (f64, f64) = (-0.75, -0.25);
/// Finding 2: the Post-LN slope must be at most this far from 0 (theory: 0).
pub const FLAT_SLOPE: f64 = 0.15;
/// Findings 3 and 4: a run "ends clearly worse" by this much validation loss (nats).
pub const CLEARLY_WORSE_NATS: f64 = 0.1;
/// Finding 3: Pre-LN counts as insensitive when warm-up changes its loss by less (nats).
pub const INSENSITIVE_NATS: f64 = 0.1;
/// Finding 4: a run "trains" when its validation loss ends this far below `ln V` (nats).
pub const TRAINED_NATS: f64 = 0.5;
/// Finding 5: Pre-LN's `rms²` must be this linear in the layer index (R²).
pub const LINEAR_VARIANCE_R2: f64 = 0.95;
/// Finding 5: Post-LN's stream RMS may differ from 1 by this much.
pub const UNIT_RMS_TOLERANCE: f64 = 0.02;
/// Finding 6: RMSNorm's validation loss within this of LayerNorm's (nats).
pub const RMSNORM_MARGIN_NATS: f64 = 0.05;

/// The verdict of a check or finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The measurement agrees with the published finding.
    Pass,
    /// It does not.
    Fail,
    /// A run it needs was not made.
    NotRun,
}

impl Status {
    fn from_bool(ok: bool) -> Self {
        if ok {
            Status::Pass
        } else {
            Status::Fail
        }
    }

    /// `PASS`, `FAIL` or `NOT RUN`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotRun => "NOT RUN",
        }
    }
}

/// One measured statement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The sentence, with the numbers.
    pub statement: String,
    /// Its verdict.
    pub status: Status,
    /// The numbers it rests on, by name.
    pub values: BTreeMap<String, f64>,
}

/// A finding of the literature and what this study measured of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// 1 to 7 (the GPT presets), 8 to 10 (the translation preset) or 11 to 13 (the GPT
    /// presets' Llama-family runs), as in the documentation.
    pub id: u8,
    /// What the literature says.
    pub claim: String,
    /// The measured checks.
    pub checks: Vec<Check>,
    /// Pass when every check passes, not-run when any is not run, fail otherwise.
    pub status: Status,
}

impl Finding {
    pub(in crate::study) fn new(id: u8, claim: &str, checks: Vec<Check>) -> Finding {
        let status = if checks.iter().any(|c| c.status == Status::NotRun) {
            Status::NotRun
        } else {
            Status::from_bool(checks.iter().all(|c| c.status == Status::Pass))
        };
        Finding {
            id,
            claim: claim.to_string(),
            checks,
            status,
        }
    }
}

pub(in crate::study) fn check(statement: String, ok: bool, values: &[(&str, f64)]) -> Check {
    Check {
        statement,
        status: Status::from_bool(ok),
        values: values.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
    }
}

pub(in crate::study) fn not_run(what: &str) -> Check {
    Check {
        statement: format!("{what}: not measured (runs missing)"),
        status: Status::NotRun,
        values: BTreeMap::new(),
    }
}

/// Evaluates the findings on `results` of `plan`, for a vocabulary of `vocab` tokens: the
/// seven about GPT placements, then those about today's LLM placements
/// ([`super::llm_findings`]).
pub fn evaluate(plan: &Plan, results: &Results, vocab: usize) -> Vec<Finding> {
    let mut findings = vec![
        no_residual(plan, results),
        last_layer_gradient(plan, results),
        warmup(plan, results),
        deep_stacks(plan, results, vocab),
        residual_rms(plan, results),
        rms_norm(plan, results),
        unstable(plan, results),
    ];
    findings.extend(llm_findings::evaluate(plan, results));
    findings
}

/// Validation loss of a training run (infinite when it diverged).
pub(super) fn val(run: &TrainResult) -> f64 {
    if run.diverged {
        f64::INFINITY
    } else {
        run.val_loss as f64
    }
}

pub(super) fn describe_val(run: &TrainResult) -> String {
    if run.diverged {
        format!("diverged at step {}", run.losses.len())
    } else {
        format!("{:.3}", run.val_loss)
    }
}

/// First-to-last block gradient ratio of a probe.
pub fn gradient_ratio(probe: &ProbeResult) -> f64 {
    probe.first_block_grad_norm() as f64 / probe.last_block_grad_norm() as f64
}

fn no_residual(plan: &Plan, results: &Results) -> Finding {
    let claim = "Without residual connections, the gradient reaching the first layers at initialization is orders of magnitude smaller than at the last layers, the gap grows with depth, and the deep model trains far worse than Pre-LN (vanishing gradients).";
    let mut checks = Vec::new();
    let ratios: Option<Vec<(usize, f64, f64)>> = plan
        .probe_depths
        .iter()
        .map(|&l| {
            let none = results.probe(&plan.probe(Placement::NoResidual, l, true))?;
            let pre = results.probe(&plan.probe(Placement::PreLn, l, true))?;
            Some((l, gradient_ratio(none), gradient_ratio(pre)))
        })
        .collect();
    match ratios {
        Some(ratios) => {
            let &(deepest, none_ratio, pre_ratio) = ratios.last().expect("probe depths");
            let list: Vec<String> = ratios
                .iter()
                .map(|(l, r, _)| format!("{r:.1e} at L = {l}"))
                .collect();
            let shrinking = ratios.windows(2).all(|w| w[1].1 <= w[0].1);
            checks.push(check(
                format!(
                    "No-residual, GPT-2 initialization: first/last block gradient norm {}; at L = {deepest} it is {none_ratio:.1e} (threshold {VANISHING_RATIO:.0e}) against {pre_ratio:.2} for Pre-LN, and it {} with depth.",
                    list.join(", "),
                    if shrinking { "shrinks" } else { "does not shrink monotonically" }
                ),
                none_ratio < VANISHING_RATIO && shrinking,
                &[("no_residual_ratio_deepest", none_ratio), ("pre_ln_ratio_deepest", pre_ratio)],
            ));
        }
        None => checks.push(not_run("gradient ratio at initialization")),
    }
    checks.push(
        match (
            results.train(&plan.deep(Placement::NoResidual)),
            results.train(&plan.deep(Placement::PreLn)),
        ) {
            (Some(none), Some(pre)) => check(
                format!(
                    "Trained at L = {}: no-residual validation loss {} against Pre-LN {:.3} (far worse: by at least {FAR_WORSE_NATS} nats).",
                    plan.deep_depth,
                    describe_val(none),
                    pre.val_loss
                ),
                val(none) >= val(pre) + FAR_WORSE_NATS,
                &[("no_residual_val", val(none)), ("pre_ln_val", val(pre))],
            ),
            _ => not_run("deep training without residuals"),
        },
    );
    Finding::new(1, claim, checks)
}

/// `(L, last-block gradient norm)` of the unscaled probes of `placement`, when all ran.
pub fn last_block_gradients(
    plan: &Plan,
    results: &Results,
    placement: Placement,
    scaled: bool,
) -> Option<Vec<(f64, f64)>> {
    plan.probe_depths
        .iter()
        .map(|&l| {
            let probe = results.probe(&plan.probe(placement, l, scaled))?;
            Some((l as f64, probe.last_block_grad_norm() as f64))
        })
        .collect()
}

fn last_layer_gradient(plan: &Plan, results: &Results) -> Finding {
    let claim = "At initialization the gradient norm of the last layer stays flat in the depth L for Post-LN but falls like 1/sqrt(L) for Pre-LN (Xiong et al. 2020, Theorem 1).";
    let mut checks = Vec::new();
    for placement in PROBED_UNSCALED {
        let Some(points) = last_block_gradients(plan, results, placement, false) else {
            checks.push(not_run(placement.name()));
            continue;
        };
        let slope = log_log_slope(&points).unwrap_or(f64::NAN);
        let list: Vec<String> = points
            .iter()
            .map(|(l, g)| format!("{g:.3} at L = {l}"))
            .collect();
        let (ok, expected) = if placement == Placement::PreLn {
            let (lo, hi) = PRE_LN_SLOPE_RANGE;
            (
                (lo..=hi).contains(&slope),
                format!("expected -0.5, accepted [{lo}, {hi}]"),
            )
        } else {
            (
                slope.abs() <= FLAT_SLOPE,
                format!("expected 0, accepted ±{FLAT_SLOPE}"),
            )
        };
        checks.push(check(
            format!(
                "{placement} (Xiong et al.'s setting: no residual scaling at initialization): last-block gradient norm {}; log-log slope {slope:.3} ({expected}).",
                list.join(", ")
            ),
            ok,
            &[("slope", slope)],
        ));
    }
    Finding::new(2, claim, checks)
}

fn warmup(plan: &Plan, results: &Results) -> Finding {
    let claim = "Post-LN without learning-rate warm-up at a high rate diverges or ends clearly worse than with warm-up, while Pre-LN is insensitive to warm-up.";
    let runs = |p| {
        Some((
            results.train(&plan.warmup_run(p, false))?,
            results.train(&plan.warmup_run(p, true))?,
        ))
    };
    let mut checks = Vec::new();
    match runs(Placement::PostLn) {
        Some((cold, warm)) => checks.push(check(
            format!(
                "Post-LN at lr {} (L = {}): without warm-up validation loss {}, with {} warm-up steps {} (clearly worse: by at least {CLEARLY_WORSE_NATS} nats).",
                plan.high_lr, plan.train_depth, describe_val(cold), plan.warmup, describe_val(warm)
            ),
            val(cold) >= val(warm) + CLEARLY_WORSE_NATS,
            &[("post_ln_no_warmup_val", val(cold)), ("post_ln_warmup_val", val(warm))],
        )),
        None => checks.push(not_run("Post-LN warm-up runs")),
    }
    match runs(Placement::PreLn) {
        Some((cold, warm)) => {
            let gap = (val(cold) - val(warm)).abs();
            checks.push(check(
                format!(
                    "Pre-LN at the same rate: without warm-up {}, with warm-up {} (insensitive: within {INSENSITIVE_NATS} nats; measured difference {gap:.3}).",
                    describe_val(cold), describe_val(warm)
                ),
                gap < INSENSITIVE_NATS,
                &[("pre_ln_no_warmup_val", val(cold)), ("pre_ln_warmup_val", val(warm))],
            ));
        }
        None => checks.push(not_run("Pre-LN warm-up runs")),
    }
    Finding::new(3, claim, checks)
}

fn deep_stacks(plan: &Plan, results: &Results, vocab: usize) -> Finding {
    let claim = "In deep stacks, DeepNorm and ReZero train where Post-LN fails.";
    let uniform = (vocab as f64).ln();
    let mut checks = Vec::new();
    let Some(post) = results.train(&plan.deep(Placement::PostLn)) else {
        return Finding::new(4, claim, vec![not_run("deep Post-LN")]);
    };
    for p in [Placement::DeepNorm, Placement::ReZero] {
        match results.train(&plan.deep(p)) {
            Some(run) => {
                let trains = val(run) <= uniform - TRAINED_NATS;
                let beats = val(run) + CLEARLY_WORSE_NATS <= val(post);
                checks.push(check(
                    format!(
                        "L = {}: {p} validation loss {} against Post-LN {} (ln V = {uniform:.3}; it trains: at least {TRAINED_NATS} below ln V, and Post-LN is worse by at least {CLEARLY_WORSE_NATS}).",
                        plan.deep_depth, describe_val(run), describe_val(post)
                    ),
                    trains && beats,
                    &[("val", val(run)), ("post_ln_val", val(post))],
                ));
            }
            None => checks.push(not_run(p.name())),
        }
    }
    Finding::new(4, claim, checks)
}

/// `(stream index, RMS)` of a probe at `layers` in the unscaled setting.
pub fn rms_profile(
    plan: &Plan,
    results: &Results,
    placement: Placement,
    layers: usize,
) -> Option<Vec<(f64, f64)>> {
    let probe = results.probe(&plan.probe(placement, layers, false))?;
    Some(
        probe
            .stream_rms
            .iter()
            .enumerate()
            .map(|(k, &r)| (k as f64, r as f64))
            .collect(),
    )
}

fn residual_rms(plan: &Plan, results: &Results) -> Finding {
    let claim =
        "Pre-LN's residual stream grows with depth (RMS about sqrt(l)); Post-LN's stays at 1.";
    let layers = *plan.probe_depths.last().expect("probe depths");
    let mut checks = Vec::new();
    match rms_profile(plan, results, Placement::PreLn, layers) {
        Some(profile) => {
            let squares: Vec<(f64, f64)> = profile.iter().map(|&(k, r)| (k, r * r)).collect();
            let fit = fit_line(&squares).expect("2L + 1 streams");
            let growth = profile.last().expect("streams").1 / profile[0].1;
            checks.push(check(
                format!(
                    "Pre-LN, L = {layers}: RMS {:.4} at x_0, {:.4} at x_{}, {growth:.2} times larger; rms² is linear in l (so rms ∝ sqrt(l + c), c = {:.1}) with R² = {:.3} (needed {LINEAR_VARIANCE_R2}).",
                    profile[0].1,
                    profile.last().expect("streams").1,
                    profile.len() - 1,
                    fit.intercept / fit.slope,
                    fit.r_squared
                ),
                fit.r_squared >= LINEAR_VARIANCE_R2 && fit.slope > 0.0 && growth > 1.5,
                &[("r_squared", fit.r_squared), ("growth", growth)],
            ));
        }
        None => checks.push(not_run("Pre-LN stream RMS")),
    }
    match rms_profile(plan, results, Placement::PostLn, layers) {
        Some(profile) => {
            let worst = profile[1..]
                .iter()
                .map(|&(_, r)| (r - 1.0).abs())
                .fold(0.0, f64::max);
            checks.push(check(
                format!(
                    "Post-LN, L = {layers}: after the first unit every stream's RMS is within {worst:.4} of 1 (tolerance {UNIT_RMS_TOLERANCE})."
                ),
                worst <= UNIT_RMS_TOLERANCE,
                &[("max_deviation_from_1", worst)],
            ));
        }
        None => checks.push(not_run("Post-LN stream RMS")),
    }
    Finding::new(5, claim, checks)
}

fn rms_norm(plan: &Plan, results: &Results) -> Finding {
    let claim = "RMSNorm reaches a loss comparable to LayerNorm and costs less time per step.";
    let layer = results.train(&plan.standard(Placement::PreLn, NormKind::Layer));
    let rms = results.train(&plan.standard(Placement::PreLn, NormKind::Rms));
    let timing = results.norm_timing(&plan.norm_timing());
    let mut checks = Vec::new();
    match (layer, rms) {
        (Some(layer), Some(rms)) => {
            let gap = val(rms) - val(layer);
            checks.push(check(
                format!(
                    "Pre-LN, L = {}: validation loss {} with RMSNorm against {} with LayerNorm (difference {gap:+.3}, margin {RMSNORM_MARGIN_NATS}); whole training step {:.2} ms against {:.2} ms (median; the norms are a small part of a step at this size).",
                    plan.train_depth, describe_val(rms), describe_val(layer), rms.ms_per_step, layer.ms_per_step
                ),
                gap.abs() <= RMSNORM_MARGIN_NATS,
                &[("rms_val", val(rms)), ("layer_val", val(layer)), ("rms_ms_per_step", rms.ms_per_step), ("layer_ms_per_step", layer.ms_per_step)],
            ));
        }
        _ => checks.push(not_run("Pre-LN LayerNorm/RMSNorm runs")),
    }
    match timing {
        Some(t) => {
            let norms_per_step = (2 * plan.train_depth + 1) as f64;
            checks.push(check(
                format!(
                    "One norm's forward and backward on {} x {}: RMSNorm {:.1} us against LayerNorm {:.1} us ({:.0}% less); the {norms_per_step} norms of a step: {:.1} us against {:.1} us.",
                    plan.batch * plan.context, plan.width, t.rms_us, t.layer_us,
                    100.0 * (1.0 - t.rms_us / t.layer_us), norms_per_step * t.rms_us, norms_per_step * t.layer_us
                ),
                t.rms_us < t.layer_us,
                &[("rms_us", t.rms_us), ("layer_us", t.layer_us)],
            ));
        }
        None => checks.push(not_run("norm timing")),
    }
    Finding::new(6, claim, checks)
}

fn unstable(plan: &Plan, results: &Results) -> Finding {
    let claim = "Without normalization, or without residual connections, training a deep stack is unstable or stalls.";
    let Some(pre) = results.train(&plan.deep(Placement::PreLn)) else {
        return Finding::new(7, claim, vec![not_run("deep Pre-LN")]);
    };
    let checks = DEEP
        .iter()
        .filter(|p| matches!(p, Placement::NoNorm | Placement::NoResidual))
        .map(|&p| match results.train(&plan.deep(p)) {
            Some(run) => check(
                format!(
                    "L = {}: {p} validation loss {} against Pre-LN {} (unstable or stalled: diverged, or worse by at least {FAR_WORSE_NATS} nats).",
                    plan.deep_depth, describe_val(run), describe_val(pre)
                ),
                run.diverged || val(run) >= val(pre) + FAR_WORSE_NATS,
                &[("val", val(run)), ("pre_ln_val", val(pre))],
            ),
            None => not_run(p.name()),
        })
        .collect();
    Finding::new(7, claim, checks)
}
