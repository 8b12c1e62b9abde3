//! Gradient checks of the decoder layers: [`Linear`], [`Embedding`], GELU,
//! [`CausalSelfAttention`] and the fused cross-entropy.
//!
//! Each check runs the `f32` layer's backward with `dy = g` and compares it with central
//! differences of a naive `f64` forward of `L = Σ g ⊙ y` (for cross-entropy, of the mean loss
//! itself, `dloss = 1`). Shapes are odd and small so that every edge of the blocked kernels is
//! exercised in a few milliseconds.
//!
//! ```
//! let results = resnorm::gradcheck::layers::checks();
//! assert!(results.iter().all(|r| r.passed), "{results:#?}");
//! ```

use super::{compare, numeric_gradient, CheckResult};
use crate::kernels::{cross_entropy_backward, cross_entropy_forward, gelu_backward};
use crate::nn::{CausalSelfAttention, Embedding, Linear};
use crate::rng::Rng;

/// Central-difference step.
const STEP: f64 = 1e-4;
/// Largest relative error accepted (see [`compare`]); measured errors of these shapes are
/// 1e-7 to 3e-6.
const TOLERANCE: f64 = 1e-4;

/// Every layer check, in a fixed order.
pub fn checks() -> Vec<CheckResult> {
    let mut results = linear_checks();
    results.push(gelu_check());
    results.extend(embedding_checks());
    results.push(attention_check());
    results.push(cross_entropy_check());
    results
}

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

fn dot(g: &[f64], y: &[f64]) -> f64 {
    g.iter().zip(y).map(|(g, y)| g * y).sum()
}

/// `y = x W + b` in f64.
pub fn linear_reference(x: &[f64], w: &[f64], b: &[f64], n_in: usize, n_out: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len() / n_in * n_out);
    for row in x.chunks_exact(n_in) {
        for j in 0..n_out {
            y.push(b[j] + (0..n_in).map(|i| row[i] * w[i * n_out + j]).sum::<f64>());
        }
    }
    y
}

fn linear_checks() -> Vec<CheckResult> {
    let (rows, n_in, n_out) = (5, 7, 6);
    let mut rng = Rng::new(11);
    let mut layer = Linear::new("fc", n_in, n_out, true).expect("valid sizes");
    layer.init(&mut rng, 0.5);
    let bias = layer.bias.as_mut().expect("has bias");
    rng.fill_normal(&mut bias.value, 0.0, 0.5);
    let x = normal(&mut rng, rows * n_in);
    let g = normal(&mut rng, rows * n_out);
    let mut y = vec![0.0; rows * n_out];
    let mut dx = vec![0.0; x.len()];
    layer.forward(&mut y, &x).expect("sizes match");
    layer.backward(&mut dx, &x, &g).expect("sizes match");
    let (xd, gd) = (widen(&x), widen(&g));
    let wd = widen(&layer.weight.value);
    let bias = layer.bias.as_ref().expect("has bias");
    let bd = widen(&bias.value);
    let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&gd, &linear_reference(x, w, b, n_in, n_out));
    vec![
        compare(
            "linear dx",
            &dx,
            &numeric_gradient(|v| loss(v, &wd, &bd), &xd, STEP),
            TOLERANCE,
        ),
        compare(
            "linear dweight",
            &layer.weight.grad,
            &numeric_gradient(|v| loss(&xd, v, &bd), &wd, STEP),
            TOLERANCE,
        ),
        compare(
            "linear dbias",
            &bias.grad,
            &numeric_gradient(|v| loss(&xd, &wd, v), &bd, STEP),
            TOLERANCE,
        ),
    ]
}

/// GELU, tanh approximation, in f64.
pub fn gelu_reference(x: f64) -> f64 {
    let s = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (s * (x + 0.044715 * x * x * x)).tanh())
}

fn gelu_check() -> CheckResult {
    let mut rng = Rng::new(12);
    let x: Vec<f32> = (0..37).map(|_| 2.0 * rng.normal()).collect();
    let g = normal(&mut rng, x.len());
    let mut dx = vec![0.0; x.len()];
    gelu_backward(&mut dx, &x, &g).expect("sizes match");
    let gd = widen(&g);
    let loss = |v: &[f64]| v.iter().zip(&gd).map(|(&x, g)| g * gelu_reference(x)).sum();
    compare(
        "gelu dx",
        &dx,
        &numeric_gradient(loss, &widen(&x), STEP),
        TOLERANCE,
    )
}

