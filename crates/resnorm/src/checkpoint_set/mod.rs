//! Checkpoint sets: the files of one checkpoint in one directory that appears complete or
//! not at all, for every trainer.
//!
//! # Layout
//! A run directory `RUN` (a trainer's `--out`) holds its live checkpoint in `RUN/checkpoint/`:
//! the trainer's files plus `set.json`, the manifest, which records the step and, for every
//! file, its length and FNV-1a 64 checksum. The manifest binds every file to the step, so a
//! torn set (files of two saves, a truncated or damaged file) never loads: reading a file
//! checks it against the manifest and reports the first mismatch as one error.
//!
//! # Saving ([`save_set`])
//! ```text
//! 1. write every file into RUN/checkpoint.partial/, fsync each; write set.json last, fsync
//!    it and the directory
//! 2. rename RUN/checkpoint -> RUN/checkpoint.previous   (if there is one)
//! 3. rename RUN/checkpoint.partial -> RUN/checkpoint; fsync RUN
//! 4. delete RUN/checkpoint.previous; fsync RUN
//! ```
//! What a reader ([`CheckpointSet::open`]) or a crash sees at every instant: before 2,
//! `checkpoint` is the old complete set; between 2 and 3 there is no `checkpoint`, but
//! `checkpoint.partial` is complete (its manifest verifies) and wins, `checkpoint.previous`
//! next; after 3, `checkpoint` is the new complete set. A save that fails (a write error, a
//! full disk) removes `checkpoint.partial` and leaves `checkpoint` untouched; one that is
//! killed leaves it behind, and [`recover`] (run by every trainer before it trains) makes
//! the newest complete set the live one, finishing a save killed after step 1, then removes
//! the leftovers.
//!
//! ```
//! use resnorm::checkpoint_set::{save_set, CheckpointSet};
//!
//! let run = std::env::temp_dir().join(format!("resnorm-doc-set-{}", std::process::id()));
//! save_set(&run, 7, |set| {
//!     set.json("state.json", &serde_json::json!({"step": 7}))?;
//!     set.file("notes.txt", |out| out.write_all(b"seven"))
//! })
//! .unwrap();
//!
//! let set = CheckpointSet::open(&run).unwrap();
//! assert_eq!(set.step(), 7);
//! assert_eq!(set.read("notes.txt").unwrap(), b"seven");
//!
//! // A damaged file is refused by name, whatever the file's own format would accept.
//! std::fs::write(set.dir().join("notes.txt"), b"eight").unwrap();
//! let err = set.read("notes.txt").unwrap_err().to_string();
//! assert!(err.contains("notes.txt") && err.contains("checksum"), "{err}");
//! std::fs::remove_dir_all(&run).unwrap();
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{decode_tensors, remove_temp_files, Checkpoint};
use crate::optim::{AdamW, Optimizer, OptimizerState};
use crate::{Error, Result};

/// The live checkpoint, inside the run directory.
pub const LIVE_DIR: &str = "checkpoint";
/// A set being written.
pub const PARTIAL_DIR: &str = "checkpoint.partial";
/// The set being replaced, for the instant of the swap.
pub const PREVIOUS_DIR: &str = "checkpoint.previous";
/// The manifest of a set, written last.
pub const MANIFEST_FILE: &str = "set.json";

/// FNV-1a 64 offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Length and checksum of one file of a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDigest {
    bytes: u64,
    fnv1a64: u64,
}

/// `set.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    step: u64,
    files: BTreeMap<String, FileDigest>,
}

/// A [`Write`] that counts and checksums what passes through it.
struct Digesting<W> {
    inner: W,
    digest: FileDigest,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.bytes += n as u64;
        self.digest.fnv1a64 = fnv1a(self.digest.fnv1a64, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    hash
}

fn digest(bytes: &[u8]) -> FileDigest {
    FileDigest {
        bytes: bytes.len() as u64,
        fnv1a64: fnv1a(FNV_OFFSET, bytes),
    }
}

/// Writes the files of one set; handed to the closure of [`save_set`].
pub struct SetWriter {
    dir: PathBuf,
    files: BTreeMap<String, FileDigest>,
}

impl SetWriter {
    /// Creates the file `name` in the set and lets `write` fill it; the file is then
    /// `fsync`ed. Any error aborts the whole save.
    pub fn file(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<()> {
        if name == MANIFEST_FILE || name.contains(['/', '\\']) || self.files.contains_key(name) {
            return Err(Error::invalid(
                "SetWriter::file",
                format!("`{name}` cannot name a file of the set (reserved, nested or repeated)"),
            ));
        }
        let path = self.dir.join(name);
        let digest = write_synced(&path, write)?;
        self.files.insert(name.to_string(), digest);
        Ok(())
    }

    /// Writes `value` as pretty-printed JSON to the file `name`.
    pub fn json<T: Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::invalid("SetWriter::json", e.to_string()))?;
        bytes.push(b'\n');
        self.file(name, |out| out.write_all(&bytes))
    }
}

