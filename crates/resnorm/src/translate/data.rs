//! A translation run's data: the corpora read, the BPE trained (or the checkpoint's reused),
//! the sentences turned into ids, and padded batches in the layout the model takes.
//!
//! Every sentence ends in `</s>`; the decoder reads the target shifted right after `<s>`:
//!
//! ```text
//! source   x₁ … xₙ </s>
//! input    <s> y₁ … yₘ          (the decoder's input, `tgt`)
//! targets  y₁ … yₘ </s>         (what it predicts at each position)
//! ```
//!
//! ```
//! use resnorm::translate::data::{encode_pair, PaddedBatch};
//! use resnorm::translate::{Bpe, ParallelCorpus, BOS, EOS};
//! let corpus = ParallelCorpus::from_pairs(vec!["a b".into()], vec!["c".into()]).unwrap();
//! let bpe = Bpe::train(&corpus, 20).unwrap();
//! let pair = encode_pair(&bpe, "a b", "c").unwrap();
//! assert_eq!(pair.source.last(), Some(&EOS));
//! let mut batch = PaddedBatch::default();
//! batch.fill(&[pair.clone()], &[0]);
//! assert_eq!(batch.tgt[0], BOS);
//! assert_eq!(batch.targets[..pair.target.len()], pair.target[..]);
//! ```

use crate::models::seq2seq::Batch;
use crate::Result;

use super::config::TranslateConfig;
use super::{Bpe, EncodedPair, ParallelCorpus, TokenBatches, BOS, EOS, PAD};

/// The ids of one pair, each side ended by `</s>`.
pub fn encode_pair(bpe: &Bpe, source: &str, target: &str) -> Result<EncodedPair> {
    let mut source = bpe.encode(source)?;
    source.push(EOS);
    let mut target = bpe.encode(target)?;
    target.push(EOS);
    Ok(EncodedPair { source, target })
}

/// Every pair of `corpus` as ids.
pub fn encode_corpus(bpe: &Bpe, corpus: &ParallelCorpus) -> Result<Vec<EncodedPair>> {
    (0..corpus.len())
        .map(|i| {
            let (s, t) = corpus.pair(i);
            encode_pair(bpe, s, t)
        })
        .collect()
}

/// What a run trains and validates on.
#[derive(Clone, Debug)]
pub struct TranslationData {
    /// The joint vocabulary.
    pub bpe: Bpe,
    /// The training pairs as ids.
    pub train: Vec<EncodedPair>,
    /// The training batches (pairs over `max_len` left out and counted).
    pub batches: TokenBatches,
    /// The validation sentences, as text (references for BLEU).
    pub valid: ParallelCorpus,
    /// The validation pairs as ids.
    pub valid_ids: Vec<EncodedPair>,
}

impl TranslationData {
    /// Reads `train` and `valid` of `config.data`; trains a BPE of `config.vocab` ids on the
    /// training pairs unless `bpe` (a checkpoint's) is given.
    pub fn load(config: &TranslateConfig, bpe: Option<Bpe>) -> Result<Self> {
        let (src, tgt) = (&config.src, &config.tgt);
        let train = ParallelCorpus::read(&config.data, "train", src, tgt)?;
        let valid = ParallelCorpus::read(&config.data, "valid", src, tgt)?;
        let bpe = match bpe {
            Some(bpe) => bpe,
            None => Bpe::train(&train, config.vocab)?,
        };
        let train_ids = encode_corpus(&bpe, &train)?;
        let batches =
            TokenBatches::new(&train_ids, config.max_tokens, config.max_len, config.seed)?;
        if batches.is_empty() {
            return Err(crate::Error::Config(format!(
                "no training pair fits in max_len {} ids and max_tokens {}",
                config.max_len, config.max_tokens
            )));
        }
        let valid_ids = encode_corpus(&bpe, &valid)?;
        Ok(TranslationData {
            bpe,
            train: train_ids,
            batches,
            valid,
            valid_ids,
        })
    }
}

/// A batch of pairs padded to its longest sentence on each side; the buffers are kept
/// between batches.
#[derive(Clone, Debug, Default)]
pub struct PaddedBatch {
    /// Sentences.
    pub batch: usize,
    /// Source ids `[batch, S]`.
    pub src: Vec<u32>,
    /// Source lengths.
    pub src_lengths: Vec<usize>,
    /// Decoder inputs `[batch, T]`.
    pub tgt: Vec<u32>,
    /// Target lengths.
    pub tgt_lengths: Vec<usize>,
    /// Tokens to predict `[batch, T]`.
    pub targets: Vec<u32>,
}

impl PaddedBatch {
    /// Fills the buffers with the pairs `pairs[i]` for `i` in `indices`.
    pub fn fill(&mut self, pairs: &[EncodedPair], indices: &[usize]) {
        let s = indices
            .iter()
            .map(|&i| pairs[i].source.len())
            .max()
            .unwrap_or(0);
        let t = indices
            .iter()
            .map(|&i| pairs[i].target.len())
            .max()
            .unwrap_or(0);
        self.batch = indices.len();
        for buffer in [&mut self.src, &mut self.tgt, &mut self.targets] {
            buffer.clear();
        }
        self.src_lengths.clear();
        self.tgt_lengths.clear();
        for &i in indices {
            let pair = &pairs[i];
            let (n, m) = (pair.source.len(), pair.target.len());
            self.src.extend_from_slice(&pair.source);
            self.src.resize(self.src.len() + s - n, PAD);
            self.tgt.push(BOS);
            self.tgt.extend_from_slice(&pair.target[..m - 1]);
            self.tgt.resize(self.tgt.len() + t - m, PAD);
            self.targets.extend_from_slice(&pair.target);
            self.targets.resize(self.targets.len() + t - m, PAD);
            self.src_lengths.push(n);
            self.tgt_lengths.push(m);
        }
    }

    /// The batch as the model takes it.
    pub fn as_batch(&self) -> Batch<'_> {
        Batch {
            batch: self.batch,
            src: &self.src,
            src_lengths: &self.src_lengths,
            tgt: &self.tgt,
            tgt_lengths: &self.tgt_lengths,
            targets: Some(&self.targets),
        }
    }

    /// Target tokens predicted (padding left out).
    pub fn target_tokens(&self) -> usize {
        self.tgt_lengths.iter().sum()
    }
}
