//! Corpus BLEU exactly as sacreBLEU 2.6 computes it by default.
//!
//! Both sides are cut with [`tokenize_13a`] (hypotheses after trailing whitespace is
//! removed). Summed over the corpus, with one reference per hypothesis:
//!
//! ```text
//! p_n  = matches_n / total_n          clipped matches of hypothesis n-grams, n = 1..4
//! p_n  = 1 / (2^k · total_n)          when matches_n = 0, k counting such orders ('exp')
//! BP   = min(1, exp(1 - r / c))       c, r: hypothesis and reference words; BP = 0 if c = 0
//! BLEU = 100 · BP · exp(¼ Σ ln p_n)
//! ```
//!
//! As sacreBLEU: no match at all gives 0; an order without any hypothesis n-gram (every
//! hypothesis shorter than n words) stops the precisions there and the missing ones count
//! as `ln 0 = -9999999999`, so the score is 0 (no effective-order rescue at corpus level).
//!
//! ```
//! use resnorm::translate::corpus_bleu;
//! let bleu = corpus_bleu(&["the cat sat on the mat"], &["the cat sat on the mat"]).unwrap();
//! assert!((bleu.score - 100.0).abs() < 1e-9); // exp(mean ln 100), as sacreBLEU
//! let bleu = corpus_bleu(&["the cat sat on a mat"], &["the cat sat on the mat"]).unwrap();
//! assert!((bleu.score - 53.7285).abs() < 1e-3);
//! assert_eq!(bleu.counts, [5, 3, 2, 1]);
//! ```

use std::collections::HashMap;

use super::tokenize_13a::{is_python_space, tokenize_13a};
use crate::{Error, Result};

/// The largest n-gram BLEU counts.
pub const BLEU_MAX_ORDER: usize = 4;

/// A corpus BLEU score and the statistics it was computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Bleu {
    /// The score, 0..=100.
    pub score: f64,
    /// Clipped n-gram matches per order (1-grams first).
    pub counts: [u64; BLEU_MAX_ORDER],
    /// Hypothesis n-grams per order.
    pub totals: [u64; BLEU_MAX_ORDER],
    /// The n-gram precisions in percent, smoothed as above.
    pub precisions: [f64; BLEU_MAX_ORDER],
    /// The brevity penalty.
    pub bp: f64,
    /// Hypothesis words.
    pub sys_len: u64,
    /// Reference words.
    pub ref_len: u64,
}

/// sacreBLEU's corpus BLEU of `hyps` against one reference each; see the module documentation.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[R]) -> Result<Bleu> {
    if hyps.len() != refs.len() {
        return Err(Error::invalid(
            "corpus_bleu",
            format!(
                "{} hypotheses but {} references (one each)",
                hyps.len(),
                refs.len()
            ),
        ));
    }
    let mut counts = [0u64; BLEU_MAX_ORDER];
    let mut totals = [0u64; BLEU_MAX_ORDER];
    let (mut sys_len, mut ref_len) = (0u64, 0u64);
    for (hyp, reference) in hyps.iter().zip(refs) {
        let hyp = preprocess(hyp.as_ref());
        let reference = preprocess(reference.as_ref());
        let hyp: Vec<&str> = hyp.split(' ').filter(|w| !w.is_empty()).collect();
        let reference: Vec<&str> = reference.split(' ').filter(|w| !w.is_empty()).collect();
        sys_len += hyp.len() as u64;
        ref_len += reference.len() as u64;
        let ref_ngrams = ngram_counts(&reference);
        for (ngram, count) in ngram_counts(&hyp) {
            let n = ngram.len() - 1;
            totals[n] += count;
            counts[n] += count.min(ref_ngrams.get(ngram).copied().unwrap_or(0));
        }
    }
    Ok(score(counts, totals, sys_len, ref_len))
}

/// sacreBLEU's `_preprocess_segment`: strip trailing whitespace, then 13a.
fn preprocess(line: &str) -> String {
    tokenize_13a(line.trim_end_matches(is_python_space))
}

/// Every n-gram of orders 1..=4 of `words` with its count.
fn ngram_counts<'a>(words: &'a [&'a str]) -> HashMap<&'a [&'a str], u64> {
    let mut counts = HashMap::new();
    for n in 1..=BLEU_MAX_ORDER.min(words.len()) {
        for ngram in words.windows(n) {
            *counts.entry(ngram).or_insert(0) += 1;
        }
    }
    counts
}

/// sacreBLEU's `compute_bleu` with 'exp' smoothing and no effective order.
fn score(
    counts: [u64; BLEU_MAX_ORDER],
    totals: [u64; BLEU_MAX_ORDER],
    sys_len: u64,
    ref_len: u64,
) -> Bleu {
    let bp = if sys_len >= ref_len {
        1.0
    } else if sys_len > 0 {
        (1.0 - ref_len as f64 / sys_len as f64).exp()
    } else {
        0.0
    };
    let mut precisions = [0.0; BLEU_MAX_ORDER];
    let mut bleu = Bleu {
        score: 0.0,
        counts,
        totals,
        precisions,
        bp,
        sys_len,
        ref_len,
    };
    if counts.iter().all(|&c| c == 0) {
        return bleu;
    }
    let mut smooth = 1.0f64;
    for n in 0..BLEU_MAX_ORDER {
        if totals[n] == 0 {
            break;
        }
        precisions[n] = if counts[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * totals[n] as f64)
        } else {
            100.0 * counts[n] as f64 / totals[n] as f64
        };
    }
    let log_sum: f64 = precisions
        .iter()
        .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
        .sum();
    bleu.score = bp * (log_sum / BLEU_MAX_ORDER as f64).exp();
    bleu.precisions = precisions;
    bleu
}
