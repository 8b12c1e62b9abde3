//! Parallel corpora: sentence pairs read from line-aligned files or a two-column TSV.
//!
//! Two layouts, both one pair per line:
//! - `DIR/SPLIT.SRC` and `DIR/SPLIT.TGT` (the Moses/fairseq convention): line `i` of
//!   `train.en` translates to line `i` of `train.es`;
//! - a TSV file whose lines are `source<TAB>target`.
//!
//! Every line must be nonempty UTF-8 (a trailing `\r` is dropped, so CRLF files read as LF
//! files); the first defect is reported as one line naming the file and the line number, and
//! files of different lengths name both files and both counts. A document and its summary
//! are a pair like any other, so summarization reads its data here too.
//!
//! ```
//! use resnorm::translate::ParallelCorpus;
//! let dir = std::env::temp_dir().join(format!("resnorm-doc-corpus-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("train.en"), "Hello.\nThe house.\n").unwrap();
//! std::fs::write(dir.join("train.es"), "Hola.\nLa casa.\n").unwrap();
//! let corpus = ParallelCorpus::read(&dir, "train", "en", "es").unwrap();
//! assert_eq!(corpus.len(), 2);
//! assert_eq!(corpus.pair(1), ("The house.", "La casa."));
//! std::fs::write(dir.join("valid.en"), "One.\nTwo.\n").unwrap();
//! std::fs::write(dir.join("valid.es"), "Uno.\n").unwrap();
//! let err = ParallelCorpus::read(&dir, "valid", "en", "es").unwrap_err().to_string();
//! assert!(err.contains("valid.en: 2 lines, but "), "{err}");
//! assert!(err.ends_with("valid.es has 1"), "{err}");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::Path;

use crate::{Error, Result};

/// Aligned source and target sentences: `source[i]` translates to `target[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParallelCorpus {
    source: Vec<String>,
    target: Vec<String>,
}

impl ParallelCorpus {
    /// Reads `dir/split.src` and `dir/split.tgt`, e.g. `(dir, "train", "en", "es")`.
    pub fn read(dir: &Path, split: &str, src: &str, tgt: &str) -> Result<Self> {
        Self::read_files(
            &dir.join(format!("{split}.{src}")),
            &dir.join(format!("{split}.{tgt}")),
        )
    }

    /// Reads two line-aligned files.
    pub fn read_files(source: &Path, target: &Path) -> Result<Self> {
        let src_lines = read_lines(source)?;
        let tgt_lines = read_lines(target)?;
        if src_lines.len() != tgt_lines.len() {
            return Err(Error::Format {
                path: source.to_path_buf(),
                detail: format!(
                    "{} lines, but {} has {}",
                    src_lines.len(),
                    target.display(),
                    tgt_lines.len()
                ),
            });
        }
        Ok(ParallelCorpus {
            source: src_lines,
            target: tgt_lines,
        })
    }

    /// Reads a TSV file of `source<TAB>target` lines (exactly one tab per line).
    pub fn read_tsv(path: &Path) -> Result<Self> {
        let mut corpus = ParallelCorpus {
            source: Vec::new(),
            target: Vec::new(),
        };
        for (i, line) in read_lines(path)?.into_iter().enumerate() {
            let fields: Vec<&str> = line.split('\t').collect();
            let defect = match fields[..] {
                [s, t] if s.trim().is_empty() => {
                    Some(format!("the source is empty (target {t:?})"))
                }
                [s, t] if t.trim().is_empty() => {
                    Some(format!("the target is empty (source {s:?})"))
                }
                [s, t] => {
                    corpus.source.push(s.to_string());
                    corpus.target.push(t.to_string());
                    None
                }
                _ => Some(format!(
                    "{} tab-separated columns, expected 2 (source<TAB>target)",
                    fields.len()
                )),
            };
            if let Some(defect) = defect {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    detail: format!("line {}: {defect}", i + 1),
                });
            }
        }
        Ok(corpus)
    }

    /// A corpus of the given pairs; refused when the counts differ or a sentence is empty.
    pub fn from_pairs(source: Vec<String>, target: Vec<String>) -> Result<Self> {
        if source.len() != target.len() {
            return Err(Error::invalid(
                "ParallelCorpus::from_pairs",
                format!(
                    "{} source sentences but {} target sentences",
                    source.len(),
                    target.len()
                ),
            ));
        }
        let empty = |lines: &[String]| lines.iter().position(|l| l.trim().is_empty());
        if let Some(i) = empty(&source).or(empty(&target)) {
            return Err(Error::invalid(
                "ParallelCorpus::from_pairs",
                format!("pair {i} has an empty sentence"),
            ));
        }
        Ok(ParallelCorpus { source, target })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// Whether there are no pairs (never, for a corpus read from files).
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// Pair `i` as `(source, target)`.
    pub fn pair(&self, i: usize) -> (&str, &str) {
        (&self.source[i], &self.target[i])
    }

    /// The source sentences, in order.
    pub fn source(&self) -> &[String] {
        &self.source
    }

    /// The target sentences, in order.
    pub fn target(&self) -> &[String] {
        &self.target
    }
}

/// The lines of a UTF-8 text file: at least one, none empty, without `\n` or a trailing `\r`.
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format = |detail: String| Error::Format {
        path: path.to_path_buf(),
        detail,
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() {
        return Err(format("is empty: no sentences".into()));
    }
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line).map_err(|e| {
                format(format!(
                    "line {} is not UTF-8 (invalid byte at column {})",
                    i + 1,
                    e.valid_up_to() + 1
                ))
            })?;
            if line.trim().is_empty() {
                return Err(format(format!(
                    "line {} is empty (every line must hold a sentence)",
                    i + 1
                )));
            }
            Ok(line.to_string())
        })
        .collect()
}
