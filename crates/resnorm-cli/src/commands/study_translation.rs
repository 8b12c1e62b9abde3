//! `resnorm study --preset translation`: the encoder-decoder runs of
//! [`TranslationPlan::preset`] (cached per run, so an interrupted study resumes), findings
//! 8 to 10, and `report.html`, `results.json` and `runs/` in the output folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use resnorm::study::{
    evaluate_translation, run_translation_study, write_atomically, TranslationPlan,
    TranslationProgress, TranslationStudyData,
};
use resnorm::Error;

use super::study::{print_findings, progress_bar};
use crate::report;

/// Where the corpus is when `--data` is not given.
const DEFAULT_DATA: &str = "../shared/data/translation";

pub fn run(data: Option<PathBuf>, out: &Path, strict: bool) -> resnorm::Result<ExitCode> {
    let started = Instant::now();
    let plan = TranslationPlan::preset(&data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)));
    let data = TranslationStudyData::load(&plan)?;
    let specs = plan.specs();
    let bar = progress_bar(specs.iter().map(|c| c.steps).sum());
    let results =
        run_translation_study(&specs, &data, &out.join("runs"), &mut |event| match event {
            TranslationProgress::Started {
                index,
                total,
                config,
                cached,
            } => {
                let from = if cached { " (cached)" } else { "" };
                bar.set_message(format!(
                    "[{}/{total}] {} {}+{} lr {} warm-up {}{from}",
                    index + 1,
                    config.placement,
                    config.encoder_layers,
                    config.decoder_layers,
                    config.lr,
                    config.warmup
                ));
                if cached {
                    bar.inc(config.steps);
                }
            }
            TranslationProgress::Advanced => bar.inc(1),
        })?;
    bar.finish_and_clear();
    let findings = evaluate_translation(&plan, &results, data.vocab());
    let seconds = started.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "preset": "translation",
        "plan": plan,
        "data": {
            "source": plan.data,
            "fingerprint": data.fingerprint,
            "vocab": data.vocab(),
            "train_pairs": data.data.train.len(),
            "skipped_pairs": data.data.batches.skipped(),
            "valid_pairs": data.data.valid.len(),
        },
        "seconds": seconds,
        "findings": findings,
        "runs": results.runs,
    });
    let json = serde_json::to_string(&json).map_err(|e| Error::invalid("study", e.to_string()))?;
    write_atomically(&out.join("results.json"), &json)?;
    let html = report::translation::render(&plan, &results, &findings, data.vocab());
    write_atomically(&out.join("report.html"), &html)?;
    println!("{} runs in {seconds:.0} s", results.runs.len());
    Ok(print_findings(&findings, out, strict))
}
