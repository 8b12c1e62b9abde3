//! Drawing a token from logits: the one rule of every sampler (`gpt::generate`,
//! `llama::generate`), so that `resnorm sample` means the same for every model.
//!
//! Logits are divided by the temperature; `top_k > 0` keeps the `k` largest (ties at the
//! threshold are all kept); a token is drawn from the softmax with one `uniform_f64` of the
//! [`Rng`]. Temperature 0 is greedy: the first largest logit.
//!
//! ```text
//! p_i ∝ exp((l_i − max l) / T)  for l_i ≥ l_(k),  0 otherwise
//! ```
//!
//! ```
//! use resnorm::models::sampling::{sample, Sampling};
//! use resnorm::rng::Rng;
//! let logits = [0.5, 2.0, -1.0, 1.5];
//! let mut weights = Vec::new();
//! let greedy = Sampling { temperature: 0.0, top_k: 0 };
//! assert_eq!(sample(&logits, greedy, &mut Rng::new(0), &mut weights), 1);
//! let top2 = Sampling { temperature: 1.0, top_k: 2 };
//! let token = sample(&logits, top2, &mut Rng::new(7), &mut weights);
//! assert!(token == 1 || token == 3);
//! ```

use crate::rng::Rng;
use crate::{Error, Result};

/// How a sampler picks each token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 0 is greedy decoding. Finite and not negative.
    pub temperature: f32,
    /// Keep only the `top_k` largest logits; 0 keeps all.
    pub top_k: usize,
}

impl Sampling {
    /// The checks every generator makes first: a nonempty `prompt` and a temperature that is
    /// finite and not negative; `op` names the generator in the error.
    pub fn check(&self, op: &'static str, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::invalid(op, "the prompt has no tokens"));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "temperature {} must be finite and zero or positive",
                    self.temperature
                ),
            ));
        }
        Ok(())
    }
}

/// One token from `logits` (see the module documentation); `weights` is scratch, so a
/// generation loop allocates once.
pub fn sample(logits: &[f32], sampling: Sampling, rng: &mut Rng, weights: &mut Vec<f64>) -> u32 {
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
