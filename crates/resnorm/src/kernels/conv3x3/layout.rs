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
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { masked::pad(self, images, channels, padded) };
            return Ok(());
        }
        self.pad_rows::<Plain>(images, channels, padded);
        Ok(())
    }

    /// [`Conv3x3Layout::pad`] after its checks. Every float is written once: a padded plane is
    /// a zero row, then per image row a zero, the pixels and a zero, then a zero row; the
    /// planes are followed by zeros.
    #[inline(always)]
    fn pad_rows<R: Rows>(&self, images: &[f32], channels: usize, padded: &mut [f32]) {
        let (row, plane_len, image_len) = (self.row(), self.plane(), self.height * self.width);
        for (c, channel) in padded.chunks_exact_mut(self.channel_len()).enumerate() {
            let (planes, tail) = channel.split_at_mut(self.images * plane_len);
            R::zero(tail);
            for (g, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
                let pixels = &images[(g * channels + c) * image_len..][..image_len];
                let (top, rest) = plane.split_at_mut(row);
                let (middle, bottom) = rest.split_at_mut(self.height * row);
                R::zero(top);
                R::zero(bottom);
                let rows = middle.chunks_exact_mut(row);
                for (padded_row, pixels) in rows.zip(pixels.chunks_exact(self.width)) {
                    R::pad(padded_row, pixels);
                }
            }
        }
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
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { masked::extract(self, span, channels, images) };
            return Ok(());
        }
        self.extract_rows::<Plain>(span, channels, images);
        Ok(())
    }

    /// [`Conv3x3Layout::extract`] after its checks.
    #[inline(always)]
    fn extract_rows<R: Rows>(&self, span: &[f32], channels: usize, images: &mut [f32]) {
        let image_len = self.height * self.width;
        for (g, image) in images.chunks_exact_mut(channels * image_len).enumerate() {
            let planes = image.chunks_exact_mut(image_len);
            for (plane, channel) in planes.zip(span.chunks_exact(self.span())) {
                for (h, pixels) in plane.chunks_exact_mut(self.width).enumerate() {
                    let start = g * self.plane() + h * self.row();
                    R::copy(pixels, &channel[start..start + self.width]);
                }
            }
        }
    }

    /// The flat shift of each tap `(i, j)`, row-major, from a span position.
    pub(super) fn taps(&self) -> [usize; 9] {
        std::array::from_fn(|t| (t / 3) * self.row() + t % 3)
    }
}

/// The three row operations of [`Conv3x3Layout::pad`] and [`Conv3x3Layout::extract`]. Rows
/// are short (a few dozen floats), where a call to `memcpy` or `memset` per row costs as
/// much as the copy itself.
trait Rows {
    /// `dst = [0, src..., 0]`; `dst` is two longer than `src`.
    fn pad(dst: &mut [f32], src: &[f32]);
    /// `dst = src`, of equal lengths.
    fn copy(dst: &mut [f32], src: &[f32]);
    /// `dst = 0`.
    fn zero(dst: &mut [f32]);
}

/// Rows through slices: what any CPU runs.
struct Plain;

impl Rows for Plain {
    #[inline(always)]
    fn pad(dst: &mut [f32], src: &[f32]) {
        let last = dst.len() - 1;
        (dst[0], dst[last]) = (0.0, 0.0);
        dst[1..last].copy_from_slice(src);
    }
    #[inline(always)]
    fn copy(dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn zero(dst: &mut [f32]) {
        dst.fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod masked {
    //! Rows as 16-lane AVX-512 loads and stores whose masks cover exactly the row.
    use std::arch::x86_64::*;

    use super::{Conv3x3Layout, Rows};

    /// Lanes of one register.
    const LANES: usize = 16;

    /// The mask of lanes `lo..hi` (clamped to `0..16`).
    #[inline(always)]
    fn lanes(lo: usize, hi: usize) -> __mmask16 {
        let below = |n: usize| {
            if n >= LANES {
                u16::MAX
            } else {
                (1u16 << n) - 1
            }
        };
        below(hi) & !below(lo)
    }

    pub(super) struct Masked;

    // SAFETY (every method): only instantiated inside the `avx512f` functions below, which
    // run only on CPUs that have it. Every load and store is masked to lanes inside its slice;
    // masked-off lanes are not accessed, so the shifted base pointers (one before `src` in
    // `pad`) never read outside it.
    impl Rows for Masked {
        #[inline(always)]
        fn pad(dst: &mut [f32], src: &[f32]) {
            assert_eq!(dst.len(), src.len() + 2);
            for start in (0..dst.len()).step_by(LANES) {
                // Lane l writes dst[start + l] = src[start + l - 1], zero outside src.
                let store = lanes(0, dst.len() - start);
                let load = lanes(usize::from(start == 0), src.len() + 1 - start);
                unsafe {
                    let from = src.as_ptr().wrapping_add(start).wrapping_sub(1);
                    let v = _mm512_maskz_loadu_ps(load, from);
                    _mm512_mask_storeu_ps(dst.as_mut_ptr().add(start), store, v);
                }
            }
        }
        #[inline(always)]
        fn copy(dst: &mut [f32], src: &[f32]) {
            assert_eq!(dst.len(), src.len());
            for start in (0..dst.len()).step_by(LANES) {
                let mask = lanes(0, dst.len() - start);
                unsafe {
                    let v = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(start));
                    _mm512_mask_storeu_ps(dst.as_mut_ptr().add(start), mask, v);
                }
            }
        }
        #[inline(always)]
        fn zero(dst: &mut [f32]) {
            for start in (0..dst.len()).step_by(LANES) {
                let mask = lanes(0, dst.len() - start);
                unsafe {
                    _mm512_mask_storeu_ps(dst.as_mut_ptr().add(start), mask, _mm512_setzero_ps())
                };
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn pad(layout: &Conv3x3Layout, images: &[f32], channels: usize, padded: &mut [f32]) {
        layout.pad_rows::<Masked>(images, channels, padded)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn extract(
        layout: &Conv3x3Layout,
        span: &[f32],
        channels: usize,
        images: &mut [f32],
    ) {
        layout.extract_rows::<Masked>(span, channels, images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched copies (masked AVX-512 where present) against the slice ones, for
    /// widths around one and two registers, every float of the output compared.
    #[test]
    fn dispatched_rows_agree_with_plain_ones() {
        for (height, width, images) in [
            (1, 1, 1),
            (3, 7, 2),
            (2, 14, 3),
            (2, 15, 1),
            (3, 16, 2),
            (2, 28, 1),
            (1, 33, 2),
        ] {
            let layout = Conv3x3Layout::new(height, width, images).unwrap();
            let channels = 2;
            let len = images * channels * height * width;
            let pixels: Vec<f32> = (1..=len).map(|v| v as f32).collect();
            let mut plain = vec![f32::NAN; layout.padded_len(channels)];
            layout.pad_rows::<Plain>(&pixels, channels, &mut plain);
            let mut dispatched = vec![f32::NAN; layout.padded_len(channels)];
            layout.pad(&pixels, channels, &mut dispatched).unwrap();
            assert_eq!(dispatched, plain, "pad {layout:?}");
            let span: Vec<f32> = (0..layout.span_len(channels)).map(|v| v as f32).collect();
            let mut plain = vec![f32::NAN; len];
            layout.extract_rows::<Plain>(&span, channels, &mut plain);
            let mut dispatched = vec![f32::NAN; len];
            layout.extract(&span, channels, &mut dispatched).unwrap();
            assert_eq!(dispatched, plain, "extract {layout:?}");
        }
    }
}
