//! Checkpoints: named `f32` tensors plus string metadata in a [safetensors] file, written
//! atomically and read back with every defect reported as a typed error.
//!
//! # File layout
//! A safetensors file is `n` (8 bytes, little-endian `u64`), a JSON header of `n` bytes
//! (`{"__metadata__": {..strings..}, "<name>": {"dtype": "F32", "shape": [..],
//! "data_offsets": [begin, end]}, ..}`, padded with spaces to a multiple of 8), then the
//! tensors' little-endian bytes, back to back. resnorm writes the header itself, with tensors
//! and metadata keys in name order, so the same tensors always give the same bytes (the
//! `safetensors` crate's writer takes metadata as a hash map, whose order changes from run
//! to run); it reads files with the `safetensors` crate, so any conforming writer (PyTorch's
//! `safetensors.torch.save_file`, Hugging Face checkpoints) is accepted.
//!
//! # Atomicity
//! [`write_atomic_with`] writes into a temporary file in the target's directory, `fsync`s it,
//! renames it over the target and `fsync`s the directory. A crash or a failing write leaves
//! either the old file or the new one, never a mixture; on failure the temporary file is
//! removed. Every writer here ([`write_tensors`], [`save_params`], [`write_atomic`],
//! [`write_json_atomic`]) goes through it. A trainer's checkpoint, several files that must
//! agree, is written as one [`crate::checkpoint_set`] instead, from [`TensorFile`]s.
//!
//! ```
//! use std::collections::BTreeMap;
//! use resnorm::checkpoint::{load_params, read_tensors, save_params};
//! use resnorm::nn::{Param, ParamKind};
//!
//! let dir = std::env::temp_dir().join(format!("resnorm-doc-checkpoint-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//!
//! let weight = Param::filled("fc.weight", vec![2, 3], ParamKind::Weight, 0.5);
//! let metadata = BTreeMap::from([("step".to_string(), "10".to_string())]);
//! save_params(&path, &[&weight], &metadata).unwrap();
//!
//! let checkpoint = read_tensors(&path).unwrap();
//! assert_eq!(checkpoint.tensors["fc.weight"].shape(), &[2, 3]);
//! assert_eq!(checkpoint.metadata["step"], "10");
//!
//! let mut restored = Param::zeros("fc.weight", vec![2, 3], ParamKind::Weight);
//! load_params(&path, &mut [&mut restored]).unwrap();
//! assert_eq!(restored.value, weight.value);
//!
//! // A parameter of another shape is refused by name, before anything is overwritten.
//! let mut wrong = Param::zeros("fc.weight", vec![3, 2], ParamKind::Weight);
//! let err = load_params(&path, &mut [&mut wrong]).unwrap_err();
//! assert!(err.to_string().contains("fc.weight"));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use std::borrow::{Borrow, BorrowMut};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::nn::Param;
use crate::{AlignedVec, Error, Result, Tensor};

/// Bytes of the little-endian header length that opens every safetensors file.
const HEADER_LEN_BYTES: usize = 8;
/// Largest header the `safetensors` crate reads.
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Tensor data is converted to bytes this many elements at a time while writing.
const WRITE_CHUNK: usize = 16 * 1024;

/// Tensors and metadata read from a checkpoint file.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Every tensor, by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The file's string metadata (empty when it has none).
    pub metadata: BTreeMap<String, String>,
}

/// A borrowed tensor to write: a name, a shape and row-major data.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// Name in the file, e.g. `h.0.ln_1.weight`.
    pub name: &'a str,
    /// Dimensions, outermost first.
    pub shape: &'a [usize],
    /// Exactly the product of `shape` elements.
    pub data: &'a [f32],
}

impl<'a> TensorRef<'a> {
    /// `tensor` under `name`.
    pub fn named(name: &'a str, tensor: &'a Tensor) -> Self {
        TensorRef {
            name,
            shape: tensor.shape(),
            data: tensor.data(),
        }
    }
}

impl Checkpoint {
    /// Writes every tensor and the metadata to `path` as [`write_tensors`] does: a checkpoint
    /// read, changed and saved again.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors: Vec<TensorRef<'_>> = (self.tensors.iter())
            .map(|(name, tensor)| TensorRef::named(name, tensor))
            .collect();
        write_tensors(path, &tensors, &self.metadata)
    }
}

/// Writes `tensors` and `metadata` to a safetensors file at `path`, atomically.
///
/// Names must be unique, non-empty and not `__metadata__`; each tensor's data must hold the
/// product of its shape. Both are checked before the file system is touched.
pub fn write_tensors(
    path: impl AsRef<Path>,
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let encoded = TensorFile::new(tensors, metadata)?;
    write_atomic_with(path, |file| {
        let mut out = io::BufWriter::new(file);
        encoded.write_to(&mut out)?;
        out.flush()
    })
}

