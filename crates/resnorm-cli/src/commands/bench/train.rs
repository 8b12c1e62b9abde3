//! `resnorm bench train`: the full training step (forward, backward, gradient clipping,
//! AdamW) of a GPT on random tokens; median time per step, tokens/s, achieved FLOP/s, the
//! share of time in the linear layers' and the head's matrix products, and peak memory.
//!
//! Each step runs inside [`threads::busy`], as the trainer's do. The matrix-product share is
//! the median time of the step's linear-layer and head products (forward, input gradient,
//! weight gradient of each, at the step's sizes) run on their own, divided by the median
//! step time.
//!
//! FLOPs per token are counted as `6·N + 12·L·C·T` (N parameters without the position
//! table; the second term is attention), the estimate nanoGPT and llm.c use, so the figure
//! compares directly with `tools/bench_torch_gpt.py speed`.

use super::timing::median;
use resnorm::kernels::{matmul, MatDims, NormKind, Trans};
use resnorm::memory::Workload;
use resnorm::models::gpt::{Gpt, GptConfig, Placement};
use resnorm::optim::{clip_grad_norm, AdamW, AdamWConfig, Optimizer};
use resnorm::rng::Rng;
use resnorm::threads;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Transformer blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Width of the residual stream.
    #[arg(long, default_value_t = 128)]
    width: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    context: usize,
    /// Vocabulary size (65: Shakespeare's characters; 50257: GPT-2).
    #[arg(long, default_value_t = 65)]
    vocab: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 12)]
    batch: usize,
    /// Residual/normalization placement.
    #[arg(long, default_value = "pre-ln")]
    placement: Placement,
    /// Norm kind: layer or rms.
    #[arg(long, default_value = "layer")]
    norm: NormKind,
    /// Timed steps (after two warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
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
        placement: args.placement,
        norm: args.norm,
        ..GptConfig::default()
    };
    if args.steps == 0 {
        return Err(resnorm::Error::invalid(
            "bench train",
            "--steps must be at least 1 (the median of no steps is undefined)",
        ));
    }
    crate::memory::check_fits(
        "bench train",
        &config.memory_estimate(args.batch, Workload::Train)?,
    )?;
    let mut model = Gpt::new(config, 1337)?;
    let mut optimizer = AdamW::new(AdamWConfig {
        beta2: 0.95,
        weight_decay: 0.1,
        ..AdamWConfig::default()
    })?;
    let mut rng = Rng::new(0);
    let tokens_per_step = args.batch * args.context;
    let mut random_tokens = || -> Vec<u32> {
        (0..tokens_per_step)
            .map(|_| rng.below(args.vocab) as u32)
            .collect()
    };
    let (tokens, targets) = (random_tokens(), random_tokens());
    let mut step_ms = Vec::with_capacity(args.steps);
    for step in 0..args.steps + 2 {
        let start = Instant::now();
        threads::busy(|| -> resnorm::Result<()> {
            model.zero_grad();
            model.forward(&tokens, args.batch, Some(&targets))?;
            model.backward()?;
            let mut params = model.params_mut();
            clip_grad_norm(&mut params, 1.0)?;
            optimizer.step(&mut params, 1e-3)
        })?;
        if step >= 2 {
            step_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    // Before the products' scratch buffers exist, so that it is the training's peak.
    let rss_mib = peak_rss_mib();
    let ms = median(&mut step_ms);
    let mut products = StepProducts::of(&model, tokens_per_step);
    let mut matmul_ms = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let elapsed = threads::busy(|| products.run())?;
        matmul_ms.push(elapsed.as_secs_f64() * 1e3);
    }
    let matmul_share = median(&mut matmul_ms) / ms;
    let mut flop_params = 0;
    model.visit_params(&mut |p| {
        if p.name != "wpe.weight" {
            flop_params += p.len();
        }
    });
    let flops_per_token = 6 * flop_params + 12 * args.layers * args.width * args.context;
    let tok_s = tokens_per_step as f64 / (ms * 1e-3);
    let gflops = flops_per_token as f64 * tok_s / 1e9;
    if args.json {
        let line = serde_json::json!({
            "impl": concat!("resnorm ", env!("CARGO_PKG_VERSION")), "threads": threads::num_threads(),
            "ms": round(ms), "tok_s": round(tok_s), "rss_mib": rss_mib.map(round), "gflops": round(gflops),
            "matmul_share": round(matmul_share),
        });
        println!("{line}");
    } else {
        println!(
            "{} params, {} threads: {ms:.2} ms/step (median of {}), {tok_s:.0} tokens/s, {gflops:.1} GFLOP/s",
            model.num_params(),
            threads::num_threads(),
            args.steps
        );
        println!(
            "matrix products (linear layers, head): {:.0}% of the step; the rest {:.0}%",
            100.0 * matmul_share,
            100.0 * (1.0 - matmul_share)
        );
        if let Some(rss) = rss_mib {
            println!("peak resident memory: {rss:.0} MiB");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The matrix products of one training step, on scratch buffers: for every linear layer
/// `[in, out]` (and the tied head, `[vocab, width]` used transposed) the forward product, the
/// input gradient and the weight gradient at `rows` tokens.
struct StepProducts {
    /// `(dims, trans, accumulate)` of each product.
    calls: Vec<(MatDims, Trans, bool)>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl StepProducts {
    fn of(model: &Gpt, rows: usize) -> Self {
        let mut calls = Vec::new();
        let mut add = |n_in: usize, n_out: usize, weight_transposed: bool| {
            let w = Trans {
                a: false,
                b: weight_transposed,
            };
            let (m, k, n) = (rows, n_in, n_out);
            calls.push((MatDims { m, k, n }, w, false));
            let dx = Trans {
                a: false,
                b: !weight_transposed,
            };
            calls.push((MatDims { m, k: n, n: k }, dx, false));
            let dw = Trans { a: true, b: false };
            let dw_dims = if weight_transposed {
                MatDims { m: n, k: m, n: k }
            } else {
                MatDims { m: k, k: m, n }
            };
            calls.push((dw_dims, dw, true));
        };
        model.visit_params(&mut |p| match (p.name.as_str(), p.shape.as_slice()) {
            ("wte.weight", &[vocab, width]) => add(width, vocab, true),
            (name, &[n_in, n_out]) if name.ends_with(".weight") && name != "wpe.weight" => {
                add(n_in, n_out, false)
            }
            _ => {}
        });
        let len = |size: fn(&MatDims) -> usize| calls.iter().map(|(d, ..)| size(d)).max();
        let len = |size| len(size).unwrap_or(0);
        StepProducts {
            a: vec![0.01; len(|d| d.m * d.k)],
            b: vec![0.01; len(|d| d.k * d.n)],
            c: vec![0.0; len(|d| d.m * d.n)],
            calls,
        }
    }

    /// Runs every product once; returns the time taken.
    fn run(&mut self) -> resnorm::Result<std::time::Duration> {
        let start = Instant::now();
        for &(dims, trans, accumulate) in &self.calls {
            let (a, b) = (&self.a[..dims.m * dims.k], &self.b[..dims.k * dims.n]);
            matmul(
                &mut self.c[..dims.m * dims.n],
                a,
                b,
                dims,
                trans,
                accumulate,
            )?;
        }
        Ok(start.elapsed())
    }
}

/// Peak resident set size of this process (VmHWM), where /proc reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
