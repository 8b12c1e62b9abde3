//! The training log: one JSON object per step, appended to `metrics.jsonl`.
//!
//! Each line holds `step` (from 1: the number of optimizer steps taken), `loss` (mean training
//! loss of the step's micro-batches), `val_loss` (only on steps that evaluated), `lr`,
//! `grad_norm` (before clipping), `tokens_per_s` (training tokens per wall-clock second of
//! the step) and `elapsed` (seconds since the run began, across resumes). When a run resumes
//! from a checkpoint, lines for steps after the checkpoint (written by the interrupted run)
//! are dropped first, so the file describes exactly one run.
//!
//! ```
//! use resnorm::lm::{MetricsLog, MetricsRecord};
//! let dir = std::env::temp_dir().join(format!("resnorm-doc-metrics-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("metrics.jsonl");
//! let mut log = MetricsLog::open(&path, 0).unwrap();
//! let record = MetricsRecord {
//!     step: 1, loss: 4.2, val_loss: None, lr: 1e-3, grad_norm: 0.5, tokens_per_s: 1e4,
//!     elapsed: 0.1, diagnostics: None,
//! };
//! log.append(&record).unwrap();
//! log.append(&MetricsRecord { step: 2, ..record }).unwrap();
//! drop(log);
//! let _ = MetricsLog::open(&path, 1).unwrap(); // resuming after step 1 drops step 2
//! let text = std::fs::read_to_string(&path).unwrap();
//! assert_eq!(text.lines().count(), 1);
//! assert!(text.starts_with("{\"step\":1,\"loss\":4.2,"));
//! assert!(!text.contains("val_loss") && !text.contains("diagnostics"));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;
use crate::diagnostics::Diagnostics;
use crate::{Error, Result};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Optimizer steps taken, counting this one.
    pub step: u64,
    /// Mean training loss of the step.
    pub loss: f32,
    /// Validation loss, when this step evaluated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    /// Learning rate of the step.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Training tokens per second of the step.
    pub tokens_per_s: f64,
    /// Seconds since the run began.
    pub elapsed: f64,
    /// Per-layer diagnostics, on the steps `diagnostics_every` asks for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub diagnostics: Option<Diagnostics>,
}

/// What [`MetricsLog::open`] reads of a line: every trainer's lines carry the step.
#[derive(Deserialize)]
struct StepOfLine {
    step: u64,
}

/// An open `metrics.jsonl`, appended to line by line.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens (or creates) `path` for appending, first dropping every line whose `step` is
    /// above `after_step` (a run starting fresh passes 0 and so starts an empty log).
    pub fn open(path: &Path, after_step: u64) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let mut kept = String::new();
            // A line without its newline was cut short by a kill: it is dropped, like every
            // line after the checkpoint.
            let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            for line in complete.lines() {
                let record: StepOfLine = serde_json::from_str(line).map_err(|e| Error::Format {
                    path: path.to_path_buf(),
                    detail: format!("not a metrics line: {e}"),
                })?;
                if record.step <= after_step {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            write_atomic(path, kept.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends `record` (a [`MetricsRecord`], or another trainer's line with a `step`) as
    /// one line and flushes it.
    pub fn append<R: Serialize>(&mut self, record: &R) -> Result<()> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| Error::invalid("MetricsLog::append", e.to_string()))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}
