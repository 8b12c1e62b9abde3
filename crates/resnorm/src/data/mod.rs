//! Training data, by kind: [`text`] for language models (text and token files, tokenizers,
//! the built-in corpus, token windows) and [`image`] for classifiers (IDX and digits files,
//! normalization, seeded batches, augmentation).

pub mod image;
pub mod text;
