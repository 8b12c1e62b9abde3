//! Pure functions over slices: the normalization and residual kernels and the products,
//! activations and losses the models need, forward and backward side by side, one concept
//! per file.
//!
//! Conventions shared by every kernel:
//! - activations are row-major `[rows, cols]` slices; `cols` is the normalized width;
//! - statistics are accumulated in `f32` around a centre near the row mean (corrected
//!   two-pass when that centre was far off), never as `E[x^2] - E[x]^2`;
//! - outputs of calls larger than the cache are written with streaming stores, which give
//!   the same bits as plain ones;
//! - a backward pass *overwrites* the input gradient (`dx`) and *adds into* parameter
//!   gradients (`dweight`, `dbias`), so that gradients accumulate over micro-batches;
//! - rows are split into one contiguous block per thread of [`crate::threads::pool`];
//!   parameter gradients are summed per block, then across blocks in block order, so a
//!   result depends only on the thread count (a bias's gradient, in fixed blocks of rows,
//!   not even on that: [`column_sums`]);
//! - every size mismatch is a [`crate::Error`], checked before any element is touched;
//! - hand-vectorized kernels run at the one instruction-set level of [`simd::level`].

pub mod add_norm;
pub mod attention;
pub mod batch_norm;
pub mod column_sums;
pub mod conv3x3;
pub mod cross_entropy;
pub mod dropout;
pub mod exp;
pub mod gelu;
pub mod im2col;
pub mod layer_norm;
pub mod matmul;
pub mod norm;
pub mod relu;
pub mod residual;
pub mod rms_norm;
mod rows;
pub mod simd;
mod stores;
pub(crate) mod tile;

pub use conv3x3::{conv3x3_forward, conv3x3_weight_grad, Conv3x3Layout, Conv3x3Weights};
pub use cross_entropy::{
    cross_entropy_backward, cross_entropy_backward_in_place, cross_entropy_forward,
    smoothed_cross_entropy_backward_in_place, smoothed_cross_entropy_forward,
};
pub use gelu::{gelu_backward, gelu_forward};
pub use im2col::{col2im, col2im_add, im2col, PatchGeometry};
pub use matmul::{
    matmul, matmul_plus_row, matmul_strided, MatDims, MatMut, MatRef, Trans, PARALLEL_MIN_WORK,
    VECTOR_PARALLEL_MIN_WORK,
};
pub use norm::{NormKind, DEFAULT_EPS};
pub use relu::{
    add_relu_forward, relu_backward, relu_backward_in_place, relu_forward, relu_forward_in_place,
};
