//! `resnorm export`: a `resnorm train` checkpoint as a Hugging Face directory that
//! `AutoModelForCausalLM.from_pretrained` reads (`GPT2LMHeadModel`; the GPT must be pre-ln
//! with LayerNorm, other placements are refused with the reason). See `resnorm::hf::export`.

use std::path::PathBuf;
use std::process::ExitCode;

use resnorm::hf::export::write_gpt;
use resnorm::lm::load_checkpoint;
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
    write_gpt(&saved.model, &args.out)?;
    println!(
        "wrote {} (GPT2LMHeadModel, {} parameters)",
        args.out.display(),
        saved.model.num_params()
    );
    Ok(ExitCode::SUCCESS)
}
