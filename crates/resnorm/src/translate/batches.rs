//! Batches by token count, as fairseq builds them: length-sorted buckets whose padded size
//! stays under a budget, visited in a seeded random order.
//!
//! A pair's size is `max(source ids, target ids)` (count the ids the model will see: add
//! `</s>` and friends before batching). A batch of `n` pairs pads every sentence to the
//! longest, so it costs `n × max size` tokens, and [`TokenBatches::new`] keeps that
//! `≤ max_tokens`:
//! 1. pairs longer than `max_len` (the model's positions) or than `max_tokens` cannot be
//!    batched: they are left out and counted ([`TokenBatches::skipped`]);
//! 2. the rest are shuffled with `Rng::new(seed)`, then stably sorted by source size, then
//!    target size (so equal lengths are in seeded random order, as fairseq's `ordered_indices`);
//! 3. walked in that order, each pair joins the current batch unless that would push
//!    `n × max size` over `max_tokens`, in which case it starts the next batch.
//!
//! The batches are fixed; [`TokenBatches::epoch_order`] gives a seeded permutation of them for
//! each epoch, so a run that knows its epoch and position can resume exactly.
//!
//! ```
//! use resnorm::translate::{EncodedPair, TokenBatches};
//! let pairs: Vec<EncodedPair> = [(3, 4), (5, 2), (4, 4), (9, 9), (40, 2)]
//!     .iter()
//!     .map(|&(s, t)| EncodedPair { source: vec![7; s], target: vec![7; t] })
//!     .collect();
//! let batches = TokenBatches::new(&pairs, 12, 32, 0).unwrap();
//! assert_eq!(batches.skipped(), 1); // 40 source ids > max_len 32
//! for b in 0..batches.len() {
//!     let batch = batches.batch(b);
//!     let longest = batch.iter().map(|&i| pairs[i].size()).max().unwrap();
//!     assert!(batch.len() * longest <= 12);
//! }
//! let order = batches.epoch_order(0);
//! assert_eq!(order, batches.epoch_order(0));
//! ```

use crate::rng::Rng;
use crate::{Error, Result};

/// One sentence pair as token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedPair {
    /// The source sentence's ids.
    pub source: Vec<u32>,
    /// The target sentence's ids.
    pub target: Vec<u32>,
}

impl EncodedPair {
    /// The pair's padded cost per batch row: the longer side.
    pub fn size(&self) -> usize {
        self.source.len().max(self.target.len())
    }
}

/// Batches of pair indices under a token budget; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatches {
    batches: Vec<Vec<usize>>,
    skipped: usize,
    seed: u64,
}

impl TokenBatches {
    /// Buckets `pairs` into batches of at most `max_tokens` padded tokens, leaving out pairs
    /// longer than `max_len` ids on either side.
    pub fn new(
        pairs: &[EncodedPair],
        max_tokens: usize,
        max_len: usize,
        seed: u64,
    ) -> Result<Self> {
        if max_tokens == 0 || max_len == 0 {
            return Err(Error::invalid(
                "TokenBatches::new",
                format!("max_tokens ({max_tokens}) and max_len ({max_len}) must be positive"),
            ));
        }
        let fits = |p: &EncodedPair| p.size() <= max_len && p.size() <= max_tokens;
        let mut order: Vec<usize> = (0..pairs.len()).filter(|&i| fits(&pairs[i])).collect();
        let skipped = pairs.len() - order.len();
        shuffle(&mut order, &mut Rng::new(seed));
        order.sort_by_key(|&i| (pairs[i].source.len(), pairs[i].target.len()));
        let mut batches = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut longest = 0;
        for i in order {
            let size = pairs[i].size();
            if !current.is_empty() && (current.len() + 1) * longest.max(size) > max_tokens {
                batches.push(std::mem::take(&mut current));
                longest = 0;
            }
            longest = longest.max(size);
            current.push(i);
        }
        if !current.is_empty() {
            batches.push(current);
        }
        Ok(TokenBatches {
            batches,
            skipped,
            seed,
        })
    }

    /// Number of batches.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether there are no batches (every pair was skipped, or there were none).
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Batch `b`: indices into the pairs given to [`TokenBatches::new`], shortest first.
    pub fn batch(&self, b: usize) -> &[usize] {
        &self.batches[b]
    }

    /// Pairs left out because they are longer than `max_len` or `max_tokens`.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The order in which epoch `epoch` visits the batches: a permutation of `0..len()`
    /// fixed by the seed and the epoch.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.batches.len()).collect();
        let stream = self.seed ^ (epoch.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        shuffle(&mut order, &mut Rng::new(stream));
        order
    }
}

/// Fisher–Yates with `rng`.
fn shuffle(items: &mut [usize], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}
