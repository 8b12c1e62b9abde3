//! Max pooling over NCHW images, as `torch.nn.MaxPool2d(kernel_size, stride, padding)` (no
//! dilation, `ceil_mode=False`).
//!
//! Each channel plane is padded with `-inf` on every side, and
//!
//! ```text
//! y[n, c, u, v] = max_{i,j < k} x[n, c, u·s + i - p, v·s + j - p],   OH = (H + 2p - k) / s + 1
//! ```
//!
//! The forward pass remembers, for every output, the position of the input that won (the
//! first one in row-major scan order on ties; a NaN wins over any number, as in PyTorch's CPU
//! kernel). Backward routes each output gradient to that position: `dx = 0`, then
//! `dx[argmax[q]] += dy[q]` for every output `q`, in order (windows may overlap when
//! `s < k`, so a pixel can collect several gradients). As in PyTorch, the padding may be at
//! most half the kernel, so every window holds at least one real pixel. Planes are split into
//! one block per thread of [`crate::threads::pool`].
//!
//! ```
//! use resnorm::nn::{ImageShape, MaxPool2d};
//! let mut pool = MaxPool2d::new(2, 2, 0).unwrap();
//! let shape = ImageShape::new(1, 1, 2, 4);
//! let x = [1.0, 5.0, 2.0, 0.0,
//!          3.0, 4.0, 8.0, 7.0];
//! let mut y = [0.0; 2];
//! pool.forward(&x, shape, &mut y).unwrap();
//! assert_eq!(y, [5.0, 8.0]);
//! let mut dx = [9.0; 8];
//! pool.backward(&[1.0, 2.0], shape, &mut dx).unwrap();
//! assert_eq!(dx, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
//! ```

use rayon::prelude::*;

use crate::kernels::simd::{rows_per_block, ONE_BLOCK_PER_THREAD};
use crate::nn::ImageShape;
use crate::threads;
use crate::{Error, Result};

/// A max-pooling layer; holds the winning positions of its last forward pass.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    kernel_size: usize,
    stride: usize,
    padding: usize,
    argmax: Vec<usize>,
    last_input: Option<ImageShape>,
}

impl MaxPool2d {
    /// A layer with a square `kernel_size` window, `stride` and `-inf` `padding`
    /// (`padding <= kernel_size / 2`).
    pub fn new(kernel_size: usize, stride: usize, padding: usize) -> Result<Self> {
        if kernel_size == 0 || stride == 0 || padding > kernel_size / 2 {
            return Err(Error::invalid(
                "MaxPool2d::new",
                format!(
                    "kernel {kernel_size}, stride {stride}, padding {padding}: kernel and stride \
                     must be at least 1 and padding at most half the kernel"
                ),
            ));
        }
        Ok(MaxPool2d {
            kernel_size,
            stride,
            padding,
            argmax: Vec::new(),
            last_input: None,
        })
    }

    fn out_len(&self, op: &'static str, len: usize, input: ImageShape) -> Result<usize> {
        let padded = len + 2 * self.padding;
        if padded < self.kernel_size {
            return Err(Error::shape(
                op,
                format!(
                    "kernel {} does not fit in input {input} with padding {}",
                    self.kernel_size, self.padding
                ),
            ));
        }
        Ok((padded - self.kernel_size) / self.stride + 1)
    }

    /// The shape of the output for an input of shape `input`.
    pub fn output_shape(&self, input: ImageShape) -> Result<ImageShape> {
        const OP: &str = "MaxPool2d::output_shape";
        Ok(ImageShape::new(
            input.batch,
            input.channels,
            self.out_len(OP, input.height, input)?,
            self.out_len(OP, input.width, input)?,
        ))
    }

    /// Computes `output` from `input` (shape `shape`) and remembers the winning positions.
    pub fn forward(&mut self, input: &[f32], shape: ImageShape, output: &mut [f32]) -> Result<()> {
        const OP: &str = "MaxPool2d::forward";
        shape.check_len(OP, "input", input)?;
        let out = self.output_shape(shape)?;
        out.check_len(OP, "output", output)?;
        self.argmax.resize(out.len(), 0);
        self.last_input = Some(shape);
        let planes = shape.batch * shape.channels;
        let per_block = rows_per_block(planes, ONE_BLOCK_PER_THREAD);
        let (k, s, p) = (self.kernel_size, self.stride, self.padding);
        threads::pool().install(|| {
            input
                .par_chunks(per_block * shape.plane_len())
                .zip(output.par_chunks_mut(per_block * out.plane_len()))
                .zip(self.argmax.par_chunks_mut(per_block * out.plane_len()))
                .for_each(|((x_block, y_block), arg_block)| {
                    let planes = x_block
                        .chunks(shape.plane_len())
                        .zip(y_block.chunks_mut(out.plane_len()))
                        .zip(arg_block.chunks_mut(out.plane_len()));
                    for ((x, y), arg) in planes {
                        for u in 0..out.height {
                            let (h_lo, h_hi) = window(u, k, s, p, shape.height);
                            for v in 0..out.width {
                                let (w_lo, w_hi) = window(v, k, s, p, shape.width);
                                let mut best_at = h_lo * shape.width + w_lo;
                                let mut best = f32::NEG_INFINITY;
                                for h in h_lo..h_hi {
                                    for w in w_lo..w_hi {
                                        let at = h * shape.width + w;
                                        if x[at] > best || x[at].is_nan() {
                                            best = x[at];
                                            best_at = at;
                                        }
                                    }
                                }
                                y[u * out.width + v] = best;
                                arg[u * out.width + v] = best_at;
                            }
                        }
                    }
                });
        });
        Ok(())
    }

    /// Overwrites `dinput` (shape `shape`, that of the last forward input) with the gradient
    /// routed from `doutput` to the winning positions.
    pub fn backward(&self, doutput: &[f32], shape: ImageShape, dinput: &mut [f32]) -> Result<()> {
        const OP: &str = "MaxPool2d::backward";
        if self.last_input != Some(shape) {
            return Err(Error::invalid(
                OP,
                format!(
                    "shape {shape} is not that of the last forward pass ({})",
                    self.last_input
                        .map_or("none yet".to_string(), |s| s.to_string())
                ),
            ));
        }
        shape.check_len(OP, "dinput", dinput)?;
        let out = self.output_shape(shape)?;
        out.check_len(OP, "doutput", doutput)?;
        let per_block = rows_per_block(shape.batch * shape.channels, ONE_BLOCK_PER_THREAD);
        threads::pool().install(|| {
            dinput
                .par_chunks_mut(per_block * shape.plane_len())
                .zip(doutput.par_chunks(per_block * out.plane_len()))
                .zip(self.argmax.par_chunks(per_block * out.plane_len()))
                .for_each(|((dx_block, dy_block), arg_block)| {
                    let planes = dx_block
                        .chunks_mut(shape.plane_len())
                        .zip(dy_block.chunks(out.plane_len()))
                        .zip(arg_block.chunks(out.plane_len()));
                    for ((dx, dy), arg) in planes {
                        dx.fill(0.0);
                        for (&g, &at) in dy.iter().zip(arg) {
                            dx[at] += g;
                        }
                    }
                });
        });
        Ok(())
    }
}

/// The input rows (or columns) `lo..hi` that output index `o` sees, clipped to `0..len`.
fn window(o: usize, kernel: usize, stride: usize, padding: usize, len: usize) -> (usize, usize) {
    let start = o * stride;
    let lo = start.saturating_sub(padding);
    let hi = (start + kernel).saturating_sub(padding).min(len);
    (lo, hi)
}
