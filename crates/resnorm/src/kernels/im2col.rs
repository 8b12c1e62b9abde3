//! Patch extraction for convolution: `im2col` lays every receptive field of one image out as
//! a column, `col2im` scatters such columns back (its adjoint).
//!
//! For one image `x` of shape `[C, H, W]`, a square `k x k` kernel, stride `s` and zero
//! padding `p`, the output grid is `OH = (H + 2p - k) / s + 1` by `OW = (W + 2p - k) / s + 1`
//! (floor division). `im2col` writes the matrix `cols` of shape `[C·k·k, OH·OW]`:
//!
//! ```text
//! cols[(c·k + i)·k + j, oh·OW + ow] = x[c, oh·s + i - p, ow·s + j - p]   (0 outside the image)
//! ```
//!
//! so that a convolution with weight `W` of shape `[O, C, k, k]` (read as `[O, C·k·k]`) is the
//! single matrix product `y = W · cols`. `col2im` is the transpose of that linear map:
//! `x[c, h, w] = Σ cols[r, q]` over every `(r, q)` that `im2col` would have read from
//! `(c, h, w)`, so `dx = col2im(Wᵀ · dy)`. It overwrites its output and adds the
//! contributions in a fixed order (rows, then output positions), so it is deterministic.
//!
//! ```
//! use resnorm::kernels::{col2im, im2col, PatchGeometry};
//! // One channel, 3x3 image, 2x2 kernel, stride 1, no padding: 4 patches of 4 pixels.
//! let geometry = PatchGeometry::new(1, 3, 3, 2, 1, 0).unwrap();
//! assert_eq!((geometry.out_height(), geometry.out_width()), (2, 2));
//! let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
//! let mut cols = vec![0.0; geometry.cols_len()];
//! im2col(&geometry, &image, &mut cols).unwrap();
//! // Row 0 is the top-left pixel of each patch, row 3 the bottom-right one.
//! assert_eq!(&cols[..4], &[1.0, 2.0, 4.0, 5.0]);
//! assert_eq!(&cols[12..], &[5.0, 6.0, 8.0, 9.0]);
//! // col2im of all-ones counts how many patches cover each pixel.
//! let mut counts = vec![0.0; 9];
//! col2im(&geometry, &vec![1.0; 16], &mut counts).unwrap();
//! assert_eq!(counts, vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
//! ```

use crate::{Error, Result};

