//! The study's HTML report: one self-contained page (inline CSS and SVG, no scripts, no
//! network) with every finding's verdict, its plots and tables of the numbers. The vision
//! degradation study's page ([`vision`]) and the translation study's ([`translation`]) share
//! its style and its charts ([`svg`]).

mod llm;
mod svg;
pub mod translation;
pub mod vision;

use resnorm::kernels::NormKind;
use resnorm::models::gpt::Placement;
use resnorm::study::{
    gradient_ratio, last_block_gradients, log_log_slope, rms_profile, Finding, Plan, Results,
    StudyData, TrainResult, TrainSpec, DEEP, PROBED_GPT2, PROBED_UNSCALED, WARMUP_COMPARED,
};
use std::fmt::Write;
use svg::{escape, BarChart, LinePlot, Scale, Series};

/// Most points drawn per loss curve (steps are averaged in chunks beyond that).
const CURVE_POINTS: usize = 100;
/// Zero gradients are drawn at this floor on log axes.
const LOG_FLOOR: f64 = 1e-30;

const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:24px auto;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child,.text{text-align:left}.pass{color:#fff;background:#2e7d32;padding:1px 6px;border-radius:3px}\
.fail{color:#fff;background:#c62828;padding:1px 6px;border-radius:3px}.not-run{color:#fff;background:#757575;padding:1px 6px;border-radius:3px}\
section{border-top:2px solid #ddd;margin-top:24px}figure{margin:8px 0}";

/// The report for `plan`'s `results` on `data` with its `findings`.
pub fn render(plan: &Plan, data: &StudyData, results: &Results, findings: &[Finding]) -> String {
    let mut html = page_start("resnorm study");
    let _ = write!(
        html,
        "<h1>resnorm study: why residual connections and normalization work</h1>\
         <p>Preset <b>{}</b>; data: {} (vocabulary {}{}). Models: width {}, {} heads, context {}, batch {}, seed {}; AdamW (weight decay 0.1), warm-up + cosine schedule, gradient clipping at {}. Runs made: {}.</p>",
        plan.preset,
        escape(&data.source),
        data.vocab(),
        data.nats_per_char
            .map(|h| format!(", true entropy {h:.3} nats/char"))
            .unwrap_or_default(),
        plan.width, plan.heads, plan.context, plan.batch, plan.seed, plan.clip, results.runs.len()
    );
    summary(&mut html, findings);
    for finding in findings {
        finding_section(&mut html, finding);
        match finding.id {
            1 => gradient_profile(&mut html, plan, results),
            2 => depth_sweep(&mut html, plan, results),
            3 => loss_figure(
                &mut html,
                "Warm-up at a high learning rate",
                &warmup_runs(plan, results),
            ),
            4 => loss_figure(
                &mut html,
                &format!("Deep stacks, L = {}", plan.deep_depth),
                &deep_runs(plan, results),
            ),
            5 => rms_figure(&mut html, plan, results),
            6 => norm_figure(&mut html, plan, results),
            7 => html.push_str("<p>Loss curves: the deep-stack plot of finding 4.</p>"),
            8 => llm::stream_figure(&mut html, plan, results),
            9 => llm::gradient_figure(&mut html, plan, results),
            10 => llm::training_figure(&mut html, plan, results),
            _ => {}
        }
        html.push_str("</section>");
    }
    html.push_str("<section><h2>Training runs</h2>");
    let standard = standard_runs(plan, results);
    loss_figure(
        &mut html,
        &format!("Loss per placement, L = {}", plan.train_depth),
        &standard,
    );
    update_ratio_figure(&mut html, &standard);
    let mut all = standard;
    all.extend(warmup_runs(plan, results));
    all.extend(deep_runs(plan, results));
    run_table(&mut html, &all);
    html.push_str("</section></body></html>\n");
    html
}

/// The page up to and including `<body>`: its `title` and the shared [`STYLE`].
fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    )
}

fn badge(label: &str) -> String {
    let class = label.to_lowercase().replace(' ', "-");
    format!("<span class=\"{class}\">{label}</span>")
}

fn summary(html: &mut String, findings: &[Finding]) {
    html.push_str(
        "<h2>Findings</h2><table><tr><th>#</th><th class=\"text\">claim</th><th>verdict</th></tr>",
    );
    for f in findings {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"text\">{}</td><td>{}</td></tr>",
            f.id,
            escape(&f.claim),
            badge(f.status.label())
        );
    }
    html.push_str("</table>");
}

