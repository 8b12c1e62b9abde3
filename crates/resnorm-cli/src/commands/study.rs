//! `resnorm study`: runs a preset's grid of experiments (cached per run, so an interrupted
//! study resumes), checks the published findings and writes `report.html`,
//! `results.json` and `runs/` (one JSON file per run, plus `*.metrics.jsonl` diagnostics).
//! Exit code 1 with `--strict` when a finding fails. `--preset translation` runs the
//! encoder-decoder study instead ([`super::study_translation`]).

use crate::report;
use indicatif::{ProgressBar, ProgressStyle};
use resnorm::data::text::{read_text, Corpus};
use resnorm::study::{
    evaluate, run_study, work_units, write_atomically, Finding, Plan, Preset, Progress, Status,
    StudyData,
};
use resnorm::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Which study to run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StudyPreset {
    /// The GPT study in a few minutes.
    Quick,
    /// The GPT study, under an hour on two cores.
    Full,
    /// Warm-up and depth on the encoder-decoder, on a parallel corpus.
    Translation,
}

#[derive(clap::Args)]
pub struct Args {
    /// Size of the study: quick (minutes), full (under an hour on two cores), or translation
    /// (the encoder-decoder on a parallel corpus, about half an hour).
    #[arg(long, value_enum, default_value = "quick")]
    preset: StudyPreset,
    /// Output folder.
    #[arg(long, default_value = "runs/study")]
    out: PathBuf,
    /// Text file or folder to train on (default: the built-in corpus); with --preset
    /// translation, the folder of train.en/es and valid.en/es (default
    /// ../shared/data/translation).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Characters of built-in corpus to generate.
    #[arg(long, default_value_t = 200_000)]
    corpus_chars: usize,
    /// Exit with code 1 when any finding fails.
    #[arg(long)]
    strict: bool,
    /// Make only the runs of today's LLM placements (findings 11 to 13); the other findings
    /// read NOT RUN.
    #[arg(long)]
    llm_only: bool,
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let preset = match args.preset {
        StudyPreset::Quick => Preset::Quick,
        StudyPreset::Full => Preset::Full,
        StudyPreset::Translation => {
            return super::study_translation::run(args.data, &args.out, args.strict)
        }
    };
    let plan = Plan::preset(preset);
    let data = match &args.data {
        Some(path) => StudyData::from_text(&path.display().to_string(), &read_text(path)?)?,
        None => {
            let corpus = Corpus::memory_estimate(args.corpus_chars)?;
            crate::memory::check_fits("the built-in corpus", &corpus)?;
            StudyData::built_in(plan.seed, args.corpus_chars)?
        }
    };
    let specs = if args.llm_only {
        plan.llm_specs()
    } else {
        plan.specs()
    };
    let bar = progress_bar(specs.iter().map(work_units).sum());
    let results = run_study(
        &specs,
        &data,
        &args.out.join("runs"),
        &mut |event| match event {
            Progress::Started {
                index,
                total,
                spec,
                cached,
            } => {
                let from = if cached { " (cached)" } else { "" };
                bar.set_message(format!("[{}/{total}] {}{from}", index + 1, spec.describe()));
                if cached {
                    bar.inc(work_units(spec));
                }
            }
            Progress::Advanced => bar.inc(1),
        },
    )?;
    bar.finish_and_clear();
    let findings = evaluate(&plan, &results, data.vocab());
    let json = serde_json::json!({
        "preset": plan.preset,
        "plan": plan,
        "data": {
            "source": data.source,
            "fingerprint": data.fingerprint,
            "vocab": data.vocab(),
            "nats_per_char": data.nats_per_char,
        },
        "findings": findings,
        "runs": results.runs,
    });
    let json = serde_json::to_string(&json).map_err(|e| Error::invalid("study", e.to_string()))?;
    write_atomically(&args.out.join("results.json"), &json)?;
    let html = report::render(&plan, &data, &results, &findings);
    write_atomically(&args.out.join("report.html"), &html)?;
    Ok(print_findings(&findings, &args.out, args.strict))
}

/// The study's progress bar over `steps` steps.
pub fn progress_bar(steps: u64) -> ProgressBar {
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:32}] {pos}/{len} steps, eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Prints every finding and check and where the report is; the exit code (1 with `strict`
/// when a finding did not pass).
pub fn print_findings(findings: &[Finding], out: &Path, strict: bool) -> ExitCode {
    for f in findings {
        println!("finding {}: {}", f.id, f.status.label());
        for c in &f.checks {
            println!("  [{}] {}", c.status.label(), c.statement);
        }
    }
    println!("report: {}", out.join("report.html").display());
    let failed = findings.iter().any(|f| f.status != Status::Pass);
    if strict && failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
