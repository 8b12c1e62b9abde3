//! Text data for language models: text and token files, tokenizers, a built-in corpus, and
//! the windows cut from token streams.
//!
//! The path from a user's `--data` to a batch:
//! 1. [`read_text()`] reads a UTF-8 file or a folder of them, or [`read_token_file`] reads
//!    pre-tokenized nanoGPT / llm.c `.bin` files; with no data at all, [`Corpus::generate`]
//!    writes stories from a grammar whose entropy per character is known exactly.
//! 2. A [`Tokenizer`] (characters, bytes, or GPT-2 BPE) turns text into ids; it serializes
//!    to JSON so a checkpoint can keep it.
//! 3. [`TokenDataset`] splits the ids into training and validation parts, draws random
//!    training windows from a seeded [`crate::rng::Rng`] and walks the validation part in
//!    fixed windows, in an order documented precisely enough to reproduce elsewhere.
//!
//! ```
//! use resnorm::data::text::{Corpus, TokenDataset, Tokenizer, DEFAULT_VALIDATION_FRACTION};
//! use resnorm::rng::Rng;
//! let corpus = Corpus::generate(42, 5_000).unwrap();
//! let tokenizer = Tokenizer::char_level(&corpus.text).unwrap();
//! let ids = tokenizer.encode(&corpus.text).unwrap();
//! let data = TokenDataset::new(ids, tokenizer.vocab_size(), DEFAULT_VALIDATION_FRACTION).unwrap();
//! let (inputs, targets) = data.sample_batch(&mut Rng::new(0), 2, 16).unwrap();
//! assert_eq!(tokenizer.decode(&inputs[1..16]).unwrap(), tokenizer.decode(&targets[..15]).unwrap());
//! ```

mod corpus;
mod dataset;
mod read_text;
mod token_file;
mod tokenizer;

pub use corpus::{
    lexicon, Corpus, ADJECTIVE_PROBABILITY, ASIDE_PROBABILITY, DEFAULT_CORPUS_CHARS, MAX_SENTENCES,
    MIN_SENTENCES, RELATIVE_CLAUSE_PROBABILITIES, SENTENCE_WEIGHTS,
};
pub use dataset::{TokenDataset, DEFAULT_VALIDATION_FRACTION};
pub use read_text::{read_bytes, read_text};
pub use token_file::{
    read_token_file, read_token_file_as, write_token_file, TokenFile, TokenFileFormat,
    LLMC_HEADER_INTS, LLMC_MAGIC, LLMC_VERSION,
};
pub use tokenizer::{CharVocab, HfTokenizer, Tokenizer, GPT2_VOCAB_SIZE};
