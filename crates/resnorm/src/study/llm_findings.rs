//! Findings 11 to 13: today's LLM norm placements at depth, each Llama-family placement
//! against pre-ln (Llama): peri-ln (Gemma 2, `x + N₂(F(N₁(x)))`) and reordered (OLMo 2,
//! `x + N(F(x))`, with QK-norm). Both normalize each sublayer's output, so a unit adds a
//! vector of RMS about its norm's gain to the stream, however large `F`'s output grows;
//! pre-ln adds `F`'s output as it is.
//!
//! | # | claim | measured |
//! |---|---|---|
//! | 11 | pre-ln's stream grows with depth and in training; peri-ln's and reordered's stay bounded | last stream's RMS at init vs L; its growth over the training run |
//! | 12 | gradient norms are more uniform across layers with peri-ln and reordered | max/min block gradient norm, at init and during training |
//! | 13 | at depth and a high rate, peri-ln and reordered train at least as well as pre-ln | validation loss |
//!
//! Thresholds are the constants below.

use super::findings::{check, describe_val, not_run, val, Check, Finding};
use super::plan::Plan;
use super::runner::Results;
use super::train::TrainResult;
use crate::models::llama::LlamaPlacement;

/// Finding 11: pre-ln's last stream must grow in training at least this many times more
/// than peri-ln's and reordered's.
pub const STREAM_GROWTH_MARGIN: f64 = 2.0;
/// Finding 13: "at least as well" allows a validation loss this much higher (nats).
pub const AS_WELL_NATS: f64 = 0.05;

/// The placements compared with pre-ln.
const COMPARED: [LlamaPlacement; 2] = [LlamaPlacement::PeriLn, LlamaPlacement::Reordered];

/// Findings 11, 12 and 13 on `results` of `plan`.
pub(super) fn evaluate(plan: &Plan, results: &Results) -> Vec<Finding> {
    vec![
        stream_growth(plan, results),
        gradient_uniformity(plan, results),
        high_rate(plan, results),
    ]
}

/// RMS of the last stream `x_2L` at the first and the last collected step of `run`, and its
/// largest over the collected steps.
pub fn last_stream_growth(run: &TrainResult) -> Option<(f64, f64, f64)> {
    let last_rms = |d: &crate::diagnostics::Diagnostics| d.stream_rms.last().map(|&r| r as f64);
    let first = last_rms(run.diagnostics.first()?)?;
    let last = last_rms(run.diagnostics.last()?)?;
    let peak = run
        .diagnostics
        .iter()
        .filter_map(last_rms)
        .fold(0.0, f64::max);
    Some((first, last, peak))
}

/// Largest over smallest of `norms` (infinite when the smallest is 0).
pub fn spread(norms: &[f64]) -> f64 {
    let max = norms.iter().copied().fold(0.0, f64::max);
    let min = norms.iter().copied().fold(f64::INFINITY, f64::min);
    if min > 0.0 {
        max / min
    } else {
        f64::INFINITY
    }
}