/// Creates `path`, writes it through a checksum, flushes and `fsync`s it.
fn write_synced(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<FileDigest> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut out = Digesting {
        inner: io::BufWriter::new(file),
        digest: FileDigest {
            bytes: 0,
            fnv1a64: FNV_OFFSET,
        },
    };
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(path, e))?;
    let digest = out.digest;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(digest)
}

/// Saves a checkpoint of `step` in the run directory `run` (created if needed): `write` fills
/// the set, which then replaces `run/checkpoint` as described in the [module docs](self).
///
/// On any error, from `write` or the file system, the new set is removed and the previous
/// checkpoint is left as it was.
pub fn save_set(
    run: &Path,
    step: u64,
    write: impl FnOnce(&mut SetWriter) -> Result<()>,
) -> Result<()> {
    fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    let partial = run.join(PARTIAL_DIR);
    remove_dir_if_present(&partial)?;
    fs::create_dir(&partial).map_err(|e| Error::io(&partial, e))?;
    let mut writer = SetWriter {
        dir: partial.clone(),
        files: BTreeMap::new(),
    };
    let written = write(&mut writer).and_then(|()| {
        let manifest = Manifest {
            step,
            files: writer.files,
        };
        let mut bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::invalid("save_set", e.to_string()))?;
        bytes.push(b'\n');
        write_synced(&partial.join(MANIFEST_FILE), |out| out.write_all(&bytes))?;
        sync_dir(&partial)
    });
    if let Err(error) = written {
        // The save's own error is the one to report; the partial set is removed on the
        // next start if it cannot be now.
        let _ = fs::remove_dir_all(&partial);
        return Err(error);
    }
    install(run)
}

/// Steps 2 to 4 of a save: swaps the complete `checkpoint.partial` in.
fn install(run: &Path) -> Result<()> {
    let live = run.join(LIVE_DIR);
    let previous = run.join(PREVIOUS_DIR);
    if live.exists() {
        remove_dir_if_present(&previous)?;
        fs::rename(&live, &previous).map_err(|e| Error::io(&live, e))?;
    }
    let partial = run.join(PARTIAL_DIR);
    fs::rename(&partial, &live).map_err(|e| Error::io(&partial, e))?;
    sync_dir(run)?;
    remove_dir_if_present(&previous)?;
    sync_dir(run)
}

/// Makes the newest complete set of the run directory `run` its live one (finishing a save
/// that was killed after its files were complete) and removes the leftovers of interrupted
/// saves (partial sets, and the temporary files of
/// [`crate::checkpoint::write_atomic`], e.g. for a log); nothing to do when `run` does not
/// exist.
///
/// Every trainer calls it before it trains (a reader never changes a run directory).
pub fn recover(run: &Path) -> Result<()> {
    if !run.is_dir() {
        return Ok(());
    }
    let live = run.join(LIVE_DIR);
    let complete = |name: &str| {
        CheckpointSet::at(&run.join(name))
            .and_then(|set| set.verify().map(|()| set.step()))
            .ok()
    };
    let live_step = CheckpointSet::at(&live).ok().map(|set| set.step());
    match (live_step, complete(PARTIAL_DIR)) {
        // Killed after step 1 (the new set complete) or between steps 2 and 3.
        (live_step, Some(step)) if live_step.is_none_or(|live_step| step > live_step) => {
            install(run)?
        }
        (None, _) if complete(PREVIOUS_DIR).is_some() && !live.exists() => {
            let previous = run.join(PREVIOUS_DIR);
            fs::rename(&previous, &live).map_err(|e| Error::io(&previous, e))?;
        }
        _ => {}
    }
    remove_dir_if_present(&run.join(PARTIAL_DIR))?;
    remove_dir_if_present(&run.join(PREVIOUS_DIR))?;
    remove_temp_files(run)?;
    sync_dir(run)
}

