//! `resnorm translate`: translation with an encoder-decoder Transformer.
//!
//! - `resnorm translate train --data DIR --src en --tgt es`: trains (see [`train`]);
//! - `resnorm translate eval --checkpoint RUN --data PREFIX_OR_DIR --json`: loss, BLEU, chrF;
//! - `resnorm translate --checkpoint RUN [--input FILE] [--beam K]`: reads one sentence a
//!   line from `FILE` or stdin and writes one translation a line to stdout (greedy, or beam
//!   search with `K` beams).
//!
//! Input lines must be nonempty UTF-8; the first that is not is one error line (exit 2)
//! naming the input and the line, and nothing is translated.

pub mod eval;
pub mod train;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::translate::beam::{BeamOptions, LengthPenalty};
use resnorm::translate::checkpoint::load_translation;
use resnorm::translate::evaluate::translate_lines;
use resnorm::{Error, Result};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<TranslateCommand>,
    /// Run directory of `resnorm translate train` to translate with.
    #[arg(long, default_value = "runs/translate")]
    checkpoint: PathBuf,
    /// File of source sentences, one a line (default: stdin).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Source tokens per decoded batch (default: the checkpoint's; 1 = one sentence at a time).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Also print the decoding's sentences/s to stderr (loading and tokenizing left out).
    #[arg(long)]
    speed: bool,
    #[command(flatten)]
    search: SearchArgs,
}

/// The decoding search, shared by `translate` and `translate eval`.
#[derive(clap::Args)]
pub struct SearchArgs {
    /// Beams per sentence (1: greedy decoding).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Length penalty exponent: a finished hypothesis scores sum(log p) / len^LENPEN.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    lenpen: f32,
    /// fairseq (len^a) or gnmt (((5 + len) / 6)^a).
    #[arg(long, default_value = "fairseq")]
    lenpen_kind: String,
}

impl SearchArgs {
    /// The checked search options.
    pub fn options(&self) -> Result<BeamOptions> {
        let options = BeamOptions {
            beams: self.beam,
            lenpen: self.lenpen,
            penalty: self.lenpen_kind.parse::<LengthPenalty>()?,
        };
        options.check()?;
        Ok(options)
    }
}

#[derive(clap::Subcommand)]
pub enum TranslateCommand {
    /// Train a translation model on line-aligned files DIR/train.SRC, DIR/train.TGT.
    Train(Box<train::Args>),
    /// Validation loss, BLEU and chrF of a checkpoint on a parallel corpus.
    Eval(eval::Args),
}

pub fn run(mut args: Args) -> Result<ExitCode> {
    match args.command.take() {
        Some(TranslateCommand::Train(train)) => train::run(*train),
        Some(TranslateCommand::Eval(eval)) => eval::run(eval),
        None => decode(&args),
    }
}

/// Translates every line of `--input` (stdin when absent) with the checkpoint.
fn decode(args: &Args) -> Result<ExitCode> {
    let options = args.search.options()?;
    if args.max_tokens == Some(0) {
        return Err(Error::invalid(
            "translate",
            "--max-tokens must be at least 1",
        ));
    }
    let saved = load_translation(&args.checkpoint)?;
    let (name, bytes) = match args.input.as_deref() {
        Some(path) => (
            path.to_path_buf(),
            std::fs::read(path).map_err(|e| Error::io(path, e))?,
        ),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("<stdin>", e))?;
            (PathBuf::from("<stdin>"), bytes)
        }
    };
    let lines = input_lines(&name, &bytes)?;
    let max_tokens = args.max_tokens.unwrap_or(saved.config.max_tokens);
    let started = std::time::Instant::now();
    let translations = resnorm::threads::busy(|| {
        translate_lines(&saved.model, &saved.bpe, &lines, max_tokens, &options)
    })?;
    if args.speed {
        let seconds = started.elapsed().as_secs_f64();
        let rate = lines.len() as f64 / seconds;
        eprintln!(
            "decoded {} sentences in {seconds:.3} s: {rate:.2} sentences/s",
            lines.len()
        );
    }
    let mut out = std::io::stdout().lock();
    for line in translations {
        writeln!(out, "{line}").map_err(|e| Error::io("<stdout>", e))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The lines of `bytes`, each nonempty UTF-8 (a trailing `\r` dropped).
fn input_lines(name: &std::path::Path, bytes: &[u8]) -> Result<Vec<String>> {
    let bad = |line: usize, detail: &str| Error::Format {
        path: name.to_path_buf(),
        detail: format!("line {line} {detail}"),
    };
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if text.is_empty() {
        return Err(Error::Format {
            path: name.to_path_buf(),
            detail: "no line to translate".into(),
        });
    }
    text.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line).map_err(|_| bad(i + 1, "is not UTF-8"))?;
            if line.trim().is_empty() {
                return Err(bad(i + 1, "is empty"));
            }
            Ok(line.to_string())
        })
        .collect()
}

/// Refuses a translation checkpoint given to a GPT command (`eval`, `sample`) in one line.
pub fn refuse_translation(dir: &std::path::Path) -> Result<()> {
    if resnorm::translate::checkpoint::is_translation_checkpoint(dir) {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            detail: "a checkpoint of another kind (a translation model): use `resnorm translate \
                     eval` or `resnorm translate --checkpoint`"
                .into(),
        });
    }
    Ok(())
}
