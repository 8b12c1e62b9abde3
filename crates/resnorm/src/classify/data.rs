//! Labeled sentences from a TSV or CSV file with a header row.
//!
//! The columns are named by a [`TableSpec`]: the text, and either a label (one of a declared
//! set, or every distinct label found, sorted) or a real-valued score. A score is the target
//! of a regression, or, with a `threshold` `t > 0`, a binary label:
//!
//! ```text
//! score >= t  -> pos        score <= -t -> neg        |score| < t -> row left out
//! ```
//! (the VADER ground truth's binary task keeps `|score| >= 0.5`). An optional group column
//! (the VADER file's `domain`) is kept for per-group accuracy. `.tsv` files split on tabs
//! with no quoting; other files are CSV with `"` quoting within a line. Every defect is one
//! [`Error::Format`] naming the file, the line (from 1, the header is line 1) and the column.
//!
//! ```
//! use resnorm::classify::{read_table, TableSpec, Task};
//! let dir = std::env::temp_dir().join(format!("resnorm-doc-table-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("s.tsv");
//! std::fs::write(&path, "domain\tscore\ttext\nweb\t2.5\tgreat\nweb\t0.1\tmeh\nnews\t-1\tbad\n").unwrap();
//! let spec = TableSpec {
//!     score_column: Some("score".into()), threshold: Some(0.5),
//!     group_column: Some("domain".into()), ..TableSpec::new("text")
//! };
//! let table = read_table(&path, &spec).unwrap();
//! assert_eq!(table.task, Task::Classes(vec!["neg".into(), "pos".into()]));
//! let labels: Vec<u32> = table.examples.iter().map(|e| e.label).collect();
//! assert_eq!((labels, table.examples[1].line), (vec![1, 0], 4));
//! std::fs::write(&path, "domain\tscore\ttext\nweb\tx\thi\n").unwrap();
//! let err = read_table(&path, &spec).unwrap_err().to_string();
//! assert!(err.contains("line 2, column `score`: `x` is not a number"), "{err}");
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which columns of a table hold what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// The sentence.
    pub text_column: String,
    /// A class label (exclusive with `score_column`).
    pub label_column: Option<String>,
    /// A real-valued score: regression, or binary labels with `threshold`.
    pub score_column: Option<String>,
    /// Scores at or beyond `±threshold` become `pos` / `neg`; the rows between are left out.
    pub threshold: Option<f32>,
    /// The declared label set, in class order; `None`: every label found, sorted.
    pub labels: Option<Vec<String>>,
    /// A column whose values group the rows for per-group accuracy.
    pub group_column: Option<String>,
}

impl TableSpec {
    /// Only the text column named; the rest unset.
    pub fn new(text_column: &str) -> Self {
        TableSpec {
            text_column: text_column.to_string(),
            label_column: None,
            score_column: None,
            threshold: None,
            labels: None,
            group_column: None,
        }
    }

    /// Checks that the columns describe one task.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: &str| Err(Error::Config(m.to_string()));
        match (&self.label_column, &self.score_column) {
            (Some(_), Some(_)) => return fail("give a label column or a score column, not both"),
            (None, None) => return fail("give a label column or a score column"),
            _ => {}
        }
        if let Some(t) = self.threshold {
            if self.score_column.is_none() {
                return fail("a threshold turns scores into labels: it needs a score column");
            }
            if !(t.is_finite() && t > 0.0) {
                return fail("the threshold must be positive");
            }
        }
        if self.labels.is_some() && self.label_column.is_none() {
            return fail("declared labels need a label column");
        }
        if let Some(labels) = &self.labels {
            let mut sorted = labels.clone();
            sorted.sort();
            sorted.dedup();
            if labels.len() < 2 || sorted.len() != labels.len() {
                return fail("declare at least two distinct labels");
            }
        }
        Ok(())
    }

    /// The task the columns describe, before reading (classes found in the data are
    /// filled in by [`read_table`]).
    fn is_regression(&self) -> bool {
        self.score_column.is_some() && self.threshold.is_none()
    }
}

