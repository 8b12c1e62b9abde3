//! `resnorm sample`: text from a checkpoint, decoded incrementally with a key/value cache
//! (see `resnorm::models::gpt::decode`; past the context window the window slides), or from
//! a Hugging Face checkpoint directory (`--model`, see `resnorm::hf`).

use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::lm::load_checkpoint;
use resnorm::models::gpt::Sampling;
use resnorm::rng::Rng;
use resnorm::{hf, Error, Result};

use super::train::CORPUS_PROMPT;
use super::translate::refuse_translation;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory written by `resnorm train`.
    #[arg(long, default_value = "runs/train")]
    checkpoint: PathBuf,
    /// A Hugging Face checkpoint directory (config.json, safetensors, tokenizer.json) instead.
    #[arg(long, conflicts_with = "checkpoint")]
    model: Option<PathBuf>,
    /// Text to continue (default for a model of the built-in corpus: "Once there was a").
    #[arg(long)]
    prompt: Option<String>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample only among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
    };
    let mut rng = Rng::new(args.seed);
    if let Some(dir) = &args.model {
        let mut checkpoint = hf::load(dir)?;
        let prompt = args.prompt.as_deref().ok_or_else(|| {
            Error::Config("--prompt is needed to sample from a Hugging Face model".into())
        })?;
        let prompt_ids = checkpoint.encode(prompt)?;
        let sampled = checkpoint
            .model
            .generate(&prompt_ids, args.tokens, sampling, &mut rng)?;
        println!("{prompt}{}", checkpoint.decode(&sampled)?);
        return Ok(ExitCode::SUCCESS);
    }
    refuse_translation(&args.checkpoint)?;
    let mut saved = load_checkpoint(&args.checkpoint)?;
    let prompt = match (&args.prompt, &saved.train.data) {
        (Some(prompt), _) => prompt.clone(),
        (None, None) => CORPUS_PROMPT.to_string(),
        (None, Some(data)) => {
            return Err(Error::Config(format!(
                "--prompt is needed: the model was trained on {}, not the built-in corpus",
                data.display()
            )))
        }
    };
    let prompt_ids = saved.tokenizer.encode(&prompt)?;
    let sampled = saved
        .model
        .generate(&prompt_ids, args.tokens, sampling, &mut rng)?;
    println!("{prompt}{}", saved.tokenizer.decode(&sampled)?);
    Ok(ExitCode::SUCCESS)
}
