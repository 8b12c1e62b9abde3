//! Seeded training-time augmentation of one image: torchvision's
//! `RandomCrop(size, padding=p)` followed by `RandomHorizontalFlip()`.
//!
//! Precisely, for an image `x` of shape `[C, H, W]` and a generator `rng`:
//! 1. if `crop_padding = p > 0`, draw `top = rng.below(2p + 1)`, then
//!    `left = rng.below(2p + 1)` (else `top = left = p = 0`);
//! 2. if `horizontal_flip`, draw `flip = rng.below(2) == 1`;
//! 3. `out[c, h, w] = x[c, h + top - p, w' + left - p]` with `w' = W - 1 - w` when flipped
//!    (else `w' = w`), and `fill[c]` where that falls outside the image.
//!
//! Nothing else is drawn. `fill[c]` is the value of a black pixel: 0 before normalization,
//! `-mean[c] / std[c]` after it, as when torchvision pads before `Normalize`.
//!
//! ```
//! use resnorm::data::image::Augmentation;
//! use resnorm::rng::Rng;
//! let flip = Augmentation { crop_padding: 0, horizontal_flip: true };
//! let image = [1.0, 2.0, 3.0];
//! let mut out = [0.0; 3];
//! let mut seen = Vec::new();
//! let mut rng = Rng::new(0);
//! for _ in 0..20 {
//!     flip.apply(&image, [1, 1, 3], &[0.0], &mut rng, &mut out).unwrap();
//!     seen.push(out);
//! }
//! assert!(seen.contains(&[1.0, 2.0, 3.0]) && seen.contains(&[3.0, 2.0, 1.0]));
//! ```

use crate::rng::Rng;
use crate::{Error, Result};

/// Which random transforms to apply to each training image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augmentation {
    /// Pad every side by this many black pixels, then crop back to the original size at a
    /// random offset (0: no cropping).
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub horizontal_flip: bool,
}

impl Augmentation {
    /// No augmentation: images pass unchanged and nothing is drawn from the generator.
    pub const NONE: Augmentation = Augmentation {
        crop_padding: 0,
        horizontal_flip: false,
    };

    /// Writes the augmented `image` (`[channels, height, width]` = `dims`) into `out`,
    /// drawing from `rng` as the module documentation says.
    pub fn apply(
        &self,
        image: &[f32],
        dims: [usize; 3],
        fill: &[f32],
        rng: &mut Rng,
        out: &mut [f32],
    ) -> Result<()> {
        let [channels, height, width] = dims;
        let len = channels * height * width;
        if image.len() != len || out.len() != len || fill.len() != channels || len == 0 {
            return Err(Error::shape(
                "Augmentation::apply",
                format!(
                    "image {}, out {} and fill {} elements do not fit a nonempty image {dims:?}",
                    image.len(),
                    out.len(),
                    fill.len()
                ),
            ));
        }
        let p = self.crop_padding;
        let (top, left) = if p > 0 {
            let top = rng.below(2 * p + 1);
            (top, rng.below(2 * p + 1))
        } else {
            (0, 0)
        };
        let flip = self.horizontal_flip && rng.below(2) == 1;
        let plane = height * width;
        for c in 0..channels {
            let src = &image[c * plane..(c + 1) * plane];
            let dst = &mut out[c * plane..(c + 1) * plane];
            for h in 0..height {
                let row = (h + top).checked_sub(p).filter(|&r| r < height);
                for w in 0..width {
                    let w_src = if flip { width - 1 - w } else { w };
                    let col = (w_src + left).checked_sub(p).filter(|&x| x < width);
                    dst[h * width + w] = match (row, col) {
                        (Some(row), Some(col)) => src[row * width + col],
                        _ => fill[c],
                    };
                }
            }
        }
        Ok(())
    }
}
