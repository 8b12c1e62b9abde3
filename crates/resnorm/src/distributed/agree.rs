//! Collective checks before training, so that a problem on one rank stops every rank with
//! the same one-line error instead of leaving the others waiting in a collective forever.
//!
//! - [`all_ok`]: did every rank start without error? Each rank contributes a flag; the
//!   lowest failing rank's message then goes to all.
//! - [`agree_on`]: does every rank have rank 0's settings? Rank 0 sends its description (a
//!   flat JSON object: flags, data size, model); each rank lists the fields where its own
//!   differs; the lowest such rank's list goes to all.
//!
//! Both cost two small collectives and return the same result on every rank.
//! [`fingerprint`] builds a trainer's description: its settings, the sizes of its data and
//! model, and a checksum of its weights.
//!
//! ```
//! use resnorm::distributed::{agree, SingleProcess};
//! let mut comm = SingleProcess::default();
//! let settings = serde_json::json!({ "batch": 8, "layers": 2 });
//! agree::agree_on(&mut comm, &settings).unwrap(); // one rank always agrees with itself
//! assert_eq!(agree::all_ok(&mut comm, Ok(3)).unwrap(), 3);
//! ```

use super::Communicator;
use crate::nn::Param;
use crate::{Error, Result};

/// What every rank of a trainer must agree on, as one flat JSON object: the fields of
/// `settings`, then `extra` (data and model sizes, the step), then `weights_checksum`, an
/// FNV-1a hash of the bits of every weight `visit_weights` hands over, so that ranks that
/// would start from different weights are refused before the first step.
pub fn fingerprint(
    settings: &impl serde::Serialize,
    extra: Vec<(&str, serde_json::Value)>,
    visit_weights: impl FnOnce(&mut dyn FnMut(&Param)),
) -> serde_json::Value {
    // Through text, so that an f32 setting reads as written (0.01, not 0.009999999776).
    let text = serde_json::to_string(settings).unwrap_or_default();
    let mut fields = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let mut checksum = 0xcbf2_9ce4_8422_2325u64;
    visit_weights(&mut |p| {
        for v in p.value.iter() {
            checksum = (checksum ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3);
        }
    });
    for (key, value) in extra {
        fields.insert(key.to_string(), value);
    }
    fields.insert(
        "weights_checksum".to_string(),
        format!("{checksum:016x}").into(),
    );
    serde_json::Value::Object(fields)
}

/// `local` on every rank if every rank's is `Ok`; otherwise an error on every rank: rank 0's
/// own when it failed, else the lowest failing rank's message, naming the rank.
pub fn all_ok<T>(comm: &mut dyn Communicator, local: Result<T>) -> Result<T> {
    if comm.size() == 1 {
        return local;
    }
    let failed = first_flagged(comm, local.is_err())?;
    let Some(first) = failed else {
        return local;
    };
    match local {
        Err(e) if comm.rank() == 0 => {
            // Still in the broadcast, which every rank joins.
            comm.broadcast_bytes(first, &mut Vec::new())?;
            Err(e)
        }
        local => {
            let mut message = match &local {
                Err(e) if comm.rank() == first => e.to_string().into_bytes(),
                _ => Vec::new(),
            };
            comm.broadcast_bytes(first, &mut message)?;
            Err(Error::Config(format!(
                "rank {first} failed: {}",
                String::from_utf8_lossy(&message)
            )))
        }
    }
}

/// `Ok` on every rank if every rank's `settings` equal rank 0's; otherwise the same error
/// on every rank naming the lowest differing rank and each field where it differs.
pub fn agree_on(comm: &mut dyn Communicator, settings: &serde_json::Value) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut root = serde_json::to_vec(settings).unwrap_or_default();
    comm.broadcast_bytes(0, &mut root)?;
    let root: serde_json::Value = serde_json::from_slice(&root).unwrap_or_default();
    let differences = differences(settings, &root);
    let Some(first) = first_flagged(comm, !differences.is_empty())? else {
        return Ok(());
    };
    let mut message = if comm.rank() == first {
        differences.join(", ").into_bytes()
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(first, &mut message)?;
    Err(Error::Config(format!(
        "rank {first} differs from rank 0: {}",
        String::from_utf8_lossy(&message)
    )))
}

/// `key mine (rank 0: theirs)` for each field of `mine` or `root` where they differ.
fn differences(mine: &serde_json::Value, root: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let mine = mine.as_object().unwrap_or(&empty);
    let root = root.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = mine.keys().chain(root.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| mine.get(*key) != root.get(*key))
        .map(|key| {
            let show =
                |v: Option<&serde_json::Value>| v.map_or("none".to_string(), |v| v.to_string());
            format!(
                "{key} {} (rank 0: {})",
                show(mine.get(key)),
                show(root.get(key))
            )
        })
        .collect()
}

/// The lowest rank that raised its flag, if any (one sum of a vector of flags).
fn first_flagged(comm: &mut dyn Communicator, flag: bool) -> Result<Option<usize>> {
    let mut flags = vec![0.0f64; comm.size()];
    flags[comm.rank()] = if flag { 1.0 } else { 0.0 };
    comm.sum_f64(&mut flags)?;
    Ok(flags.iter().position(|&f| f > 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_every_field_both_ways() {
        let mine = serde_json::json!({ "batch": 8, "layers": 2, "extra": true });
        let root = serde_json::json!({ "batch": 4, "layers": 2, "seed": 1 });
        assert_eq!(
            differences(&mine, &root),
            [
                "batch 8 (rank 0: 4)",
                "extra true (rank 0: none)",
                "seed none (rank 0: 1)"
            ]
        );
        assert!(differences(&root, &root).is_empty());
    }
}
