//! Sentences as token rows: encoded once, cut to the context, right-padded into batches.
//!
//! A character tokenizer (the data's own, or a pretrained run's) drops the characters
//! outside its vocabulary rather than refusing the sentence: a model fine-tuned from
//! Shakespeare must still read a tweet. A sentence left with no token is refused by line.
//!
//! ```
//! use resnorm::classify::{encode_sentence, fill_batch};
//! use resnorm::data::text::Tokenizer;
//! let chars = Tokenizer::char_level("abc").unwrap();
//! assert_eq!(encode_sentence(&chars, "cab!", 3).unwrap(), vec![2, 0, 1]);
//! let rows = vec![vec![5, 6, 7], vec![8]];
//! let (mut tokens, mut lengths) = (Vec::new(), Vec::new());
//! fill_batch(&rows, &[1, 0], 4, &mut tokens, &mut lengths);
//! assert_eq!((tokens, lengths), (vec![8, 0, 0, 0, 5, 6, 7, 0], vec![1, 3]));
//! ```

use crate::data::text::Tokenizer;
use crate::Result;

/// The ids of `text`, characters outside a character vocabulary dropped, cut to `context`.
pub fn encode_sentence(tokenizer: &Tokenizer, text: &str, context: usize) -> Result<Vec<u32>> {
    let mut ids = match tokenizer {
        Tokenizer::Char { vocab } => text
            .chars()
            .filter_map(|c| vocab.chars().binary_search(&c).ok().map(|id| id as u32))
            .collect(),
        _ => tokenizer.encode(text)?,
    };
    ids.truncate(context);
    Ok(ids)
}

/// The rows `indices` of `encoded`, each right-padded with id 0 to `seq`, into `tokens`
/// (`[indices.len(), seq]`) and their lengths into `lengths` (reusing both buffers).
pub fn fill_batch(
    encoded: &[Vec<u32>],
    indices: &[usize],
    seq: usize,
    tokens: &mut Vec<u32>,
    lengths: &mut Vec<usize>,
) {
    tokens.clear();
    lengths.clear();
    for &i in indices {
        let row = &encoded[i][..encoded[i].len().min(seq)];
        tokens.extend_from_slice(row);
        tokens.resize(tokens.len() + seq - row.len(), 0);
        lengths.push(row.len());
    }
}
