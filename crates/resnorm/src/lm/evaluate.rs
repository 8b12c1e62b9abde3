//! Validation loss of a model: the mean next-token cross-entropy over the validation windows.
//!
//! The windows are [`TokenDataset::validation_windows`]: of the validation split (the last
//! 10 % of the tokens) the consecutive, non-overlapping windows of `context` tokens,
//! `floor((n_val - 1) / context)` of them, each predicting the tokens shifted by one; the
//! tail after the last full window is not used. The loss is the mean over every position of
//! every window (in nats per token), accumulated in `f64`; perplexity is `exp(loss)`.
//! Windows are run `batch` at a time.
//!
//! A quick estimate during training may score only `max` of the `n` windows: window
//! `⌊i·n / max⌋` for `i < max`, spread evenly over the split (the first `max` windows would
//! be one stretch of the text, a biased estimate of the whole).
//!
//! ```
//! use resnorm::data::text::TokenDataset;
//! use resnorm::models::gpt::{Gpt, GptConfig};
//! use resnorm::lm::evaluate;
//! let tokens: Vec<u32> = (0..400).map(|i| i % 5).collect();
//! let data = TokenDataset::new(tokens, 5, 0.1).unwrap(); // 40 validation tokens
//! let config = GptConfig { layers: 1, heads: 1, width: 8, context: 8, vocab: 5, ..GptConfig::default() };
//! let mut model = Gpt::new(config, 0).unwrap();
//! let eval = evaluate(&mut model, &data, 3, None).unwrap();
//! assert_eq!(eval.tokens, 4 * 8); // floor(39 / 8) windows
//! assert!((eval.loss - 5f64.ln()).abs() < 0.1); // an untrained model is about uniform
//! assert!((eval.perplexity() - eval.loss.exp()).abs() < 1e-12);
//! ```

use crate::data::text::TokenDataset;
use crate::models::gpt::Gpt;
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

/// The validation loss of `model` on `max_windows` validation windows of `data` spread evenly
/// over the split (all of them when `None`), `batch` windows per forward pass.
pub fn evaluate(
    model: &mut Gpt,
    data: &TokenDataset,
    batch: usize,
    max_windows: Option<usize>,
) -> Result<Evaluation> {
    const OP: &str = "evaluate";
    if batch == 0 {
        return Err(Error::invalid(OP, "batch must be at least 1"));
    }
    if data.vocab_size() > model.config().vocab {
        return Err(Error::invalid(
            OP,
            format!(
                "the data's vocabulary of {} ids is larger than the model's {}",
                data.vocab_size(),
                model.config().vocab
            ),
        ));
    }
    let context = model.config().context;
    let available = data.validation_window_count(context)?;
    let windows = max_windows.map_or(available, |m| m.min(available));
    if windows == 0 {
        return Err(Error::invalid(OP, "no validation windows to evaluate"));
    }
    let scored = Scored {
        windows,
        available,
        batch,
    };
    let loss_sum = crate::threads::busy(|| scored.loss_sum(model, data.validation()))?;
    Ok(Evaluation {
        loss: loss_sum / windows as f64,
        tokens: windows * context,
    })
}

/// Which validation windows [`evaluate`] scores, and how many at a time.
#[derive(Clone, Copy)]
struct Scored {
    /// Windows scored: window `⌊i·available / windows⌋` for `i < windows`.
    windows: usize,
    /// Windows in the split.
    available: usize,
    /// Windows per forward pass.
    batch: usize,
}

impl Scored {
    /// `Σ` over the scored windows of their mean loss, in `f64`.
    fn loss_sum(self, model: &mut Gpt, val: &[u32]) -> Result<f64> {
        let context = model.config().context;
        let mut inputs = Vec::with_capacity(self.batch * context);
        let mut targets = Vec::with_capacity(self.batch * context);
        let mut loss_sum = 0.0f64;
        let mut first = 0;
        while first < self.windows {
            let rows = self.batch.min(self.windows - first);
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
