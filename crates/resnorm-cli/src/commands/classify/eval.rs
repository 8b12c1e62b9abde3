//! `resnorm classify eval`: the scores of a run on its test split (the rows of `split.tsv`
//! in the run folder), on its validation split, or on every row of another file with the
//! same columns.

use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::classify::{
    encode_table, load_classifier, outputs, read_table, score, Split, Task, SPLIT_FILE,
};
use resnorm::{Error, Result};

use super::train::summary;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder written by `resnorm classify train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Score every row of this file instead (same columns as the run's data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// test or valid (the run's own split) [default: test].
    #[arg(long, default_value = "test")]
    split: String,
    /// Accuracy per value of this column too.
    #[arg(long)]
    group_column: Option<String>,
    /// Sentences per batch [default: the run's].
    #[arg(long)]
    batch: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let saved = load_classifier(&args.checkpoint)?;
    let mut model = saved.model;
    let mut spec = saved.config.table.clone();
    if args.group_column.is_some() {
        spec.group_column = args.group_column.clone();
    }
    let path = args
        .data
        .clone()
        .unwrap_or_else(|| saved.config.data.clone());
    let table = read_table(&path, &spec)?;
    // Another file may hold other labels (renumbered below); a score for classes cannot do.
    let regression = |task: &Task| matches!(task, Task::Regression);
    if regression(&table.task) != regression(&saved.task) {
        return Err(Error::Format {
            path,
            detail: format!(
                "the data describe {:?}, the checkpoint {:?}",
                table.task, saved.task
            ),
        });
    }
    let rows: Vec<usize> = match (&args.data, args.split.as_str()) {
        (Some(_), _) => (0..table.examples.len()).collect(),
        (None, name @ ("test" | "valid")) => {
            let split = Split::read(&args.checkpoint.join(SPLIT_FILE), &table.examples)?;
            if name == "test" {
                split.test
            } else {
                split.valid
            }
        }
        (None, other) => {
            return Err(Error::Config(format!(
                "--split must be test or valid, got `{other}`"
            )))
        }
    };
    let mut examples = table.examples.clone();
    if let Task::Classes(names) = &saved.task {
        // Labels found in another file are numbered by that file: renumber by the run's classes.
        if let Task::Classes(found) = &table.task {
            for e in &mut examples {
                let name = &found[e.label as usize];
                e.label = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| Error::Format {
                        path: table.path.clone(),
                        detail: format!(
                            "line {}: label `{name}` is not one of the run's classes {}",
                            e.line,
                            names.join(", ")
                        ),
                    })? as u32;
            }
        }
    }
    let encoded = encode_table(
        &table,
        &saved.tokenizer,
        model.body.context(),
        &spec.text_column,
    )?;
    let batch = args.batch.unwrap_or(saved.config.batch);
    let logits = outputs(&mut model, &encoded, &rows, batch)?;
    let report = score(
        &logits,
        &examples,
        &rows,
        &saved.task,
        spec.group_column.is_some(),
    )?;
    if args.json {
        let mut value = serde_json::to_value(&report).map_err(|e| Error::Config(e.to_string()))?;
        if let Task::Classes(names) = &saved.task {
            value["classes"] = serde_json::json!(names);
        }
        println!("{value}");
    } else {
        println!("{}: {}", path.display(), summary(&report));
        if let Some(groups) = report.classes.as_ref().and_then(|c| c.per_group.as_ref()) {
            for (group, g) in groups {
                println!(
                    "  {group}: accuracy {:.4} ({} sentences)",
                    g.accuracy, g.rows
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
