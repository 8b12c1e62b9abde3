//! `resnorm eval`: validation loss and perplexity of a checkpoint.
//!
//! The validation split is the last 10 % of the data's tokens (`floor(0.1 · n)`), cut into
//! consecutive, non-overlapping windows of the model's context; each window predicts its
//! tokens shifted by one and the tail after the last full window is unused. The loss is the
//! mean cross-entropy over every position, in nats per token; perplexity is `exp(loss)`. For
//! character and byte tokenizers, bits per character (per byte) is `loss / ln 2`.
//!
//! With `--model`, a Hugging Face checkpoint directory is evaluated on the whole of `--data`
//! (a UTF-8 text file, tokenized with the directory's tokenizer.json), in windows of
//! `--window` tokens (default: the model's context) predicting their tokens shifted by one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use resnorm::data::text::Tokenizer;
use resnorm::lm::{check_fits_context, evaluate, load_checkpoint, load_data};
use resnorm::memory::Workload;
use resnorm::models::CausalLm;
use resnorm::{hf, Error, Result};

use crate::commands::translate::refuse_translation;
use crate::memory;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory written by `resnorm train`.
    #[arg(long, default_value = "runs/train")]
    checkpoint: PathBuf,
    /// A Hugging Face checkpoint directory instead (needs --data, a text file).
    #[arg(long, conflicts_with = "checkpoint")]
    model: Option<PathBuf>,
    /// Tokens per window with --model (default: the model's context).
    #[arg(long, requires = "model")]
    window: Option<usize>,
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
    if let Some(dir) = &args.model {
        return run_hf(dir, &args);
    }
    refuse_translation(&args.checkpoint)?;
    let mut saved = load_checkpoint(&args.checkpoint)?;
    let mut settings = saved.train.clone();
    if args.data.is_some() {
        settings.data = args.data.clone();
    }
    let data = load_data(&settings, Some(&saved.tokenizer))?;
    // The run's training windows: the model's context, or shorter for a fine-tuned model.
    let context = settings.context;
    check_fits_context(&data.dataset, context)?;
    let batch = args.batch.unwrap_or(settings.batch);
    if let CausalLm::Gpt(gpt) = &saved.model {
        let estimate = gpt.config().memory_estimate(batch, Workload::Evaluate)?;
        memory::check_fits("evaluation", &estimate)?;
    }
    let eval = evaluate(&mut saved.model, &data.dataset, context, batch, None)?;
    let per_char = matches!(saved.tokenizer, Tokenizer::Char { .. } | Tokenizer::Byte);
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

/// `--model`: the mean loss over the windows of `--data`.
fn run_hf(dir: &Path, args: &Args) -> Result<ExitCode> {
    let data = args.data.as_ref().ok_or_else(|| {
        Error::Config("--data (a text file) is needed to evaluate a Hugging Face model".into())
    })?;
    let mut checkpoint = hf::load(dir)?;
    let text = std::fs::read_to_string(data).map_err(|e| Error::io(data, e))?;
    let tokens = checkpoint.encode(&text)?;
    let context = checkpoint.model.context();
    let window = args.window.unwrap_or(context);
    if window == 0 || window > context {
        return Err(Error::Config(format!(
            "--window {window} must be in 1..={context}, the model's context"
        )));
    }
    let windows = tokens.len().saturating_sub(1) / window;
    if windows == 0 {
        return Err(Error::Config(format!(
            "{} has {} tokens, fewer than one window of {window} and its next token",
            data.display(),
            tokens.len()
        )));
    }
    let mut total = 0.0f64;
    for w in 0..windows {
        let span = &tokens[w * window..=(w + 1) * window];
        total += checkpoint.model.loss(&span[..window], &span[1..], 1)? as f64;
    }
    let loss = total / windows as f64;
    let evaluated = windows * window;
    if args.json {
        let json = serde_json::json!({
            "loss": loss, "perplexity": loss.exp(), "tokens": evaluated,
        });
        println!("{json}");
    } else {
        println!(
            "loss {loss:.4} nats/token, perplexity {:.4} over {evaluated} tokens ({windows} windows of {window})",
            loss.exp()
        );
    }
    Ok(ExitCode::SUCCESS)
}
