//! The tensors of a Hugging Face checkpoint directory: `model.safetensors`, or the shards
//! that `model.safetensors.index.json` lists, their `F32`, `F16` or `BF16` values converted
//! to `f32` as they are read.
//!
//! ```
//! use resnorm::hf::tensors::{bf16_to_f32, f16_to_f32};
//! assert_eq!(bf16_to_f32(0x3f80), 1.0);
//! assert_eq!(f16_to_f32(0x3c00), 1.0);
//! assert_eq!(f16_to_f32(0xc000), -2.0);
//! assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // the smallest subnormal
//! ```

use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One tensor as read: its shape, its values in `f32`, and the file it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Dimensions as stored.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
    /// The file it was read from.
    pub file: PathBuf,
}

/// Every tensor of the checkpoint in `dir`, by name.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, Loaded>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files = if single.exists() {
        vec![single]
    } else if index.exists() {
        shard_files(&index)?
    } else {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            detail: "holds neither model.safetensors nor model.safetensors.index.json".into(),
        });
    };
    let mut out = BTreeMap::new();
    for file in files {
        read_file(&file, &mut out)?;
    }
    Ok(out)
}

/// The shard files an index names, each once, in order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let format = |detail: String| Error::Format {
        path: index.to_path_buf(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format(format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format("has no `weight_map` object".into()))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| format(format!("the file of `{name}` is not a string")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(format(format!(
                "shard `{file}` is not a file of the directory"
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Adds every tensor of one safetensors file to `out`; a name seen before is an error.
fn read_file(path: &Path, out: &mut BTreeMap<String, Loaded>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format = |detail: String| Error::Format {
        path: path.to_path_buf(),
        detail,
    };
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| format(format!("not safetensors: {e}")))?;
    for (name, view) in tensors.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            other => {
                return Err(format(format!(
                    "tensor `{name}` has dtype {other:?}; F32, F16 and BF16 are read"
                )))
            }
        };
        let loaded = Loaded {
            shape: view.shape().to_vec(),
            values,
            file: path.to_path_buf(),
        };
        if out.insert(name.clone(), loaded).is_some() {
            return Err(format(format!("tensor `{name}` appears in two files")));
        }
    }
    Ok(())
}

/// A bfloat16's value: its bits are a float32's upper half.
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// An IEEE half's value, subnormals, infinities and NaN included.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let magnitude = match exponent {
        0 => return f32::from_bits(sign) + sign_of(bits) * mantissa as f32 * 2f32.powi(-24),
        0x1f => 0xff << 23 | mantissa << 13,
        e => (e + 127 - 15) << 23 | mantissa << 13,
    };
    f32::from_bits(sign | magnitude)
}

fn sign_of(bits: u16) -> f32 {
    if bits >> 15 == 1 {
        -1.0
    } else {
        1.0
    }
}
