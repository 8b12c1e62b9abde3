//! Tokenizers: text to token ids and back.
//!
//! - [`Tokenizer::Char`]: one token per Unicode scalar value; the vocabulary is the sorted
//!   set of distinct characters of the training text, stored in the tokenizer (and so in a
//!   checkpoint), id = position in that sorted list.
//! - [`Tokenizer::Byte`]: one token per UTF-8 byte, 256 ids.
//! - [`Tokenizer::Gpt2`]: GPT-2's byte-pair encoding (`r50k_base`, 50257 ids, id 50256 is
//!   `<|endoftext|>`), embedded in the binary by `tiktoken-rs`, so it works offline. Text is
//!   encoded as ordinary text: `<|endoftext|>` inside it is spelled out, not a special token.
//! - [`Tokenizer::Hf`]: a Hugging Face `tokenizer.json` (the tokenizer of a model that
//!   `resnorm train --init-from` fine-tunes), run by the `tokenizers` crate; no special
//!   tokens are added, and decoding leaves them out.
//!
//! `decode` refuses ids outside the vocabulary. For [`Tokenizer::Byte`] and
//! [`Tokenizer::Gpt2`] a sequence of valid ids may end inside a multi-byte character (a
//! model's sample can): such bytes decode to U+FFFD instead of failing.
//!
//! A tokenizer serializes with serde (`{"kind":"char","vocab":["a","b"]}`, `{"kind":"gpt2"}`,
//! `{"kind":"hf","tokenizer":{..the tokenizer.json..}}`) so that a checkpoint can store it; a character vocabulary is checked (nonempty, sorted,
//! distinct) when read back.
//!
//! ```
//! use resnorm::data::text::Tokenizer;
//! let chars = Tokenizer::char_level("hello world").unwrap();
//! assert_eq!(chars.vocab_size(), 8); // " dehlorw"
//! let ids = chars.encode("hold").unwrap();
//! assert_eq!(ids, vec![3, 5, 4, 1]);
//! assert_eq!(chars.decode(&ids).unwrap(), "hold");
//!
//! let gpt2 = Tokenizer::Gpt2;
//! assert_eq!(gpt2.encode("Hello world").unwrap(), vec![15496, 995]);
//! assert_eq!(gpt2.vocab_size(), 50257);
//! ```

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Number of ids of GPT-2's `r50k_base` encoding (50256 ordinary tokens + `<|endoftext|>`).
pub const GPT2_VOCAB_SIZE: usize = 50257;

/// A text-to-ids mapping; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tokenizer {
    /// One id per character of a stored vocabulary.
    Char {
        /// The vocabulary: distinct characters in increasing order; id = index.
        vocab: CharVocab,
    },
    /// One id per byte of the UTF-8 encoding.
    Byte,
    /// GPT-2's byte-pair encoding.
    Gpt2,
    /// A Hugging Face `tokenizer.json`.
    Hf {
        /// The tokenizer, stored as its `tokenizer.json`.
        tokenizer: HfTokenizer,
    },
}

/// A Hugging Face tokenizer that serializes as its `tokenizer.json`; two are equal when
/// their JSON is. Boxed: it is large, the other tokenizers small.
#[derive(Clone, Debug)]
pub struct HfTokenizer(pub Box<tokenizers::Tokenizer>);

impl PartialEq for HfTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string(false).ok() == other.0.to_string(false).ok()
    }
}

impl Eq for HfTokenizer {}

impl Serialize for HfTokenizer {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for HfTokenizer {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        tokenizers::Tokenizer::deserialize(deserializer).map(|t| HfTokenizer(Box::new(t)))
    }
}

/// A character vocabulary: nonempty, strictly increasing, so an id is a position and a
/// lookup a binary search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<char>", into = "Vec<char>")]
pub struct CharVocab(Vec<char>);

impl CharVocab {
    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.0
    }
}

impl TryFrom<Vec<char>> for CharVocab {
    type Error = Error;

    fn try_from(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::invalid("CharVocab", "vocabulary is empty"));
        }
        if let Some(i) = chars.windows(2).position(|w| w[0] >= w[1]) {
            return Err(Error::invalid(
                "CharVocab",
                format!(
                    "vocabulary must be sorted and distinct, but {:?} at index {i} is followed by {:?}",
                    chars[i],
                    chars[i + 1]
                ),
            ));
        }
        Ok(CharVocab(chars))
    }
}

impl From<CharVocab> for Vec<char> {
    fn from(vocab: CharVocab) -> Self {
        vocab.0
    }
}

impl Tokenizer {
    /// A character-level tokenizer whose vocabulary is the distinct characters of `text`.
    pub fn char_level(text: &str) -> Result<Tokenizer> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Ok(Tokenizer::Char {
            vocab: CharVocab::try_from(chars)
                .map_err(|_| Error::invalid("Tokenizer::char_level", "text is empty"))?,
        })
    }

    /// Number of distinct ids: every id produced or accepted is below it.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char { vocab } => vocab.0.len(),
            Tokenizer::Byte => 256,
            Tokenizer::Gpt2 => GPT2_VOCAB_SIZE,
            Tokenizer::Hf { tokenizer } => tokenizer.0.get_vocab_size(true),
        }
    }

    /// The ids of `text`. A character-level tokenizer refuses characters outside its
    /// vocabulary, naming the first one and its character offset.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Char { vocab } => text
                .chars()
                .enumerate()
                .map(|(offset, c)| {
                    vocab.0.binary_search(&c).map(|id| id as u32).map_err(|_| {
                        Error::invalid(
                            "Tokenizer::encode",
                            format!(
                                "character {c:?} (U+{:04X}) at character offset {offset} is not in the vocabulary of {} characters",
                                c as u32,
                                vocab.0.len()
                            ),
                        )
                    })
                })
                .collect(),
            Tokenizer::Byte => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Gpt2 => Ok(tiktoken_rs::r50k_base_singleton().encode_ordinary(text)),
            Tokenizer::Hf { tokenizer } => tokenizer
                .0
                .encode(text, false)
                .map(|encoding| encoding.get_ids().to_vec())
                .map_err(|e| Error::invalid("Tokenizer::encode", e.to_string())),
        }
    }

    /// The text of `ids`; an id at or above [`Tokenizer::vocab_size`] is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let size = self.vocab_size();
        if let Some(i) = ids.iter().position(|&id| id as usize >= size) {
            return Err(Error::invalid(
                "Tokenizer::decode",
                format!(
                    "id {} at index {i} is outside the vocabulary of {size}",
                    ids[i]
                ),
            ));
        }
        match self {
            Tokenizer::Char { vocab } => Ok(ids.iter().map(|&id| vocab.0[id as usize]).collect()),
            Tokenizer::Byte => {
                let bytes: Vec<u8> = ids.iter().map(|&id| id as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::Gpt2 => {
                let bytes = tiktoken_rs::r50k_base_singleton()
                    .decode_bytes(ids)
                    .map_err(|e| Error::invalid("Tokenizer::decode", e.to_string()))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::Hf { tokenizer } => tokenizer
                .0
                .decode(ids, true)
                .map_err(|e| Error::invalid("Tokenizer::decode", e.to_string())),
        }
    }
}
