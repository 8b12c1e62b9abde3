//! `resnorm bench train`: the full training step (forward, backward, gradient clipping,
//! AdamW) of a GPT, or with `--preset llama-135m` a Llama-family decoder, on random tokens; median time per step, tokens/s, achieved FLOP/s, the
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
//!
//! With `--preset` (see [`super::preset`]) the model has a real model's shape, one window of
//! 512 tokens per step and 3 timed steps; flags given as well override the preset's values.
//! `tools/bench_presets.sh` runs it alternately with `tools/bench_torch_presets.py`.

use super::preset::{Net, Preset, Shape};
use super::timing::median;
use resnorm::kernels::{matmul, MatDims, NormKind, Trans};
use resnorm::memory::Workload;
use resnorm::models::gpt::Placement;
use resnorm::optim::{clip_grad_norm, AdamW, AdamWConfig, Optimizer};
use resnorm::rng::Rng;
use resnorm::threads;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// A real model's shape (gpt2-124m, llama-135m); the flags below override its fields.
    #[arg(long)]
    preset: Option<Preset>,
    /// Transformer blocks [default: 4].
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads [default: 4].
    #[arg(long)]
    heads: Option<usize>,
    /// Width of the residual stream [default: 128].
    #[arg(long)]
    width: Option<usize>,
    /// Tokens per sequence [default: 64; with a preset 512].
    #[arg(long)]
    context: Option<usize>,
    /// Vocabulary size (65: Shakespeare's characters; 50257: GPT-2) [default: 65].
    #[arg(long)]
    vocab: Option<usize>,
    /// Sequences per step [default: 12; with a preset 1].
    #[arg(long)]
    batch: Option<usize>,
    /// Residual/normalization placement.
    #[arg(long, default_value = "pre-ln")]
    placement: Placement,
    /// Norm kind: layer or rms.
    #[arg(long, default_value = "layer")]
    norm: NormKind,
    /// Timed steps, after two warm-up steps [default: 20; with a preset 3].
    #[arg(long)]
    steps: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The preset's shape, or the defaults, with the flags' values over them; the batch and the
/// steps.
fn shape(args: &Args) -> (Shape, usize, usize) {
    let (base, batch, steps) = match args.preset {
        Some(preset) => {
            let shape = Shape {
                context: preset.train_context(),
                ..preset.shape()
            };
            (shape, 1, 3)
        }
        None => (Shape::gpt(4, 4, 128, 64, 65), 12, 20),
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
    (
        shape,
        args.batch.unwrap_or(batch),
        args.steps.unwrap_or(steps),
    )
}

pub fn run(args: Args) -> resnorm::Result<ExitCode> {
    let (shape, batch, steps) = shape(&args);
    if steps == 0 {
        return Err(resnorm::Error::invalid(
            "bench train",
            "--steps must be at least 1 (the median of no steps is undefined)",
        ));
    }
    if !shape.llama {
        let config = shape.gpt_config(args.placement, args.norm);
        crate::memory::check_fits(
            "bench train",
            &config.memory_estimate(batch, Workload::Train)?,
        )?;
    }
    let mut model = Net::new(&shape, args.placement, args.norm, 1337)?;
    let mut optimizer = AdamW::new(AdamWConfig {
        beta2: 0.95,
        weight_decay: 0.1,
        ..AdamWConfig::default()
    })?;
    let mut rng = Rng::new(0);
    let tokens_per_step = batch * shape.context;
    let mut random_tokens = || -> Vec<u32> {
        (0..tokens_per_step)
            .map(|_| rng.below(shape.vocab) as u32)
            .collect()
    };
    let (tokens, targets) = (random_tokens(), random_tokens());
    let mut step_ms = Vec::with_capacity(steps);
    for step in 0..steps + 2 {
        let start = Instant::now();
        threads::busy(|| -> resnorm::Result<()> {
            model.forward_backward(&tokens, batch, &targets)?;
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
    let mut matmul_ms = Vec::with_capacity(steps);
    for _ in 0..steps {
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
    let attention_width = shape.width / shape.heads * shape.heads;
    let flops_per_token = 6 * flop_params + 12 * shape.layers * attention_width * shape.context;
    let tok_s = tokens_per_step as f64 / (ms * 1e-3);
    let gflops = flops_per_token as f64 * tok_s / 1e9;
    if args.json {
        let line = serde_json::json!({
            "impl": concat!("resnorm ", env!("CARGO_PKG_VERSION")), "threads": threads::num_threads(),
            "ms": round(ms), "tok_s": round(tok_s), "rss_mib": rss_mib.map(round), "gflops": round(gflops),
            "matmul_share": round(matmul_share), "params": model.num_params(),
            "batch": batch, "context": shape.context,
        });
        println!("{line}");
    } else {
        println!(
            "{} params, {} threads: {ms:.2} ms/step (median of {}), {tok_s:.0} tokens/s, {gflops:.1} GFLOP/s",
            model.num_params(),
            threads::num_threads(),
            steps
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
/// `[in, out]` (and the head, `[vocab, width]` used transposed: the tied embedding or
/// `lm_head`) the forward product, the input gradient and the weight gradient at `rows`
/// tokens.
struct StepProducts {
    /// `(dims, trans, accumulate)` of each product.
    calls: Vec<(MatDims, Trans, bool)>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl StepProducts {
    fn of(model: &Net, rows: usize) -> Self {
        let mut untied = false;
        model.visit_params(&mut |p| untied |= p.name == "lm_head.weight");
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
            ("wte.weight" | "lm_head.weight", &[vocab, width]) => add(width, vocab, true),
            ("embed_tokens.weight", &[vocab, width]) if !untied => add(width, vocab, true),
            ("wpe.weight" | "embed_tokens.weight", _) => {}
            (name, &[n_in, n_out]) if name.ends_with(".weight") => add(n_in, n_out, false),
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
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
