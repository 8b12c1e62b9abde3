//! Runs a study's runs in sequence, each cached as `<runs_dir>/<key>.json` (its spec, the data
//! fingerprint and its result), so that an interrupted study resumes where it stopped.
//! Training runs also write their diagnostics as `<key>.metrics.jsonl`, one line per
//! collected step. Files are written to a temporary name and renamed, so a run is cached
//! completely or not at all; a cache file that does not parse or holds other settings is
//! recomputed.

use super::data::StudyData;
use super::model::StudyModelSpec;
use super::norm_timing::{run_norm_timing, NormTimingResult};
use super::probe::{run_probe, ProbeResult};
use super::spec::{NormTimingSpec, ProbeSpec, RunSpec, TrainSpec};
use super::train::{run_train, TrainResult};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RunResult {
    /// A probe's averages.
    Probe(ProbeResult),
    /// A training run's measurements.
    Train(TrainResult),
    /// LayerNorm and RMSNorm times.
    NormTiming(NormTimingResult),
}

/// One cached run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Its file-name key.
    pub key: String,
    /// Its settings.
    pub spec: RunSpec,
    /// Fingerprint of the data it ran on.
    pub data_fingerprint: u64,
    /// Its measurements.
    pub result: RunResult,
}

/// What the runner reports while it works, for a progress display.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress<'a> {
    /// Run `index` of `total` starts (or is read from the cache when `cached`); it will
    /// report `work` units.
    Started {
        /// Position in the study, from 0.
        index: usize,
        /// Runs in the study.
        total: usize,
        /// The run.
        spec: &'a RunSpec,
        /// True when the result comes from the cache.
        cached: bool,
    },
    /// One unit of work of the current run is done (a training step, a probe batch).
    Advanced,
}

/// How many progress units `spec` reports: its steps, batches or 1.
pub fn work_units(spec: &RunSpec) -> u64 {
    match spec {
        RunSpec::Probe(p) => p.batches as u64,
        RunSpec::Train(t) => t.steps,
        RunSpec::NormTiming(_) => 1,
        RunSpec::LlamaProbe(p) => p.batches as u64,
        RunSpec::LlamaTrain(t) => t.steps,
    }
}

/// The results of a study, looked up by spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Every run, in the order it was made.
    pub runs: Vec<RunRecord>,
}

impl Results {
    fn find(&self, spec: &RunSpec) -> Option<&RunResult> {
        self.runs
            .iter()
            .find(|r| &r.spec == spec)
            .map(|r| &r.result)
    }

    /// The probe `spec`, when it ran.
    pub fn probe<M: StudyModelSpec>(&self, spec: &ProbeSpec<M>) -> Option<&ProbeResult> {
        match self.find(&M::probe_run(spec.clone())) {
            Some(RunResult::Probe(r)) => Some(r),
            _ => None,
        }
    }

    /// The training run `spec`, when it ran.
    pub fn train<M: StudyModelSpec>(&self, spec: &TrainSpec<M>) -> Option<&TrainResult> {
        match self.find(&M::train_run(spec.clone())) {
            Some(RunResult::Train(r)) => Some(r),
            _ => None,
        }
    }

    /// The norm timing `spec`, when it ran.
    pub fn norm_timing(&self, spec: &NormTimingSpec) -> Option<&NormTimingResult> {
        match self.find(&RunSpec::NormTiming(spec.clone())) {
            Some(RunResult::NormTiming(r)) => Some(r),
            _ => None,
        }
    }
}

/// Runs every spec on `data` (or reads it from `runs_dir`), reporting to `progress`.
pub fn run_study(
    specs: &[RunSpec],
    data: &StudyData,
    runs_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Results> {
    std::fs::create_dir_all(runs_dir).map_err(|e| Error::io(runs_dir, e))?;
    let mut results = Results::default();
    for (index, spec) in specs.iter().enumerate() {
        let key = spec.key(data.fingerprint);
        let path = runs_dir.join(format!("{key}.json"));
        let cached = read_cached(&path, spec, data.fingerprint);
        progress(Progress::Started {
            index,
            total: specs.len(),
            spec,
            cached: cached.is_some(),
        });
        let record = match cached {
            Some(record) => record,
            None => {
                let result = run_one(spec, data, &mut || progress(Progress::Advanced))?;
                let record = RunRecord {
                    key: key.clone(),
                    spec: spec.clone(),
                    data_fingerprint: data.fingerprint,
                    result,
                };
                write_record(runs_dir, &record)?;
                record
            }
        };
        results.runs.push(record);
    }
    Ok(results)
}

fn run_one(spec: &RunSpec, data: &StudyData, advanced: &mut dyn FnMut()) -> Result<RunResult> {
    Ok(match spec {
        RunSpec::Probe(p) => {
            let result = run_probe(p, data)?;
            (0..p.batches).for_each(|_| advanced());
            RunResult::Probe(result)
        }
        RunSpec::LlamaProbe(p) => {
            let result = run_probe(p, data)?;
            (0..p.batches).for_each(|_| advanced());
            RunResult::Probe(result)
        }
        RunSpec::Train(t) => RunResult::Train(run_train(t, data, &mut |_| advanced())?),
        RunSpec::LlamaTrain(t) => RunResult::Train(run_train(t, data, &mut |_| advanced())?),
        RunSpec::NormTiming(n) => {
            let result = run_norm_timing(n)?;
            advanced();
            RunResult::NormTiming(result)
        }
    })
}

fn read_cached(path: &Path, spec: &RunSpec, fingerprint: u64) -> Option<RunRecord> {
    let text = std::fs::read_to_string(path).ok()?;
    let record: RunRecord = serde_json::from_str(&text).ok()?;
    (&record.spec == spec && record.data_fingerprint == fingerprint).then_some(record)
}

fn write_record(runs_dir: &Path, record: &RunRecord) -> Result<()> {
    let json =
        serde_json::to_string(record).map_err(|e| Error::invalid("run_study", e.to_string()))?;
    if let RunResult::Train(train) = &record.result {
        let mut lines = String::new();
        for d in &train.diagnostics {
            let line =
                serde_json::to_string(d).map_err(|e| Error::invalid("run_study", e.to_string()))?;
            lines.push_str(&line);
            lines.push('\n');
        }
        write_atomically(
            &runs_dir.join(format!("{}.metrics.jsonl", record.key)),
            &lines,
        )?;
    }
    write_atomically(&runs_dir.join(format!("{}.json", record.key)), &json)
}

/// Writes `contents` to `path` through a temporary file in the same folder.
pub fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, contents).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
