//! Scores of a classifier's predictions: accuracy, macro-F1 over the confusion matrix,
//! accuracy per group, and Pearson's r for regression.
//!
//! ```text
//! confusion[t][p] = rows of true class t predicted p
//! precision_k = C[k][k] / Σ_t C[t][k]      recall_k = C[k][k] / Σ_p C[k][p]
//! F1_k = 2·P·R / (P + R)  (0 when P + R = 0)      macro-F1 = mean over classes of F1_k
//! r = Σ (x − x̄)(y − ȳ) / √(Σ (x − x̄)² · Σ (y − ȳ)²)
//! ```
//!
//! ```
//! use resnorm::classify::{ClassMetrics, pearson};
//! let m = ClassMetrics::new(&[0, 1, 1, 0], &[0, 1, 0, 0], 2, None).unwrap();
//! assert_eq!(m.confusion, vec![vec![2, 1], vec![0, 1]]);
//! assert_eq!(m.accuracy, 0.75);
//! assert!((m.macro_f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
//! assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]).unwrap() - 0.9933992677987828).abs() < 1e-12);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Accuracy of the rows of one group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupAccuracy {
    /// Rows in the group.
    pub rows: usize,
    /// Fraction of them predicted right.
    pub accuracy: f64,
}

/// Every score of a set of class predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Fraction predicted right.
    pub accuracy: f64,
    /// Mean of the per-class F1 scores.
    pub macro_f1: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Accuracy per group, when groups were given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub per_group: Option<BTreeMap<String, GroupAccuracy>>,
}

impl ClassMetrics {
    /// The scores of `predicted` against `truth` (class ids below `classes`), and per group
    /// when `groups` names each row's group.
    pub fn new(
        predicted: &[u32],
        truth: &[u32],
        classes: usize,
        groups: Option<&[&str]>,
    ) -> Result<Self> {
        const OP: &str = "ClassMetrics::new";
        if predicted.len() != truth.len() || predicted.is_empty() {
            return Err(Error::shape(
                OP,
                format!("{} predictions for {} labels", predicted.len(), truth.len()),
            ));
        }
        if let Some(bad) = predicted
            .iter()
            .chain(truth)
            .find(|&&c| c as usize >= classes)
        {
            return Err(Error::invalid(OP, format!("class {bad} of {classes}")));
        }
        let mut confusion = vec![vec![0usize; classes]; classes];
        for (&p, &t) in predicted.iter().zip(truth) {
            confusion[t as usize][p as usize] += 1;
        }
        let right: usize = (0..classes).map(|k| confusion[k][k]).sum();
        let f1 = |k: usize| {
            let tp = confusion[k][k] as f64;
            let predicted_k: usize = confusion.iter().map(|row| row[k]).sum();
            let true_k: usize = confusion[k].iter().sum();
            let (p, r) = (tp / predicted_k.max(1) as f64, tp / true_k.max(1) as f64);
            if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            }
        };
        let macro_f1 = (0..classes).map(f1).sum::<f64>() / classes as f64;
        let per_group = match groups {
            Some(groups) if groups.len() != truth.len() => {
                return Err(Error::shape(
                    OP,
                    format!("{} groups for {} labels", groups.len(), truth.len()),
                ))
            }
            Some(groups) => {
                let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
                for ((&p, &t), g) in predicted.iter().zip(truth).zip(groups) {
                    let entry = counts.entry(g.to_string()).or_default();
                    entry.0 += 1;
                    entry.1 += (p == t) as usize;
                }
                Some(
                    counts
                        .into_iter()
                        .map(|(g, (rows, right))| {
                            let accuracy = right as f64 / rows as f64;
                            (g, GroupAccuracy { rows, accuracy })
                        })
                        .collect(),
                )
            }
            None => None,
        };
        Ok(ClassMetrics {
            accuracy: right as f64 / truth.len() as f64,
            macro_f1,
            confusion,
            per_group,
        })
    }
}

/// Pearson's correlation of `x` and `y`; `None` when they differ in length, have fewer
/// than two values, or one of them is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_classes_by_hand() {
        // truth 0 0 0 1 1 2 2 2 2, predicted 0 1 0 1 2 2 2 0 2
        let truth = [0, 0, 0, 1, 1, 2, 2, 2, 2];
        let predicted = [0, 1, 0, 1, 2, 2, 2, 0, 2];
        let groups = ["a", "a", "b", "b", "b", "a", "a", "b", "b"];
        let m = ClassMetrics::new(&predicted, &truth, 3, Some(&groups)).unwrap();
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 3]]
        );
        assert_eq!(m.accuracy, 6.0 / 9.0);
        // class 0: P 2/3 R 2/3 F 2/3; class 1: P 1/2 R 1/2 F 1/2; class 2: P 3/4 R 3/4 F 3/4
        let expected = (2.0 / 3.0 + 0.5 + 0.75) / 3.0;
        assert!((m.macro_f1 - expected).abs() < 1e-12);
        let groups = m.per_group.unwrap();
        assert_eq!(
            groups["a"],
            GroupAccuracy {
                rows: 4,
                accuracy: 0.75
            }
        );
        assert_eq!(
            groups["b"],
            GroupAccuracy {
                rows: 5,
                accuracy: 0.6
            }
        );
    }

    #[test]
    fn a_class_never_predicted_scores_zero_f1() {
        let m = ClassMetrics::new(&[0, 0, 0], &[0, 0, 1], 2, None).unwrap();
        assert!((m.macro_f1 - 0.4).abs() < 1e-12); // class 0: P 2/3 R 1 F 0.8; class 1: 0
        assert!(ClassMetrics::new(&[0, 2], &[0, 1], 2, None).is_err());
    }

    #[test]
    fn pearson_by_hand_and_degenerate_inputs() {
        assert!(
            (pearson(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12
        );
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
    }
}
