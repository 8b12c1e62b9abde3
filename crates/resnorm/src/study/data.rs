//! The text a study trains on, tokenized by characters, with a fingerprint that keys the
//! cached runs (other text, other results).
//!
//! ```
//! use resnorm::study::StudyData;
//! let a = StudyData::built_in(1, 20_000).unwrap();
//! let b = StudyData::from_text("user text", &"the cat sat on the mat. ".repeat(100)).unwrap();
//! assert!(a.nats_per_char.is_some() && b.nats_per_char.is_none());
//! assert_ne!(a.fingerprint, b.fingerprint);
//! ```

use super::spec::fnv1a;
use crate::data::text::{Corpus, TokenDataset, Tokenizer, DEFAULT_VALIDATION_FRACTION};
use crate::Result;

/// Tokenized text, split into training and validation parts.
#[derive(Clone, Debug)]
pub struct StudyData {
    /// Where the text came from, for the report.
    pub source: String,
    /// The tokens, split.
    pub dataset: TokenDataset,
    /// Hash of the tokens and vocabulary size.
    pub fingerprint: u64,
    /// The text's true entropy when it is the built-in corpus (the best loss possible).
    pub nats_per_char: Option<f64>,
}

impl StudyData {
    /// The built-in corpus of `chars` characters generated from `seed`.
    pub fn built_in(seed: u64, chars: usize) -> Result<Self> {
        let corpus = Corpus::generate(seed, chars)?;
        let source = format!(
            "built-in corpus (seed {seed}, {} characters)",
            corpus.text.len()
        );
        let mut data = StudyData::from_text(&source, &corpus.text)?;
        data.nats_per_char = Some(corpus.nats_per_char);
        Ok(data)
    }

    /// Any text, tokenized by characters.
    pub fn from_text(source: &str, text: &str) -> Result<Self> {
        let tokenizer = Tokenizer::char_level(text)?;
        let ids = tokenizer.encode(text)?;
        let vocab = tokenizer.vocab_size();
        let mut bytes = Vec::with_capacity(4 * ids.len() + 8);
        bytes.extend_from_slice(&(vocab as u64).to_le_bytes());
        ids.iter()
            .for_each(|id| bytes.extend_from_slice(&id.to_le_bytes()));
        Ok(StudyData {
            source: source.to_string(),
            dataset: TokenDataset::new(ids, vocab, DEFAULT_VALIDATION_FRACTION)?,
            fingerprint: fnv1a(&bytes),
            nats_per_char: None,
        })
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.dataset.vocab_size()
    }
}
