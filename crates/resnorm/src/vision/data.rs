//! Where a run's images come from: `--data` is a folder of MNIST-style IDX files
//! (Fashion-MNIST: `train-*` and `t10k-*`, raw or gzip) or scikit-learn's digits CSV, whose
//! first 1437 images (80%) train and the other 360 test.

use std::path::Path;

use crate::data::image::{read_digits_csv, read_mnist_split, LabeledImages, MnistSplit};
use crate::nn::ImageShape;
use crate::{Error, Result};

/// Training and test images.
#[derive(Clone, Debug)]
pub struct ImageSplits {
    /// The training set.
    pub train: LabeledImages,
    /// The held-out test set.
    pub test: LabeledImages,
}

/// Reads the training and test sets at `path` (see the module docs).
pub fn load_image_splits(path: &Path) -> Result<ImageSplits> {
    if path.is_dir() {
        let train = read_mnist_split(path, MnistSplit::Train)?;
        let test = read_mnist_split(path, MnistSplit::Test)?;
        let dims = |s: ImageShape| (s.channels, s.height, s.width);
        if dims(train.shape) != dims(test.shape) {
            return Err(Error::Format {
                path: path.to_path_buf(),
                detail: format!(
                    "training images are {}, test images {}: sizes differ",
                    train.shape, test.shape
                ),
            });
        }
        return Ok(ImageSplits { train, test });
    }
    let all = read_digits_csv(path)?;
    let train_count = all.len() * 4 / 5;
    if train_count == 0 || train_count == all.len() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            detail: format!(
                "{} images are too few to split into training and test",
                all.len()
            ),
        });
    }
    Ok(ImageSplits {
        train: take(&all, 0..train_count)?,
        test: take(&all, train_count..all.len())?,
    })
}

/// The images `range` of `images`.
pub fn take(images: &LabeledImages, range: std::ops::Range<usize>) -> Result<LabeledImages> {
    let len = images.shape.image_len();
    let shape = ImageShape {
        batch: range.len(),
        ..images.shape
    };
    LabeledImages::new(
        shape,
        images.pixels[range.start * len..range.end * len].to_vec(),
        images.labels[range].to_vec(),
    )
}