fn embedding_checks() -> Vec<CheckResult> {
    let (vocab, context, channels, batch, seq) = (5, 4, 3, 2, 3);
    let mut rng = Rng::new(13);
    let mut emb = Embedding::new(vocab, context, channels).expect("valid sizes");
    emb.init(&mut rng, 1.0);
    // Token 1 appears twice, token 4 never: both accumulation and untouched rows are checked.
    let tokens = [1u32, 3, 1, 0, 2, 3];
    let g = normal(&mut rng, batch * seq * channels);
    emb.backward(&g, &tokens, batch, seq).expect("sizes match");
    let gd = widen(&g);
    let forward = |wte: &[f64], wpe: &[f64]| -> f64 {
        let mut loss = 0.0;
        for (i, &tok) in tokens.iter().enumerate() {
            for j in 0..channels {
                let y = wte[tok as usize * channels + j] + wpe[(i % seq) * channels + j];
                loss += gd[i * channels + j] * y;
            }
        }
        loss
    };
    let (wte, wpe) = (widen(&emb.wte.value), widen(&emb.wpe.value));
    vec![
        compare(
            "embedding dwte",
            &emb.wte.grad,
            &numeric_gradient(|v| forward(v, &wpe), &wte, STEP),
            TOLERANCE,
        ),
        compare(
            "embedding dwpe",
            &emb.wpe.grad,
            &numeric_gradient(|v| forward(&wte, v), &wpe, STEP),
            TOLERANCE,
        ),
    ]
}

/// Causal multi-head attention in f64, written as nanoGPT computes it.
pub fn attention_reference(
    qkv: &[f64],
    batch: usize,
    seq: usize,
    channels: usize,
    heads: usize,
) -> Vec<f64> {
    let d = channels / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let at = |b: usize, t: usize, col: usize| qkv[(b * seq + t) * 3 * channels + col];
    let mut out = vec![0.0; batch * seq * channels];
    for b in 0..batch {
        for h in 0..heads {
            for t in 0..seq {
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        let qk: f64 = (0..d)
                            .map(|i| at(b, t, h * d + i) * at(b, s, channels + h * d + i))
                            .sum();
                        qk * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for i in 0..d {
                    out[(b * seq + t) * channels + h * d + i] = (0..=t)
                        .map(|s| weights[s] / total * at(b, s, 2 * channels + h * d + i))
                        .sum();
                }
            }
        }
    }
    out
}

fn attention_check() -> CheckResult {
    // 34 positions: more than two vectors of scores per row, and a last block of rows
    // that reaches into the padding.
    let (batch, seq, channels, heads) = (2, 34, 4, 2);
    let attn = CausalSelfAttention::new(channels, heads).expect("valid sizes");
    let mut rng = Rng::new(14);
    let qkv = normal(&mut rng, batch * seq * 3 * channels);
    let g = normal(&mut rng, batch * seq * channels);
    let mut out = vec![0.0; g.len()];
    let mut att = vec![0.0; batch * heads * seq * seq];
    let mut dqkv = vec![0.0; qkv.len()];
    attn.forward(&mut out, &mut att, &qkv, batch, seq)
        .expect("sizes match");
    attn.backward(&mut dqkv, &g, &att, &qkv, batch, seq)
        .expect("sizes match");
    let gd = widen(&g);
    let loss = |v: &[f64]| dot(&gd, &attention_reference(v, batch, seq, channels, heads));
    compare(
        "attention dqkv",
        &dqkv,
        &numeric_gradient(loss, &widen(&qkv), STEP),
        TOLERANCE,
    )
}

/// Mean softmax cross-entropy in f64.
pub fn cross_entropy_reference(logits: &[f64], targets: &[u32], vocab: usize) -> f64 {
    let total: f64 = logits
        .chunks_exact(vocab)
        .zip(targets)
        .map(|(z, &t)| {
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - z[t as usize]
        })
        .sum();
    total / targets.len() as f64
}

fn cross_entropy_check() -> CheckResult {
    let (rows, vocab) = (4, 11);
    let mut rng = Rng::new(15);
    let logits: Vec<f32> = (0..rows * vocab).map(|_| 3.0 * rng.normal()).collect();
    let targets = [0u32, 10, 3, 3];
    let (mut losses, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    cross_entropy_forward(&logits, &targets, vocab, &mut losses, &mut lse).expect("sizes match");
    let mut dlogits = vec![0.0; logits.len()];
    cross_entropy_backward(&mut dlogits, &logits, &lse, &targets, vocab, 1.0).expect("sizes match");
    compare(
        "cross_entropy dlogits",
        &dlogits,
        &numeric_gradient(
            |v| cross_entropy_reference(v, &targets, vocab),
            &widen(&logits),
            STEP,
        ),
        TOLERANCE,
    )
}
