//! `resnorm classify predict`: one line of output per line of input (stdin or `--input`):
//! the label and its probability separated by a tab, or the predicted score.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::classify::{encode_sentence, load_classifier, outputs, predicted_classes, Task};
use resnorm::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// A run folder written by `resnorm classify train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Read the sentences from this file instead of stdin, one per line.
    #[arg(long)]
    input: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let saved = load_classifier(&args.checkpoint)?;
    let mut model = saved.model;
    let source = args.input.clone().unwrap_or_else(|| PathBuf::from("stdin"));
    let reader: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| Error::io(path, e))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let context = model.body.context();
    let mut encoded = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(&source, e))?;
        let fail = |detail: &str| Error::Format {
            path: source.clone(),
            detail: format!("line {}: {detail}", i + 1),
        };
        if line.trim().is_empty() {
            return Err(fail("the text is empty"));
        }
        let ids = encode_sentence(&saved.tokenizer, line.trim(), context)?;
        if ids.is_empty() {
            return Err(fail(
                "no character of the text is in the tokenizer's vocabulary",
            ));
        }
        encoded.push(ids);
    }
    if encoded.is_empty() {
        return Err(Error::Format {
            path: source,
            detail: "no sentences to label".into(),
        });
    }
    let rows: Vec<usize> = (0..encoded.len()).collect();
    let logits = outputs(&mut model, &encoded, &rows, saved.config.batch)?;
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock, text: String| {
        writeln!(out, "{text}").map_err(|e| Error::io("stdout", e))
    };
    match &saved.task {
        Task::Classes(names) => {
            for (label, p) in predicted_classes(&logits, names.len()) {
                write(&mut out, format!("{}\t{p:.4}", names[label as usize]))?;
            }
        }
        Task::Regression => {
            for score in logits {
                write(&mut out, format!("{score:.4}"))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
