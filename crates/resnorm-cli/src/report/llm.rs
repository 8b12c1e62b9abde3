//! The report's plots and tables of findings 11 to 13: the Llama-family placements (pre-ln,
//! peri-ln as Gemma 2, reordered as OLMo 2) at depth.

use super::svg::{escape, LinePlot, Scale, Series};
use super::{curve, figure, LOG_FLOOR};
use resnorm::study::{
    last_stream_growth, llm_last_stream_rms, training_gradient_spread, Plan, Results,
    LLM_PLACEMENTS,
};
use std::fmt::Write;

/// Finding 11: the stream's RMS per stream index at the first and last collected step of each
/// training run, and the last stream's RMS at initialization against depth.
pub fn stream_figure(html: &mut String, plan: &Plan, results: &Results) {
    let mut series = Vec::new();
    for p in LLM_PLACEMENTS {
        let Some(run) = results.train(&plan.llm_train(p)) else {
            continue;
        };
        for (d, when, dashed) in [
            (run.diagnostics.first(), "step 0", true),
            (run.diagnostics.last(), "end", false),
        ] {
            let Some(d) = d else { continue };
            let points = d
                .stream_rms
                .iter()
                .enumerate()
                .map(|(k, &r)| (k as f64, (r as f64).max(LOG_FLOOR)))
                .collect();
            let mut s = Series::new(format!("{p} {when}"), points);
            s.dashed = dashed;
            series.push(s);
        }
    }
    figure(
        html,
        LinePlot {
            title: format!(
                "Residual stream RMS, Llama-family, L = {}, lr {} (dashed: step 0, solid: end)",
                plan.deep_depth, plan.high_lr
            ),
            x_label: "stream index l (2 per block)".into(),
            y_label: "rms(x_l)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            series,
        }
        .to_svg(),
    );
    let series = LLM_PLACEMENTS
        .iter()
        .filter_map(|&p| {
            let points = llm_last_stream_rms(plan, results, p)?;
            let points = points.iter().map(|&(l, r)| (l as f64, r)).collect();
            Some(Series::new(p.to_string(), points))
        })
        .collect();
    figure(
        html,
        LinePlot {
            title: "Last stream's RMS at initialization vs depth, Llama-family".into(),
            x_label: "layers L".into(),
            y_label: "rms(x_2L)".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            series,
        }
        .to_svg(),
    );
}

/// Finding 12: each block's gradient norm at initialization (deepest probe) and at the last
/// collected training step.
pub fn gradient_figure(html: &mut String, plan: &Plan, results: &Results) {
    let deepest = *plan.probe_depths.last().expect("probe depths");
    let mut series = Vec::new();
    for p in LLM_PLACEMENTS {
        if let Some(probe) = results.probe(&plan.llm_probe(p, deepest)) {
            let points = probe
                .block_grad_norm
                .iter()
                .enumerate()
                .map(|(i, &g)| (i as f64, (g as f64).max(LOG_FLOOR)))
                .collect();
            series.push(Series::new(format!("{p} init, L = {deepest}"), points));
        }
        let last = results
            .train(&plan.llm_train(p))
            .and_then(|r| r.diagnostics.last());
        if let Some(d) = last {
            let points = d
                .units
                .chunks(2)
                .enumerate()
                .map(|(i, u)| {
                    let g = u.iter().map(|u| (u.grad_norm as f64).powi(2)).sum::<f64>();
                    (i as f64, g.sqrt().max(LOG_FLOOR))
                })
                .collect();
            let mut s = Series::new(format!("{p} trained, L = {}", plan.deep_depth), points);
            s.dashed = true;
            series.push(s);
        }
    }
    figure(
        html,
        LinePlot {
            title:
                "Gradient norm per block, Llama-family (solid: init, dashed: last training step)"
                    .into(),
            x_label: "block".into(),
            y_label: "‖∂L/∂W_block‖".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            series,
        }
        .to_svg(),
    );
}

/// Finding 13: the training runs' loss curves and a table of their numbers.
pub fn training_figure(html: &mut String, plan: &Plan, results: &Results) {
    let runs: Vec<_> = LLM_PLACEMENTS
        .iter()
        .filter_map(|&p| Some((p, results.train(&plan.llm_train(p))?)))
        .collect();
    let series = runs
        .iter()
        .map(|(p, run)| Series::new(p.to_string(), curve(&run.losses)))
        .collect();
    figure(
        html,
        LinePlot {
            title: format!(
                "Llama-family placements, L = {}, lr {}",
                plan.deep_depth, plan.high_lr
            ),
            x_label: "step".into(),
            y_label: "training loss (nats/token)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series,
        }
        .to_svg(),
    );
    html.push_str("<table><tr><th>placement</th><th>final train loss</th><th>validation loss</th><th>last stream RMS (step 0 → end)</th><th>block gradient spread (median)</th><th>ms/step</th></tr>");
    for (p, run) in runs {
        let val = if run.diverged {
            format!("diverged at step {}", run.losses.len())
        } else {
            format!("{:.3}", run.val_loss)
        };
        let growth = last_stream_growth(run)
            .map(|(a, b, peak)| format!("{a:.3} → {b:.3} (peak {peak:.1})"))
            .unwrap_or_else(|| "-".into());
        let spread = training_gradient_spread(run)
            .map(|s| format!("{s:.2}"))
            .unwrap_or_else(|| "-".into());
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.3}</td><td>{val}</td><td>{growth}</td><td>{spread}</td><td>{:.1}</td></tr>",
            escape(&p.to_string()),
            run.final_train_loss,
            run.ms_per_step
        );
    }
    html.push_str("</table>");
}
