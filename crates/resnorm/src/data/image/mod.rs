//! Image data for classifiers: MNIST-style IDX files and scikit-learn's digits CSV read into
//! [`LabeledImages`], held normalized in an [`ImageDataset`] with seeded batches and
//! augmentation.
//!
//! The path from a user's `--data` to a batch:
//! 1. [`read_mnist_split`] (or [`read_idx`] for one file) and [`read_digits_csv`] read images
//!    with pixels in `[0, 1]`, gzip-compressed or not.
//! 2. [`Normalization::measure`] takes per-channel statistics from the training images.
//! 3. [`ImageDataset`] normalizes once, shuffles each epoch with a seeded
//!    [`crate::rng::Rng`] and fills batches through an [`Augmentation`].
//!
//! ```
//! use resnorm::data::image::{Augmentation, ImageDataset, LabeledImages, Normalization};
//! use resnorm::nn::ImageShape;
//! use resnorm::rng::Rng;
//! let images = LabeledImages::new(ImageShape::new(2, 1, 1, 2), vec![0.0, 1.0, 0.5, 0.5], vec![3, 1]).unwrap();
//! let data = ImageDataset::new(images.clone(), Some(&Normalization::measure(&images))).unwrap();
//! let (mut batch, mut labels) = (vec![0.0; 2], vec![0; 1]);
//! data.fill_batch(&[1], &Augmentation::NONE, &mut Rng::new(0), &mut batch, &mut labels).unwrap();
//! assert_eq!((batch, labels), (vec![0.0, 0.0], vec![1]));
//! ```

mod augment;
mod dataset;
mod digits;
mod gzip;
mod idx;
mod labeled_images;

pub use augment::Augmentation;
pub use dataset::ImageDataset;
pub use digits::{read_digits_csv, DIGITS_MAX_PIXEL, DIGITS_SIDE};
pub use idx::{
    read_idx, read_mnist, read_mnist_split, IdxArray, MnistSplit, IDX_TYPE_U8, MNIST_CLASSES,
};
pub use labeled_images::{LabeledImages, Normalization};
