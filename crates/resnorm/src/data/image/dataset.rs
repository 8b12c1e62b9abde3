//! An image classification data set held in memory, normalized, cut into seeded batches.
//!
//! Precisely, so that another tool can reproduce an epoch:
//! - **Normalization.** At construction every pixel becomes `(x - mean[c]) / std[c]` (see
//!   [`Normalization`]); without one, pixels stay in `[0, 1]`.
//! - **Order.** [`ImageDataset::shuffled_order`] is a Fisher-Yates shuffle of `0..len`: for
//!   `i = len - 1` down to `1`, swap `i` with `rng.below(i + 1)`. An epoch is that order cut
//!   into consecutive batches (the caller decides what to do with a last, shorter one).
//! - **Batches.** [`ImageDataset::fill_batch`] copies the listed images in order, each
//!   through [`Augmentation::apply`] (drawing from `rng` in that order), and their labels.
//!
//! ```
//! use resnorm::data::image::{Augmentation, ImageDataset, LabeledImages, Normalization};
//! use resnorm::nn::ImageShape;
//! use resnorm::rng::Rng;
//! let shape = ImageShape::new(4, 1, 2, 2);
//! let pixels: Vec<f32> = (0..16).map(|v| v as f32 / 15.0).collect();
//! let images = LabeledImages::new(shape, pixels, vec![0, 1, 2, 1]).unwrap();
//! let stats = Normalization::measure(&images);
//! let data = ImageDataset::new(images, Some(&stats)).unwrap();
//! assert_eq!((data.len(), data.num_classes()), (4, 3));
//!
//! let mut rng = Rng::new(1);
//! let order = data.shuffled_order(&mut rng);
//! let mut batch = vec![0.0; 2 * 4];
//! let mut labels = vec![0; 2];
//! data.fill_batch(&order[..2], &Augmentation::NONE, &mut rng, &mut batch, &mut labels).unwrap();
//! assert_eq!(&batch[..4], data.image(order[0]));
//! assert_eq!(labels[1], data.labels()[order[1]]);
//! ```

use super::{Augmentation, LabeledImages, Normalization};
use crate::nn::ImageShape;
use crate::rng::Rng;
use crate::{Error, Result};

/// Normalized images and their labels.
#[derive(Clone, Debug)]
pub struct ImageDataset {
    shape: ImageShape,
    pixels: Vec<f32>,
    labels: Vec<u32>,
    num_classes: usize,
    black: Vec<f32>,
}

impl ImageDataset {
    /// Normalizes `images` with `normalization` (one finite mean and positive std per
    /// channel), if given.
    pub fn new(images: LabeledImages, normalization: Option<&Normalization>) -> Result<Self> {
        let LabeledImages {
            shape,
            mut pixels,
            labels,
        } = images;
        let mut black = vec![0.0; shape.channels];
        if let Some(norm) = normalization {
            Normalization::new(norm.mean.clone(), norm.std.clone())?;
            if norm.mean.len() != shape.channels || norm.std.len() != shape.channels {
                return Err(Error::shape(
                    "ImageDataset::new",
                    format!(
                        "normalization has {} means and {} stds for {} channels",
                        norm.mean.len(),
                        norm.std.len(),
                        shape.channels
                    ),
                ));
            }
            for (plane_index, plane) in pixels.chunks_mut(shape.plane_len()).enumerate() {
                let channel = plane_index % shape.channels;
                let (mean, std) = (norm.mean[channel], norm.std[channel]);
                plane.iter_mut().for_each(|v| *v = (*v - mean) / std);
            }
            for (b, (m, s)) in black.iter_mut().zip(norm.mean.iter().zip(&norm.std)) {
                *b = -m / s;
            }
        }
        let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        Ok(ImageDataset {
            shape,
            pixels,
            labels,
            num_classes,
            black,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape.batch
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[len, channels, height, width]`.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Largest label plus one.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Every normalized image, NCHW (for evaluation without copies).
    pub fn images(&self) -> &[f32] {
        &self.pixels
    }

    /// Every label, in image order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Image `index`, `[channels, height, width]`; panics when out of range.
    pub fn image(&self, index: usize) -> &[f32] {
        let len = self.shape.image_len();
        &self.pixels[index * len..(index + 1) * len]
    }

    /// A seeded permutation of `0..len` (see the module documentation).
    pub fn shuffled_order(&self, rng: &mut Rng) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        order
    }

    /// Writes the images `indices` (augmented) into `images` (`[indices.len(), C, H, W]`) and
    /// their labels into `labels`.
    pub fn fill_batch(
        &self,
        indices: &[usize],
        augmentation: &Augmentation,
        rng: &mut Rng,
        images: &mut [f32],
        labels: &mut [u32],
    ) -> Result<()> {
        const OP: &str = "ImageDataset::fill_batch";
        let batch = ImageShape {
            batch: indices.len(),
            ..self.shape
        };
        batch.check_len(OP, "images", images)?;
        if labels.len() != indices.len() {
            return Err(Error::shape(
                OP,
                format!("{} labels for {} images", labels.len(), indices.len()),
            ));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::invalid(
                OP,
                format!("index {bad} is out of range for {} images", self.len()),
            ));
        }
        let dims = [self.shape.channels, self.shape.height, self.shape.width];
        let outputs = images
            .chunks_mut(self.shape.image_len())
            .zip(labels.iter_mut());
        for (&index, (out, label)) in indices.iter().zip(outputs) {
            augmentation.apply(self.image(index), dims, &self.black, rng, out)?;
            *label = self.labels[index];
        }
        Ok(())
    }
}
