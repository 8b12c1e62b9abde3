//! Beam search: keep the `K` most likely partial translations of each sentence, as fairseq's
//! `SequenceGenerator` does, batched over sentences × beams in one [`StepDecoder`].
//!
//! A hypothesis `y₁ … y_n` scores `Σ log p(yₜ | x, y<t)`; once finished it is ranked by
//! that sum divided by a length penalty (`n` counts the `</s>` that ends it):
//!
//! ```text
//! fairseq:  score / n^α                 (α = --lenpen, 1.0 by default; 0 = raw sum)
//! GNMT:     score / ((5 + n) / 6)^α     (Wu et al. 2016)
//! ```
//!
//! Each step takes, over a sentence's live beams, the candidates (beam, token) in order of
//! their summed score: a `</s>` among the first `K` finishes that hypothesis, and the first
//! `K` others become the next beams (the decoder's caches are reordered by their parents). A
//! sentence stops once it has `K` finished hypotheses. At the last position (`max_len`
//! tokens) the first `K` candidates finish as they are, `</s>` or not (fairseq forces `</s>`
//! there instead; cutting keeps beam 1 equal to greedy decoding, which stops the same way).
//! Nothing is masked (greedy decoding masks nothing either). The result is each sentence's
//! best finished hypothesis; ties keep the one finished first.
//!
//! ```
//! use resnorm::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
//! use resnorm::translate::beam::{beam_search, BeamOptions};
//! let config = Seq2SeqConfig { vocab: 11, width: 8, heads: 2, encoder_layers: 1, decoder_layers: 1, max_len: 6, ..Seq2SeqConfig::default() };
//! let model = Seq2Seq::new(config, 1).unwrap();
//! let (src, lengths) = ([4, 5, 6, 7, 8, 0], [3, 2]);
//! let options = BeamOptions { beams: 3, ..BeamOptions::default() };
//! let best = beam_search(&model, &src, &lengths, (1, 2), 5, &options).unwrap();
//! assert!(best.iter().all(|h| h.tokens.len() <= 5 && h.score <= 0.0));
//! ```

use std::str::FromStr;

use crate::models::seq2seq::decode::StepDecoder;
use crate::models::seq2seq::Seq2Seq;
use crate::{Error, Result};

/// The most beams a search may keep per sentence.
pub const MAX_BEAMS: usize = 128;

/// How a finished hypothesis's summed log-probability is divided by its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LengthPenalty {
    /// fairseq's `len^α`.
    #[default]
    Fairseq,
    /// GNMT's `((5 + len) / 6)^α`.
    Gnmt,
}

impl FromStr for LengthPenalty {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fairseq" => Ok(LengthPenalty::Fairseq),
            "gnmt" => Ok(LengthPenalty::Gnmt),
            _ => Err(Error::invalid(
                "LengthPenalty",
                format!("unknown length penalty {s:?} (fairseq or gnmt)"),
            )),
        }
    }
}

/// The search's settings: `beams = 1` is greedy decoding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamOptions {
    /// Hypotheses kept per sentence (`K`).
    pub beams: usize,
    /// The length penalty's exponent `α`.
    pub lenpen: f32,
    /// Which length penalty.
    pub penalty: LengthPenalty,
}

impl Default for BeamOptions {
    fn default() -> Self {
        BeamOptions {
            beams: 1,
            lenpen: 1.0,
            penalty: LengthPenalty::Fairseq,
        }
    }
}

impl BeamOptions {
    /// Refuses a beam count outside `1..=MAX_BEAMS` or a length exponent that is not finite.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_BEAMS).contains(&self.beams) {
            return Err(Error::invalid(
                "beam search",
                format!("--beam {} must be in 1..={MAX_BEAMS}", self.beams),
            ));
        }
        if !self.lenpen.is_finite() {
            return Err(Error::invalid(
                "beam search",
                format!("--lenpen {} must be a finite number", self.lenpen),
            ));
        }
        Ok(())
    }

    /// The ranking score of a hypothesis of `len` tokens whose log-probabilities sum to `sum`.
    pub fn normalize(&self, sum: f32, len: usize) -> f32 {
        let len = len.max(1) as f32;
        let base = match self.penalty {
            LengthPenalty::Fairseq => len,
            LengthPenalty::Gnmt => (5.0 + len) / 6.0,
        };
        sum / base.powf(self.lenpen)
    }
}

/// A sentence's best finished translation.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Its tokens, without `<s>` and `</s>`.
    pub tokens: Vec<u32>,
    /// Its summed log-probability divided by the length penalty.
    pub score: f32,
}

/// One way to extend a live beam.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    score: f32,
    parent: usize,
    /// Its place among the parent's tokens by logit, which breaks ties of `score`.
    rank: usize,
    token: u32,
}

