//! A stratified train / validation / test split with a seed, and its file.
//!
//! Each class (regression: all rows as one stratum) is shuffled with its own draw of one
//! seeded [`Rng`] and cut: `round(n·test)` rows to test, `round(n·valid)` to validation, the
//! rest to training, so every split keeps the class proportions. Every class must reach every
//! split. The split is written to the run directory as `split.tsv` (`line` of the data
//! file, `split`), so evaluation, a resume and the tools/ anchors use exactly the same rows.
//!
//! ```
//! use resnorm::classify::{stratified_split, Example, Task};
//! let examples: Vec<Example> = (0..40)
//!     .map(|i| Example { line: i + 2, text: "x".into(), label: (i % 4 == 0) as u32, score: 0.0, group: None })
//!     .collect();
//! let task = Task::Classes(vec!["a".into(), "b".into()]);
//! let split = stratified_split(&examples, &task, 0.1, 0.2, 7, "data.tsv", "label").unwrap();
//! assert_eq!((split.train.len(), split.valid.len(), split.test.len()), (28, 4, 8));
//! let positives = split.test.iter().filter(|&&i| examples[i].label == 1).count();
//! assert_eq!(positives, 2); // 10 positives: 20 % of them
//! ```

use std::path::Path;

use crate::rng::Rng;
use crate::{Error, Result};

use super::data::{Example, Task};

/// The split file's name in a run directory.
pub const SPLIT_FILE: &str = "split.tsv";

/// Indices into a table's examples, each list in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows.
    pub valid: Vec<usize>,
    /// Test rows.
    pub test: Vec<usize>,
}

/// The three parts' names, in the split file.
const NAMES: [&str; 3] = ["train", "valid", "test"];

impl Split {
    fn parts(&self) -> [&Vec<usize>; 3] {
        [&self.train, &self.valid, &self.test]
    }

