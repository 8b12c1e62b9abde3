//! Sampling from a Llama-family model with its key/value cache: the rule of the GPT's
//! sampler (`models/gpt/decode.rs`), so that `resnorm sample` means the same for both.
//!
//! Logits are divided by the temperature; `top_k > 0` keeps the `k` largest (ties at the
//! threshold are all kept); a token is drawn from the softmax with one `uniform_f64` of the
//! [`Rng`]. Temperature 0 is greedy: the first largest logit, as [`super::greedy`].
//!
//! ```
//! use resnorm::models::gpt::Sampling;
//! use resnorm::models::llama::{generate, greedy, Llama, LlamaConfig, LlamaPlacement};
//! use resnorm::rng::Rng;
//! let mut model = Llama::new(LlamaConfig::tiny(LlamaPlacement::PeriLn), 3).unwrap();
//! let hot = Sampling { temperature: 1.0, top_k: 3 };
//! assert_eq!(generate(&mut model, &[1, 2], 5, hot, &mut Rng::new(0)).unwrap().len(), 5);
//! let cold = Sampling { temperature: 0.0, top_k: 0 };
//! let sampled = generate(&mut model, &[1, 2], 5, cold, &mut Rng::new(0)).unwrap();
//! assert_eq!(sampled, greedy(&mut model, &[1, 2], 5).unwrap());
//! ```

use super::{Llama, LlamaDecoder};
use crate::models::gpt::Sampling;
use crate::rng::Rng;
use crate::{Error, Result};

/// Samples `count` tokens after `prompt` (nonempty; prompt and samples within the context).
pub fn generate(
    model: &mut Llama,
    prompt: &[u32],
    count: usize,
    sampling: Sampling,
    rng: &mut Rng,
) -> Result<Vec<u32>> {
    const OP: &str = "llama::generate";
    if prompt.is_empty() {
        return Err(Error::invalid(OP, "the prompt has no tokens"));
    }
    if !(sampling.temperature.is_finite() && sampling.temperature >= 0.0) {
        return Err(Error::invalid(
            OP,
            format!(
                "temperature {} must be finite and zero or positive",
                sampling.temperature
            ),
        ));
    }
    let context = model.config().context;
    if prompt.len() + count > context {
        return Err(Error::invalid(
            OP,
            format!(
                "{} prompt tokens and {count} to sample exceed the context of {context}",
                prompt.len()
            ),
        ));
    }
    let mut decoder = LlamaDecoder::new(model, prompt.len() + count)?;
    let mut weights = Vec::with_capacity(decoder.model.config().vocab);
    let mut out = Vec::with_capacity(count);
    let mut logits = decoder.push(prompt)?;
    for i in 0..count {
        let token = sample(logits, sampling, rng, &mut weights);
        out.push(token);
        if i + 1 < count {
            logits = decoder.push(&[token])?;
        }
    }
    Ok(out)
}

/// One token from `logits`; `weights` is scratch.
pub(super) fn sample(
    logits: &[f32],
    sampling: Sampling,
    rng: &mut Rng,
    weights: &mut Vec<f64>,
) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if sampling.temperature == 0.0 {
        return argmax();
    }
    let threshold = if sampling.top_k > 0 && sampling.top_k < logits.len() {
        weights.clear();
        weights.extend(logits.iter().map(|&l| l as f64));
        weights.sort_by(|a, b| b.total_cmp(a));
        weights[sampling.top_k - 1]
    } else {
        f64::NEG_INFINITY
    };
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    let temperature = sampling.temperature as f64;
    weights.clear();
    weights.extend(logits.iter().map(|&l| {
        let l = l as f64;
        if l >= threshold {
            ((l - max) / temperature).exp()
        } else {
            0.0
        }
    }));
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return argmax();
    }
    let mut u = rng.uniform_f64() * total;
    for (i, &w) in weights.iter().enumerate() {
        if u < w {
            return i as u32;
        }
        u -= w;
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
}
