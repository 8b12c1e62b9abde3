//! What every trainer does with its run directory (`--out`) and its `--resume` settings:
//! refuse to train over another run unless asked to, finish or clear an interrupted save
//! before training, and refuse a resume whose settings differ from the saved run's.

use std::path::Path;

use resnorm::checkpoint_set::{holds_checkpoint, recover};
use resnorm::{Error, Result};
use serde_json::Value;

/// Makes `out` ready for a run: refused (one line, exit 2) when it holds another run and
/// neither resuming it nor `overwrite` was asked for; then the leftovers of an interrupted
/// save in it are cleared (see `resnorm::checkpoint_set::recover`).
///
/// With `--overwrite`, the old checkpoint stays until the new run's first save replaces it.
pub fn claim(out: &Path, resumed: Option<&Path>, overwrite: bool) -> Result<()> {
    let holds_run = holds_checkpoint(out) || out.join("metrics.jsonl").exists();
    let resuming_it = resumed.is_some_and(|dir| same_dir(dir, out));
    if holds_run && !resuming_it && !overwrite {
        let resume = match resumed {
            Some(_) => String::new(),
            None => format!("--resume {} to continue it, or ", out.display()),
        };
        return Err(Error::Config(format!(
            "--out {} already holds a run; pass {resume}--overwrite to replace it",
            out.display()
        )));
    }
    recover(out)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// One setting as a resume compares it: its name in the saved settings (`lr`, `model.width`)
/// and its value there and in the new run's.
struct Difference {
    key: String,
    saved: Value,
    asked: Value,
}

/// Every setting whose value differs between `saved` and `asked`, nested objects compared
/// field by field.
fn differences(prefix: &str, saved: &Value, asked: &Value, out: &mut Vec<Difference>) {
    match (saved, asked) {
        (Value::Object(s), Value::Object(a)) => {
            let mut keys: Vec<&String> = s.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let null = Value::Null;
                differences(
                    &name,
                    s.get(key).unwrap_or(&null),
                    a.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if saved != asked => out.push(Difference {
            key: prefix.to_string(),
            saved: saved.clone(),
            asked: asked.clone(),
        }),
        _ => {}
    }
}

/// Refuses to resume with settings `asked` that differ from the `saved` run's, except those
/// `is_changeable` accepts; the error names each setting's flag (`flag_of`) and both values
/// in one line, and lists the changeable ones (`changeable`).
pub fn check_same_settings<T: serde::Serialize>(
    saved: &T,
    asked: &T,
    is_changeable: impl Fn(&str) -> bool,
    flag_of: impl Fn(&str) -> String,
    changeable: &str,
) -> Result<()> {
    let to_value = |v: &T| serde_json::to_value(v).map_err(|e| Error::Config(e.to_string()));
    let mut found = Vec::new();
    differences("", &to_value(saved)?, &to_value(asked)?, &mut found);
    let refused: Vec<String> = found
        .iter()
        .filter(|d| !is_changeable(&d.key))
        .map(|d| {
            format!(
                "{} {} (the saved run has {})",
                flag_of(&d.key),
                show(&d.asked),
                show(&d.saved)
            )
        })
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "--resume continues the saved run with its own settings, but this one asks for {}; \
         only {changeable} may change on resume",
        refused.join(", ")
    )))
}

/// A setting's value as the user typed it: settings held as `f32` print in their shortest
/// `f32` form (`0.05`, not `0.05000000074505806`).
fn show(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if value.is_f64() && f64::from(x as f32) == x => (x as f32).to_string(),
        _ => value.to_string(),
    }
}

/// The line printed when a run resumes on another number of threads than it ran on.
pub fn warn_threads(saved: usize) {
    let now = resnorm::threads::num_threads();
    if saved != now {
        eprintln!(
            "note: the run was trained with {saved} threads and continues with {now}: the \
             result will no longer be bit-identical to an uninterrupted run (pass --threads \
             {saved} for that)"
        );
    }
}
