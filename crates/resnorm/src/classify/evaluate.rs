//! A classifier's outputs over many sentences, and their scores against the labels.
//!
//! Sentences go through in batches of the training batch size, the last one filled up with
//! copies of its first row (so the model's buffers keep their shape); only the real rows'
//! outputs are kept. Classes: the loss is the mean cross-entropy, the prediction the
//! largest logit (the first on ties) with its softmax probability. Regression: the loss is
//! the mean squared error, and Pearson's r compares the predicted and true scores.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

use super::batch::fill_batch;
use super::data::{Example, Task};
use super::metrics::{pearson, ClassMetrics};
use super::model::Classifier;

/// The outputs `[rows, K]` of `model` for the sentences `indices` of `encoded`.
pub fn outputs(
    model: &mut Classifier,
    encoded: &[Vec<u32>],
    indices: &[usize],
    batch: usize,
) -> Result<Vec<f32>> {
    if indices.is_empty() || batch == 0 {
        return Err(Error::invalid(
            "classify::outputs",
            "no sentences, or a batch of 0",
        ));
    }
    let k = model.outputs();
    let seq = model.body.context();
    let mut out = Vec::with_capacity(indices.len() * k);
    let (mut tokens, mut lengths) = (Vec::new(), Vec::new());
    let mut rows = Vec::with_capacity(batch);
    crate::threads::busy(|| {
        for chunk in indices.chunks(batch) {
            rows.clear();
            rows.extend_from_slice(chunk);
            rows.resize(batch, chunk[0]);
            fill_batch(encoded, &rows, seq, &mut tokens, &mut lengths);
            let logits = model.forward(&tokens, &lengths)?;
            out.extend_from_slice(&logits[..chunk.len() * k]);
        }
        Ok::<(), Error>(())
    })?;
    Ok(out)
}

/// The predicted class of each row of `logits [rows, K]` and its softmax probability.
pub fn predicted_classes(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    logits
        .chunks_exact(k)
        .map(|row| {
            let best = (0..k).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            let sum: f32 = row.iter().map(|v| (v - row[best]).exp()).sum();
            (best as u32, 1.0 / sum)
        })
        .collect()
}

/// Everything `resnorm classify eval` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Sentences scored.
    pub rows: usize,
    /// Mean cross-entropy, or mean squared error for regression.
    pub loss: f64,
    /// The class scores (classification).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassMetrics>,
    /// Pearson's r of predicted and true scores (regression).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pearson: Option<f64>,
}

/// Scores the outputs of [`outputs`] for `rows` of `examples`; per group when
/// `with_groups` and the rows carry groups.
pub fn score(
    logits: &[f32],
    examples: &[Example],
    rows: &[usize],
    task: &Task,
    with_groups: bool,
) -> Result<EvalReport> {
    let n = rows.len();
    match task {
        Task::Classes(names) => {
            let k = names.len();
            let truth: Vec<u32> = rows.iter().map(|&i| examples[i].label).collect();
            let mut loss = 0.0f64;
            for (row, &t) in logits.chunks_exact(k).zip(&truth) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let lse = max as f64
                    + row
                        .iter()
                        .map(|v| ((v - max) as f64).exp())
                        .sum::<f64>()
                        .ln();
                loss += lse - row[t as usize] as f64;
            }
            let predicted: Vec<u32> = predicted_classes(logits, k).iter().map(|p| p.0).collect();
            let groups: Option<Vec<&str>> = with_groups
                .then(|| rows.iter().map(|&i| examples[i].group.as_deref()).collect())
                .flatten();
            let metrics = ClassMetrics::new(&predicted, &truth, k, groups.as_deref())?;
            Ok(EvalReport {
                rows: n,
                loss: loss / n as f64,
                classes: Some(metrics),
                pearson: None,
            })
        }
        Task::Regression => {
            let truth: Vec<f64> = rows.iter().map(|&i| examples[i].score as f64).collect();
            let predicted: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
            let mse = predicted
                .iter()
                .zip(&truth)
                .map(|(p, t)| (p - t) * (p - t))
                .sum::<f64>()
                / n as f64;
            Ok(EvalReport {
                rows: n,
                loss: mse,
                classes: None,
                pearson: pearson(&predicted, &truth),
            })
        }
    }
}
