//! The translation study's HTML report (`resnorm study --preset translation`): one
//! self-contained page with findings 8 to 10, training and validation loss curves of the
//! warm-up and deep-stack runs, the gradient norm of each part of the model, and a table of
//! every run. Style and charts are the `resnorm study` report's.

use std::fmt::Write;

use resnorm::study::{
    Finding, TranslationPlan, TranslationResults, TranslationRunResult, TRANSLATION_DEEP,
    TRANSLATION_WARMUP_COMPARED,
};
use resnorm::translate::config::TranslateConfig;

use super::svg::{escape, LinePlot, Scale, Series};
use super::{curve, figure, finding_section, page_start, summary};

type Run<'a> = (String, TranslateConfig, &'a TranslationRunResult);

/// The page for `plan`'s `results` on a vocabulary of `vocab` ids, with its `findings`.
pub fn render(
    plan: &TranslationPlan,
    results: &TranslationResults,
    findings: &[Finding],
    vocab: usize,
) -> String {
    let mut html = page_start("resnorm study: translation");
    let _ = write!(
        html,
        "<h1>resnorm study: warm-up and depth on the encoder-decoder</h1>\
         <p>Data: {} ({}→{}), joint BPE of {vocab} ids, pairs longer than {} ids skipped, batches of at most {} padded tokens; validation on the first {} pairs, greedy BLEU and chrF on the first {}. Models: width {}, {} heads, LayerNorm; AdamW (weight decay 0.01), linear warm-up then cosine to a tenth of the peak rate, gradient clipping at {}, seed {}. Runs: {}.</p>",
        escape(&plan.data.display().to_string()),
        escape(&plan.src),
        escape(&plan.tgt),
        plan.max_len,
        plan.max_tokens,
        plan.valid_sentences,
        plan.bleu_sentences,
        plan.width,
        plan.heads,
        plan.clip,
        plan.seed,
        results.runs.len()
    );
    summary(&mut html, findings);
    let warmup_runs = runs(
        results,
        TRANSLATION_WARMUP_COMPARED
            .iter()
            .flat_map(|&p| [false, true].map(|w| plan.warmup_run(p, w))),
    );
    let deep_runs = runs(results, TRANSLATION_DEEP.iter().map(|&p| plan.deep(p)));
    for finding in findings {
        finding_section(&mut html, finding);
        match finding.id {
            8 => loss_figures(&mut html, "Warm-up at a high learning rate", &warmup_runs),
            10 => loss_figures(&mut html, "Deep stacks", &deep_runs),
            _ => html.push_str("<p>Loss curves: the warm-up plots of finding 8.</p>"),
        }
        html.push_str("</section>");
    }
    html.push_str("<section><h2>Runs</h2>");
    let mut all = warmup_runs;
    all.extend(deep_runs);
    gradient_figure(&mut html, &all);
    run_table(&mut html, &all);
    html.push_str("</section></body></html>\n");
    html
}

fn runs<'a>(
    results: &'a TranslationResults,
    configs: impl Iterator<Item = TranslateConfig>,
) -> Vec<Run<'a>> {
    configs
        .filter_map(|c| {
            let run = results.get(&c)?;
            Some((name(&c), c, run))
        })
        .collect()
}

fn name(c: &TranslateConfig) -> String {
    let warmup = match c.warmup {
        0 => "no warm-up".to_string(),
        w => format!("warm-up {w}"),
    };
    format!(
        "{} {}+{}, {warmup}",
        c.placement, c.encoder_layers, c.decoder_layers
    )
}

fn chart(html: &mut String, title: &str, y_label: &str, y_scale: Scale, series: Vec<Series>) {
    let plot = LinePlot {
        title: title.to_string(),
        x_label: "step".into(),
        y_label: y_label.into(),
        x_scale: Scale::Linear,
        y_scale,
        series,
    };
    figure(html, plot.to_svg());
}

fn loss_figures(html: &mut String, title: &str, runs: &[Run]) {
    let train = runs
        .iter()
        .map(|(name, _, run)| Series::new(name.clone(), curve(&run.losses)))
        .collect();
    chart(
        html,
        &format!("{title}: training loss"),
        "loss (nats/token)",
        Scale::Linear,
        train,
    );
    let valid = runs
        .iter()
        .map(|(name, _, run)| {
            let points = run
                .valid_losses
                .iter()
                .map(|&(s, l)| (s as f64, l))
                .collect();
            Series::new(name.clone(), points)
        })
        .collect();
    chart(
        html,
        &format!("{title}: validation loss"),
        "loss (nats/token)",
        Scale::Linear,
        valid,
    );
}

fn gradient_figure(html: &mut String, runs: &[Run]) {
    let mut series = Vec::new();
    for (name, _, run) in runs {
        let encoder = run
            .part_grad_norms
            .iter()
            .map(|g| (g.step as f64, g.encoder));
        let decoder = run
            .part_grad_norms
            .iter()
            .map(|g| (g.step as f64, g.decoder));
        series.push(Series::new(format!("{name}: encoder"), encoder.collect()));
        let mut dashed = Series::new(format!("{name}: decoder"), decoder.collect());
        dashed.dashed = true;
        series.push(dashed);
    }
    chart(
        html,
        "Gradient norm per stack before clipping (decoder dashed)",
        "‖g‖",
        Scale::Log,
        series,
    );
}

fn run_table(html: &mut String, runs: &[Run]) {
    html.push_str("<table><tr><th>run</th><th>lr</th><th>warm-up</th><th>steps</th><th>final train loss</th><th>validation loss</th><th>BLEU</th><th>chrF</th><th>ms/step</th></tr>");
    let number = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    for (name, c, run) in runs {
        let val = match run.diverged_at {
            Some(step) => format!("diverged at step {step}"),
            None => number(run.val_loss, 3),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{val}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            escape(name),
            c.lr,
            c.warmup,
            c.steps,
            number(run.final_train_loss, 3),
            number(run.bleu, 2),
            number(run.chrf, 2),
            run.ms_per_step
        );
    }
    html.push_str("</table>");
}
