//! scikit-learn's `digits.csv(.gz)`: the UCI optical digits, 8x8 images with pixel values
//! `0..=16`, one per line as 64 comma-separated pixels and then the label `0..=9`.
//!
//! ```
//! use resnorm::data::image::read_digits_csv;
//! let dir = std::env::temp_dir().join(format!("resnorm-digits-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("digits.csv");
//! let row: Vec<String> = (0..64).map(|i| (i % 17).to_string()).chain(["4".into()]).collect();
//! std::fs::write(&path, row.join(",") + "\n").unwrap();
//! let digits = read_digits_csv(&path).unwrap();
//! assert_eq!((digits.shape.height, digits.labels.clone()), (8, vec![4]));
//! assert_eq!(digits.pixels[16], 1.0); // 16 / 16
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::Path;

use super::gzip::read_maybe_gzip;
use super::LabeledImages;
use crate::nn::ImageShape;
use crate::{Error, Result};

/// Side of a digits image.
pub const DIGITS_SIDE: usize = 8;
/// Largest pixel value in the digits data.
pub const DIGITS_MAX_PIXEL: u32 = 16;

/// Reads the digits CSV (gzip or plain), pixels scaled to `[0, 1]` by dividing by 16.
/// Blank lines are skipped; anything else that is not 64 pixels in `0..=16` and a label in
/// `0..=9` is an error naming the file and line.
pub fn read_digits_csv(path: &Path) -> Result<LabeledImages> {
    let bytes = read_maybe_gzip(path)?;
    let bad = |detail: String| Error::Format {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let pixels_per_image = DIGITS_SIDE * DIGITS_SIDE;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != pixels_per_image + 1 {
            return Err(bad(format!(
                "line {}: {} fields, expected {} pixels and a label",
                number + 1,
                fields.len(),
                pixels_per_image
            )));
        }
        for (column, field) in fields.iter().enumerate() {
            let max = if column < pixels_per_image {
                DIGITS_MAX_PIXEL
            } else {
                9
            };
            let value = field
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.fract() == 0.0 && (0.0..=max as f32).contains(v))
                .ok_or_else(|| {
                    bad(format!(
                        "line {}, column {}: {field:?} is not an integer in 0..={max}",
                        number + 1,
                        column + 1
                    ))
                })?;
            if column < pixels_per_image {
                pixels.push(value / DIGITS_MAX_PIXEL as f32);
            } else {
                labels.push(value as u32);
            }
        }
    }
    if labels.is_empty() {
        return Err(bad("no digits in the file".to_string()));
    }
    let shape = ImageShape::new(labels.len(), 1, DIGITS_SIDE, DIGITS_SIDE);
    LabeledImages::new(shape, pixels, labels)
}
