//! From a run's data setting to a tokenizer and a split token stream.
//!
//! - No path: the built-in corpus ([`Corpus::generate`] with seed [`CORPUS_SEED`] and the
//!   configured number of characters), so every run on it sees the same text.
//! - A file ending in `.bin`, or a folder whose visible files all end in `.bin`: token files
//!   (nanoGPT raw `uint16` or llm.c shards, see [`read_token_file`]), a folder's files
//!   concatenated in file-name order. Their ids must fit the tokenizer's vocabulary.
//! - Anything else: UTF-8 text ([`read_text`]; a file, or a folder's files joined by `"\n"`),
//!   or, for the byte tokenizer, any bytes ([`read_bytes`]).
//!
//! The tokenizer is the checkpoint's when resuming or evaluating; otherwise it is built from
//! the kind asked for (a character vocabulary from the whole text, training and validation
//! parts alike, so that validation has no unknown characters). The split is
//! [`TokenDataset`]'s: the last 10 % of the tokens are validation.

use std::path::{Path, PathBuf};

use crate::data::text::{
    read_bytes, read_text, read_token_file, Corpus, TokenDataset, Tokenizer,
    DEFAULT_VALIDATION_FRACTION,
};
use crate::{Error, Result};

use super::{TokenizerKind, TrainConfig};

/// Seed of the built-in corpus: fixed, so that runs with different training seeds share it.
pub const CORPUS_SEED: u64 = 0;

/// Tokens of a run, with the tokenizer that made them.
#[derive(Clone, Debug)]
pub struct LoadedData {
    /// The tokenizer (given, or built for the data).
    pub tokenizer: Tokenizer,
    /// The tokens, split into training and validation parts.
    pub dataset: TokenDataset,
    /// For the built-in corpus, its exact entropy in nats per character.
    pub corpus_nats_per_char: Option<f64>,
}

/// Reads `config.data` (or generates the built-in corpus) and tokenizes it with `tokenizer`,
/// or with a new tokenizer of `config.tokenizer`'s kind when `tokenizer` is `None`.
pub fn load_data(config: &TrainConfig, tokenizer: Option<&Tokenizer>) -> Result<LoadedData> {
    let (source, corpus_nats_per_char) = match &config.data {
        None => {
            let corpus = Corpus::generate(CORPUS_SEED, config.corpus_chars)?;
            (Source::Text(corpus.text), Some(corpus.nats_per_char))
        }
        Some(path) => {
            let any_bytes = match tokenizer {
                Some(t) => matches!(t, Tokenizer::Byte),
                None => config.tokenizer == TokenizerKind::Byte,
            };
            (read_source(path, any_bytes)?, None)
        }
    };
    let tokenizer = match tokenizer {
        Some(t) => t.clone(),
        None => match (config.tokenizer, &source) {
            (TokenizerKind::Char, Source::Text(text)) => Tokenizer::char_level(text)?,
            (TokenizerKind::Char, Source::Tokens(..) | Source::Bytes(_)) => {
                return Err(Error::Config(
                    "token files need the byte or gpt2 tokenizer: a character vocabulary can only be built from text"
                        .into(),
                ))
            }
            (TokenizerKind::Byte, _) => Tokenizer::Byte,
            (TokenizerKind::Gpt2, _) => Tokenizer::Gpt2,
            (TokenizerKind::Hf, _) => {
                return Err(Error::Config(
                    "the hf tokenizer is the tokenizer.json of the model that --init-from names"
                        .into(),
                ))
            }
        },
    };
    let tokens = match source {
        Source::Text(text) => tokenizer.encode(&text)?,
        Source::Bytes(bytes) => bytes.into_iter().map(u32::from).collect(),
        Source::Tokens(tokens, path) => {
            let vocab = tokenizer.vocab_size();
            if let Some(i) = tokens.iter().position(|&t| t as usize >= vocab) {
                return Err(Error::Format {
                    path,
                    detail: format!(
                        "token {} at index {i} is outside the {vocab}-id vocabulary of the {} tokenizer",
                        tokens[i],
                        TokenizerKind::of(&tokenizer)
                    ),
                });
            }
            tokens
        }
    };
    let dataset = TokenDataset::new(tokens, tokenizer.vocab_size(), DEFAULT_VALIDATION_FRACTION)?;
    Ok(LoadedData {
        tokenizer,
        dataset,
        corpus_nats_per_char,
    })
}

/// Checks that `dataset` has at least one training window and one validation window of
/// `context` tokens, saying how many tokens there are and how many are needed.
pub fn check_fits_context(dataset: &TokenDataset, context: usize) -> Result<()> {
    let total = dataset.train().len() + dataset.validation().len();
    let need = context + 1;
    if dataset.train().len() < need || dataset.validation().len() < need {
        return Err(Error::Config(format!(
            "the data has {total} tokens: {} for training and {} for validation (the last 10 %), \
             but each part needs at least context + 1 = {need}; use more data or a smaller --context",
            dataset.train().len(),
            dataset.validation().len()
        )));
    }
    Ok(())
}

enum Source {
    Text(String),
    /// Text that need not be UTF-8, for the byte tokenizer.
    Bytes(Vec<u8>),
    Tokens(Vec<u32>, PathBuf),
}

/// Token files, or text: raw bytes when `any_bytes`, else UTF-8.
fn read_source(path: &Path, any_bytes: bool) -> Result<Source> {
    let token_files = token_files(path)?;
    if token_files.is_empty() {
        return Ok(if any_bytes {
            Source::Bytes(read_bytes(path)?)
        } else {
            Source::Text(read_text(path)?)
        });
    }
    let mut tokens = Vec::new();
    for file in &token_files {
        tokens.extend(read_token_file(file)?.tokens);
    }
    Ok(Source::Tokens(tokens, path.to_path_buf()))
}

/// The `.bin` files `path` stands for: itself, or a folder's visible files when all of them
/// end in `.bin` (sorted by name); empty when `path` is text.
fn token_files(path: &Path) -> Result<Vec<PathBuf>> {
    let is_bin = |p: &Path| p.extension().is_some_and(|e| e == "bin");
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !metadata.is_dir() {
        return Ok(if is_bin(path) {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        if !hidden && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    if files.is_empty() || !files.iter().all(|f| is_bin(f)) {
        return Ok(Vec::new());
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}
