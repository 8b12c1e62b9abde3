//! The layout of a group of images: where every pixel sits, how a tap shifts it, which
//! lanes sit on a row's edge, and the copies in and out.

use super::{check_len, LANES};
use crate::{Error, Result};

/// Flat positions a group of images should span: enough that the weight gradient's
/// horizontal sums are rare, few enough that a group's channels stay in cache.
const GROUP_POSITIONS: usize = 1024;

/// How a group of images is laid out as rows between zero rows; see
/// [`crate::kernels::conv3x3`].
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
        let plane = (height + 1) * width;
        (GROUP_POSITIONS / plane).clamp(1, available.max(1))
    }

    /// Pixels per row: the flat shift between vertically neighbouring pixels.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// Floats per image: a zero row, then its rows.
    fn plane(&self) -> usize {
        (self.height + 1) * self.width
    }

    /// Flat index of pixel (0, 0) of the first image: after one zero and one zero row.
    pub(super) fn origin(&self) -> usize {
        self.width + 1
    }

    /// Positions computed per channel: from pixel (0, 0) of the first image to the last pixel
    /// of the last, rounded up to whole vectors. Span position `q` is pixel `q mod plane` of
    /// image `q / plane` when that is below `H·W`, a zero row otherwise.
    pub(super) fn span(&self) -> usize {
        let last = (self.images - 1) * self.plane() + self.height * self.width;
        last.div_ceil(LANES) * LANES
    }

    /// Floats per channel of a laid-out group: the span and the reach of every tap.
    pub(super) fn channel_len(&self) -> usize {
        2 * self.origin() + self.span()
    }

    /// Length of a laid-out group of `channels` channels.
    pub fn padded_len(&self, channels: usize) -> usize {
        channels * self.channel_len()
    }

    /// Length of the span output of `channels` channels ([`super::conv3x3_forward`]).
    pub fn span_len(&self, channels: usize) -> usize {
        channels * self.span()
    }

    /// Lays `images` (`[G, channels, H, W]`) out in `padded` ([`Conv3x3Layout::padded_len`],
    /// overwritten): per channel a zero, then per image a zero row and the image's rows, then
    /// zeros.
    pub fn pad(&self, images: &[f32], channels: usize, padded: &mut [f32]) -> Result<()> {
        let image_len = self.height * self.width;
        let expected = self.images * channels * image_len;
        check_len("Conv3x3Layout::pad", "images", images, expected)?;
        let expected = self.padded_len(channels);
        check_len("Conv3x3Layout::pad", "padded", padded, expected)?;
        for (c, channel) in padded.chunks_exact_mut(self.channel_len()).enumerate() {
            channel[0] = 0.0;
            let (planes, tail) = channel[1..].split_at_mut(self.images * self.plane());
            for (g, plane) in planes.chunks_exact_mut(self.plane()).enumerate() {
                let (zero_row, rows) = plane.split_at_mut(self.width);
                zero_row.fill(0.0);
                rows.copy_from_slice(&images[(g * channels + c) * image_len..][..image_len]);
            }
            tail.fill(0.0);
        }
        Ok(())
    }

    /// Copies the pixels out of a span output (`[channels, span]`, as
    /// [`super::conv3x3_forward`] writes it) into `images` (`[G, channels, H, W]`).
    pub fn extract(&self, span: &[f32], channels: usize, images: &mut [f32]) -> Result<()> {
        const OP: &str = "Conv3x3Layout::extract";
        self.for_each_plane(OP, span, channels, images, |plane, pixels| {
            plane.copy_from_slice(pixels)
        })
    }

    /// Like [`Conv3x3Layout::extract`], but adds the pixels to `images`' contents.
    pub fn extract_add(&self, span: &[f32], channels: usize, images: &mut [f32]) -> Result<()> {
        const OP: &str = "Conv3x3Layout::extract_add";
        self.for_each_plane(OP, span, channels, images, |plane, pixels| {
            plane.iter_mut().zip(pixels).for_each(|(v, &p)| *v += p)
        })
    }

    /// Calls `write(plane, pixels)` with each plane of `images` (`[G, channels, H, W]`) and
    /// its pixels in the span output `span`.
    fn for_each_plane(
        &self,
        op: &'static str,
        span: &[f32],
        channels: usize,
        images: &mut [f32],
        write: impl Fn(&mut [f32], &[f32]),
    ) -> Result<()> {
        let image_len = self.height * self.width;
        check_len(op, "span", span, self.span_len(channels))?;
        check_len(op, "images", images, self.images * channels * image_len)?;
        for (g, image) in images.chunks_exact_mut(channels * image_len).enumerate() {
            let planes = image.chunks_exact_mut(image_len);
            for (plane, channel) in planes.zip(span.chunks_exact(self.span())) {
                write(plane, &channel[g * self.plane()..][..image_len]);
            }
        }
        Ok(())
    }
}

/// Which lanes of a vector of span positions have a left and a right neighbour in their
/// row: a tap with `j = 0` must read zero for pixels of column 0 (its flat shift lands on the
/// previous row's last pixel), one with `j = 2` for pixels of column `W - 1`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Columns {
    width: usize,
    /// Lane 0's column advances by this much from one vector to the next.
    step: usize,
    /// Bit `k·W` set for every `k·W < 32`: the lanes of one column within a vector.
    comb: u64,
}

impl Columns {
    pub(super) fn new(width: usize) -> Self {
        let comb = (0..32)
            .step_by(width)
            .fold(0, |comb, lane| comb | 1 << lane);
        Columns {
            width,
            step: LANES % width,
            comb,
        }
    }

    /// The column of span position `position`.
    pub(super) fn column(&self, position: usize) -> usize {
        position % self.width
    }

    /// The column of the next vector's lane 0, given this vector's.
    #[inline(always)]
    pub(super) fn next(&self, column: usize) -> usize {
        let next = column + self.step;
        if next >= self.width {
            next - self.width
        } else {
            next
        }
    }

    /// `(left, right)`: the lanes that keep a left (`j = 0`) and a right (`j = 2`) tap, for
    /// a vector whose lane 0 is at `column`.
    #[inline(always)]
    pub(super) fn keep(&self, column: usize) -> (u16, u16) {
        let lanes_from = |lane: usize| match lane < LANES {
            true => (self.comb << lane) as u16,
            false => 0,
        };
        let first_column = if column == 0 { 0 } else { self.width - column };
        let last_column = self.width - 1 - column;
        (!lanes_from(first_column), !lanes_from(last_column))
    }
}
