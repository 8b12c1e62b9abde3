//! Translation: line-aligned parallel data, a joint BPE vocabulary, batches by token count,
//! and the metrics that judge the output (sacreBLEU's corpus BLEU and chrF).
//!
//! The path from files to batches:
//! 1. [`ParallelCorpus::read`] reads `DIR/SPLIT.SRC` and `DIR/SPLIT.TGT` (or
//!    [`ParallelCorpus::read_tsv`] a two-column TSV);
//! 2. [`Bpe::train`] learns one vocabulary for both languages; [`Bpe::encode`] turns each
//!    sentence into ids, which become [`EncodedPair`]s;
//! 3. [`TokenBatches::new`] groups them into length-sorted batches of at most `max_tokens`
//!    padded tokens, visited in a seeded order per epoch.
//!
//! Output is scored with [`corpus_bleu`] and [`corpus_chrf`]. Summarization is the same task
//! on other pairs (a document per source line, its summary per target line): nothing here
//! knows which language or task a pair belongs to.

mod batches;
mod bleu;
mod bpe;
mod chrf;
mod corpus;
mod tokenize_13a;

pub use batches::{EncodedPair, TokenBatches};
pub use bleu::{corpus_bleu, Bleu, BLEU_MAX_ORDER};
pub use bpe::{Bpe, BOS, EOS, PAD, SPECIAL_TOKENS, UNK};
pub use chrf::{corpus_chrf, CHRF_BETA, CHRF_CHAR_ORDER};
pub use corpus::ParallelCorpus;
pub use tokenize_13a::tokenize_13a;
pub mod beam;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod trainer;
