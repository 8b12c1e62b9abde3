//! One joint byte-pair-encoding vocabulary for both sides of a parallel corpus, trained and
//! applied by the Hugging Face `tokenizers` crate and saved as its `tokenizer.json`, which
//! the Python `tokenizers` package loads and applies identically.
//!
//! The pipeline is sentencepiece's: no normalization; every space becomes `▁`, which starts
//! the word after it (`Metaspace`, prepended to the first word too), so decoding restores the
//! text exactly but for a leading space; BPE merges are learnt on the words of both languages
//! together, up to `vocab` ids. Ids 0..4 are the special tokens [`PAD`] `<pad>`, [`BOS`] `<s>`, [`EOS`] `</s>` and
//! [`UNK`] `<unk>` (a character never seen in training); [`Bpe::encode`] adds none of them
//! (but text that spells one, `<s>`, is that token, as in Python's `tokenizers`) and
//! [`Bpe::decode`] drops them. Training is deterministic: ties between equally frequent
//! pairs are broken by the pair's ids, and ids follow the sorted alphabet, so the same lines
//! and size give the same `tokenizer.json`, byte for byte.
//!
//! ```
//! use resnorm::translate::{Bpe, ParallelCorpus};
//! let corpus = ParallelCorpus::from_pairs(
//!     vec!["the house".into(), "the houses".into()],
//!     vec!["la casa".into(), "las casas".into()],
//! ).unwrap();
//! let bpe = Bpe::train(&corpus, 40).unwrap();
//! let ids = bpe.encode("the casas").unwrap();
//! assert_eq!(bpe.decode(&ids).unwrap(), "the casas");
//! assert_eq!(bpe.decode(&[1, ids[0], 2, 0]).unwrap(), bpe.decode(&ids[..1]).unwrap());
//! let again = Bpe::from_json(&bpe.to_json().unwrap()).unwrap();
//! assert_eq!(again.encode("the casas").unwrap(), ids);
//! ```

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, Tokenizer};

use super::ParallelCorpus;
use crate::{Error, Result};

/// Id of `<pad>`, which fills batch rows past a sentence's end.
pub const PAD: u32 = 0;
/// Id of `<s>`, which starts the decoder's input.
pub const BOS: u32 = 1;
/// Id of `</s>`, which ends every sentence.
pub const EOS: u32 = 2;
/// Id of `<unk>`, a character the vocabulary has never seen.
pub const UNK: u32 = 3;
/// The special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// A trained BPE tokenizer; see the module documentation.
#[derive(Clone, Debug)]
pub struct Bpe {
    tokenizer: Tokenizer,
    /// Counted once: the crate builds the whole vocabulary map to count it.
    vocab_size: usize,
}

impl Bpe {
    /// Learns a vocabulary of at most `vocab` ids (special tokens and the alphabet included)
    /// from the source and target sentences of `corpus`.
    pub fn train(corpus: &ParallelCorpus, vocab: usize) -> Result<Self> {
        Self::train_lines(corpus.source().iter().chain(corpus.target()), vocab)
    }

    /// Learns a vocabulary of at most `vocab` ids from `lines`.
    pub fn train_lines<S: AsRef<str> + Send>(
        lines: impl Iterator<Item = S> + Send,
        vocab: usize,
    ) -> Result<Self> {
        let err = |e: tokenizers::Error| Error::invalid("Bpe::train", e.to_string());
        if vocab <= SPECIAL_TOKENS.len() {
            return Err(Error::invalid(
                "Bpe::train",
                format!("vocab {vocab} leaves no room beside the 4 special tokens"),
            ));
        }
        let model = BPE::builder()
            .unk_token(SPECIAL_TOKENS[UNK as usize].into())
            .build()
            .map_err(err)?;
        let mut tokenizer = Tokenizer::new(model);
        let metaspace = Metaspace::new('▁', PrependScheme::Always, true);
        tokenizer.with_pre_tokenizer(Some(metaspace.clone()));
        tokenizer.with_decoder(Some(metaspace));
        let specials = SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)).to_vec();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab)
            .min_frequency(0)
            .show_progress(false)
            .special_tokens(specials)
            .build()
            .into();
        tokenizer.train(&mut trainer, lines).map_err(err)?;
        // Read back from its tokenizer.json, so the tokenizer in use is the one a checkpoint saves.
        Self::from_json(&tokenizer.to_string(false).map_err(err)?)
    }

    /// The ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::invalid("Bpe::encode", e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out; refuses ids outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let size = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(Error::invalid(
                "Bpe::decode",
                format!("id {id} is outside the vocabulary of {size}"),
            ));
        }
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::invalid("Bpe::decode", e.to_string()))
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of a token string (`"▁casa"`, `"</s>"`), if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The `tokenizer.json` text (compact, deterministic).
    pub fn to_json(&self) -> Result<String> {
        self.tokenizer
            .to_string(false)
            .map_err(|e| Error::invalid("Bpe::to_json", e.to_string()))
    }

    /// Reads a `tokenizer.json` text; refuses any tokenizer but a BPE with resnorm's four
    /// special tokens at ids 0..4.
    pub fn from_json(json: &str) -> Result<Self> {
        let tokenizer: Tokenizer = json
            .parse()
            .map_err(|e| Error::invalid("Bpe::from_json", format!("not a tokenizer.json: {e}")))?;
        Self::checked(tokenizer).map_err(|detail| Error::invalid("Bpe::from_json", detail))
    }

    /// Writes `tokenizer.json` to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?).map_err(|e| Error::io(path, e))
    }

    /// Reads a `tokenizer.json` written by [`Bpe::save`] (or by Python's `tokenizers`).
    pub fn load(path: &Path) -> Result<Self> {
        let json = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&json).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    fn checked(tokenizer: Tokenizer) -> std::result::Result<Self, String> {
        if !matches!(tokenizer.get_model(), ModelWrapper::BPE(_)) {
            return Err("the tokenizer's model is not BPE".into());
        }
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            if tokenizer.token_to_id(token) != Some(id as u32) {
                return Err(format!("{token} is not id {id} in the vocabulary"));
            }
        }
        let vocab_size = tokenizer.get_vocab_size(true);
        Ok(Bpe {
            tokenizer,
            vocab_size,
        })
    }
}
