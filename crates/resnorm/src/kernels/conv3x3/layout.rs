//! The padded layout of a group of images: where every pixel sits, how a tap shifts it, and
//! the copies in and out of it.

use super::{check_len, LANES};
use crate::{Error, Result};

/// Flat positions a group of images should span: enough that the weight gradient's
/// horizontal sums are rare, few enough that a group's channels stay in cache.
const GROUP_POSITIONS: usize = 1024;

/// How a group of images is laid out as padded planes; see [`crate::kernels::conv3x3`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3x3Layout {
    height: usize,
    width: usize,
    images: usize,
}

impl Conv3x3Layout {
    /// A group of `images` images of `height x width` pixels (all at least 1).
    pub fn new(height: usize, width: usize, images: usize) -> Result<Self> {
        if height == 0 || width == 0 || images == 0 {
            return Err(Error::shape(
                "Conv3x3Layout::new",
                format!("{images} images of {height}x{width}: every size must be at least 1"),
            ));
        }
        Ok(Conv3x3Layout {
            height,
            width,
            images,
        })
    }

    /// How many `height x width` images one group should hold (at most `available`).
    pub fn group_size(height: usize, width: usize, available: usize) -> usize {
        let plane = (height + 2) * (width + 2);
        (GROUP_POSITIONS / plane).clamp(1, available.max(1))
    }

    pub(super) fn row(&self) -> usize {
        self.width + 2
    }

    pub(super) fn plane(&self) -> usize {
        (self.height + 2) * self.row()
    }

    /// Flat index of pixel (0, 0) of the first image.
    pub(super) fn origin(&self) -> usize {
        self.row() + 1
    }

    /// Positions computed per channel: from pixel (0, 0) of the first image to the last pixel
    /// of the last, rounded up to whole vectors.
    pub(super) fn span(&self) -> usize {
        let last = (self.images - 1) * self.plane() + (self.height - 1) * self.row() + self.width;
        last.div_ceil(LANES) * LANES
    }

    /// Floats per channel of a padded group: the span and the reach of every tap.
    pub(super) fn channel_len(&self) -> usize {
        2 * self.origin() + self.span()
    }

    /// Length of a padded group of `channels` channels.
    pub fn padded_len(&self, channels: usize) -> usize {
        channels * self.channel_len()
    }

    /// Length of the span output of `channels` channels ([`super::conv3x3_forward`]).
    pub fn span_len(&self, channels: usize) -> usize {
        channels * self.span()
    }

    /// Lays `images` (`[G, channels, H, W]`) out as padded planes in `padded`
    /// ([`Conv3x3Layout::padded_len`], overwritten, zeros around every plane).
    pub fn pad(&self, images: &[f32], channels: usize, padded: &mut [f32]) -> Result<()> {
        let image_len = self.height * self.width;
        check_len(
            "Conv3x3Layout::pad",
            "images",
            images,
            self.images * channels * image_len,
        )?;
        check_len(
            "Conv3x3Layout::pad",
            "padded",
            padded,
            self.padded_len(channels),
        )?;
        // Every float is written once: a padded plane is a zero row, then per image row a
        // zero, the pixels and a zero, then a zero row; the planes are followed by zeros.
        let (row, plane_len) = (self.row(), self.plane());
        for (c, channel) in padded.chunks_exact_mut(self.channel_len()).enumerate() {
            let (planes, tail) = channel.split_at_mut(self.images * plane_len);
            tail.fill(0.0);
            for (g, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
                let pixels = &images[(g * channels + c) * image_len..][..image_len];
                let (top, rest) = plane.split_at_mut(row);
                let (middle, bottom) = rest.split_at_mut(self.height * row);
                top.fill(0.0);
                bottom.fill(0.0);
                for (padded_row, pixels) in middle
                    .chunks_exact_mut(row)
                    .zip(pixels.chunks_exact(self.width))
                {
                    padded_row[0] = 0.0;
                    padded_row[row - 1] = 0.0;
                    copy_row(&mut padded_row[1..row - 1], pixels);
                }
            }
        }
        Ok(())
    }

    /// Copies the pixels out of a span output (`[channels, span]`, as [`super::conv3x3_forward`]
    /// writes it) into `images` (`[G, channels, H, W]`).
    pub fn extract(&self, span: &[f32], channels: usize, images: &mut [f32]) -> Result<()> {
        let image_len = self.height * self.width;
        check_len(
            "Conv3x3Layout::extract",
            "span",
            span,
            self.span_len(channels),
        )?;
        let expected = self.images * channels * image_len;
        check_len("Conv3x3Layout::extract", "images", images, expected)?;
        for (g, image) in images.chunks_exact_mut(channels * image_len).enumerate() {
            let planes = image.chunks_exact_mut(image_len);
            for (plane, channel) in planes.zip(span.chunks_exact(self.span())) {
                for (h, pixels) in plane.chunks_exact_mut(self.width).enumerate() {
                    let start = g * self.plane() + h * self.row();
                    copy_row(pixels, &channel[start..start + self.width]);
                }
            }
        }
        Ok(())
    }

    /// The flat shift of each tap `(i, j)`, row-major, from a span position.
    pub(super) fn taps(&self) -> [usize; 9] {
        std::array::from_fn(|t| (t / 3) * self.row() + t % 3)
    }
}

/// `dst.copy_from_slice(src)` for the short rows of an image, inlined: a call to `memmove`
/// per row cost as much as a fifth of a small convolution.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    const WIDTH: usize = 8;
    assert_eq!(dst.len(), src.len());
    let len = dst.len();
    if len >= WIDTH {
        let pairs = dst.chunks_exact_mut(WIDTH).zip(src.chunks_exact(WIDTH));
        for (d, s) in pairs {
            d.copy_from_slice(&s[..WIDTH]);
        }
        // The last, possibly overlapping, full chunk covers the remainder.
        dst[len - WIDTH..].copy_from_slice(&src[len - WIDTH..]);
        return;
    }
    let mut done = 0;
    for part in [4, 2, 1] {
        if len - done >= part {
            dst[done..done + part].copy_from_slice(&src[done..done + part]);
            done += part;
        }
    }
}