/// What the model predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One of these classes (index = label id).
    Classes(Vec<String>),
    /// A real-valued score.
    Regression,
}

impl Task {
    /// The model's outputs per sentence: one logit per class, or the score.
    pub fn outputs(&self) -> usize {
        match self {
            Task::Classes(names) => names.len(),
            Task::Regression => 1,
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Its line in the file (the header is line 1): the row's identity in a split file.
    pub line: usize,
    /// The sentence.
    pub text: String,
    /// Class id (0 for regression).
    pub label: u32,
    /// The score (regression target), 0 without a score column.
    pub score: f32,
    /// The value of the group column, if one was named.
    pub group: Option<String>,
}

/// The rows kept, and the task.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The file read.
    pub path: PathBuf,
    /// The rows kept, in file order.
    pub examples: Vec<Example>,
    /// The classes, or regression.
    pub task: Task,
}

/// Reads `path` as `spec` describes (see the module documentation).
pub fn read_table(path: &Path, spec: &TableSpec) -> Result<Table> {
    spec.validate()?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let tsv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let fail = |line: usize, detail: String| Error::Format {
        path: path.to_path_buf(),
        detail: format!("line {line}{detail}"),
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (_, header) = lines
        .next()
        .ok_or_else(|| fail(1, ": the file is empty, a header row is needed".into()))?;
    let header = split_fields(header, tsv).map_err(|e| fail(1, e))?;
    let column = |name: &Option<String>| -> Result<Option<usize>> {
        let Some(name) = name else { return Ok(None) };
        match header.iter().position(|h| h == name) {
            Some(i) => Ok(Some(i)),
            None => Err(fail(
                1,
                format!(
                    ", column `{name}`: no such column (the header has {})",
                    header.join(", ")
                ),
            )),
        }
    };
    let text_col = column(&Some(spec.text_column.clone()))?.expect("named");
    let label_col = column(&spec.label_column)?;
    let score_col = column(&spec.score_column)?;
    let group_col = column(&spec.group_column)?;
    let mut raw = Vec::new();
    for (line, row) in lines {
        if row.trim().is_empty() {
            continue;
        }
        let fields = split_fields(row, tsv).map_err(|e| fail(line, e))?;
        if fields.len() != header.len() {
            return Err(fail(
                line,
                format!(": {} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        let at =
            |col: usize, detail: &str| fail(line, format!(", column `{}`: {detail}", header[col]));
        let text = fields[text_col].trim();
        if text.is_empty() {
            return Err(at(text_col, "the text is empty"));
        }
        let score = match score_col {
            Some(col) => {
                let value = fields[col].trim();
                match value.parse::<f32>() {
                    Ok(v) if v.is_finite() => v,
                    _ => return Err(at(col, &format!("`{value}` is not a number"))),
                }
            }
            None => 0.0,
        };
        let label = match (label_col, spec.threshold) {
            (Some(col), _) => Some(fields[col].trim().to_string()),
            (None, Some(t)) if score >= t => Some("pos".to_string()),
            (None, Some(t)) if score <= -t => Some("neg".to_string()),
            (None, Some(_)) => continue,
            (None, None) => None,
        };
        let group = group_col.map(|col| fields[col].trim().to_string());
        raw.push((line, text.to_string(), label, score, group));
    }
    let task = if spec.is_regression() {
        Task::Regression
    } else if spec.threshold.is_some() {
        Task::Classes(vec!["neg".into(), "pos".into()])
    } else if let Some(declared) = &spec.labels {
        Task::Classes(declared.clone())
    } else {
        let mut found: Vec<String> = raw.iter().filter_map(|r| r.2.clone()).collect();
        found.sort();
        found.dedup();
        Task::Classes(found)
    };
    let mut examples = Vec::with_capacity(raw.len());
    for (line, text, label, score, group) in raw {
        let label = match (&task, label) {
            (Task::Classes(names), Some(label)) => match names.iter().position(|n| *n == label) {
                Some(id) => id as u32,
                None => {
                    let col = label_col.expect("declared labels need a label column");
                    return Err(fail(
                        line,
                        format!(
                            ", column `{}`: label `{label}` is not one of {}",
                            header[col],
                            names.join(", ")
                        ),
                    ));
                }
            },
            _ => 0,
        };
        examples.push(Example {
            line,
            text,
            label,
            score,
            group,
        });
    }
    if examples.is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            detail: "no rows to learn from".into(),
        });
    }
    Ok(Table {
        path: path.to_path_buf(),
        examples,
        task,
    })
}

/// The fields of one line: split on tabs, or CSV with `"` quoting (`""` is a quote).
fn split_fields(line: &str, tsv: bool) -> std::result::Result<Vec<String>, String> {
    if tsv {
        return Ok(line.split('\t').map(str::to_string).collect());
    }
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err(": a quoted field is not closed on its line".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, text: &str, spec: &TableSpec) -> Result<Table> {
        let dir = std::env::temp_dir().join(format!("resnorm-table-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let result = read_table(&path, spec);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    fn labels(declared: Option<&[&str]>) -> TableSpec {
        TableSpec {
            label_column: Some("label".into()),
            labels: declared.map(|d| d.iter().map(|s| s.to_string()).collect()),
            ..TableSpec::new("text")
        }
    }

    #[test]
    fn csv_quotes_and_found_labels() {
        let t = table(
            "a.csv",
            "text,label\n\"hi, there\",b\n\"say \"\"x\"\"\",a\n",
            &labels(None),
        )
        .unwrap();
        assert_eq!(t.task, Task::Classes(vec!["a".into(), "b".into()]));
        assert_eq!(t.examples[0].text, "hi, there");
        assert_eq!(t.examples[1].text, "say \"x\"");
        assert_eq!((t.examples[0].label, t.examples[1].label), (1, 0));
    }

    #[test]
    fn every_defect_names_file_line_and_column() {
        let spec = labels(Some(&["neg", "pos"]));
        let cases = [
            (
                "text\tlabel\nok\tneu\n",
                "line 2, column `label`: label `neu` is not one of neg, pos",
            ),
            (
                "text\tlabel\n  \tpos\n",
                "line 2, column `text`: the text is empty",
            ),
            (
                "text\tlabel\nok\tpos\nonly\n",
                "line 3: 1 fields, the header has 2",
            ),
            (
                "txt\tlabel\nok\tpos\n",
                "line 1, column `text`: no such column (the header has txt, label)",
            ),
        ];
        for (text, expected) in cases {
            let err = table("b.tsv", text, &spec).unwrap_err().to_string();
            assert!(err.contains("b.tsv: ") && err.ends_with(expected), "{err}");
        }
        let regression = TableSpec {
            score_column: Some("score".into()),
            ..TableSpec::new("text")
        };
        let err = table("c.csv", "text,score\nok,1e9999\n", &regression)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("line 2, column `score`: `1e9999` is not a number"),
            "{err}"
        );
        let t = table("d.csv", "text,score\nok,-1.5\n", &regression).unwrap();
        assert_eq!((t.task, t.examples[0].score), (Task::Regression, -1.5));
    }

    #[test]
    fn specs_that_describe_no_task_are_refused() {
        let both = TableSpec {
            score_column: Some("s".into()),
            ..labels(None)
        };
        assert!(both.validate().is_err());
        assert!(TableSpec::new("text").validate().is_err());
        let threshold = TableSpec {
            threshold: Some(0.5),
            ..labels(None)
        };
        assert!(threshold.validate().is_err());
        assert!(labels(Some(&["a", "a"])).validate().is_err());
    }
}
