//! Token streams cut into training batches and validation windows.
//!
//! Precisely, so that another tool can reproduce the numbers:
//!
//! - **Split.** Of `n` tokens, the last `n_val = floor(n * validation_fraction)` (computed
//!   in f64) are the validation split, the first `n - n_val` the training split.
//! - **Training batches.** [`TokenDataset::sample_batch`] with `batch` rows of `context`
//!   tokens draws, for row `r = 0, 1, ...` in order, one start `s = rng.below(n_train -
//!   context)` (uniform in `0..=n_train - context - 1`, see [`Rng::below`]); row `r` of the
//!   inputs is `train[s..s + context]` and of the targets `train[s + 1..s + context + 1]`.
//!   Nothing else is drawn from `rng`.
//! - **Validation.** [`TokenDataset::validation_windows`] yields the consecutive,
//!   non-overlapping windows `k = 0, 1, ..., floor((n_val - 1) / context) - 1`: inputs
//!   `val[k * context..(k + 1) * context]`, targets shifted by one token. The tokens after the
//!   last full window are not used. The validation loss is the mean over all windows and
//!   positions of the per-token loss (every window has the same length).
//!
//! ```
//! use resnorm::data::text::TokenDataset;
//! use resnorm::rng::Rng;
//! let tokens: Vec<u32> = (0..100).map(|i| i % 7).collect();
//! let data = TokenDataset::new(tokens, 7, 0.1).unwrap();
//! assert_eq!((data.train().len(), data.validation().len()), (90, 10));
//!
//! let (inputs, targets) = data.sample_batch(&mut Rng::new(1), 4, 8).unwrap();
//! assert_eq!(inputs.len(), 4 * 8);
//! assert_eq!(&inputs[1..8], &targets[..7]);
//!
//! let windows: Vec<_> = data.validation_windows(4).unwrap().collect();
//! assert_eq!(windows.len(), 2); // floor((10 - 1) / 4)
//! assert_eq!(windows[1].0, &data.validation()[4..8]);
//! assert_eq!(windows[1].1, &data.validation()[5..9]);
//! ```

use crate::rng::Rng;
use crate::{Error, Result};

/// The validation fraction used when the user gives none: the last 10% of the tokens.
pub const DEFAULT_VALIDATION_FRACTION: f64 = 0.1;

/// A token stream with a training and a validation split; every token is below the
/// vocabulary size it was built with.
#[derive(Clone, Debug)]
pub struct TokenDataset {
    tokens: Vec<u32>,
    validation_start: usize,
    vocab_size: usize,
}

impl TokenDataset {
    /// Splits `tokens` (see the module documentation), checking every id against
    /// `vocab_size` and `validation_fraction` to lie in `[0, 1)`.
    pub fn new(tokens: Vec<u32>, vocab_size: usize, validation_fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&validation_fraction) {
            return Err(Error::invalid(
                "TokenDataset::new",
                format!("validation fraction {validation_fraction} is not in [0, 1)"),
            ));
        }
        if tokens.is_empty() {
            return Err(Error::invalid("TokenDataset::new", "no tokens"));
        }
        if let Some(i) = tokens.iter().position(|&t| t as usize >= vocab_size) {
            return Err(Error::invalid(
                "TokenDataset::new",
                format!(
                    "token {} at index {i} is outside the vocabulary of {vocab_size}",
                    tokens[i]
                ),
            ));
        }
        let validation_len = (tokens.len() as f64 * validation_fraction).floor() as usize;
        Ok(TokenDataset {
            validation_start: tokens.len() - validation_len,
            tokens,
            vocab_size,
        })
    }

    /// The vocabulary size the tokens were checked against.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The training split.
    pub fn train(&self) -> &[u32] {
        &self.tokens[..self.validation_start]
    }

    /// The validation split.
    pub fn validation(&self) -> &[u32] {
        &self.tokens[self.validation_start..]
    }

    /// `batch` random training windows of `context` tokens: `(inputs, targets)`, each
    /// `batch * context` ids, row-major.
    pub fn sample_batch(
        &self,
        rng: &mut Rng,
        batch: usize,
        context: usize,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut inputs = vec![0; batch * context];
        let mut targets = vec![0; batch * context];
        self.sample_batch_into(rng, context, &mut inputs, &mut targets)?;
        Ok((inputs, targets))
    }

    /// [`TokenDataset::sample_batch`] into caller-owned buffers of equal length, a multiple of
    /// `context`; the batch size is `inputs.len() / context`.
    pub fn sample_batch_into(
        &self,
        rng: &mut Rng,
        context: usize,
        inputs: &mut [u32],
        targets: &mut [u32],
    ) -> Result<()> {
        const OP: &str = "TokenDataset::sample_batch";
        if context == 0 {
            return Err(Error::invalid(OP, "context must be at least 1"));
        }
        if inputs.len() != targets.len()
            || !inputs.len().is_multiple_of(context)
            || inputs.is_empty()
        {
            return Err(Error::shape(
                OP,
                format!(
                    "inputs ({}) and targets ({}) must have the same nonzero length, a multiple of context {context}",
                    inputs.len(),
                    targets.len()
                ),
            ));
        }
        let train = self.train();
        check_long_enough(OP, "training", train.len(), context)?;
        let starts = train.len() - context;
        for (input_row, target_row) in inputs
            .chunks_exact_mut(context)
            .zip(targets.chunks_exact_mut(context))
        {
            let s = rng.below(starts);
            input_row.copy_from_slice(&train[s..s + context]);
            target_row.copy_from_slice(&train[s + 1..s + context + 1]);
        }
        Ok(())
    }

    /// Number of validation windows of `context` tokens: `floor((n_val - 1) / context)`.
    pub fn validation_window_count(&self, context: usize) -> Result<usize> {
        const OP: &str = "TokenDataset::validation_windows";
        if context == 0 {
            return Err(Error::invalid(OP, "context must be at least 1"));
        }
        let n_val = self.validation().len();
        check_long_enough(OP, "validation", n_val, context)?;
        Ok((n_val - 1) / context)
    }

    /// The validation windows `(inputs, targets)` in order, as described in the module
    /// documentation.
    pub fn validation_windows(
        &self,
        context: usize,
    ) -> Result<impl Iterator<Item = (&[u32], &[u32])> + '_> {
        let count = self.validation_window_count(context)?;
        let val = self.validation();
        Ok((0..count).map(move |k| {
            let start = k * context;
            (
                &val[start..start + context],
                &val[start + 1..start + context + 1],
            )
        }))
    }
}

/// A window of `context` inputs and its shifted targets need `context + 1` tokens.
fn check_long_enough(op: &'static str, split: &str, len: usize, context: usize) -> Result<()> {
    if len < context + 1 {
        return Err(Error::invalid(
            op,
            format!(
                "the {split} split has {len} tokens, fewer than one context window of {context} plus 1"
            ),
        ));
    }
    Ok(())
}
