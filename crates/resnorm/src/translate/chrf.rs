//! Corpus chrF exactly as sacreBLEU 2.6 computes it by default (`CHRF()`: character
//! n-grams up to 6, β = 2, no word n-grams, whitespace removed).
//!
//! Each line loses all its whitespace; for n = 1..6 its character n-grams are counted, and
//! over the corpus, per order: hypothesis n-grams (counted only where the reference has
//! n-grams of that order), reference n-grams, and clipped matches. Then, over the orders
//! where both sides have n-grams (the effective order, sacreBLEU's rule since 2.0):
//!
//! ```text
//! P = mean_n (matches_n / hyp_n)      R = mean_n (matches_n / ref_n)
//! chrF = 100 · (1 + β²) · P · R / (β² · P + R)          0 if P + R = 0
//! ```
//!
//! ```
//! use resnorm::translate::corpus_chrf;
//! assert_eq!(corpus_chrf(&["la casa"], &["la casa"]).unwrap(), 100.0);
//! let chrf = corpus_chrf(&["¿Dónde está?"], &["¿Dónde estaba?"]).unwrap();
//! assert!((chrf - 64.6212).abs() < 1e-3);
//! ```

use std::collections::HashMap;

use super::tokenize_13a::is_python_space;
use crate::{Error, Result};

/// The largest character n-gram chrF counts.
pub const CHRF_CHAR_ORDER: usize = 6;

/// chrF's β: recall weighs β times as much as precision.
pub const CHRF_BETA: f64 = 2.0;

/// sacreBLEU's corpus chrF (0..=100) of `hyps` against one reference each; see the module
/// documentation.
pub fn corpus_chrf<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Result<f64> {
    if hyps.len() != refs.len() {
        return Err(Error::invalid(
            "corpus_chrf",
            format!(
                "{} hypotheses but {} references (one each)",
                hyps.len(),
                refs.len()
            ),
        ));
    }
    // Per order: hypothesis n-grams, reference n-grams, matches.
    let mut stats = [[0u64; 3]; CHRF_CHAR_ORDER];
    for (hyp, reference) in hyps.iter().zip(refs) {
        let hyp: Vec<char> = hyp
            .as_ref()
            .chars()
            .filter(|&c| !is_python_space(c))
            .collect();
        let reference: Vec<char> = reference
            .as_ref()
            .chars()
            .filter(|&c| !is_python_space(c))
            .collect();
        for (n, order) in stats.iter_mut().enumerate() {
            let ref_ngrams = ngram_counts(&reference, n + 1);
            let hyp_ngrams = ngram_counts(&hyp, n + 1);
            let mut hyp_count = 0;
            for (ngram, count) in hyp_ngrams {
                hyp_count += count;
                order[2] += count.min(ref_ngrams.get(ngram).copied().unwrap_or(0));
            }
            if !ref_ngrams.is_empty() {
                order[0] += hyp_count;
            }
            order[1] += ref_ngrams.values().sum::<u64>();
        }
    }
    Ok(f_score(&stats))
}

/// The character n-grams of order `n` of `chars` with their counts.
fn ngram_counts(chars: &[char], n: usize) -> HashMap<&[char], u64> {
    let mut counts = HashMap::new();
    if chars.len() >= n {
        for ngram in chars.windows(n) {
            *counts.entry(ngram).or_insert(0) += 1;
        }
    }
    counts
}

/// sacreBLEU's `_compute_f_score` without epsilon smoothing.
fn f_score(stats: &[[u64; 3]; CHRF_CHAR_ORDER]) -> f64 {
    let factor = CHRF_BETA * CHRF_BETA;
    let (mut avg_prec, mut avg_rec, mut effective_order) = (0.0f64, 0.0f64, 0usize);
    for &[n_hyp, n_ref, n_match] in stats {
        if n_hyp > 0 && n_ref > 0 {
            avg_prec += n_match as f64 / n_hyp as f64;
            avg_rec += n_match as f64 / n_ref as f64;
            effective_order += 1;
        }
    }
    if effective_order == 0 {
        return 0.0;
    }
    avg_prec /= effective_order as f64;
    avg_rec /= effective_order as f64;
    if avg_prec + avg_rec == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)
}
