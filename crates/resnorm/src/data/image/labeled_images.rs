//! Labelled images as read from disk, pixels scaled to `[0, 1]`, and the per-channel
//! normalization that turns them into network inputs.
//!
//! ```
//! use resnorm::data::image::{LabeledImages, Normalization};
//! use resnorm::nn::ImageShape;
//! let images = LabeledImages::new(ImageShape::new(2, 1, 1, 2), vec![0.0, 1.0, 0.5, 0.5], vec![3, 1]).unwrap();
//! let stats = Normalization::measure(&images);
//! assert_eq!(stats.mean, vec![0.5]);
//! assert!((stats.std[0] - 0.125f32.sqrt()).abs() < 1e-6);
//! ```

use crate::nn::ImageShape;
use crate::{Error, Result};

/// Images in NCHW layout with pixel values in `[0, 1]`, and one class label per image.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledImages {
    /// `[count, channels, height, width]`.
    pub shape: ImageShape,
    /// NCHW pixels in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// The class of every image.
    pub labels: Vec<u32>,
}

impl LabeledImages {
    /// Checks that `pixels` holds `shape` and that there is one label per image.
    pub fn new(shape: ImageShape, pixels: Vec<f32>, labels: Vec<u32>) -> Result<Self> {
        const OP: &str = "LabeledImages::new";
        shape.check_len(OP, "pixels", &pixels)?;
        if labels.len() != shape.batch {
            return Err(Error::shape(
                OP,
                format!("{} labels for {} images", labels.len(), shape.batch),
            ));
        }
        Ok(LabeledImages {
            shape,
            pixels,
            labels,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape.batch
    }

    /// True when there are no images (never, for a value built by [`LabeledImages::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-channel `x ↦ (x - mean[c]) / std[c]`, as torchvision's `Normalize`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Mean of every channel.
    pub mean: Vec<f32>,
    /// Standard deviation of every channel (positive).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Checks that `mean` and `std` have one finite entry per channel and that every `std`
    /// is positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let ok = mean.len() == std.len()
            && !mean.is_empty()
            && mean.iter().all(|m| m.is_finite())
            && std.iter().all(|s| s.is_finite() && *s > 0.0);
        if !ok {
            return Err(Error::invalid(
                "Normalization::new",
                format!("mean {mean:?} and std {std:?} must be finite, of equal nonzero length, std > 0"),
            ));
        }
        Ok(Normalization { mean, std })
    }

    /// The mean and (population) standard deviation of every channel of `images`, computed
    /// in `f64`; measure them on the training split and apply them to every split. A
    /// constant channel gets std 1.
    pub fn measure(images: &LabeledImages) -> Self {
        let plane = images.shape.plane_len();
        let channels = images.shape.channels;
        let mut mean = Vec::with_capacity(channels);
        let mut std = Vec::with_capacity(channels);
        for c in 0..channels {
            let planes = || {
                images
                    .pixels
                    .chunks(plane)
                    .skip(c)
                    .step_by(channels)
                    .flatten()
            };
            let count = (plane * images.shape.batch) as f64;
            let m = planes().map(|&v| v as f64).sum::<f64>() / count;
            let var = planes().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / count;
            mean.push(m as f32);
            std.push(if var > 0.0 { var.sqrt() as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }
}