/// Beam search over `src` (`[B, S]`, `src_lengths[b]` valid tokens each) from `bos`, for at
/// most `max_len` tokens; returns each sentence's best hypothesis.
pub fn beam_search(
    model: &Seq2Seq,
    src: &[u32],
    src_lengths: &[usize],
    (bos, eos): (u32, u32),
    max_len: usize,
    options: &BeamOptions,
) -> Result<Vec<Hypothesis>> {
    options.check()?;
    let (k, vocab, batch) = (options.beams, model.config().vocab, src_lengths.len());
    let mut decoder = StepDecoder::with_beams(model, src, src_lengths, k, max_len)?;
    let rows = decoder.rows();
    let per_beam = (k + 1).min(vocab);
    let mut tokens = vec![bos; rows];
    // Only beam 0 of each sentence is live at first: the others would repeat it.
    let mut scores: Vec<f32> = (0..rows)
        .map(|r| if r % k == 0 { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let (mut history, mut spare) = (vec![0u32; rows * max_len], vec![0u32; rows * max_len]);
    let mut parents: Vec<usize> = (0..rows).collect();
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(per_beam + 1);
    let mut candidates: Vec<Candidate> = Vec::with_capacity(k * per_beam);
    let mut best: Vec<Hypothesis> = (0..batch)
        .map(|_| Hypothesis {
            tokens: Vec::with_capacity(max_len),
            score: f32::NEG_INFINITY,
        })
        .collect();
    let mut finished = vec![0usize; batch];
    let mut done = vec![false; batch];
    for t in 0..max_len {
        let logits = decoder.step(&tokens)?;
        let last = t + 1 == max_len;
        for b in 0..batch {
            if done[b] {
                continue;
            }
            candidates.clear();
            for r in b * k..(b + 1) * k {
                if scores[r] == f32::NEG_INFINITY {
                    continue;
                }
                let row = &logits[r * vocab..][..vocab];
                let lse = log_sum_exp(row);
                top_tokens(row, per_beam, &mut top);
                let extended = top
                    .iter()
                    .enumerate()
                    .map(|(rank, &(logit, token))| Candidate {
                        score: scores[r] + (logit - lse),
                        parent: r,
                        rank,
                        token,
                    });
                candidates.extend(extended);
            }
            candidates.sort_unstable_by(|x, y| {
                y.score
                    .total_cmp(&x.score)
                    .then(x.parent.cmp(&y.parent))
                    .then(x.rank.cmp(&y.rank))
            });
            let mut next = b * k;
            for (rank, c) in candidates.iter().enumerate() {
                if c.token == eos || last {
                    if rank < k && finished[b] < k {
                        finished[b] += 1;
                        let score = options.normalize(c.score, t + 1);
                        if score > best[b].score {
                            let h = &mut best[b];
                            h.score = score;
                            h.tokens.clear();
                            h.tokens
                                .extend_from_slice(&history[c.parent * max_len..][..t]);
                            if c.token != eos {
                                h.tokens.push(c.token);
                            }
                        }
                    }
                } else if next < (b + 1) * k {
                    parents[next] = c.parent;
                    tokens[next] = c.token;
                    scores[next] = c.score;
                    next += 1;
                }
                if rank + 1 >= k && (last || next == (b + 1) * k) {
                    break;
                }
            }
            for r in next..(b + 1) * k {
                (parents[r], tokens[r], scores[r]) = (r, eos, f32::NEG_INFINITY);
            }
            done[b] = last || finished[b] >= k || next == b * k;
            if done[b] {
                scores[b * k..(b + 1) * k].fill(f32::NEG_INFINITY);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        for (r, row) in spare.chunks_exact_mut(max_len).enumerate() {
            row[..t].copy_from_slice(&history[parents[r] * max_len..][..t]);
            row[t] = tokens[r];
        }
        std::mem::swap(&mut history, &mut spare);
        decoder.reorder(&parents)?;
        for (r, p) in parents.iter_mut().enumerate() {
            *p = r;
        }
    }
    Ok(best)
}

/// `ln Σ exp(x)` of a row of logits.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}

/// The `n` largest logits of `row` with their tokens, largest first (ties: the lower token
/// first, so that the first is greedy decoding's choice).
fn top_tokens(row: &[f32], n: usize, top: &mut Vec<(f32, u32)>) {
    top.clear();
    for (i, &v) in row.iter().enumerate() {
        if top.len() == n && v <= top[n - 1].0 {
            continue;
        }
        let at = top.iter().position(|&(w, _)| v > w).unwrap_or(top.len());
        if top.len() == n {
            top.pop();
        }
        top.insert(at, (v, i as u32));
    }
}