/// How a square kernel slides over one `[channels, height, width]` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGeometry {
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl PatchGeometry {
    /// Checks that every size is at least 1 (padding may be 0) and that the kernel fits in
    /// the padded image.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        const OP: &str = "PatchGeometry::new";
        if channels == 0 || height == 0 || width == 0 {
            return Err(Error::shape(
                OP,
                format!("image [{channels}, {height}, {width}] has a zero dimension"),
            ));
        }
        if kernel == 0 || stride == 0 {
            return Err(Error::invalid(
                OP,
                format!("kernel size {kernel} and stride {stride} must be at least 1"),
            ));
        }
        let fits = |len: usize| len.checked_add(2 * padding).is_some_and(|l| l >= kernel);
        if !fits(height) || !fits(width) {
            return Err(Error::shape(
                OP,
                format!(
                    "kernel {kernel} does not fit in image {height}x{width} with padding {padding}"
                ),
            ));
        }
        Ok(PatchGeometry {
            channels,
            height,
            width,
            kernel,
            stride,
            padding,
        })
    }

    /// Rows of the output grid, `(H + 2p - k) / s + 1`.
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Columns of the output grid, `(W + 2p - k) / s + 1`.
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Elements of one image, `C·H·W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Rows of `cols`: the length of one patch, `C·k·k`.
    pub fn patch_len(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Columns of `cols`: the number of output positions, `OH·OW`.
    pub fn positions(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Elements of `cols`, `C·k·k·OH·OW`.
    pub fn cols_len(&self) -> usize {
        self.patch_len() * self.positions()
    }

    fn check(&self, op: &'static str, image: usize, cols: usize) -> Result<()> {
        if image != self.image_len() || cols != self.cols_len() {
            return Err(Error::shape(
                op,
                format!(
                    "image has {image} elements and cols {cols}, geometry needs {} and {}",
                    self.image_len(),
                    self.cols_len()
                ),
            ));
        }
        Ok(())
    }

    /// The output indices `lo..hi` whose input coordinate `o·s + offset - p` lies in
    /// `0..input_len`, for a kernel offset `offset`.
    fn valid_outputs(&self, offset: usize, input_len: usize, output_len: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.padding.saturating_sub(offset).div_ceil(s);
        let hi = (input_len + self.padding)
            .saturating_sub(offset)
            .div_ceil(s)
            .min(output_len);
        (lo.min(hi), hi)
    }

    /// Calls `visit(input_offset, cols_offset, run_len)` for every run of output
    /// positions of one `cols` row that reads the image, with steps `s` in the image and 1
    /// in `cols`; everything not visited reads the zero padding.
    fn for_each_run(&self, mut visit: impl FnMut(usize, usize, usize)) {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let (out_h, out_w) = (self.out_height(), self.out_width());
        for c in 0..self.channels {
            for i in 0..k {
                let (oh_lo, oh_hi) = self.valid_outputs(i, self.height, out_h);
                for j in 0..k {
                    let row = (c * k + i) * k + j;
                    let (ow_lo, ow_hi) = self.valid_outputs(j, self.width, out_w);
                    if ow_lo == ow_hi {
                        continue;
                    }
                    for oh in oh_lo..oh_hi {
                        let ih = oh * s + i - p;
                        let iw = ow_lo * s + j - p;
                        let input = (c * self.height + ih) * self.width + iw;
                        let col = row * out_h * out_w + oh * out_w + ow_lo;
                        visit(input, col, ow_hi - ow_lo);
                    }
                }
            }
        }
    }
}

/// Writes the patches of `image` (`[C, H, W]`) into `cols` (`[C·k·k, OH·OW]`, overwritten).
///
/// Every element of `cols` is written once: a copy of an image row (a plain copy at stride
/// 1), with zeros where the patch hangs over the padding.
pub fn im2col(geometry: &PatchGeometry, image: &[f32], cols: &mut [f32]) -> Result<()> {
    geometry.check("im2col", image.len(), cols.len())?;
    let g = geometry;
    let (k, s, p) = (g.kernel, g.stride, g.padding);
    let (out_h, out_w) = (g.out_height(), g.out_width());
    let plane_len = g.height * g.width;
    let mut rows = cols.chunks_exact_mut(out_h * out_w);
    for plane in image.chunks_exact(plane_len) {
        for i in 0..k {
            let (oh_lo, oh_hi) = g.valid_outputs(i, g.height, out_h);
            for j in 0..k {
                let (ow_lo, ow_hi) = g.valid_outputs(j, g.width, out_w);
                let row = rows.next().expect("check() sized cols to C·k·k rows");
                for (oh, out) in row.chunks_exact_mut(out_w).enumerate() {
                    if oh < oh_lo || oh >= oh_hi || ow_lo == ow_hi {
                        out.fill(0.0);
                        continue;
                    }
                    let start = (oh * s + i - p) * g.width + ow_lo * s + j - p;
                    let (before, rest) = out.split_at_mut(ow_lo);
                    let (run, after) = rest.split_at_mut(ow_hi - ow_lo);
                    before.fill(0.0);
                    after.fill(0.0);
                    if s == 1 {
                        run.copy_from_slice(&plane[start..start + run.len()]);
                    } else {
                        let source = plane[start..].iter().step_by(s);
                        run.iter_mut().zip(source).for_each(|(d, &v)| *d = v);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Overwrites `image` (`[C, H, W]`) with the sum of the entries of `cols` (`[C·k·k, OH·OW]`)
/// that [`im2col`] would have copied from each pixel.
pub fn col2im(geometry: &PatchGeometry, cols: &[f32], image: &mut [f32]) -> Result<()> {
    geometry.check("col2im", image.len(), cols.len())?;
    image.fill(0.0);
    scatter_add(geometry, cols, image);
    Ok(())
}

/// Like [`col2im`], but adds the sums to `image`'s contents: the input gradient of a
/// convolution added straight into a residual stream's.
pub fn col2im_add(geometry: &PatchGeometry, cols: &[f32], image: &mut [f32]) -> Result<()> {
    geometry.check("col2im_add", image.len(), cols.len())?;
    scatter_add(geometry, cols, image);
    Ok(())
}

/// Adds every entry of `cols` into the pixel [`im2col`] copied it from (sizes checked).
fn scatter_add(geometry: &PatchGeometry, cols: &[f32], image: &mut [f32]) {
    let s = geometry.stride;
    geometry.for_each_run(|input, col, run| {
        let source = &cols[col..col + run];
        if s == 1 {
            let target = &mut image[input..input + run];
            target.iter_mut().zip(source).for_each(|(d, &v)| *d += v);
        } else {
            let target = image[input..].iter_mut().step_by(s);
            target.zip(source).for_each(|(d, &v)| *d += v);
        }
    });
}
