//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic `00 00 TT DD` (`TT` the element type, `0x08` for `u8`, the
//! only one these data sets use; `DD` the number of dimensions), then `DD` big-endian `u32`
//! sizes, then the elements, row-major. Images files have 3 dimensions `[N, 28, 28]`, label
//! files 1 `[N]`. Whether a file is compressed is decided by its first bytes (see
//! [`read_idx`]), so `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz` both work.
//!
//! ```
//! use resnorm::data::image::read_idx;
//! let dir = std::env::temp_dir().join(format!("resnorm-idx-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("labels-idx1-ubyte");
//! std::fs::write(&path, [0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]).unwrap();
//! let labels = read_idx(&path).unwrap();
//! assert_eq!((labels.dims, labels.data), (vec![3], vec![7, 2, 1]));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::Path;

use super::gzip::read_maybe_gzip;
use super::LabeledImages;
use crate::nn::ImageShape;
use crate::{Error, Result};

/// The IDX type code of unsigned bytes.
pub const IDX_TYPE_U8: u8 = 0x08;
/// Classes of MNIST and Fashion-MNIST; a larger label is corruption, not a new class (it
/// would silently grow the classifier's output layer).
pub const MNIST_CLASSES: usize = 10;

/// The contents of a `u8` IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Which half of an MNIST-style data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MnistSplit {
    /// `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (60,000 images).
    Train,
    /// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (10,000 images).
    Test,
}

/// Reads a `u8` IDX file, checking the magic, the type, that the header is complete and
/// that the body holds exactly the product of the sizes.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gzip(path)?;
    let bad = |detail: String| Error::Format {
        path: path.to_path_buf(),
        detail: format!("not an IDX file: {detail}"),
    };
    if bytes.len() < 4 {
        return Err(bad(format!(
            "{} bytes, shorter than the magic",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic starts {:02x} {:02x}, expected 00 00",
            bytes[0], bytes[1]
        )));
    }
    if bytes[2] != IDX_TYPE_U8 {
        return Err(bad(format!(
            "element type 0x{:02x}, only 0x08 (u8) is supported",
            bytes[2]
        )));
    }
    let rank = bytes[3] as usize;
    let header_len = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header_len {
        return Err(bad(format!(
            "{rank} dimensions need a {header_len}-byte header, the file has {} bytes",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let body_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("sizes {dims:?} overflow")))?;
    let found = bytes.len() - header_len;
    if found != body_len {
        let what = if found < body_len {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(bad(format!(
            "{what}: sizes {dims:?} need {body_len} bytes of data, found {found}"
        )));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// Reads an images file (`[N, H, W]`) and its labels file (`[N]`), checking that the counts
/// agree and that every label is below [`MNIST_CLASSES`], and scales pixels from `0..=255`
/// to `[0, 1]` (one channel).
pub fn read_mnist(images_path: &Path, labels_path: &Path) -> Result<LabeledImages> {
    let images = read_idx(images_path)?;
    let labels = read_idx(labels_path)?;
    let wrong_rank = |path: &Path, dims: &[usize], want: &str| Error::Format {
        path: path.to_path_buf(),
        detail: format!("sizes {dims:?}, expected {want}"),
    };
    let [count, height, width] = images.dims[..] else {
        return Err(wrong_rank(
            images_path,
            &images.dims,
            "[images, height, width]",
        ));
    };
    let [label_count] = labels.dims[..] else {
        return Err(wrong_rank(labels_path, &labels.dims, "[labels]"));
    };
    if label_count != count {
        return Err(Error::Format {
            path: labels_path.to_path_buf(),
            detail: format!(
                "{label_count} labels, but {} holds {count} images",
                images_path.display()
            ),
        });
    }
    if let Some(record) = labels
        .data
        .iter()
        .position(|&l| usize::from(l) >= MNIST_CLASSES)
    {
        return Err(Error::Format {
            path: labels_path.to_path_buf(),
            detail: format!(
                "label {} of record {record} is not one of the {MNIST_CLASSES} classes (0..={})",
                labels.data[record],
                MNIST_CLASSES - 1
            ),
        });
    }
    let pixels = images.data.iter().map(|&p| p as f32 / 255.0).collect();
    let labels = labels.data.iter().map(|&l| l as u32).collect();
    LabeledImages::new(ImageShape::new(count, 1, height, width), pixels, labels)
}

/// Reads one split of MNIST or Fashion-MNIST from `dir`, under the data sets' standard file
/// names, compressed (`.gz`, preferred when both exist) or not.
pub fn read_mnist_split(dir: &Path, split: MnistSplit) -> Result<LabeledImages> {
    let prefix = match split {
        MnistSplit::Train => "train",
        MnistSplit::Test => "t10k",
    };
    let find = |stem: String| {
        let gz = dir.join(format!("{stem}.gz"));
        if gz.is_file() {
            gz
        } else {
            dir.join(stem)
        }
    };
    read_mnist(
        &find(format!("{prefix}-images-idx3-ubyte")),
        &find(format!("{prefix}-labels-idx1-ubyte")),
    )
}
