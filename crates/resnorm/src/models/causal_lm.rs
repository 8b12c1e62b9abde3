//! A causal language model of either family: resnorm's [`Gpt`] or the Llama-family decoder
//! [`Llama`]. The LM trainer, its checkpoints and the Hugging Face reader hold one of these,
//! so that training, evaluation, sampling and export treat both alike.
//!
//! Both compute, for `batch` rows of `T` tokens,
//! ```text
//! logits = head(stream after the last unit)            [batch·T, V]
//! loss   = mean over rows r of  −log softmax(logits[r])[targets[r]]
//! ```
//! and backpropagate that loss into every parameter's gradient.
//!
//! ```
//! use resnorm::models::CausalLm;
//! use resnorm::models::llama::{Llama, LlamaConfig, LlamaPlacement};
//! let mut model = CausalLm::Llama(Llama::new(LlamaConfig::tiny(LlamaPlacement::PreLn), 1).unwrap());
//! let loss = model.forward(&[1, 2, 3, 4], 2, Some(&[2, 3, 4, 5])).unwrap().unwrap();
//! assert!(loss.is_finite());
//! model.backward().unwrap();
//! assert_eq!(model.logits(&[1, 2, 3], 1).unwrap().len(), 3 * model.vocab());
//! ```

use crate::models::gpt::{generate, Gpt, Sampling};
use crate::models::llama::{self, Llama};
use crate::nn::Param;
use crate::rng::Rng;
use crate::{Error, Result};

/// A GPT or a Llama-family decoder.
// A program holds one model, so the variants' difference in size (buffer handles, not
// buffers) costs nothing; boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum CausalLm {
    /// resnorm's GPT (also `GPT2LMHeadModel`).
    Gpt(Gpt),
    /// The Llama family.
    Llama(Llama),
}

impl CausalLm {
    /// Runs the model on `tokens` (`batch` rows of equal length); with `targets`, returns the
    /// mean cross-entropy and prepares [`CausalLm::backward`].
    pub fn forward(
        &mut self,
        tokens: &[u32],
        batch: usize,
        targets: Option<&[u32]>,
    ) -> Result<Option<f32>> {
        match self {
            CausalLm::Gpt(gpt) => gpt.forward(tokens, batch, targets),
            CausalLm::Llama(llama) => llama.forward(tokens, batch, targets),
        }
    }

    /// Backpropagates the last forward's loss, adding into every parameter's gradient.
    pub fn backward(&mut self) -> Result<()> {
        match self {
            CausalLm::Gpt(gpt) => gpt.backward(),
            CausalLm::Llama(llama) => llama.backward(),
        }
    }

    /// The logits `[batch·seq, V]` of `tokens` (`batch` rows of equal length).
    pub fn logits(&mut self, tokens: &[u32], batch: usize) -> Result<&[f32]> {
        self.forward(tokens, batch, None)?;
        Ok(match self {
            CausalLm::Gpt(gpt) => gpt.logits(),
            CausalLm::Llama(llama) => llama.logits(),
        })
    }

    /// The mean cross-entropy of predicting `targets` from `tokens` (`batch` rows).
    pub fn loss(&mut self, tokens: &[u32], targets: &[u32], batch: usize) -> Result<f32> {
        self.forward(tokens, batch, Some(targets))?
            .ok_or_else(|| Error::invalid("CausalLm::loss", "the model returned no loss"))
    }

    /// The `count` tokens greedy decoding appends to `prompt`.
    pub fn greedy(&mut self, prompt: &[u32], count: usize) -> Result<Vec<u32>> {
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
        };
        self.generate(prompt, count, greedy, &mut Rng::new(0))
    }

    /// `count` tokens sampled after `prompt` with a key/value cache (see
    /// [`crate::models::gpt::generate`], [`crate::models::llama::generate`]).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        count: usize,
        sampling: Sampling,
        rng: &mut Rng,
    ) -> Result<Vec<u32>> {
        match self {
            CausalLm::Gpt(gpt) => generate(gpt, prompt, count, sampling, rng),
            CausalLm::Llama(llama) => llama::generate(llama, prompt, count, sampling, rng),
        }
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |p| p.zero_grad());
    }

    /// Hands every parameter to `f`, in the model's own order.
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param)) {
        match self {
            CausalLm::Gpt(gpt) => gpt.visit_params(f),
            CausalLm::Llama(llama) => llama.visit_params(f),
        }
    }

    /// Hands every parameter to `f` for writing, in [`CausalLm::visit_params`] order.
    pub fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param)) {
        for p in self.params_mut() {
            f(p);
        }
    }

    /// Every parameter, in [`CausalLm::visit_params`] order, for writing.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            CausalLm::Gpt(gpt) => gpt.params_mut(),
            CausalLm::Llama(llama) => llama.params_mut(),
        }
    }

    /// Total number of parameters (a tied head counted once).
    pub fn num_params(&self) -> usize {
        match self {
            CausalLm::Gpt(gpt) => gpt.num_params(),
            CausalLm::Llama(llama) => llama.num_params(),
        }
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> usize {
        match self {
            CausalLm::Gpt(gpt) => gpt.config().vocab,
            CausalLm::Llama(llama) => llama.config().vocab,
        }
    }

    /// The longest sequence the model runs on.
    pub fn context(&self) -> usize {
        match self {
            CausalLm::Gpt(gpt) => gpt.config().context,
            CausalLm::Llama(llama) => llama.config().context,
        }
    }

    /// The family and wiring in a few words, e.g. `pre-ln GPT` or `pre-ln Llama-family`.
    pub fn describe(&self) -> String {
        match self {
            CausalLm::Gpt(gpt) => format!("{} GPT", gpt.config().placement),
            CausalLm::Llama(llama) => format!("{} Llama-family", llama.config().placement),
        }
    }

    /// The GPT, or an error saying that `what` needs one.
    pub fn into_gpt(self, what: &str) -> Result<Gpt> {
        match self {
            CausalLm::Gpt(gpt) => Ok(gpt),
            CausalLm::Llama(_) => Err(Error::Config(format!(
                "{what} needs a GPT, not a Llama-family model"
            ))),
        }
    }
}
