//! `resnorm translate eval`: the loss (teacher forced, nats per target token), and sacreBLEU's
//! corpus BLEU and chrF of greedy (or `--beam K`) translations, of a checkpoint on a parallel
//! corpus.
//!
//! `--data` is a prefix (`data/test` reads `data/test.SRC` and `data/test.TGT`) or a folder
//! (its `--split`, `test` by default); without it, the `--split` of the data the checkpoint
//! was trained on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use resnorm::translate::checkpoint::load_translation;
use resnorm::translate::evaluate::evaluate_with;
use resnorm::translate::ParallelCorpus;
use resnorm::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory of `resnorm translate train`.
    #[arg(long, default_value = "runs/translate")]
    checkpoint: PathBuf,
    /// A prefix PREFIX (PREFIX.SRC, PREFIX.TGT) or a folder (default: the training data's).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The split read from a folder.
    #[arg(long, default_value = "test")]
    split: String,
    /// Sentences translated for BLEU and chrF (default: all).
    #[arg(long)]
    sentences: Option<usize>,
    /// Print {"bleu":..,"chrf":..,"loss":..,"sentences":..,"beam":..} instead of a sentence.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    search: super::SearchArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let options = args.search.options()?;
    let mut saved = load_translation(&args.checkpoint)?;
    let (src, tgt) = (&saved.config.src, &saved.config.tgt);
    let data = args.data.as_deref().unwrap_or(&saved.config.data);
    let corpus = if data.is_dir() {
        ParallelCorpus::read(data, &args.split, src, tgt)?
    } else {
        ParallelCorpus::read_files(&with_suffix(data, src), &with_suffix(data, tgt))?
    };
    let max_tokens = saved.config.max_tokens;
    let eval = resnorm::threads::busy(|| {
        evaluate_with(
            &mut saved.model,
            &saved.bpe,
            &corpus,
            (args.sentences, max_tokens),
            &options,
        )
    })?;
    if args.json {
        let json = serde_json::json!({
            "bleu": eval.bleu, "chrf": eval.chrf, "loss": eval.loss, "sentences": eval.sentences,
            "beam": eval.beams,
        });
        println!("{json}");
    } else {
        let search = match eval.beams {
            1 => "greedy".to_string(),
            k => format!("beam {k}"),
        };
        println!(
            "loss {:.4} nats/token, BLEU {:.2}, chrF {:.2} ({search}, {} sentences)",
            eval.loss, eval.bleu, eval.chrf, eval.sentences
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `prefix.suffix` (`data/test` + `en` -> `data/test.en`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}
