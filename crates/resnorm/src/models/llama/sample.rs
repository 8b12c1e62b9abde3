//! Sampling from a Llama-family model with its key/value cache, each token drawn by
//! [`crate::models::sampling::sample`], the GPT's rule, so that `resnorm sample` means the
//! same for both. Temperature 0 is greedy: the first largest logit, as [`super::greedy`].
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
use crate::models::sampling::{sample, Sampling};
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
    sampling.check(OP, prompt)?;
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
