//! `resnorm bench sample`: incremental decoding speed, one sequence, key/value cache
//! ([`resnorm::models::gpt::generate`]): a randomly initialized GPT continues a one-token
//! prompt by `--tokens` tokens (temperature 1, all tokens eligible); the median over
//! `--runs` runs of the tokens per second. The context is the model's own: generating
//! `context` tokens fills it exactly, the longest a step gets before the window slides.
//!
//! `tools/bench_torch_gpt.py sample` decodes the same way in PyTorch eager.
//!
//! With `--preset` (see [`super::preset`]) the model has a real model's shape (a Llama with
//! `llama-135m`, decoded by [`resnorm::models::llama::generate`]), the prompt is one token,
//! 128 tokens are generated greedily, as Hugging Face's `generate(do_sample=False)` in
//! `tools/bench_torch_presets.py`, and 3 runs are timed; flags given as well override these.

use super::preset::{Net, Preset, Shape};
use super::timing::median;
use resnorm::kernels::NormKind;
use resnorm::models::gpt::{self, Placement, Sampling};
use resnorm::models::llama;
use resnorm::rng::Rng;
use resnorm::threads;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// A real model's shape (gpt2-124m, llama-135m); the flags below override its fields.
    #[arg(long)]
    preset: Option<Preset>,
    /// Transformer blocks [default: 6].
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads [default: 6].
    #[arg(long)]
    heads: Option<usize>,
    /// Width of the residual stream [default: 384].
    #[arg(long)]
    width: Option<usize>,
    /// Context window in tokens [default: 256].
    #[arg(long)]
    context: Option<usize>,
    /// Vocabulary size [default: 65].
    #[arg(long)]
    vocab: Option<usize>,
    /// Tokens generated per run [default: the context; with a preset 128].
    #[arg(long)]
    tokens: Option<usize>,
    /// Timed runs, after one warm-up run [default: 5; with a preset 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let (base, runs, sampling) = match args.preset {
        Some(preset) => (
            preset.shape(),
            3,
            Sampling {
                temperature: 0.0,
                top_k: 0,
            },
        ),
        None => (
            Shape::gpt(6, 6, 384, 256, 65),
            5,
            Sampling {
                temperature: 1.0,
                top_k: 0,
            },
        ),
    };
    let heads = args.heads.unwrap_or(base.heads);
    let shape = Shape {
        layers: args.layers.unwrap_or(base.layers),
        width: args.width.unwrap_or(base.width),
        kv_heads: if args.heads.is_some() && !base.llama {
            heads
        } else {
            base.kv_heads
        },
        heads,
        context: args.context.unwrap_or(base.context),
        vocab: args.vocab.unwrap_or(base.vocab),
        ..base
    };
    let tokens = args.tokens.unwrap_or(match args.preset {
        Some(_) => 128.min(shape.context),
        None => shape.context,
    });
    let runs = args.runs.unwrap_or(runs).max(1);
    let mut model = Net::new(&shape, Placement::PreLn, NormKind::Layer, 1337)?;
    let mut rng = Rng::new(0);
    let mut seconds = Vec::with_capacity(runs);
    for run in 0..runs + 1 {
        let start = Instant::now();
        let sampled = match &mut model {
            Net::Gpt(m) => gpt::generate(m, &[0], tokens, sampling, &mut rng)?,
            Net::Llama(m) => llama::generate(m, &[0], tokens, sampling, &mut rng)?,
        };
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
            "params": model.num_params(), "rss_mib": super::train::peak_rss_mib(),
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