/// A safetensors file checked and ready to be written to any [`Write`]: the building block
/// of [`write_tensors`] and of the files of a [`crate::checkpoint_set`].
#[derive(Clone, Debug)]
pub struct TensorFile<'a> {
    header: Vec<u8>,
    tensors: Vec<TensorRef<'a>>,
}

impl<'a> TensorFile<'a> {
    /// Checks `tensors` (unique, non-empty names; data of the shape's size) and encodes the
    /// header, tensors in name order.
    pub fn new(tensors: &[TensorRef<'a>], metadata: &BTreeMap<String, String>) -> Result<Self> {
        let mut sorted: Vec<TensorRef<'a>> = tensors.to_vec();
        sorted.sort_by(|a, b| a.name.cmp(b.name));
        let header = encode_header(&sorted, metadata)?;
        Ok(TensorFile {
            header,
            tensors: sorted,
        })
    }

    /// The file of `params`, each under its name with its value (a model's checkpoint).
    pub fn from_params(params: &'a [Param], metadata: &BTreeMap<String, String>) -> Result<Self> {
        let tensors: Vec<TensorRef<'a>> = params
            .iter()
            .map(|p| TensorRef {
                name: &p.name,
                shape: &p.shape,
                data: &p.value,
            })
            .collect();
        Self::new(&tensors, metadata)
    }

    /// Writes the whole file to `out`.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&(self.header.len() as u64).to_le_bytes())?;
        out.write_all(&self.header)?;
        let mut bytes = Vec::with_capacity(WRITE_CHUNK * 4);
        for tensor in &self.tensors {
            for chunk in tensor.data.chunks(WRITE_CHUNK) {
                bytes.clear();
                bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
                out.write_all(&bytes)?;
            }
        }
        Ok(())
    }
}

/// The JSON header for `tensors` (sorted by name), padded with spaces to a multiple of 8.
fn encode_header(
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    const OP: &str = "write_tensors";
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for (i, tensor) in tensors.iter().enumerate() {
        if tensor.name.is_empty() || tensor.name == "__metadata__" {
            return Err(Error::invalid(
                OP,
                format!("`{}` cannot name a tensor", tensor.name),
            ));
        }
        if i > 0 && tensors[i - 1].name == tensor.name {
            return Err(Error::invalid(
                OP,
                format!("two tensors are named `{}`", tensor.name),
            ));
        }
        let len: usize = tensor.shape.iter().product();
        if len != tensor.data.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "tensor `{}` has shape {:?} ({len} elements) but {} values",
                    tensor.name,
                    tensor.shape,
                    tensor.data.len()
                ),
            ));
        }
        let end = offset + 4 * len;
        header.insert(
            tensor.name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&header).map_err(|e| Error::invalid(OP, e.to_string()))?;
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok(bytes)
}

/// Reads every tensor and the metadata of the safetensors file at `path`.
///
/// Errors: [`Error::Io`] when the file cannot be read; [`Error::Format`] when it is truncated,
/// its header is corrupt, or a tensor is not `F32`.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_tensors(path, &bytes)
}

/// Decodes the bytes of a safetensors file read from `path` (named in errors), as
/// [`read_tensors`] does.
pub fn decode_tensors(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
    parse(bytes).map_err(|detail| Error::Format {
        path: path.to_path_buf(),
        detail,
    })
}

/// Decodes a whole safetensors file, describing the first defect found.
fn parse(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
    let Some(len_bytes) = bytes.first_chunk::<HEADER_LEN_BYTES>() else {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN_BYTES}-byte header length",
            bytes.len()
        ));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let after_len = (bytes.len() - HEADER_LEN_BYTES) as u64;
    if header_len <= MAX_HEADER_BYTES && header_len > after_len {
        return Err(format!(
            "truncated: the header declares {header_len} bytes but only {after_len} follow"
        ));
    }
    let (header_len, info) = SafeTensors::read_metadata(bytes).map_err(describe)?;
    let data = &bytes[HEADER_LEN_BYTES + header_len..];
    let mut tensors = BTreeMap::new();
    for (name, tensor) in info.tensors() {
        if tensor.dtype != Dtype::F32 {
            return Err(format!(
                "tensor `{name}` has dtype {:?}, expected F32",
                tensor.dtype
            ));
        }
        let (begin, end) = tensor.data_offsets;
        let Some(raw) = data.get(begin..end) else {
            return Err(format!("tensor `{name}` lies outside the file"));
        };
        // Decoded straight into the tensor's aligned storage: one copy of the values.
        let mut values = AlignedVec::zeros(raw.len() / 4);
        for (v, b) in values.iter_mut().zip(raw.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let tensor = Tensor::from_aligned(tensor.shape.clone(), values)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        tensors.insert(name, tensor);
    }
    let metadata = info.metadata().clone().unwrap_or_default();
    Ok(Checkpoint {
        tensors,
        metadata: metadata.into_iter().collect(),
    })
}

