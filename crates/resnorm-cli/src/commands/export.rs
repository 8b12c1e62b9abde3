//! `resnorm export`: a `resnorm train` checkpoint as a Hugging Face directory that
//! `AutoModelForCausalLM.from_pretrained` reads: `GPT2LMHeadModel` for a GPT (which must be
//! pre-ln with LayerNorm, other placements are refused with the reason), or the Llama-family
//! architecture of a fine-tuned Llama-family model; a fine-tuned model's `tokenizer.json`
//! goes with it. See `resnorm::hf::export`.

use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::data::text::Tokenizer;
use resnorm::hf::export::{write_gpt, write_llama, write_tokenizer};
use resnorm::lm::load_checkpoint;
use resnorm::models::CausalLm;
use resnorm::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory written by `resnorm train`.
    #[arg(long, default_value = "runs/train")]
    checkpoint: PathBuf,
    /// The Hugging Face directory to write (config.json, model.safetensors).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let saved = load_checkpoint(&args.checkpoint)?;
    let architecture = match &saved.model {
        CausalLm::Gpt(gpt) => {
            write_gpt(gpt, &args.out)?;
            "GPT2LMHeadModel"
        }
        CausalLm::Llama(llama) => write_llama(llama, &args.out)?,
    };
    if let Tokenizer::Hf { tokenizer } = &saved.tokenizer {
        write_tokenizer(tokenizer, &args.out)?;
    }
    println!(
        "wrote {} ({architecture}, {} parameters)",
        args.out.display(),
        saved.model.num_params()
    );
    Ok(ExitCode::SUCCESS)
}
