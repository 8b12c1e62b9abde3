//! `resnorm study`: runs a preset's grid of experiments (cached per run, so an interrupted
//! study resumes), checks the published findings and writes `report.html`,
//! `results.json` and `runs/` (one JSON file per run, plus `*.metrics.jsonl` diagnostics).
//! Exit code 1 with `--strict` when a finding fails.

use crate::report;
use indicatif::{ProgressBar, ProgressStyle};
use resnorm::data::text::{read_text, Corpus};
use resnorm::study::{
    evaluate, run_study, work_units, write_atomically, Plan, Preset, Progress, Status, StudyData,
};
use resnorm::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the study: quick (minutes) or full (under an hour on two cores).
    #[arg(long, default_value = "quick")]
    preset: Preset,
    /// Output folder.
    #[arg(long, default_value = "runs/study")]
    out: PathBuf,
    /// Text file or folder to train on (default: the built-in corpus).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Characters of built-in corpus to generate.
    #[arg(long, default_value_t = 200_000)]
    corpus_chars: usize,
    /// Exit with code 1 when any finding fails.
    #[arg(long)]
    strict: bool,
    /// Make only the runs of today's LLM placements (findings 8 to 10); the other findings
    /// read NOT RUN.
    #[arg(long)]
    llm_only: bool,
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let plan = Plan::preset(args.preset);
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
    let bar = ProgressBar::new(specs.iter().map(work_units).sum());
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:32}] {pos}/{len} steps, eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
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
    for f in &findings {
        println!("finding {}: {}", f.id, f.status.label());
        for c in &f.checks {
            println!("  [{}] {}", c.status.label(), c.statement);
        }
    }
    println!("report: {}", args.out.join("report.html").display());
    let failed = findings.iter().any(|f| f.status != Status::Pass);
    Ok(if args.strict && failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
