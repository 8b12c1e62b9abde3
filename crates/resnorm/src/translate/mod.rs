//! Translation: line-aligned parallel data, a joint BPE vocabulary, and the metrics that
//! judge the output (sacreBLEU's corpus BLEU and chrF).
//!
//! Summarization is the same task on other pairs (a document per source line, its summary
//! per target line): nothing here knows which language or task a pair belongs to.

mod bleu;
mod chrf;
mod tokenize_13a;

pub use bleu::{corpus_bleu, Bleu, BLEU_MAX_ORDER};
pub use chrf::{corpus_chrf, CHRF_BETA, CHRF_CHAR_ORDER};
pub use tokenize_13a::tokenize_13a;