/// Median over `run`'s collected steps of the spread of its per-block gradient norms.
pub fn training_gradient_spread(run: &TrainResult) -> Option<f64> {
    let mut spreads: Vec<f64> = run
        .diagnostics
        .iter()
        .map(|d| {
            let blocks: Vec<f64> = d
                .units
                .chunks(2)
                .map(|u| {
                    u.iter()
                        .map(|u| (u.grad_norm as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .collect();
            spread(&blocks)
        })
        .collect();
    spreads.sort_by(f64::total_cmp);
    spreads.get(spreads.len() / 2).copied()
}

/// `(L, RMS of x_2L)` of the probes of `placement`, when all ran.
pub fn llm_last_stream_rms(
    plan: &Plan,
    results: &Results,
    placement: LlamaPlacement,
) -> Option<Vec<(usize, f64)>> {
    plan.probe_depths
        .iter()
        .map(|&l| {
            let probe = results.probe(&plan.llm_probe(placement, l))?;
            Some((l, *probe.stream_rms.last()? as f64))
        })
        .collect()
}

fn stream_growth(plan: &Plan, results: &Results) -> Finding {
    let claim = "Pre-LN's residual stream grows with depth and in training, while normalizing each sublayer's output (peri-LN as Gemma 2, reordered as OLMo 2) bounds what every unit adds, so their streams stay bounded in training.";
    let mut checks = Vec::new();
    let profiles: Option<Vec<_>> = LlamaPlacement::ALL
        .iter()
        .map(|&p| Some((p, llm_last_stream_rms(plan, results, p)?)))
        .collect();
    checks.push(match profiles {
        Some(profiles) => {
            let list: Vec<String> = profiles
                .iter()
                .map(|(p, points)| {
                    let values: Vec<String> =
                        points.iter().map(|(l, r)| format!("{r:.3} (L = {l})")).collect();
                    format!("{p} {}", values.join(", "))
                })
                .collect();
            let pre = &profiles[0].1;
            let grows = pre.windows(2).all(|w| w[1].1 > w[0].1);
            let growth = pre.last().expect("probe depths").1 / pre[0].1;
            check(
                format!(
                    "At initialization the last stream's RMS is {}: pre-ln's {} with depth ({growth:.2}x over the depths); the sublayer-output norms make every unit add an RMS of about 1 at initialization, so peri-ln's and reordered's grow like sqrt(2L) there.",
                    list.join("; "),
                    if grows { "grows" } else { "does not grow monotonically" }
                ),
                grows,
                &[("pre_ln_depth_growth", growth)],
            )
        }
        None => not_run("Llama-family probes"),
    });
    let growth = |p| {
        let (first, last, peak) = last_stream_growth(results.train(&plan.llm_train(p))?)?;
        Some((first, last, peak, last / first))
    };
    let Some((pre_first, pre_last, pre_peak, pre_growth)) = growth(LlamaPlacement::PreLn) else {
        checks.push(not_run("pre-ln training run"));
        return Finding::new(11, claim, checks);
    };
    for p in COMPARED {
        checks.push(match growth(p) {
            Some((first, last, peak, g)) => check(
                format!(
                    "Trained at L = {}, lr {}: the last stream's RMS goes from {first:.3} to {last:.3} ({g:.2}x) under {p}, from {pre_first:.3} to {pre_last:.3} ({pre_growth:.2}x) under pre-ln (bounded: pre-ln's growth at least {STREAM_GROWTH_MARGIN} times {p}'s); its largest over the collected steps: {peak:.1} under {p}, {pre_peak:.1} under pre-ln.",
                    plan.deep_depth, plan.high_lr
                ),
                pre_growth >= STREAM_GROWTH_MARGIN * g,
                &[("growth", g), ("pre_ln_growth", pre_growth), ("final_rms", last), ("pre_ln_final_rms", pre_last), ("peak_rms", peak), ("pre_ln_peak_rms", pre_peak)],
            ),
            None => not_run(&format!("{p} training run")),
        });
    }
    Finding::new(11, claim, checks)
}

fn gradient_uniformity(plan: &Plan, results: &Results) -> Finding {
    let claim = "Gradient norms across layers are more uniform with peri-LN and reordered than with pre-LN.";
    let deepest = *plan.probe_depths.last().expect("probe depths");
    let init = |p| {
        let probe = results.probe(&plan.llm_probe(p, deepest))?;
        let blocks: Vec<f64> = probe.block_grad_norm.iter().map(|&g| g as f64).collect();
        Some(spread(&blocks))
    };
    let trained = |p| training_gradient_spread(results.train(&plan.llm_train(p))?);
    let mut checks: Vec<Check> = Vec::new();
    for (setting, measure) in [
        (
            format!("at initialization, L = {deepest}"),
            &init as &dyn Fn(_) -> Option<f64>,
        ),
        (
            format!(
                "in training at L = {}, lr {} (median over the collected steps)",
                plan.deep_depth, plan.high_lr
            ),
            &trained,
        ),
    ] {
        let Some(pre) = measure(LlamaPlacement::PreLn) else {
            checks.push(not_run(&format!("pre-ln {setting}")));
            continue;
        };
        for p in COMPARED {
            checks.push(match measure(p) {
                Some(s) => check(
                    format!(
                        "{setting}: largest over smallest block gradient norm {s:.2} under {p} against {pre:.2} under pre-ln (more uniform: at most pre-ln's)."
                    ),
                    s <= pre,
                    &[("spread", s), ("pre_ln_spread", pre)],
                ),
                None => not_run(&format!("{p} {setting}")),
            });
        }
    }
    Finding::new(12, claim, checks)
}

fn high_rate(plan: &Plan, results: &Results) -> Finding {
    let claim = "At depth and a high learning rate, peri-LN and reordered train at least as well as pre-LN.";
    let Some(pre) = results.train(&plan.llm_train(LlamaPlacement::PreLn)) else {
        return Finding::new(13, claim, vec![not_run("pre-ln training run")]);
    };
    let checks = COMPARED
        .iter()
        .map(|&p| match results.train(&plan.llm_train(p)) {
            Some(run) => check(
                format!(
                    "L = {}, lr {}, {} steps: validation loss {} under {p} against {} under pre-ln (at least as well: at most {AS_WELL_NATS} nats higher).",
                    plan.deep_depth, plan.high_lr, plan.deep_steps, describe_val(run), describe_val(pre)
                ),
                !run.diverged && val(run) <= val(pre) + AS_WELL_NATS,
                &[("val", val(run)), ("pre_ln_val", val(pre))],
            ),
            None => not_run(&format!("{p} training run")),
        })
        .collect();
    Finding::new(13, claim, checks)
}