fn finding_section(html: &mut String, f: &Finding) {
    let _ = write!(
        html,
        "<section><h2>Finding {}: {}</h2><p>{}</p><ul>",
        f.id,
        badge(f.status.label()),
        escape(&f.claim)
    );
    for c in &f.checks {
        let _ = write!(
            html,
            "<li>{} {}</li>",
            badge(c.status.label()),
            escape(&c.statement)
        );
    }
    html.push_str("</ul>");
}

fn figure(html: &mut String, svg: String) {
    let _ = write!(html, "<figure>{svg}</figure>");
}

fn gradient_profile(html: &mut String, plan: &Plan, results: &Results) {
    let layers = *plan.probe_depths.last().expect("probe depths");
    let series = PROBED_GPT2
        .iter()
        .filter_map(|&p| {
            let probe = results.probe(&plan.probe(p, layers, true))?;
            let points = probe
                .block_grad_norm
                .iter()
                .enumerate()
                .map(|(i, &g)| (i as f64, (g as f64).max(LOG_FLOOR)))
                .collect();
            Some(Series::new(p.name(), points))
        })
        .collect();
    figure(html, LinePlot {
        title: format!("Gradient norm per block at initialization, L = {layers} (GPT-2 init; 0 drawn at 1e-30)"),
        x_label: "block".into(),
        y_label: "‖∂L/∂W_block‖".into(),
        x_scale: Scale::Linear,
        y_scale: Scale::Log,
        series,
    }.to_svg());
    html.push_str("<table><tr><th>L</th>");
    for p in PROBED_GPT2 {
        let _ = write!(html, "<th>{p}: first/last block</th>");
    }
    html.push_str("</tr>");
    for &l in &plan.probe_depths {
        let _ = write!(html, "<tr><td>{l}</td>");
        for p in PROBED_GPT2 {
            let cell = results
                .probe(&plan.probe(p, l, true))
                .map(|r| format!("{:.2e}", gradient_ratio(r)))
                .unwrap_or_else(|| "-".into());
            let _ = write!(html, "<td>{cell}</td>");
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

fn depth_sweep(html: &mut String, plan: &Plan, results: &Results) {
    let mut series = Vec::new();
    let mut rows = Vec::new();
    for (scaled, setting) in [(false, "unscaled init"), (true, "GPT-2 init")] {
        for p in PROBED_UNSCALED {
            let Some(points) = last_block_gradients(plan, results, p, scaled) else {
                continue;
            };
            let slope = log_log_slope(&points).unwrap_or(f64::NAN);
            rows.push((format!("{p}, {setting}"), slope, points.clone()));
            let mut s = Series::new(format!("{p} {setting} ({slope:.2})"), points);
            s.dashed = scaled;
            series.push(s);
        }
    }
    figure(
        html,
        LinePlot {
            title:
                "Last block's gradient norm at initialization vs depth (log-log, slope in legend)"
                    .into(),
            x_label: "layers L".into(),
            y_label: "‖∂L/∂W_last block‖".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            series,
        }
        .to_svg(),
    );
    html.push_str("<p>Dashed: with GPT-2's 1/sqrt(2L) scaling of the output projections, which keeps the Pre-LN stream from growing and so removes the 1/sqrt(L) fall.</p><table><tr><th>setting</th>");
    for l in &plan.probe_depths {
        let _ = write!(html, "<th>L = {l}</th>");
    }
    html.push_str("<th>slope</th></tr>");
    for (name, slope, points) in rows {
        let _ = write!(html, "<tr><td>{name}</td>");
        for (_, g) in points {
            let _ = write!(html, "<td>{g:.4}</td>");
        }
        let _ = write!(html, "<td>{slope:.3}</td></tr>");
    }
    html.push_str("</table>");
}

fn rms_figure(html: &mut String, plan: &Plan, results: &Results) {
    let layers = *plan.probe_depths.last().expect("probe depths");
    let series = PROBED_UNSCALED
        .iter()
        .filter_map(|&p| {
            Some(Series::new(
                p.name(),
                rms_profile(plan, results, p, layers)?,
            ))
        })
        .collect();
    figure(
        html,
        LinePlot {
            title: format!("Residual stream RMS at initialization, L = {layers} (unscaled init)"),
            x_label: "stream index l (2 per block)".into(),
            y_label: "rms(x_l)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            series,
        }
        .to_svg(),
    );
}

fn norm_figure(html: &mut String, plan: &Plan, results: &Results) {
    let mut bars = Vec::new();
    if let Some(t) = results.norm_timing(&plan.norm_timing()) {
        bars.push(("LayerNorm fwd+bwd (us)".to_string(), t.layer_us));
        bars.push(("RMSNorm fwd+bwd (us)".to_string(), t.rms_us));
    }
    figure(
        html,
        BarChart {
            title: format!(
                "One norm's forward + backward, {} x {}",
                plan.batch * plan.context,
                plan.width
            ),
            y_label: "microseconds (median)".into(),
            bars,
        }
        .to_svg(),
    );
    let runs: Vec<_> = [NormKind::Layer, NormKind::Rms]
        .iter()
        .filter_map(|&n| {
            let spec = plan.standard(Placement::PreLn, n);
            Some((
                format!("pre-ln {n}"),
                spec.clone(),
                results.train(&spec)?.clone(),
            ))
        })
        .collect();
    loss_figure(html, "Pre-LN with LayerNorm and RMSNorm", &runs);
}

type NamedRun = (String, TrainSpec, TrainResult);

fn named(results: &Results, name: String, spec: TrainSpec) -> Option<NamedRun> {
    let run = results.train(&spec)?.clone();
    Some((name, spec, run))
}

fn standard_runs(plan: &Plan, results: &Results) -> Vec<NamedRun> {
    Placement::ALL
        .iter()
        .filter_map(|&p| {
            named(
                results,
                p.name().to_string(),
                plan.standard(p, NormKind::Layer),
            )
        })
        .collect()
}

fn warmup_runs(plan: &Plan, results: &Results) -> Vec<NamedRun> {
    WARMUP_COMPARED
        .iter()
        .flat_map(|&p| [false, true].map(move |w| (p, w)))
        .filter_map(|(p, w)| {
            let label = format!("{p} {}", if w { "warm-up" } else { "no warm-up" });
            named(results, label, plan.warmup_run(p, w))
        })
        .collect()
}

fn deep_runs(plan: &Plan, results: &Results) -> Vec<NamedRun> {
    DEEP.iter()
        .filter_map(|&p| named(results, format!("{p} L{}", plan.deep_depth), plan.deep(p)))
        .collect()
}

/// Chunk means of `losses`, at most [`CURVE_POINTS`] points, x at the chunk's middle step.
fn curve(losses: &[f32]) -> Vec<(f64, f64)> {
    let chunk = losses.len().div_ceil(CURVE_POINTS).max(1);
    losses
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let mean = c.iter().map(|&l| l as f64).sum::<f64>() / c.len() as f64;
            ((i * chunk) as f64 + (c.len() as f64 - 1.0) / 2.0, mean)
        })
        .collect()
}

fn loss_figure(html: &mut String, title: &str, runs: &[NamedRun]) {
    let series = runs
        .iter()
        .map(|(name, _, run)| Series::new(name.clone(), curve(&run.losses)))
        .collect();
    figure(
        html,
        LinePlot {
            title: title.to_string(),
            x_label: "step".into(),
            y_label: "training loss (nats/token)".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series,
        }
        .to_svg(),
    );
}

fn update_ratio_figure(html: &mut String, runs: &[NamedRun]) {
    let series = runs
        .iter()
        .map(|(name, _, run)| {
            let points = run
                .diagnostics
                .iter()
                .filter_map(|d| {
                    let ratios: Vec<f64> = d
                        .units
                        .iter()
                        .filter_map(|u| u.update_ratio)
                        .map(f64::from)
                        .collect();
                    (!ratios.is_empty()).then(|| {
                        (
                            d.step as f64,
                            ratios.iter().sum::<f64>() / ratios.len() as f64,
                        )
                    })
                })
                .collect();
            Series::new(name.clone(), points)
        })
        .collect();
    figure(
        html,
        LinePlot {
            title: "Update/weight ratio ‖lr·update‖/‖W‖, mean over residual units".into(),
            x_label: "step".into(),
            y_label: "ratio".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Log,
            series,
        }
        .to_svg(),
    );
}

fn run_table(html: &mut String, runs: &[NamedRun]) {
    html.push_str("<table><tr><th>run</th><th>L</th><th>lr</th><th>warm-up</th><th>steps</th><th>final train loss</th><th>validation loss</th><th>ms/step</th></tr>");
    for (name, spec, run) in runs {
        let val = if run.diverged {
            format!("diverged at step {}", run.losses.len())
        } else {
            format!("{:.3}", run.val_loss)
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{val}</td><td>{:.1}</td></tr>",
            escape(name), spec.model.layers, spec.lr, spec.warmup, spec.steps, run.final_train_loss, run.ms_per_step
        );
    }
    html.push_str("</table>");
}
