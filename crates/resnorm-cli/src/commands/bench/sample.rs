//! `resnorm bench sample`: incremental decoding speed, one sequence, key/value cache
//! ([`resnorm::models::gpt::generate`]): a randomly initialized GPT continues a one-token
//! prompt by `--tokens` tokens (temperature 1, all tokens eligible); the median over
//! `--runs` runs of the tokens per second. The context is the model's own: generating
//! `context` tokens fills it exactly, the longest a step gets before the window slides.
//!
//! `tools/bench_torch_gpt.py sample` decodes the same way in PyTorch eager.

use super::timing::median;
use resnorm::models::gpt::{generate, Gpt, GptConfig, Sampling};
use resnorm::rng::Rng;
use resnorm::threads;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Transformer blocks.
    #[arg(long, default_value_t = 6)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 384)]
    width: usize,
    /// Context window in tokens.
    #[arg(long, default_value_t = 256)]
    context: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 65)]
    vocab: usize,
    /// Tokens generated per run (default: the context).
    #[arg(long)]
    tokens: Option<usize>,
    /// Timed runs (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let config = GptConfig {
        layers: args.layers,
        heads: args.heads,
        width: args.width,
        context: args.context,
        vocab: args.vocab,
        ..GptConfig::default()
    };
    let model = Gpt::new(config, 1337)?;
    let tokens = args.tokens.unwrap_or(args.context);
    let sampling = Sampling {
        temperature: 1.0,
        top_k: 0,
    };
    let mut rng = Rng::new(0);
    let mut seconds = Vec::with_capacity(args.runs);
    for run in 0..args.runs.max(1) + 1 {
        let start = Instant::now();
        let sampled = generate(&model, &[0], tokens, sampling, &mut rng)?;
        debug_assert_eq!(sampled.len(), tokens);
        if run > 0 {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    let tok_s = tokens as f64 / median(&mut seconds);
    if args.json {
        let line = serde_json::json!({
            "impl": concat!("resnorm ", env!("CARGO_PKG_VERSION")), "threads": threads::num_threads(),
            "tokens": tokens, "tok_s": (tok_s * 10.0).round() / 10.0,
        });
        println!("{line}");
    } else {
        println!(
            "{} params, {} threads: {tok_s:.0} tokens/s ({tokens} tokens after a one-token prompt, median of {} runs)",
            model.num_params(),
            threads::num_threads(),
            seconds.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
