//! The shape of a batch of images in NCHW layout: `[batch, channels, height, width]`.
//!
//! Image layers take their activations as flat slices plus an [`ImageShape`]; element
//! `(n, c, h, w)` lives at `((n * channels + c) * height + h) * width + w`.
//!
//! ```
//! use resnorm::nn::ImageShape;
//! let shape = ImageShape::new(2, 3, 4, 5);
//! assert_eq!((shape.len(), shape.image_len(), shape.plane_len()), (120, 60, 20));
//! assert!(shape.check_len("doc", "input", &[0.0; 120]).is_ok());
//! assert!(shape.check_len("doc", "input", &[0.0; 119]).is_err());
//! ```

use crate::{Error, Result};

/// `[batch, channels, height, width]` of an NCHW buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    /// Number of images.
    pub batch: usize,
    /// Channels per image.
    pub channels: usize,
    /// Rows per channel plane.
    pub height: usize,
    /// Columns per channel plane.
    pub width: usize,
}

impl ImageShape {
    /// The shape `[batch, channels, height, width]`.
    pub fn new(batch: usize, channels: usize, height: usize, width: usize) -> Self {
        ImageShape {
            batch,
            channels,
            height,
            width,
        }
    }

    /// Elements in one channel plane, `height * width`.
    pub fn plane_len(&self) -> usize {
        self.height * self.width
    }

    /// Elements in one image, `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.plane_len()
    }

    /// Elements in the whole batch.
    pub fn len(&self) -> usize {
        self.batch * self.image_len()
    }

    /// True when the batch holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An [`Error::shape`] for `op` unless `buffer` holds exactly this shape's elements and
    /// every dimension is at least 1. `what` names the buffer in the message.
    pub fn check_len(&self, op: &'static str, what: &str, buffer: &[f32]) -> Result<()> {
        let dims = [self.batch, self.channels, self.height, self.width];
        let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match expected {
            _ if dims.contains(&0) => Err(Error::shape(
                op,
                format!("{what} shape {self} has a zero dimension"),
            )),
            Some(n) if n == buffer.len() => Ok(()),
            _ => Err(Error::shape(
                op,
                format!(
                    "{what} has {} elements, shape {self} needs {}",
                    buffer.len(),
                    expected.map_or("more than usize::MAX".to_string(), |n| n.to_string())
                ),
            )),
        }
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}, {}, {}, {}]",
            self.batch, self.channels, self.height, self.width
        )
    }
}