/// True when the run directory `run` holds a checkpoint, complete or interrupted.
pub fn holds_checkpoint(run: &Path) -> bool {
    [LIVE_DIR, PARTIAL_DIR, PREVIOUS_DIR]
        .iter()
        .any(|name| run.join(name).exists())
        || run.join(MANIFEST_FILE).exists()
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

/// Makes the renames and creations inside `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Directories cannot be opened for `fsync` outside Unix; the renames are still atomic.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// A complete checkpoint set, opened for reading.
#[derive(Clone, Debug)]
pub struct CheckpointSet {
    dir: PathBuf,
    manifest: Manifest,
}

impl CheckpointSet {
    /// The checkpoint that `path` names: a set directory itself, or a run directory whose
    /// `checkpoint/` (during a swap: the complete `checkpoint.partial/`, else
    /// `checkpoint.previous/`) holds one.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                detail: "not a checkpoint directory (it does not exist or is a file)".into(),
            });
        }
        if path.join(MANIFEST_FILE).exists() {
            return Self::at(path);
        }
        let live = path.join(LIVE_DIR);
        if live.exists() {
            return Self::at(&live);
        }
        let partial = path.join(PARTIAL_DIR);
        if let Ok(set) = Self::at(&partial).and_then(|s| s.verify().map(|()| s)) {
            return Ok(set);
        }
        let previous = path.join(PREVIOUS_DIR);
        if previous.exists() {
            return Self::at(&previous);
        }
        // Before checkpoint sets, a run kept its files directly in its directory.
        let detail = match path.join("state.json").exists() || path.join("trainer.json").exists() {
            true => format!(
                "holds a checkpoint from an older resnorm (files directly in the run \
                 directory, no {LIVE_DIR}/{MANIFEST_FILE}), which this version does not read; \
                 train it again with this version"
            ),
            false => format!("holds no checkpoint (no {LIVE_DIR}/{MANIFEST_FILE})"),
        };
        Err(Error::Format {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// The set in the directory `dir`, by its manifest.
    fn at(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Format {
            path,
            detail: format!("not a checkpoint manifest: {e}"),
        })?;
        Ok(CheckpointSet {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Checks every file of the set against the manifest.
    pub fn verify(&self) -> Result<()> {
        self.manifest
            .files
            .keys()
            .try_for_each(|name| self.read(name).map(drop))
    }

    /// The directory of the set's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The step the set was saved at.
    pub fn step(&self) -> u64 {
        self.manifest.step
    }

    /// True when the set has a file `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.manifest.files.contains_key(name)
    }

    /// The bytes of the file `name`, after checking them against the manifest.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join(name);
        let torn = |detail: String| Error::Format {
            path: path.clone(),
            detail: format!("{detail} (a damaged or torn checkpoint)"),
        };
        let Some(expected) = self.manifest.files.get(name) else {
            return Err(torn(format!(
                "not in the set's {MANIFEST_FILE} of step {}",
                self.manifest.step
            )));
        };
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let found = digest(&bytes);
        if found.bytes != expected.bytes {
            return Err(torn(format!(
                "{} bytes, but {MANIFEST_FILE} of step {} says {}",
                found.bytes, self.manifest.step, expected.bytes
            )));
        }
        if found.fnv1a64 != expected.fnv1a64 {
            return Err(torn(format!(
                "checksum {:016x}, but {MANIFEST_FILE} of step {} says {:016x}",
                found.fnv1a64, self.manifest.step, expected.fnv1a64
            )));
        }
        Ok(bytes)
    }

    /// The JSON file `name`, checked and parsed.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let bytes = self.read(name)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Format {
            path: self.dir.join(name),
            detail: format!("not a valid checkpoint file: {e}"),
        })
    }

    /// The safetensors file `name`, checked and decoded.
    pub fn read_tensors(&self, name: &str) -> Result<Checkpoint> {
        let bytes = self.read(name)?;
        decode_tensors(&self.dir.join(name), &bytes)
    }

    /// An error unless `found`, the step recorded inside the file `name`, is the set's.
    pub fn check_step(&self, name: &str, found: Option<u64>) -> Result<()> {
        if found == Some(self.manifest.step) {
            return Ok(());
        }
        Err(Error::Format {
            path: self.dir.join(name),
            detail: format!(
                "holds step {}, but {MANIFEST_FILE} says {} (a torn checkpoint)",
                found.map_or("(none)".to_string(), |s| s.to_string()),
                self.manifest.step
            ),
        })
    }

    /// The AdamW whose state the file `name` holds (its step count must be the set's), built
    /// by `make` with the run's hyperparameters once the state has been read and checked.
    pub fn read_adamw(&self, name: &str, make: impl FnOnce() -> Result<AdamW>) -> Result<AdamW> {
        let path = self.dir.join(name);
        let state = OptimizerState::from_checkpoint(&path, self.read_tensors(name)?)?;
        self.check_step(name, Some(state.step))?;
        let mut optimizer = make()?;
        optimizer.load_state(state).map_err(|e| Error::Format {
            path,
            detail: e.to_string(),
        })?;
        Ok(optimizer)
    }
}

#[cfg(test)]
mod tests;
