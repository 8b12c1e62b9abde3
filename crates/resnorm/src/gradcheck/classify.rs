//! The classifier's pooling, head and losses against an `f64` reference, by finite
//! differences: the gradients of the head's weight and bias and of the body's hidden states
//! (which the pooling must leave at zero on the pads), for both poolings, cross-entropy over
//! three classes and mean-squared error.
//!
//! ```text
//! L(h, W, b) = mean_b loss(pool(h_b, n_b) · W + b, target_b)      (h from a tiny GPT)
//! ```
//!
//! ```
//! use resnorm::gradcheck::classify::checks;
//! assert!(checks().iter().all(|r| r.passed));
//! ```

use super::gpt::{randomize, tiny_config};
use super::{compare, numeric_gradient, CheckResult};
use crate::classify::{Classifier, ClassifierBody, Pooling, Task};
use crate::kernels::NormKind;
use crate::models::gpt::{Gpt, Placement};
use crate::rng::Rng;

const TOLERANCE: f64 = 2e-4;
const STEP: f64 = 1e-5;

/// What the reference needs besides the values it is differentiated in.
pub(super) struct Case {
    pub(super) pooling: Pooling,
    pub(super) regression: bool,
    /// Positions pooled per row (a [CLS] token counts).
    pub(super) lengths: Vec<usize>,
    pub(super) seq: usize,
    pub(super) width: usize,
    pub(super) outputs: usize,
    pub(super) labels: Vec<u32>,
    pub(super) scores: Vec<f32>,
}

/// The mean loss in `f64` straight from the definitions.
pub(super) fn reference_loss(case: &Case, h: &[f64], w: &[f64], b: &[f64]) -> f64 {
    let (c, k) = (case.width, case.outputs);
    let mut total = 0.0;
    for (row, &n) in case.lengths.iter().enumerate() {
        let at = |t: usize, j: usize| h[(row * case.seq + t) * c + j];
        let pooled: Vec<f64> = (0..c)
            .map(|j| match case.pooling {
                Pooling::Cls => at(0, j),
                Pooling::Last => at(n - 1, j),
                Pooling::Mean => (0..n).map(|t| at(t, j)).sum::<f64>() / n as f64,
            })
            .collect();
        let y: Vec<f64> = (0..k)
            .map(|o| b[o] + (0..c).map(|j| pooled[j] * w[j * k + o]).sum::<f64>())
            .collect();
        total += if case.regression {
            (y[0] - case.scores[row] as f64).powi(2)
        } else {
            let max = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + y.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - y[case.labels[row] as usize]
        };
    }
    total / case.lengths.len() as f64
}

fn check(pooling: Pooling, regression: bool) -> Vec<CheckResult> {
    let config = tiny_config(Placement::PreLn, NormKind::Layer);
    let mut rng = Rng::new(5);
    let mut gpt = Gpt::new(config.clone(), 3).expect("the tiny config is valid");
    randomize(&mut gpt, &mut rng);
    let task = match regression {
        true => Task::Regression,
        false => Task::Classes(vec!["a".into(), "b".into(), "c".into()]),
    };
    let mut model = Classifier::new(ClassifierBody::Gpt(gpt), &task, pooling, false, 9)
        .expect("a valid classifier");
    model
        .head
        .visit_params_mut(&mut |p| rng.fill_normal(&mut p.value, 0.0, 0.5));
    let (seq, lengths) = (4, vec![4, 2, 1]);
    let tokens: Vec<u32> = (0..seq * lengths.len())
        .map(|_| rng.below(config.vocab) as u32)
        .collect();
    let case = Case {
        pooling,
        regression,
        lengths,
        seq,
        width: config.width,
        outputs: task.outputs(),
        labels: vec![2, 0, 1],
        scores: vec![0.5, -1.0, 2.0],
    };
    model
        .forward(&tokens, &case.lengths)
        .expect("a valid batch");
    model
        .loss(&case.labels, &case.scores)
        .expect("one target per row");
    model.zero_grad();
    model.backward().expect("after a loss");
    let ClassifierBody::Gpt(gpt) = &mut model.body else {
        unreachable!("the body was built as a GPT above")
    };
    let h: Vec<f64> = (gpt
        .forward_hidden(&tokens, case.lengths.len())
        .expect("a valid batch"))
    .iter()
    .map(|&v| v as f64)
    .collect();
    let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let w = to64(&model.head.weight.value);
    let b = to64(&model.head.bias.as_ref().expect("the head has a bias").value);
    let name = |what: &str| {
        let loss = if regression { "mse" } else { "cross-entropy" };
        format!("classifier {pooling} pooling {loss} {what}")
    };
    let dh = numeric_gradient(|v| reference_loss(&case, v, &w, &b), &h, STEP);
    let dw = numeric_gradient(|v| reference_loss(&case, &h, v, &b), &w, STEP);
    let db = numeric_gradient(|v| reference_loss(&case, &h, &w, v), &b, STEP);
    let bias_grad = &model.head.bias.as_ref().expect("the head has a bias").grad;
    vec![
        compare(&name("d hidden"), model.hidden_grad(), &dh, TOLERANCE),
        compare(
            &name("d head.weight"),
            &model.head.weight.grad,
            &dw,
            TOLERANCE,
        ),
        compare(&name("d head.bias"), bias_grad, &db, TOLERANCE),
    ]
}

/// Every check: both poolings, classes and regression.
pub fn checks() -> Vec<CheckResult> {
    let mut out = Vec::new();
    for pooling in [Pooling::Last, Pooling::Mean] {
        for regression in [false, true] {
            out.extend(check(pooling, regression));
        }
    }
    out
}