/// One line for a defect the `safetensors` crate found.
fn describe(error: SafeTensorError) -> String {
    match error {
        SafeTensorError::MetadataIncompleteBuffer => {
            "truncated or padded: the tensor data does not end where the file ends".to_string()
        }
        SafeTensorError::InvalidHeader(_)
        | SafeTensorError::InvalidHeaderDeserialization(_)
        | SafeTensorError::HeaderTooLarge
        | SafeTensorError::InvalidHeaderLength
        | SafeTensorError::JsonError(_) => format!("corrupt header: {error}"),
        other => format!("not a valid safetensors file: {other}"),
    }
}

/// Writes every parameter's value under its name, with `metadata`, atomically.
pub fn save_params<P: Borrow<Param>>(
    path: impl AsRef<Path>,
    params: &[P],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let tensors: Vec<TensorRef<'_>> = params
        .iter()
        .map(|p| {
            let p = p.borrow();
            TensorRef {
                name: &p.name,
                shape: &p.shape,
                data: &p.value,
            }
        })
        .collect();
    write_tensors(path, &tensors, metadata)
}

/// Reads the checkpoint at `path` into `params` (by name) and returns its metadata.
///
/// Every parameter must find a tensor of its own shape and every tensor a parameter, and
/// every value must be finite; otherwise an [`Error::Format`] names the tensor (and the
/// shapes, or the position of the first non-finite value), and no parameter is changed.
pub fn load_params<P: BorrowMut<Param>>(
    path: impl AsRef<Path>,
    params: &mut [P],
) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let checkpoint = read_tensors(path)?;
    assign_params(path, &checkpoint.tensors, params)?;
    Ok(checkpoint.metadata)
}

/// Copies `tensors` into `params` by name, after checking that they match one to one with
/// equal shapes and finite values. `source` names where the tensors came from, for the error.
pub fn assign_params<P: BorrowMut<Param>>(
    source: &Path,
    tensors: &BTreeMap<String, Tensor>,
    params: &mut [P],
) -> Result<()> {
    let mismatch = |detail: String| Error::Format {
        path: source.to_path_buf(),
        detail,
    };
    for param in params.iter() {
        let param = param.borrow();
        let Some(tensor) = tensors.get(&param.name) else {
            return Err(mismatch(format!("missing tensor `{}`", param.name)));
        };
        if tensor.shape() != param.shape.as_slice() || tensor.len() != param.value.len() {
            return Err(mismatch(format!(
                "tensor `{}` has shape {:?}, the parameter has shape {:?} ({} values)",
                param.name,
                tensor.shape(),
                param.shape,
                param.value.len()
            )));
        }
    }
    if let Some(extra) = tensors
        .keys()
        .find(|name| !params.iter().any(|p| &p.borrow().name == *name))
    {
        return Err(mismatch(format!(
            "unexpected tensor `{extra}`: no parameter has that name"
        )));
    }
    for param in params.iter() {
        let name = &param.borrow().name;
        check_finite(source, name, tensors[name].data())?;
    }
    for param in params.iter_mut() {
        let param = param.borrow_mut();
        param.value.copy_from_slice(tensors[&param.name].data());
    }
    Ok(())
}

/// Checks that every value of the tensor `name` read from `source` is finite.
///
/// Saved weights or optimizer moments holding NaN or infinity would evaluate to a NaN loss
/// or poison every later step; refusing them names the first bad value instead.
pub fn check_finite(source: &Path, name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::Format {
            path: source.to_path_buf(),
            detail: format!(
                "tensor `{name}` holds {} at flat index {index}",
                values[index]
            ),
        }),
    }
}

/// Writes `bytes` to `path` atomically (see the [module docs](self)).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Writes `value` as pretty-printed JSON to `path` atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::invalid("write_json_atomic", e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Distinguishes the temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Lets `write` fill a new temporary file next to `path`, then makes it `path` atomically.
///
/// The temporary file, `.<file name>.<pid>.<n>.tmp`, is `fsync`ed and renamed over `path`,
/// then the directory is `fsync`ed so that the rename survives a crash. When `write`, the
/// `fsync` or the rename fails, the temporary file is removed and `path` keeps its old
/// contents (or stays absent).
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let Some(file_name) = path.file_name() else {
        return Err(Error::invalid(
            "write_atomic",
            format!("`{}` does not name a file", path.display()),
        ));
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temp: PathBuf = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| {
            write(&mut file)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    if let Err(error) = written {
        // The write already failed; that error is the one to report, so a failure to remove
        // the temporary file (which may never have been created) is not.
        let _ = fs::remove_file(&temp);
        return Err(Error::io(path, error));
    }
    sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Removes the temporary files that [`write_atomic_with`] calls in `dir` left when their
/// process was killed (`.<file name>.<pid>.<n>.tmp`); for a directory no one is writing to.
pub fn remove_temp_files(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp")) && path.is_file() {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Makes a rename inside `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for `fsync` outside Unix; the rename is still atomic.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
