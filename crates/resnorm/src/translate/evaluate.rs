//! Judging a translation model: the validation loss (teacher forcing), greedy or beam
//! decoding, and corpus BLEU and chrF of the decoded text against the references.
//!
//! Greedy decoding feeds the decoder `<s>` and then its own most likely token, until `</s>`
//! or `max_len_a·S + max_len_b = 2·S + 10` tokens (at most the model's `max_len`), where `S`
//! is the batch's longest source (with its `</s>`), as fairseq's `--max-len-a/b` count:
//!
//! ```text
//! y₀ = <s>;   yₜ = argmax_v logits(x, y₀ … yₜ₋₁)[v]
//! ```
//!
//! Beam search ([`super::beam`]) keeps `K` hypotheses per sentence under the same limit.
//! [`decode`] is the one place decoding happens: it batches the sentences by length and runs
//! [`crate::models::seq2seq::decode::greedy`] (`K = 1`) or [`beam_search`], which encode each
//! batch once, compute the cross-attention keys and values once, and step the decoder with a
//! key/value cache.
//!
//! ```
//! use resnorm::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
//! use resnorm::translate::beam::BeamOptions;
//! use resnorm::translate::evaluate::decode;
//! use resnorm::translate::EOS;
//! let config = Seq2SeqConfig { vocab: 12, width: 8, heads: 2, encoder_layers: 1, decoder_layers: 1, max_len: 8, ..Seq2SeqConfig::default() };
//! let model = Seq2Seq::new(config, 1).unwrap();
//! let beam = BeamOptions { beams: 4, ..BeamOptions::default() };
//! for options in [BeamOptions::default(), beam] {
//!     let out = decode(&model, &[vec![5, 6, EOS], vec![7, EOS]], 64, &options).unwrap();
//!     assert_eq!(out.len(), 2);
//!     assert!(out.iter().all(|ids| ids.len() <= 8 && !ids.contains(&EOS)));
//! }
//! ```

use crate::models::seq2seq::decode::greedy;
use crate::models::seq2seq::Seq2Seq;
use crate::{Error, Result};

use super::beam::{beam_search, BeamOptions};

use super::data::{encode_corpus, PaddedBatch};
use super::{corpus_bleu, corpus_chrf, Bpe, EncodedPair, ParallelCorpus, TokenBatches};
use super::{BOS, EOS, PAD};

/// Scores of a model on a parallel corpus.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy per target token (nats), teacher forced.
    pub loss: f64,
    /// sacreBLEU's corpus BLEU of the greedy translations.
    pub bleu: f64,
    /// sacreBLEU's chrF of the same translations.
    pub chrf: f64,
    /// Sentences translated for BLEU and chrF.
    pub sentences: usize,
    /// Beams of the search (1: greedy).
    pub beams: usize,
}

/// Mean cross-entropy per target token of `pairs`, batched under `max_tokens` (pairs longer
/// than the model's `max_len` are left out).
pub fn validation_loss(
    model: &mut Seq2Seq,
    pairs: &[EncodedPair],
    max_tokens: usize,
) -> Result<f64> {
    let max_len = model.config().max_len;
    let batches = TokenBatches::new(pairs, max_tokens.max(max_len), max_len, 0)?;
    let (mut sum, mut tokens) = (0.0f64, 0usize);
    let mut padded = PaddedBatch::default();
    for b in 0..batches.len() {
        padded.fill(pairs, batches.batch(b));
        let loss = model
            .forward(&padded.as_batch())?
            .ok_or_else(|| Error::invalid("validation_loss", "the model returned no loss"))?;
        let n = padded.target_tokens();
        sum += f64::from(loss) * n as f64;
        tokens += n;
    }
    if tokens == 0 {
        return Err(Error::invalid(
            "validation_loss",
            format!("no pair fits in the model's max_len of {max_len} ids"),
        ));
    }
    Ok(sum / tokens as f64)
}

/// Translations of `sources` (ids ending in `</s>`), without `<s>` and `</s>`, in the order
/// given, greedy or by beam search as `options` say; sentences are batched under
/// `max_tokens` source tokens. Sources longer than the model's `max_len` are cut to it.
pub fn decode(
    model: &Seq2Seq,
    sources: &[Vec<u32>],
    max_tokens: usize,
    options: &BeamOptions,
) -> Result<Vec<Vec<u32>>> {
    options.check()?;
    let max_len = model.config().max_len;
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| sources[i].len());
    let mut outputs = vec![Vec::new(); sources.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len()
            && (end + 1 - start) * sources[order[end]].len().min(max_len) <= max_tokens
        {
            end += 1;
        }
        let group = &order[start..end];
        let s = sources[group[group.len() - 1]].len().clamp(1, max_len);
        let b = group.len();
        let mut src = vec![PAD; b * s];
        let mut src_lengths = Vec::with_capacity(b);
        for (row, &i) in src.chunks_exact_mut(s).zip(group) {
            let n = sources[i].len().min(s);
            row[..n].copy_from_slice(&sources[i][..n]);
            src_lengths.push(n.max(1));
        }
        let limit = (2 * s + 10).min(max_len);
        let translations = match options.beams {
            1 => greedy(model, &src, &src_lengths, (BOS, EOS), limit)?,
            _ => beam_search(model, &src, &src_lengths, (BOS, EOS), limit, options)?
                .into_iter()
                .map(|h| h.tokens)
                .collect(),
        };
        for (ids, &i) in translations.into_iter().zip(group) {
            outputs[i] = ids;
        }
        start = end;
    }
    Ok(outputs)
}

/// Translations of `lines` as text.
pub fn translate_lines<S: AsRef<str>>(
    model: &Seq2Seq,
    bpe: &Bpe,
    lines: &[S],
    max_tokens: usize,
    options: &BeamOptions,
) -> Result<Vec<String>> {
    let sources = lines
        .iter()
        .map(|line| {
            let mut ids = bpe.encode(line.as_ref())?;
            ids.push(EOS);
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    decode(model, &sources, max_tokens, options)?
        .iter()
        .map(|ids| bpe.decode(ids))
        .collect()
}

/// The loss on every pair of `corpus`, and BLEU and chrF of the greedy translations of its
/// first `sentences` pairs (all when `None`).
pub fn evaluate(
    model: &mut Seq2Seq,
    bpe: &Bpe,
    corpus: &ParallelCorpus,
    sentences: Option<usize>,
    max_tokens: usize,
) -> Result<Evaluation> {
    let greedy = BeamOptions::default();
    evaluate_with(model, bpe, corpus, (sentences, max_tokens), &greedy)
}

/// As [`evaluate`], translating by the search `options` say.
pub fn evaluate_with(
    model: &mut Seq2Seq,
    bpe: &Bpe,
    corpus: &ParallelCorpus,
    (sentences, max_tokens): (Option<usize>, usize),
    options: &BeamOptions,
) -> Result<Evaluation> {
    options.check()?;
    let pairs = encode_corpus(bpe, corpus)?;
    let loss = validation_loss(model, &pairs, max_tokens)?;
    let n = sentences.map_or(corpus.len(), |n| n.min(corpus.len()));
    let hyps = translate_lines(model, bpe, &corpus.source()[..n], max_tokens, options)?;
    let refs = &corpus.target()[..n];
    Ok(Evaluation {
        loss,
        bleu: corpus_bleu(&hyps, refs)?.score,
        chrf: corpus_chrf(&hyps, refs)?,
        sentences: n,
        beams: options.beams,
    })
}
