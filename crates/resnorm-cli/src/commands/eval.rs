//! `resnorm eval`: validation loss and perplexity of a checkpoint.
//!
//! The validation split is the last 10 % of the data's tokens (`floor(0.1 · n)`), cut into
//! consecutive, non-overlapping windows of the model's context; each window predicts its
//! tokens shifted by one and the tail after the last full window is unused. The loss is the
//! mean cross-entropy over every position, in nats per token; perplexity is `exp(loss)`. For
//! character and byte tokenizers, bits per character (per byte) is `loss / ln 2`.

use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::data::text::Tokenizer;
use resnorm::lm::{check_fits_context, evaluate, load_checkpoint, load_data};
use resnorm::memory::Workload;
use resnorm::Result;

use crate::commands::translate::refuse_translation;
use crate::memory;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory written by `resnorm train`.
    #[arg(long, default_value = "runs/train")]
    checkpoint: PathBuf,
    /// Data to evaluate on (default: the data the checkpoint was trained on).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Windows per forward pass (default: the training batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Print {"loss":..,"perplexity":..,"tokens":..} instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    refuse_translation(&args.checkpoint)?;
    let mut saved = load_checkpoint(&args.checkpoint)?;
    let mut settings = saved.train.clone();
    if args.data.is_some() {
        settings.data = args.data.clone();
    }
    let data = load_data(&settings, Some(&saved.tokenizer))?;
    let context = saved.model.config().context;
    check_fits_context(&data.dataset, context)?;
    let batch = args.batch.unwrap_or(settings.batch);
    memory::check_fits(
        "evaluation",
        &saved
            .model
            .config()
            .memory_estimate(batch, Workload::Evaluate)?,
    )?;
    let eval = evaluate(&mut saved.model, &data.dataset, batch, None)?;
    let per_char = !matches!(saved.tokenizer, Tokenizer::Gpt2);
    if args.json {
        let mut json = serde_json::json!({
            "loss": eval.loss, "perplexity": eval.perplexity(), "tokens": eval.tokens,
        });
        if per_char {
            json["bits_per_char"] = eval.bits_per_token().into();
        }
        println!("{json}");
    } else {
        let bits = if per_char {
            format!(", {:.4} bits/char", eval.bits_per_token())
        } else {
            String::new()
        };
        println!(
            "validation loss {:.4} nats/token, perplexity {:.4}{bits} over {} tokens ({} windows of {context})",
            eval.loss,
            eval.perplexity(),
            eval.tokens,
            eval.tokens / context
        );
    }
    Ok(ExitCode::SUCCESS)
}
