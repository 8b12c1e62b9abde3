//! Validation loss of a model: the mean next-token cross-entropy over the validation windows.
//!
//! The windows are [`TokenDataset::validation_windows`]: of the validation split (the last
//! 10 % of the tokens) the consecutive, non-overlapping windows of `context` tokens (the
//! run's training windows, at most the model's context),
//! `floor((n_val - 1) / context)` of them, each predicting the tokens shifted by one; the
//! tail after the last full window is not used. The loss is the mean over every position of
//! every window (in nats per token), accumulated in `f64`; perplexity is `exp(loss)`.
//! Windows are run `batch` at a time.
//!
//! A quick estimate during training may score only `max` of the `n` windows: window
//! `⌊i·n / max⌋` for `i < max`, spread evenly over the split (the first `max` windows would
//! be one stretch of the text, a biased estimate of the whole).
//!
//! [`evaluate_shared`] splits the scored windows over the ranks of a [`Communicator`] in
//! contiguous shares, and adds up the loss sums: the same windows as one process.
//!
//! ```
//! use resnorm::data::text::TokenDataset;
//! use resnorm::models::gpt::{Gpt, GptConfig};
//! use resnorm::models::CausalLm;
//! use resnorm::lm::evaluate;
//! let tokens: Vec<u32> = (0..400).map(|i| i % 5).collect();
//! let data = TokenDataset::new(tokens, 5, 0.1).unwrap(); // 40 validation tokens
//! let config = GptConfig { layers: 1, heads: 1, width: 8, context: 8, vocab: 5, ..GptConfig::default() };
//! let mut model = CausalLm::Gpt(Gpt::new(config, 0).unwrap());
//! let eval = evaluate(&mut model, &data, 8, 3, None).unwrap();
//! assert_eq!(eval.tokens, 4 * 8); // floor(39 / 8) windows
//! assert!((eval.loss - 5f64.ln()).abs() < 0.1); // an untrained model is about uniform
//! assert!((eval.perplexity() - eval.loss.exp()).abs() < 1e-12);
//! ```

use crate::data::text::TokenDataset;
use crate::distributed::Communicator;
use crate::models::CausalLm;
use crate::{Error, Result};

/// The result of [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy per token, in nats.
    pub loss: f64,
    /// Tokens scored (windows × context).
    pub tokens: usize,
}

impl Evaluation {
    /// `exp(loss)`.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }

    /// The loss in bits per token (bits per character for character and byte tokens of
    /// ASCII text).
    pub fn bits_per_token(&self) -> f64 {
        self.loss / std::f64::consts::LN_2
    }
}

/// The validation loss of `model` on `max_windows` validation windows of `context` tokens of
/// `data` spread evenly over the split (all of them when `None`), `batch` windows per
/// forward pass.
pub fn evaluate(
    model: &mut CausalLm,
    data: &TokenDataset,
    context: usize,
    batch: usize,
    max_windows: Option<usize>,
) -> Result<Evaluation> {
    let scored = Scored::new(model, data, context, batch, max_windows)?;
    let loss_sum = crate::threads::busy(|| scored.loss_sum(model, data.validation()))?;
    Ok(scored.evaluation(loss_sum))
}

/// [`evaluate`] on the ranks of `comm` (collective): rank `r` of `N` scores the windows
/// `r·n/N .. (r+1)·n/N` of the `n` scored ones, `batch` at a time.
pub fn evaluate_shared(
    model: &mut CausalLm,
    data: &TokenDataset,
    context: usize,
    batch: usize,
    max_windows: Option<usize>,
    comm: &mut dyn Communicator,
) -> Result<Evaluation> {
    let mut scored = Scored::new(model, data, context, batch, max_windows)?;
    let (rank, ranks) = (comm.rank(), comm.size());
    scored.first = rank * scored.windows / ranks;
    scored.end = (rank + 1) * scored.windows / ranks;
    let mut loss_sum = [crate::threads::busy(|| {
        scored.loss_sum(model, data.validation())
    })?];
    comm.sum_f64(&mut loss_sum)?;
    Ok(scored.evaluation(loss_sum[0]))
}

/// Which validation windows [`evaluate`] scores, and how many at a time.
#[derive(Clone, Copy)]
struct Scored {
    /// Windows scored: window `⌊i·available / windows⌋` for `i < windows`.
    windows: usize,
    /// Windows in the split.
    available: usize,
    /// Tokens per window.
    context: usize,
    /// Windows per forward pass.
    batch: usize,
    /// The share of `0 .. windows` this process scores.
    first: usize,
    end: usize,
}

impl Scored {
    /// Checks the arguments of [`evaluate`]; every scored window in this process's share.
    fn new(
        model: &CausalLm,
        data: &TokenDataset,
        context: usize,
        batch: usize,
        max_windows: Option<usize>,
    ) -> Result<Self> {
        const OP: &str = "evaluate";
        if batch == 0 {
            return Err(Error::invalid(OP, "batch must be at least 1"));
        }
        if context == 0 || context > model.context() {
            return Err(Error::invalid(
                OP,
                format!(
                    "windows of {context} tokens do not fit the model's context of {}",
                    model.context()
                ),
            ));
        }
        if data.vocab_size() > model.vocab() {
            return Err(Error::invalid(
                OP,
                format!(
                    "the data's vocabulary of {} ids is larger than the model's {}",
                    data.vocab_size(),
                    model.vocab()
                ),
            ));
        }
        let available = data.validation_window_count(context)?;
        let windows = max_windows.map_or(available, |m| m.min(available));
        if windows == 0 {
            return Err(Error::invalid(OP, "no validation windows to evaluate"));
        }
        Ok(Scored {
            windows,
            available,
            context,
            batch,
            first: 0,
            end: windows,
        })
    }

    /// The mean loss from the sum over every scored window.
    fn evaluation(self, loss_sum: f64) -> Evaluation {
        Evaluation {
            loss: loss_sum / self.windows as f64,
            tokens: self.windows * self.context,
        }
    }

    /// `Σ` over this share of the scored windows of their mean loss, in `f64`.
    fn loss_sum(self, model: &mut CausalLm, val: &[u32]) -> Result<f64> {
        let context = self.context;
        let mut inputs = Vec::with_capacity(self.batch * context);
        let mut targets = Vec::with_capacity(self.batch * context);
        let mut loss_sum = 0.0f64;
        let mut first = self.first;
        while first < self.end {
            let rows = self.batch.min(self.end - first);
            inputs.clear();
            targets.clear();
            for i in first..first + rows {
                let start = i * self.available / self.windows * context;
                inputs.extend_from_slice(&val[start..start + context]);
                targets.extend_from_slice(&val[start + 1..start + context + 1]);
            }
            let loss = model
                .forward(&inputs, rows, Some(&targets))?
                .ok_or_else(|| Error::invalid("evaluate", "the model returned no loss"))?;
            loss_sum += loss as f64 * rows as f64;
            first += rows;
        }
        Ok(loss_sum)
    }
}
