//! Pure functions over slices: the normalization and residual kernels, forward and backward
//! side by side, one concept per file.
//!
//! Conventions shared by every kernel:
//! - activations are row-major `[rows, cols]` slices; `cols` is the normalized width;
//! - statistics are accumulated in `f32` with two passes over a row held in cache (mean,
//!   then centered variance), never as `E[x^2] - E[x]^2`;
//! - a backward pass *overwrites* the input gradient (`dx`) and *adds into* parameter
//!   gradients (`dweight`, `dbias`), so that gradients accumulate over micro-batches;
//! - rows are split into one contiguous block per thread of [`crate::threads::pool`];
//!   parameter gradients are summed per block, then across blocks in block order, so a
//!   result depends only on the thread count;
//! - every size mismatch is a [`crate::Error`], checked before any element is touched.

mod im2col;
mod relu;

pub use im2col::{col2im, im2col, PatchGeometry};
pub use relu::{relu_backward, relu_backward_in_place, relu_forward, relu_forward_in_place};