    /// Refuses a split in which a class has no example, naming `data` and `column`.
    pub fn check_classes(
        &self,
        examples: &[Example],
        task: &Task,
        data: &str,
        column: &str,
    ) -> Result<()> {
        let Task::Classes(names) = task else {
            return Ok(());
        };
        for (part, name) in self.parts().iter().zip(NAMES) {
            if part.is_empty() {
                return Err(Error::Format {
                    path: data.into(),
                    detail: format!("the {name} split has no rows"),
                });
            }
            for (id, class) in names.iter().enumerate() {
                if !part.iter().any(|&i| examples[i].label as usize == id) {
                    let total = examples.iter().filter(|e| e.label as usize == id).count();
                    return Err(Error::Format {
                        path: data.into(),
                        detail: format!(
                            "column `{column}`: class `{class}` has no examples in the {name} split ({total} in all)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// `line\tsplit` per row, in file order.
    pub fn to_tsv(&self, examples: &[Example]) -> String {
        let mut rows: Vec<(usize, &str)> = Vec::with_capacity(examples.len());
        for (part, name) in self.parts().iter().zip(NAMES) {
            rows.extend(part.iter().map(|&i| (examples[i].line, name)));
        }
        rows.sort_unstable();
        let mut out = String::from("line\tsplit\n");
        for (line, name) in rows {
            out.push_str(&format!("{line}\t{name}\n"));
        }
        out
    }

    /// Writes [`Split::to_tsv`] to `path` atomically.
    pub fn write(&self, path: &Path, examples: &[Example]) -> Result<()> {
        crate::checkpoint::write_atomic(path, self.to_tsv(examples).as_bytes())
    }

    /// Reads a split file written by [`Split::write`] for `examples` (the same table): every
    /// line it names must be a row of the table.
    pub fn read(path: &Path, examples: &[Example]) -> Result<Split> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let fail = |line: usize, detail: String| Error::Format {
            path: path.to_path_buf(),
            detail: format!("line {line}: {detail}"),
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        if lines.next().map(|(_, l)| l) != Some("line\tsplit") {
            return Err(fail(1, "the header must be `line<TAB>split`".into()));
        }
        let index_of = |line: usize| examples.binary_search_by_key(&line, |e| e.line).ok();
        let mut split = Split {
            train: Vec::new(),
            valid: Vec::new(),
            test: Vec::new(),
        };
        for (n, row) in lines {
            let (line, name) = row
                .split_once('\t')
                .ok_or_else(|| fail(n, format!("`{row}` is not `line<TAB>split`")))?;
            let line: usize = line
                .parse()
                .map_err(|_| fail(n, format!("`{line}` is not a line number")))?;
            let index = index_of(line).ok_or_else(|| {
                fail(
                    n,
                    format!("line {line} is not a row of the data (a different file?)"),
                )
            })?;
            match name {
                "train" => split.train.push(index),
                "valid" => split.valid.push(index),
                "test" => split.test.push(index),
                _ => return Err(fail(n, format!("`{name}` is not train, valid or test"))),
            }
        }
        Ok(split)
    }
}

/// Splits `examples` (see the module documentation); `data` and `column` name the file and
/// the label column in the error when a class misses a split.
pub fn stratified_split(
    examples: &[Example],
    task: &Task,
    valid: f64,
    test: f64,
    seed: u64,
    data: &str,
    column: &str,
) -> Result<Split> {
    if !(valid > 0.0 && test > 0.0 && valid + test < 1.0) {
        return Err(Error::Config(format!(
            "the validation and test fractions must be positive and sum below 1, got {valid} and {test}"
        )));
    }
    let strata = match task {
        Task::Classes(names) => names.len(),
        Task::Regression => 1,
    };
    let mut rng = Rng::new(seed);
    let mut split = Split {
        train: Vec::new(),
        valid: Vec::new(),
        test: Vec::new(),
    };
    for class in 0..strata {
        let mut rows: Vec<usize> = (0..examples.len())
            .filter(|&i| strata == 1 || examples[i].label as usize == class)
            .collect();
        for i in (1..rows.len()).rev() {
            rows.swap(i, rng.below(i + 1));
        }
        let n = rows.len() as f64;
        let n_test = (n * test).round() as usize;
        let n_valid = (n * valid).round() as usize;
        split
            .test
            .extend_from_slice(&rows[..n_test.min(rows.len())]);
        let rest = &rows[n_test.min(rows.len())..];
        split
            .valid
            .extend_from_slice(&rest[..n_valid.min(rest.len())]);
        split
            .train
            .extend_from_slice(&rest[n_valid.min(rest.len())..]);
    }
    split.train.sort_unstable();
    split.valid.sort_unstable();
    split.test.sort_unstable();
    split.check_classes(examples, task, data, column)?;
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                line: 2 * i + 2,
                text: format!("t{i}"),
                label: (i % 3 == 0) as u32,
                score: 0.0,
                group: None,
            })
            .collect()
    }

    #[test]
    fn split_round_trips_through_its_file_and_depends_on_the_seed() {
        let ex = examples(60);
        let task = Task::Classes(vec!["a".into(), "b".into()]);
        let split = stratified_split(&ex, &task, 0.1, 0.1, 3, "d", "label").unwrap();
        let dir = std::env::temp_dir().join(format!("resnorm-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SPLIT_FILE);
        split.write(&path, &ex).unwrap();
        assert_eq!(Split::read(&path, &ex).unwrap(), split);
        assert!(Split::read(&path, &ex[..10])
            .unwrap_err()
            .to_string()
            .contains("not a row"));
        std::fs::remove_dir_all(&dir).unwrap();
        let other = stratified_split(&ex, &task, 0.1, 0.1, 4, "d", "label").unwrap();
        assert_ne!(other.test, split.test);
        let mut all: Vec<usize> = split
            .parts()
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..60).collect::<Vec<_>>());
    }

    #[test]
    fn a_class_missing_from_a_split_is_refused() {
        let ex = examples(30); // 10 of class b: 4 % rounds to none, 4 % of class a's 20 to one
        let task = Task::Classes(vec!["a".into(), "b".into()]);
        let err = stratified_split(&ex, &task, 0.04, 0.04, 0, "d.tsv", "label").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d.tsv: column `label`: class `"),
            "{err}"
        );
    }
}
